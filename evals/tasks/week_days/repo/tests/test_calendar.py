from datetime import date

from planner.calendar import is_weekend, week_of


def test_week_has_seven_days():
    assert len(week_of(date(2024, 1, 1))) == 7


def test_weekend():
    assert is_weekend(date(2024, 1, 6))
