from shop.cart import Cart


def test_empty_cart_costs_nothing():
    assert Cart().total() == 0


def test_total_counts_quantities():
    cart = Cart()
    cart.add("apple", 2, quantity=3)
    cart.add("bread", 5)
    assert cart.total() == 11


def test_count():
    cart = Cart()
    cart.add("apple", 2, quantity=3)
    assert cart.count() == 3
