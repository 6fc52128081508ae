from temps.units import celsius_to_fahrenheit, celsius_to_kelvin


def test_fahrenheit():
    assert celsius_to_fahrenheit(100) == 212


def test_kelvin():
    assert celsius_to_kelvin(0) == 273.15
