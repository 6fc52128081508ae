from shop.cart import Cart


def test_total_with_several_quantities():
    cart = Cart()
    cart.add("milk", 3, quantity=4)
    cart.add("egg", 1, quantity=12)
    assert cart.total() == 24
