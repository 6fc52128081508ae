"""Circles."""

import math


def circle_area(radius):
    """The area of a circle of the given radius."""
    if radius < 0:
        raise ValueError("radius must not be negative")
    return math.pi * radius**2


def diameter(radius):
    return 2 * radius
