"""How spread out measurements are."""


def spread(values):
    """Return the difference between the largest and the smallest value."""
    return max(values) - min(values)
