from sport.timer import format_duration


def test_more_durations():
    assert format_duration(0) == "00:00"
    assert format_duration(600) == "10:00"
    assert format_duration(3599) == "59:59"
