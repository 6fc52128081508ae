"""The database and broker URLs are secret settings: their passwords never show in a print or repr."""

from __future__ import annotations

from configs.settings import load_settings


def test_server_urls_are_secrets(monkeypatch) -> None:
    monkeypatch.setenv("ELPIS_DATABASE_URL", "postgresql+psycopg://elpis:db-pass-4711@db:5432/elpis")
    monkeypatch.setenv("ELPIS_BROKER_URL", "redis://:broker-pass-4711@redis:6379/0")
    settings = load_settings()
    shown = f"{settings} {settings!r} {settings.model_dump()} {settings.model_dump_json()}"
    assert "db-pass-4711" not in shown and "broker-pass-4711" not in shown
    assert settings.database_url.get_secret_value().endswith("@db:5432/elpis")

    from configs.servers import resolve_broker_url

    monkeypatch.setattr("configs.servers.get_settings", lambda: settings)
    assert resolve_broker_url() == "redis://:broker-pass-4711@redis:6379/0"
