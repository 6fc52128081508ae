"""Human-readable weather reports."""

from weather import config


def describe(temperature):
    """A short report such as 'Harbour: 21°C'."""
    return f"{config.STATION}: {temperature}°F"
