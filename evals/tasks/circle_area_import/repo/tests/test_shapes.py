import pytest
from geometry.circle import circle_area, diameter


def test_area():
    assert circle_area(1) == pytest.approx(3.14159, rel=1e-4)


def test_diameter():
    assert diameter(2) == 4
