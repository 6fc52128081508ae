from shop.receipt import format_price, receipt_line


def test_two_decimals():
    assert format_price(3.5) == "$3.50"


def test_line():
    assert receipt_line("tea", 2.25) == "tea: $2.25"
