from calc.text import shout, slugify


def test_slugify():
    assert slugify("Hello  World") == "hello-world"


def test_shout():
    assert shout("hi") == "HI!"
