from seqtools.windows import moving_average, windows


def test_whole_sequence_is_one_window():
    assert windows("abc", 3) == [("a", "b", "c")]
    assert windows([1, 2], 3) == []


def test_moving_average():
    assert moving_average([2, 4, 6, 8], 2) == [3, 5, 7]
