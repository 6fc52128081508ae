from parsing.numbers import safe_int


def test_more_invalid_values():
    assert safe_int("") == 0
    assert safe_int("12x", default=7) == 7
    assert safe_int("-3") == -3
