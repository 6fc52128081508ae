from bank.account import Account


def test_deposit():
    account = Account("ada")
    account.deposit(50)
    assert account.balance == 50


def test_withdraw():
    account = Account("ada", 100)
    account.withdraw(30)
    assert account.balance == 70
