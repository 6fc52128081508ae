from blog.posts import post_url
from blog.utils import slugify


def test_extra_spaces_and_case():
    assert slugify("  Python   Tips  ") == "python-tips"
    assert post_url("My First POST") == "/posts/my-first-post"
