from school.grades import is_passing


def test_boundaries():
    assert is_passing(50)
    assert not is_passing(49)
    assert not is_passing(0)
