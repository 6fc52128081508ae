"""Averages of measurements."""


def average(values):
    """The mean of `values`; ValueError for an empty list."""
    if not values:
        raise ValueError("cannot average an empty list")
    return sum(values) / len(values)
