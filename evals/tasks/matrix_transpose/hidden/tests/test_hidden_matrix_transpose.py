from linalg.matrix import transpose


def test_transpose_rectangular_and_empty():
    assert transpose([[1, 2, 3], [4, 5, 6]]) == [[1, 4], [2, 5], [3, 6]]
    assert transpose([]) == []
    m = [[7, 8]]
    transpose(m)
    assert m == [[7, 8]]
