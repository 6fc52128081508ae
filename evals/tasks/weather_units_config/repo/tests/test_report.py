from weather import config
from weather.report import describe


def test_default_unit_is_celsius():
    assert config.UNIT == "C"


def test_describe():
    assert describe(21) == "Harbour: 21°C"
