from datetime import date

from library.loans import due_date, is_late


def test_due_in_two_weeks():
    assert due_date(date(2024, 5, 1)) == date(2024, 5, 15)


def test_late():
    assert is_late(date(2024, 5, 1), date(2024, 5, 2))
