import pytest
from bank.wallet import InsufficientFunds, Wallet


def test_pay():
    assert Wallet(10).pay(4) == 6


def test_overdraft_raises():
    wallet = Wallet(5)
    with pytest.raises(InsufficientFunds):
        wallet.pay(8)
