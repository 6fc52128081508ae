"""Totals of fruit orders."""

from grocer.prices import PRICES

BULK_QUANTITY = 10
BULK_DISCOUNT = 0.10


def order_total(fruit, quantity):
    """Price of `quantity` pieces of `fruit`; 10 % off from BULK_QUANTITY pieces on."""
    total = PRICES[fruit] * quantity
    if quantity > BULK_QUANTITY:
        total *= 1 - BULK_DISCOUNT
    return round(total, 2)
