import pytest
from bank.wallet import InsufficientFunds, Wallet


def test_balance_unchanged_after_refusal_and_exact_payment_ok():
    wallet = Wallet(3)
    with pytest.raises(InsufficientFunds):
        wallet.pay(4)
    assert wallet.balance == 3
    assert wallet.pay(3) == 0
