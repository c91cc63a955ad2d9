from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from registry.db import create_db_engine
from registry.settings import Settings, get_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("DIABLO_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults_keep_everything_under_the_data_dir(tmp_path: Path) -> None:
    settings = Settings()
    data_dir = tmp_path.resolve() / "data"
    assert settings.data_dir == data_dir
    assert settings.database_url == f"sqlite:///{data_dir / 'registry.db'}"
    assert settings.broker_url == f"sqla+sqlite:///{data_dir / 'broker.db'}"
    assert settings.result_backend is None
    assert (settings.host, settings.port, settings.default_model) == ("127.0.0.1", 8000, "default")
    assert settings.files_dir == data_dir / "files"
    assert settings.adapters_dir == data_dir / "adapters"
    assert settings.auth == "on"


def test_urls_follow_a_custom_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DIABLO_DATA_DIR", str(tmp_path / "elsewhere"))
    settings = Settings()
    assert settings.database_url == f"sqlite:///{tmp_path.resolve() / 'elsewhere' / 'registry.db'}"
    assert settings.broker_url.endswith("/elsewhere/broker.db")


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIABLO_DATABASE_URL", "postgresql://postgres@db:5432/diablo")
    monkeypatch.setenv("DIABLO_BROKER_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("DIABLO_PORT", "9001")
    monkeypatch.setenv("DIABLO_HOST", "0.0.0.0")
    monkeypatch.setenv("DIABLO_DEFAULT_MODEL", "SmolLM2-135M-Instruct")
    monkeypatch.setenv("DIABLO_AUTH", "off")
    settings = Settings()
    assert settings.database_url == "postgresql://postgres@db:5432/diablo"
    assert settings.broker_url == "redis://127.0.0.1:6379/0"
    assert (settings.host, settings.port) == ("0.0.0.0", 9001)
    assert settings.default_model == "SmolLM2-135M-Instruct"
    assert settings.auth == "off"


@pytest.mark.parametrize(
    ("name", "value"),
    [("DIABLO_PORT", "70000"), ("DIABLO_AUTH", "maybe"), ("DIABLO_MAX_UPLOAD_BYTES", "0")],
)
def test_invalid_values_name_the_field(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=name.removeprefix("DIABLO_").lower()):
        Settings()


def test_heartbeat_timeout_must_exceed_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIABLO_HEARTBEAT_INTERVAL_S", "30")
    monkeypatch.setenv("DIABLO_HEARTBEAT_TIMEOUT_S", "30")
    with pytest.raises(ValidationError, match="heartbeat_timeout_s"):
        Settings()


def test_get_settings_reads_the_environment_once(monkeypatch: pytest.MonkeyPatch) -> None:
    get_settings.cache_clear()
    try:
        monkeypatch.setenv("DIABLO_PORT", "8100")
        first = get_settings()
        monkeypatch.setenv("DIABLO_PORT", "8200")
        assert get_settings() is first
        assert first.port == 8100
    finally:
        get_settings.cache_clear()


def test_default_database_url_opens_and_creates_its_folder(tmp_path: Path) -> None:
    engine = create_db_engine(Settings().database_url)
    try:
        with engine.connect() as connection:
            mode = connection.exec_driver_sql("PRAGMA journal_mode").scalar()
            foreign_keys = connection.exec_driver_sql("PRAGMA foreign_keys").scalar()
    finally:
        engine.dispose()
    assert (tmp_path / "data" / "registry.db").exists()
    assert (mode, foreign_keys) == ("wal", 1)


def test_registry_never_imports_torch() -> None:
    # Torch-free diablo_core modules (the file lock) are allowed; torch and transformers are not.
    code = "import sys, registry; sys.exit(int('torch' in sys.modules or 'transformers' in sys.modules))"
    repo_root = Path(__file__).resolve().parents[2]
    assert subprocess.run([sys.executable, "-c", code], cwd=repo_root, timeout=120).returncode == 0


def test_settings_passed_to_a_child_as_environment_read_back_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = ("data_dir", "database_url", "queue_name", "port", "max_tokens_limit")
    parent = Settings(data_dir=tmp_path / "d", database_url="postgresql://h/x", queue_name="q", port=9001)
    environment = parent.as_environment(*names)
    assert environment["DIABLO_QUEUE_NAME"] == "q" and environment["DIABLO_PORT"] == "9001"
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    child = Settings()
    assert [getattr(child, name) for name in names] == [getattr(parent, name) for name in names]
