import pytest
from geometry.circle import circle_area


def test_area_of_two_and_zero():
    assert circle_area(2) == pytest.approx(12.56637, rel=1e-4)
    assert circle_area(0) == 0
