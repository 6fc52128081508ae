"""Counting words in text."""


def count_words(text):
    """Return how many words `text` has; any run of whitespace separates words."""
    return len([word for word in text.split() if word != ""])


def longest_word(text):
    """Return the longest word of `text` ('' for no words)."""
    return max(text.split(), key=len, default="")
