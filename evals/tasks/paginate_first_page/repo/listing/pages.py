"""Splitting a list of results into pages numbered from 1."""


def page_count(items, size):
    """How many pages of `size` items the list fills."""
    return (len(items) + size - 1) // size


def page_items(items, page, size):
    """The items on page number `page` (the first page is 1)."""
    start = page * size
    return items[start:start + size]
