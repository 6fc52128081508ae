from school.grades import is_passing, letter


def test_high_score_passes():
    assert is_passing(80)


def test_letter():
    assert letter(95) == "A"
