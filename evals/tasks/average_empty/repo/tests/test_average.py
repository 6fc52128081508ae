import pytest
from stats.average import average


def test_average():
    assert average([2, 4]) == 3


def test_empty_raises_value_error():
    with pytest.raises(ValueError):
        average([])
