from grocer.order import order_total


def test_more_orders():
    assert order_total("pear", 10) == 4.5
    assert order_total("banana", 9) == 2.25
    assert order_total("apple", 20) == 5.4
