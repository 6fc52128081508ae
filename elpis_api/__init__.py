"""The HTTP side of Elpis (FastAPI) and the `elpis` command."""
