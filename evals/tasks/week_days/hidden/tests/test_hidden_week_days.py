from datetime import date

from planner.calendar import week_of


def test_week_starts_on_start_and_crosses_months():
    week = week_of(date(2024, 2, 27))
    assert week[0] == date(2024, 2, 27)
    assert week[-1] == date(2024, 3, 4)
