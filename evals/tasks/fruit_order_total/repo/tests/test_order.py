from grocer.order import order_total


def test_small_order():
    assert order_total("apple", 3) == 0.9


def test_pears():
    assert order_total("pear", 2) == 1.0


def test_bulk_discount_from_ten():
    assert order_total("orange", 10) == 5.4
