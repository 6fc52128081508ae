from textkit.words import count_words


def test_tabs_and_blank_text():
    assert count_words("one\ttwo\t\tthree") == 3
    assert count_words("   \n  ") == 0
