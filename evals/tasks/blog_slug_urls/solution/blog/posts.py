"""Blog posts and their addresses."""

from blog.utils import slugify


def post_url(title):
    """The address of the post with this title."""
    return "/posts/" + slugify(title)
