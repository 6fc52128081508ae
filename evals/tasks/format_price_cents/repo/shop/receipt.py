"""Receipt lines."""


def format_price(amount):
    """A price in dollars with two decimals, e.g. $3.50."""
    return f"${amount}"


def receipt_line(name, amount):
    return f"{name}: {format_price(amount)}"
