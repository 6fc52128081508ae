import pytest
from inventory.store import Store


def test_restock_new_item():
    store = Store()
    store.restock("pen", 5)
    assert store.available("pen") == 5


def test_restock_adds_to_existing_stock():
    store = Store()
    store.restock("pen", 5)
    store.restock("pen", 3)
    assert store.available("pen") == 8


def test_cannot_sell_more_than_stock():
    store = Store()
    store.restock("pen", 1)
    with pytest.raises(ValueError):
        store.sell("pen", 2)
