from blog.posts import post_url
from blog.utils import excerpt, slugify


def test_slugify():
    assert slugify("Hello World") == "hello-world"


def test_post_url():
    assert post_url("Hello World") == "/posts/hello-world"


def test_excerpt():
    assert excerpt("a b c", words=2) == "a b..."
