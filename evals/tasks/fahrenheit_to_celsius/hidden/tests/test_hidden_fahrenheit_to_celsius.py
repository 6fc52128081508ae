import pytest
from temps.convert import fahrenheit_to_celsius


def test_more_fahrenheit_values():
    assert fahrenheit_to_celsius(32) == pytest.approx(0)
    assert fahrenheit_to_celsius(-40) == pytest.approx(-40)
    assert fahrenheit_to_celsius(50) == pytest.approx(10)
