"""A shopping cart that adds up line items."""


class Cart:
    def __init__(self):
        self.lines = []

    def add(self, name, price, quantity=1):
        """Add `quantity` units of an item at `price` each."""
        self.lines.append((name, price, quantity))

    def total(self):
        """The amount to pay for every line of the cart."""
        total = 0
        for _name, price, quantity in self.lines:
            total += price
        return total

    def count(self):
        """How many units are in the cart."""
        return sum(quantity for _name, _price, quantity in self.lines)
