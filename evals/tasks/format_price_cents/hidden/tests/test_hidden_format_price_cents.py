from shop.receipt import format_price


def test_whole_and_rounded():
    assert format_price(7) == "$7.00"
    assert format_price(0.1) == "$0.10"
