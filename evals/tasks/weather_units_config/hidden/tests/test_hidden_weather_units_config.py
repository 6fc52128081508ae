from weather import config
from weather.report import describe


def test_unit_comes_from_config(monkeypatch):
    monkeypatch.setattr(config, "UNIT", "K")
    monkeypatch.setattr(config, "STATION", "Hill")
    assert describe(280) == "Hill: 280°K"
