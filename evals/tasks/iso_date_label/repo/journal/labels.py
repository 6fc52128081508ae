"""Labels for journal entries."""

from datetime import date


def date_label(day: date) -> str:
    """The date as YYYY-MM-DD."""
    return f"{day.year}-{day.month}-{day.day}"


def entry_title(day: date, title: str) -> str:
    return f"{date_label(day)} {title}"
