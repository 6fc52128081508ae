from shop.pricing import apply_discount


def test_other_discounts():
    assert apply_discount(19.99, 0) == 19.99
    assert apply_discount(80, 100) == 0
    assert apply_discount(10, 15) == 8.5
