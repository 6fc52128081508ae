"""Helpers for the blog."""


def excerpt(text, words=5):
    """The first `words` words of `text`, followed by '...' if there are more."""
    parts = text.split()
    more = "..." if len(parts) > words else ""
    return " ".join(parts[:words]) + more
