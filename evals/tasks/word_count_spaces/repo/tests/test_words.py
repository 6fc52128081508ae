from textkit.words import count_words, longest_word


def test_single_spaces():
    assert count_words("the quick brown fox") == 4


def test_many_spaces_and_newlines():
    assert count_words("the  quick\nbrown   fox") == 4


def test_longest_word():
    assert longest_word("a bb ccc") == "ccc"
