from datetime import date

from library.loans import due_date


def test_custom_days_across_year():
    assert due_date(date(2023, 12, 25), days=10) == date(2024, 1, 4)
