from inventory.store import Store


def test_restock_after_selling():
    store = Store()
    store.restock("ink", 10)
    store.sell("ink", 4)
    store.restock("ink", 1)
    store.restock("ink", 2)
    assert store.available("ink") == 9
