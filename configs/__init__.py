"""Typed settings: `configs/config.yaml` defaults, overridden by `ELPIS_*` environment variables."""

from configs.errors import ElpisError
from configs.settings import ConfigError, Settings, get_settings, load_settings

__all__ = ["ConfigError", "ElpisError", "Settings", "get_settings", "load_settings"]
