"""Library loans: when a borrowed book is due back."""

from datetime import date, timedelta

LOAN_DAYS = 14


def due_date(borrowed: date, days: int = LOAN_DAYS) -> date:
    """The day a book borrowed on `borrowed` must be returned."""
    return borrowed + timedelta(days=days)


def is_late(due: date, today: date) -> bool:
    return today > due
