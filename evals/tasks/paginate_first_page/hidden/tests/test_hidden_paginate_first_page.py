from listing.pages import page_items


def test_later_pages():
    items = list("abcdefg")
    assert page_items(items, 2, 3) == ["d", "e", "f"]
    assert page_items(items, 3, 3) == ["g"]
