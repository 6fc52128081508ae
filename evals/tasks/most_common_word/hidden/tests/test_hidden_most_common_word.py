from textkit.freq import most_common_word


def test_ignores_case():
    assert most_common_word("Go go GO stop") == "go"
