"""Dates for a weekly planner."""

from datetime import date, timedelta


def week_of(start: date) -> list[date]:
    """The seven consecutive dates beginning with `start`."""
    return [start + timedelta(days=offset) for offset in range(7)]


def is_weekend(day: date) -> bool:
    return day.weekday() >= 5
