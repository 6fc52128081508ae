import pytest
from bank.account import Account


def test_withdraw_everything_then_too_much():
    account = Account("bob", 40)
    account.withdraw(15)
    account.withdraw(25)
    assert account.balance == 0
    with pytest.raises(ValueError):
        account.withdraw(1)
