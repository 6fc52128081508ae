"""A savings account that earns interest."""


class SavingsAccount:
    def __init__(self, rate):
        self.rate = rate
        self.balance = 0.0

    def deposit(self, amount):
        """Add money to the account."""
        self.balance += amount

    def add_interest(self):
        """Credit one period of interest at `rate` (0.05 is 5 %)."""
        self.balance += self.balance * self.rate
