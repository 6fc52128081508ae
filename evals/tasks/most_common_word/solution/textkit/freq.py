"""Word frequencies."""

from collections import Counter


def most_common_word(text):
    """The most frequent word of `text`, ignoring case."""
    counts = Counter(text.lower().split())
    return counts.most_common(1)[0][0]
