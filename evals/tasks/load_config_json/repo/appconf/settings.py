"""Application settings stored as JSON text."""

DEFAULTS = {"debug": False, "port": 8000}


def load_config(text):
    """The settings in the JSON `text`, on top of DEFAULTS."""
    settings = dict(DEFAULTS)
    settings.update(json.loads(text))
    return settings
