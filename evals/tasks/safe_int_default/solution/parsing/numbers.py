"""Parsing numbers typed by users."""


def safe_int(text, default=0):
    """The integer written in `text` (spaces around it are fine), or `default` if it is not one."""
    try:
        return int(text.strip())
    except ValueError:
        return default
