"""Grading exam scores (0 to 100)."""

PASS_MARK = 50


def is_passing(score):
    """True when `score` reaches the pass mark."""
    return score >= PASS_MARK


def letter(score):
    if score >= 90:
        return "A"
    if score >= 70:
        return "B"
    return "C" if score >= PASS_MARK else "F"
