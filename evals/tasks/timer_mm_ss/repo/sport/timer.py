"""A stopwatch display."""


def format_duration(seconds):
    """`seconds` (an int) as MM:SS."""
    minutes, secs = divmod(seconds, 60)
    return f"{minutes}:{secs}"
