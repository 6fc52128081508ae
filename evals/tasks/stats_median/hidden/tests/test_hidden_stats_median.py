import pytest
from stats.summary import median


def test_median_even_and_empty():
    assert median([4, 1, 3, 2]) == 2.5
    assert median([5]) == 5
    with pytest.raises(ValueError):
        median([])
