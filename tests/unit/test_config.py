"""Keys and settings: from the environment or key files, never defaults; clear refusals."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from iwrs import create_app
from iwrs.config import ConfigError, Settings, create_missing_keys, normalize_database_url


def test_init_creates_each_missing_key_once_with_owner_only_mode(tmp_path: Path, monkeypatch):
    for var in ("IWRS_SECRET_KEY", "IWRS_AUDIT_KEY", "IWRS_BLINDING_KEY", "IWRS_AUDIT_SIGNING_KEY"):
        monkeypatch.delenv(var, raising=False)
    written = create_missing_keys(tmp_path)
    assert sorted(p.name for p in written) == [
        "audit_key.key",
        "audit_signing_key.key",
        "blinding_key.key",
        "secret_key.key",
    ]
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert len(bytes.fromhex(path.read_text().strip())) == 32
    assert create_missing_keys(tmp_path) == []
    settings = Settings.from_env(instance_path=tmp_path)
    assert settings.missing_keys() == []
    keys = {settings.secret_key, settings.audit_key, settings.blinding_key}
    assert len(keys | {settings.audit_signing_key}) == 4


def test_key_from_environment_wins_over_file(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("IWRS_AUDIT_KEY", "ab" * 32)
    assert Settings.from_env(instance_path=tmp_path).audit_key == bytes.fromhex("ab" * 32)


@pytest.mark.parametrize("value, message", [("zz" * 32, "must be hex"), ("ab" * 16, "256-bit key")])
def test_malformed_key_is_refused_by_name(tmp_path: Path, monkeypatch, value, message):
    monkeypatch.setenv("IWRS_BLINDING_KEY", value)
    with pytest.raises(ConfigError, match=message) as refused:
        Settings.from_env(instance_path=tmp_path)
    assert "IWRS_BLINDING_KEY" in str(refused.value)


def test_server_refuses_to_start_without_keys(tmp_path: Path, monkeypatch):
    for var in (
        "IWRS_SECRET_KEY",
        "IWRS_AUDIT_KEY",
        "IWRS_BLINDING_KEY",
        "IWRS_AUDIT_SIGNING_KEY",
        "FLASK_RUN_FROM_CLI",
    ):
        monkeypatch.delenv(var, raising=False)
    settings = Settings(instance_path=tmp_path, database_url=f"sqlite:///{tmp_path}/x.sqlite")
    with pytest.raises(ConfigError, match="missing key\\(s\\): secret_key, audit_key"):
        create_app(settings)


@pytest.mark.parametrize("command", ["run", None])
def test_flask_run_refuses_to_serve_without_keys_as_gunicorn_does(tmp_path, monkeypatch, command):
    """`flask run` (Flask sets FLASK_RUN_FROM_CLI for every `flask` command) is held to the
    key check; the other commands of `flask` load the app without keys (`iwrs init` makes them)."""
    import click

    for var in ("IWRS_SECRET_KEY", "IWRS_AUDIT_KEY", "IWRS_BLINDING_KEY", "IWRS_AUDIT_SIGNING_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("FLASK_RUN_FROM_CLI", "true")
    settings = Settings(instance_path=tmp_path, database_url=f"sqlite:///{tmp_path}/x.sqlite")
    flask_command = click.Group("flask")
    with click.Context(flask_command, info_name="flask") as top:
        if command is None:  # e.g. `flask iwrs init`: the app is loaded under the group
            assert create_app(settings).extensions["iwrs.settings"] is settings
            return
        run = click.Context(click.Command(command), parent=top, info_name=command)
        with run, pytest.raises(ConfigError, match="missing key\\(s\\)"):
            create_app(settings)


def test_bad_idle_minutes_is_refused(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("IWRS_SESSION_IDLE_MINUTES", "soon")
    with pytest.raises(ConfigError, match="IWRS_SESSION_IDLE_MINUTES must be a whole number"):
        Settings.from_env(instance_path=tmp_path)


@pytest.mark.parametrize(
    "variable, value",
    [
        ("IWRS_SMTP_PORT", "abc"),
        ("IWRS_SMTP_PORT", "0"),
        ("IWRS_SMTP_PORT", "65536"),
        ("IWRS_NOTIFY_CLAIM_SECONDS", "soon"),
    ],
)
def test_a_bad_delivery_setting_is_refused_at_start_naming_its_variable(
    tmp_path: Path, monkeypatch, variable, value
):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as refused:
        Settings.from_env(instance_path=tmp_path)
    message = str(refused.value)
    assert variable in message and "\n" not in message


def test_postgres_urls_use_psycopg3():
    assert normalize_database_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_database_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_database_url("sqlite:///x") == "sqlite:///x"


def test_checkpoint_settings_and_the_signing_key_come_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("IWRS_AUDIT_SIGNING_KEY", "cd" * 32)
    monkeypatch.setenv("IWRS_CHECKPOINT_EVERY_EVENTS", "40")
    monkeypatch.setenv("IWRS_CHECKPOINT_EVERY_MINUTES", "5")
    monkeypatch.setenv("IWRS_AUDIT_WITNESS", str(tmp_path / "w.jsonl"))
    settings = Settings.from_env(instance_path=tmp_path)
    assert settings.audit_signing_key == bytes.fromhex("cd" * 32)
    assert settings.checkpoint_every_events == 40
    assert settings.checkpoint_every.total_seconds() == 300
    assert settings.witness_file() == tmp_path / "w.jsonl"
    monkeypatch.setenv("IWRS_CHECKPOINT_EVERY_EVENTS", "many")
    with pytest.raises(ConfigError, match="IWRS_CHECKPOINT_EVERY_EVENTS"):
        Settings.from_env(instance_path=tmp_path)


def test_argon2_costs_default_to_owasp_and_are_settable(monkeypatch, tmp_path):

    defaults = Settings.from_env(instance_path=tmp_path)
    assert (
        defaults.argon2_memory_kib,
        defaults.argon2_time_cost,
        defaults.argon2_parallelism,
    ) == (19 * 1024, 2, 1)
    monkeypatch.setenv("IWRS_ARGON2_MEMORY_KIB", "65536")
    monkeypatch.setenv("IWRS_ARGON2_TIME_COST", "3")
    assert Settings.from_env(instance_path=tmp_path).argon2_memory_kib == 65536
    assert Settings.from_env(instance_path=tmp_path).argon2_time_cost == 3
    monkeypatch.setenv("IWRS_ARGON2_PARALLELISM", "zero")
    with pytest.raises(ConfigError):
        Settings.from_env(instance_path=tmp_path)


def test_lock_and_busy_timeouts_from_the_environment(tmp_path: Path, monkeypatch):
    for var in (
        "IWRS_DB_LOCK_TIMEOUT_MS",
        "IWRS_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS",
        "IWRS_SQLITE_BUSY_TIMEOUT_MS",
    ):
        monkeypatch.delenv(var, raising=False)
    settings = Settings.from_env(instance_path=tmp_path)
    assert (
        settings.db_lock_timeout_ms,
        settings.db_idle_in_transaction_timeout_ms,
        settings.sqlite_busy_timeout_ms,
    ) == (5000, 30000, 5000)
    monkeypatch.setenv("IWRS_DB_LOCK_TIMEOUT_MS", "750")
    monkeypatch.setenv("IWRS_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS", "9000")
    monkeypatch.setenv("IWRS_SQLITE_BUSY_TIMEOUT_MS", "1200")
    settings = Settings.from_env(instance_path=tmp_path)
    assert (
        settings.db_lock_timeout_ms,
        settings.db_idle_in_transaction_timeout_ms,
        settings.sqlite_busy_timeout_ms,
    ) == (750, 9000, 1200)


@pytest.mark.parametrize("value", ["0", "-5", "five"])
def test_a_bad_lock_timeout_is_refused_by_name(tmp_path: Path, monkeypatch, value):
    monkeypatch.setenv("IWRS_DB_LOCK_TIMEOUT_MS", value)
    with pytest.raises(ConfigError, match="IWRS_DB_LOCK_TIMEOUT_MS"):
        Settings.from_env(instance_path=tmp_path)


def test_the_blinding_key_ring_comes_from_the_environment_and_the_key_files(tmp_path, monkeypatch):
    from blinding.sealing import key_id_for
    from iwrs.config import BLINDING_KEYS_DIR, blinding_key_files, key_path, write_key_file

    monkeypatch.setenv("IWRS_BLINDING_KEYS_OTHER", f"{'ab' * 32}, {'cd' * 32}")
    monkeypatch.setenv("IWRS_KEY_REFRESH_SECONDS", "7")
    settings = Settings.from_env(instance_path=tmp_path)
    assert settings.blinding_keys_other == (bytes.fromhex("ab" * 32), bytes.fromhex("cd" * 32))
    assert settings.key_refresh_seconds == 7
    write_key_file(key_path("blinding_key", tmp_path), b"\x01" * 32)
    second = b"\x02" * 32
    write_key_file(tmp_path / BLINDING_KEYS_DIR / f"{key_id_for(second)}.key", second)
    assert blinding_key_files(tmp_path) == [b"\x01" * 32, second]
    with pytest.raises(FileExistsError):  # a key file is never overwritten
        write_key_file(key_path("blinding_key", tmp_path), b"\x03" * 32)
    monkeypatch.setenv("IWRS_BLINDING_KEYS_OTHER", "zz")
    with pytest.raises(ConfigError, match="IWRS_BLINDING_KEYS_OTHER"):
        Settings.from_env(instance_path=tmp_path)
