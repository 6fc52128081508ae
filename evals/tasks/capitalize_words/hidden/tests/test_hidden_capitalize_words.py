from textkit.case import capitalize_words


def test_mixed_case_and_spacing():
    assert capitalize_words("pYTHON   is FUN") == "Python Is Fun"
    assert capitalize_words("") == ""
