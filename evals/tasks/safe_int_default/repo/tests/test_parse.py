from parsing.numbers import safe_int


def test_valid():
    assert safe_int(" 42 ") == 42


def test_invalid_gives_default():
    assert safe_int("abc", default=-1) == -1
