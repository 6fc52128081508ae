from shop.pricing import apply_discount


def test_twenty_percent_off():
    assert apply_discount(50, 20) == 40
