import pytest
from bank.savings import SavingsAccount


def test_deposit():
    account = SavingsAccount(rate=0.05)
    account.deposit(100)
    assert account.balance == 100


def test_add_interest():
    account = SavingsAccount(rate=0.05)
    account.deposit(100)
    account.add_interest()
    assert account.balance == pytest.approx(105)
