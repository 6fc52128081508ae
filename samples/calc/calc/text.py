"""Text helpers."""


def slugify(text):
    words = text.lower().split()
    return "-".join(words)


def shout(text):
    """Return text in capitals with an exclamation mark."""
    return text.upper() + "!"
