"""Changing the case of text."""


def swap_case(text):
    """Upper case becomes lower case and the other way round."""
    return text.swapcase()
