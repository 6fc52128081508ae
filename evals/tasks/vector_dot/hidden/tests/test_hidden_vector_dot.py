from linalg.vectors import dot


def test_orthogonal_and_empty():
    assert dot([1, 0], [0, 1]) == 0
    assert dot([], []) == 0
    assert dot([2, -3], [4, 5]) == -7
