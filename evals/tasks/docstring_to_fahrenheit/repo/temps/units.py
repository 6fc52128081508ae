"""Units of temperature."""


def celsius_to_fahrenheit(celsius):
    return celsius * 9 / 5 + 32


def celsius_to_kelvin(celsius):
    """Convert degrees Celsius to kelvin."""
    return celsius + 273.15
