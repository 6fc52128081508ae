import pytest
from stats.average import average


def test_empty_tuple_and_message():
    with pytest.raises(ValueError, match="empty"):
        average(())
    assert average([5]) == 5
