"""Small vector helpers on lists of numbers."""


def add(a, b):
    """Element-wise sum of two vectors of the same length."""
    return [x + y for x, y in zip(a, b)]


def dot(a, b):
    """The dot product of two vectors of the same length."""
    return sum(x * y for x, y in zip(a, b))
