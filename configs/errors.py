"""One base for the errors Elpis raises on purpose.

Every such error carries a message written for the person who has to act on it (what is wrong and what
to do); the CLI prints it and exits 1 instead of a traceback. Errors that are also a kind of a builtin
(a bad value, a failed operation) keep that builtin as a second base, so `except ValueError` still works.
"""

from __future__ import annotations


class ElpisError(Exception):
    """Base of every error Elpis raises on purpose; its message says what to do."""
