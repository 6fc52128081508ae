"""Blog posts and their addresses."""


def post_url(title):
    """The address of the post with this title."""
    return "/posts/" + title
