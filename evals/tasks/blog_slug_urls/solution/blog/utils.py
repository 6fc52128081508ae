"""Helpers for the blog."""


def slugify(title):
    """The title in lower case, words joined by '-'."""
    return "-".join(title.lower().split())


def excerpt(text, words=5):
    """The first `words` words of `text`, followed by '...' if there are more."""
    parts = text.split()
    more = "..." if len(parts) > words else ""
    return " ".join(parts[:words]) + more
