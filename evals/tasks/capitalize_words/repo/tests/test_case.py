from textkit.case import capitalize_words, swap_case


def test_swap_case():
    assert swap_case("aB") == "Ab"


def test_capitalize_words():
    assert capitalize_words("hello world") == "Hello World"
