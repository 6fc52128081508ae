"""Reversing text."""


def reverse_words(text):
    """The words of `text` in reverse order, separated by single spaces."""
    return " ".join(reversed(text.split()))
