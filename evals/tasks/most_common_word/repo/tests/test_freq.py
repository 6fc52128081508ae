from textkit.freq import most_common_word


def test_most_common():
    assert most_common_word("the cat and the hat") == "the"
