from sport.timer import format_duration


def test_leading_zeros():
    assert format_duration(65) == "01:05"
