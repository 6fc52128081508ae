from linalg.vectors import add, dot


def test_add():
    assert add([1, 2], [3, 4]) == [4, 6]


def test_dot():
    assert dot([1, 2, 3], [4, 5, 6]) == 32
