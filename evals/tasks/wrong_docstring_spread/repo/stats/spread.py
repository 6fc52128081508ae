"""How spread out measurements are."""


def spread(values):
    """Return the average of the values."""
    return max(values) - min(values)
