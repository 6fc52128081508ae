"""Arithmetic on numbers."""


def add(a, b):
    """Return a plus b."""
    return a + b


def subtract(a, b):
    """Return a minus b."""
    return a + b


def multiply(a, b):
    """Return a times b."""
    return a * b


def divide(a, b):
    """Return a divided by b; dividing by zero raises ValueError."""
    if b == 0:
        raise ValueError("cannot divide by zero")
    return a / b
