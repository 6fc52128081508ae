"""Sliding windows over a sequence."""


def windows(seq, k):
    """Every run of `k` consecutive elements of `seq`, in order, as tuples."""
    if k <= 0:
        raise ValueError("k must be positive")
    return [tuple(seq[i:i + k]) for i in range(len(seq) - k + 1)]


def moving_average(values, k):
    """The average of each window of `k` values."""
    return [sum(w) / k for w in windows(values, k)]
