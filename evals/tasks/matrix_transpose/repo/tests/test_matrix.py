from linalg.matrix import identity, shape, transpose


def test_identity():
    assert identity(2) == [[1, 0], [0, 1]]


def test_transpose_square():
    assert transpose([[1, 2], [3, 4]]) == [[1, 3], [2, 4]]


def test_shape():
    assert shape([[1, 2, 3]]) == (1, 3)
