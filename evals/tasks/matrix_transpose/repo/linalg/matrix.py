"""Matrices as lists of rows."""


def shape(matrix):
    """(rows, columns) of a matrix."""
    return (len(matrix), len(matrix[0]) if matrix else 0)


def identity(n):
    """The n by n identity matrix."""
    return [[1 if i == j else 0 for j in range(n)] for i in range(n)]
