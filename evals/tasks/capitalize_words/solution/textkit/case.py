"""Changing the case of text."""


def swap_case(text):
    """Upper case becomes lower case and the other way round."""
    return text.swapcase()


def capitalize_words(text):
    """Every word capitalised, words separated by single spaces."""
    return " ".join(word.capitalize() for word in text.split())
