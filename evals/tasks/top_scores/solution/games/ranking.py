"""Leaderboards."""


def top_n(scores, n):
    """The names of the `n` players with the highest scores, best first."""
    ranked = sorted(scores, key=scores.get, reverse=True)
    return ranked[:n]


def winner(scores):
    """The player with the highest score."""
    return max(scores, key=scores.get)
