"""Stock levels of a small shop."""


class Store:
    def __init__(self):
        self.stock = {}

    def restock(self, item, quantity):
        """Receive `quantity` more units of `item`."""
        self.stock[item] = quantity

    def sell(self, item, quantity):
        """Sell units; selling more than we have raises ValueError."""
        if self.stock.get(item, 0) < quantity:
            raise ValueError(f"not enough {item}")
        self.stock[item] -= quantity

    def available(self, item):
        return self.stock.get(item, 0)
