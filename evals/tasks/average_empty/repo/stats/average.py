"""Averages of measurements."""


def average(values):
    """The mean of `values`; ValueError for an empty list."""
    return sum(values) / len(values)
