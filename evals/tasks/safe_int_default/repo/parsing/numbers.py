"""Parsing numbers typed by users."""


def safe_int(text, default=0):
    """The integer written in `text` (spaces around it are fine), or `default` if it is not one."""
    return int(text.strip())
