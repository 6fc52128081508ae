"""A prepaid wallet that may never go below zero."""


class InsufficientFunds(Exception):
    """A payment larger than the balance."""


class Wallet:
    def __init__(self, balance=0):
        self.balance = balance

    def pay(self, amount):
        """Pay `amount`; raises InsufficientFunds if the balance is too low."""
        if amount > self.balance:
            raise InsufficientFunds(f"cannot pay {amount}")
        self.balance -= amount
        return self.balance
