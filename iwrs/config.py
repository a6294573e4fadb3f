"""Settings from the environment, read in one place: no other module of the application reads
it. `Settings.from_env` reads the settings once, at start; the few functions at the end read
what is looked up when used (the outbox's delivery, the test fail points, CLI diagnostics, how
the `flask` command loads the application).

Every variable is documented in the README's configuration table.
"""

from __future__ import annotations

import os
import secrets
import stat
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import click

# audit_signing_key is the 32-byte Ed25519 seed that signs checkpoints and exports.
KEY_NAMES = ("secret_key", "audit_key", "blinding_key", "audit_signing_key")
_ENV_FOR_KEY = {
    "secret_key": "IWRS_SECRET_KEY",
    "audit_key": "IWRS_AUDIT_KEY",
    "blinding_key": "IWRS_BLINDING_KEY",
    "audit_signing_key": "IWRS_AUDIT_SIGNING_KEY",
}


class ConfigError(RuntimeError):
    """A setting is missing or wrong; the message names it and says how to fix it."""


def default_instance_path() -> Path:
    return Path(os.environ.get("IWRS_INSTANCE_PATH", Path.cwd() / "instance")).resolve()


@dataclass
class Settings:
    """The application's settings; `from_env` is the only place that reads the environment."""

    instance_path: Path
    database_url: str
    protocol_path: Path | None = None
    secret_key: bytes | None = None
    audit_key: bytes | None = None
    blinding_key: bytes | None = None
    # More blinding keys the ring holds (IWRS_BLINDING_KEYS_OTHER: the next key before it is
    # activated, the previous one until it is retired); see iwrs.keyring.
    blinding_keys_other: tuple[bytes, ...] = ()
    # How often (seconds) a server re-reads which blinding key is current (iwrs.keyring).
    key_refresh_seconds: float = 2.0
    audit_signing_key: bytes | None = None
    # A signed checkpoint of the chain head at least every N events or M minutes.
    checkpoint_every_events: int = 500
    checkpoint_every: timedelta = timedelta(minutes=60)
    witness_path: Path | None = None  # default: <instance>/audit-witness.jsonl
    session_idle: timedelta = timedelta(minutes=15)
    # The absolute lifetime of a signed-in session, however active (OWASP ASVS 3.3.2).
    session_max: timedelta = timedelta(hours=12)
    # Wrong e-signatures in a row (by the signed-in owner) that lock the account for lockout_for.
    lockout_after: int = 5
    lockout_for: timedelta = timedelta(minutes=15)
    # Failed password sign-ins in a row (from anyone) that lock password sign-in alone.
    sign_in_lockout_after: int = 20
    token_lifetime: timedelta = timedelta(days=90)
    # Sign-in throttle storage: memory:// for one process; redis://… shared by several.
    ratelimit_storage_url: str = "memory://"
    ratelimit_enabled: bool = True
    # A throttled sign-in is answered after this delay (a tarpit, OWASP's progressive delay), so
    # a client looping sign-ins waits instead of computing; 0 answers at once. At most
    # sign_in_tarpit_max throttled sign-ins wait at once per process, the others are answered at
    # once: keep it below the threads of a worker (iwrs/web/throttle.py).
    sign_in_tarpit_ms: int = 1000
    sign_in_tarpit_max: int = 4
    password_min_length: int = 12
    # Argon2id costs: OWASP Password Storage Cheat Sheet's first recommendation (m = 19 MiB,
    # t = 2, p = 1), about 27 ms per verification on this project's machine. Stored hashes made
    # with other costs are upgraded at the next successful sign-in (check_needs_rehash).
    argon2_memory_kib: int = 19 * 1024
    argon2_time_cost: int = 2
    argon2_parallelism: int = 1
    # Bounded waits (iwrs/locking.py): a request waits at most this long for a row lock
    # (PostgreSQL lock_timeout) or SQLite's write lock (busy timeout), then gets 503 `busy`;
    # a transaction left idle this long (a frozen or stuck process) is ended by PostgreSQL
    # (idle_in_transaction_session_timeout), so its locks are released.
    db_lock_timeout_ms: int = 5000
    db_idle_in_transaction_timeout_ms: int = 30000
    sqlite_busy_timeout_ms: int = 5000
    # Idempotency keys (iwrs.services.idempotency). The lease: how old an `in_progress` claim
    # must be before another request with the key may re-claim it (its request crashed). It must
    # outlast any request that can still commit: longer than the server's worker timeout
    # (gunicorn's 30 s default) and the database's lock and idle-in-transaction timeouts, with a
    # margin; a re-claim never randomizes twice anyway (the subject row lock and "already
    # randomized: the first result"). The wait: how long a concurrent duplicate waits for the
    # first request's outcome before it is answered 409 `in_progress` with Retry-After.
    idempotency_lease: timedelta = timedelta(seconds=120)
    idempotency_wait: timedelta = timedelta(seconds=10)
    # How long a settled key is kept before the worker's idempotency_purge job deletes it: far
    # longer than any client's retry window, so no retry can still meet a purged key.
    idempotency_retention: timedelta = timedelta(days=30)
    testing: bool = False
    secure_cookies: bool = False
    # The mode every page's banner shows: "production" refuses dummy (UAT) randomization lists;
    # "uat", "training" and "demo" (set by `make demo`) allow them.
    environment: str = "production"
    # The worker's schedules (iwrs/worker.py), all in UTC: daily times as HH:MM, intervals as
    # (possibly fractional) minutes or whole seconds.
    resupply_daily_at: str = "06:00"
    resupply_intraday_minutes: float = 360.0
    expiry_at: str = "00:05"
    idempotency_purge_at: str = "00:35"
    checkpoint_minutes: float = 60.0
    notify_seconds: int = 60
    extra: dict[str, object] = field(default_factory=dict)

    @classmethod
    def from_env(cls, *, instance_path: Path | None = None) -> Settings:
        instance = instance_path or default_instance_path()
        url = os.environ.get("IWRS_DATABASE_URL") or f"sqlite:///{instance / 'iwrs.sqlite'}"
        protocol = os.environ.get("IWRS_PROTOCOL")
        settings = cls(
            instance_path=instance,
            database_url=normalize_database_url(url),
            protocol_path=Path(protocol) if protocol else None,
            session_idle=timedelta(minutes=_int_env("IWRS_SESSION_IDLE_MINUTES", 15)),
            session_max=timedelta(hours=_int_env("IWRS_SESSION_MAX_HOURS", 12, "hours")),
            token_lifetime=timedelta(days=_int_env("IWRS_TOKEN_DAYS", 90, "days")),
            ratelimit_storage_url=os.environ.get("IWRS_RATELIMIT_STORAGE_URL") or "memory://",
            ratelimit_enabled=os.environ.get("IWRS_RATELIMIT_ENABLED", "1") != "0",
            sign_in_tarpit_ms=_int_env("IWRS_SIGN_IN_TARPIT_MS", 1000, "milliseconds", minimum=0),
            sign_in_tarpit_max=_int_env("IWRS_SIGN_IN_TARPIT_MAX", 4, "requests"),
            secure_cookies=os.environ.get("IWRS_SECURE_COOKIES", "0") == "1",
            argon2_memory_kib=_int_env("IWRS_ARGON2_MEMORY_KIB", 19 * 1024, "KiB"),
            argon2_time_cost=_int_env("IWRS_ARGON2_TIME_COST", 2, "iterations"),
            argon2_parallelism=_int_env("IWRS_ARGON2_PARALLELISM", 1, "lanes"),
            environment=_environment(),
            db_lock_timeout_ms=_int_env("IWRS_DB_LOCK_TIMEOUT_MS", 5000, "milliseconds"),
            db_idle_in_transaction_timeout_ms=_int_env(
                "IWRS_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS", 30000, "milliseconds"
            ),
            sqlite_busy_timeout_ms=_int_env("IWRS_SQLITE_BUSY_TIMEOUT_MS", 5000, "milliseconds"),
            idempotency_lease=timedelta(
                seconds=_int_env("IWRS_IDEMPOTENCY_LEASE_SECONDS", 120, "seconds")
            ),
            idempotency_wait=timedelta(
                seconds=_int_env("IWRS_IDEMPOTENCY_WAIT_SECONDS", 10, "seconds")
            ),
            idempotency_retention=timedelta(
                days=_int_env("IWRS_IDEMPOTENCY_RETENTION_DAYS", 30, "days")
            ),
            checkpoint_every_events=_int_env("IWRS_CHECKPOINT_EVERY_EVENTS", 500, "events"),
            checkpoint_every=timedelta(minutes=_int_env("IWRS_CHECKPOINT_EVERY_MINUTES", 60)),
            resupply_daily_at=_time_env("IWRS_RESUPPLY_DAILY_AT", "06:00"),
            resupply_intraday_minutes=_minutes_env("IWRS_RESUPPLY_INTRADAY_MINUTES", 360.0),
            expiry_at=_time_env("IWRS_EXPIRY_AT", "00:05"),
            idempotency_purge_at=_time_env("IWRS_IDEMPOTENCY_PURGE_AT", "00:35"),
            checkpoint_minutes=_minutes_env("IWRS_CHECKPOINT_MINUTES", 60.0),
            notify_seconds=_int_env("IWRS_NOTIFY_SECONDS", 60, "seconds"),
            witness_path=Path(os.environ["IWRS_AUDIT_WITNESS"])
            if os.environ.get("IWRS_AUDIT_WITNESS")
            else None,
        )
        for name in KEY_NAMES:
            setattr(settings, name, read_key(name, instance))
        settings.blinding_keys_other = _other_blinding_keys()
        settings.key_refresh_seconds = _int_env("IWRS_KEY_REFRESH_SECONDS", 2, "seconds")
        smtp(), notify_claim_lease()  # read again at each delivery: refused here, at start
        return settings

    def witness_file(self) -> Path:
        """The append-only witness file of signed checkpoints (outside the database)."""
        return self.witness_path or self.instance_path / "audit-witness.jsonl"

    def missing_keys(self) -> list[str]:
        return [name for name in KEY_NAMES if not getattr(self, name)]


ENVIRONMENTS = ("production", "uat", "training", "demo")


def _environment() -> str:
    value = os.environ.get("IWRS_ENVIRONMENT", "production")
    if value not in ENVIRONMENTS:
        raise ConfigError(
            f"IWRS_ENVIRONMENT must be one of {', '.join(ENVIRONMENTS)}, got {value!r}"
        )
    return value


def _int_env(name: str, default: int, unit: str = "minutes", *, minimum: int = 1) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number of {unit}, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be {minimum} or more, got {value}")
    return value


def _time_env(name: str, default: str) -> str:
    """A UTC time of day, HH:MM (24-hour)."""
    raw = os.environ.get(name) or default
    try:
        hour, minute = (int(part) for part in raw.split(":"))
        if not (0 <= hour < 24 and 0 <= minute < 60) or len(raw) != 5:
            raise ValueError(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a UTC time of day HH:MM, got {raw!r}") from None
    return raw


def _minutes_env(name: str, default: float) -> float:
    """A positive number of minutes (fractions allowed: 0.5 is 30 seconds)."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of minutes, got {raw!r}") from None
    if not value > 0:
        raise ConfigError(f"{name} must be greater than 0, got {raw}")
    return value


def normalize_database_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL whichever spelling of the URL was given."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def key_path(name: str, instance: Path) -> Path:
    return instance / f"{name}.key"


def read_key(name: str, instance: Path) -> bytes | None:
    """A key from its environment variable (hex) or its key file under the instance folder."""
    env = os.environ.get(_ENV_FOR_KEY[name])
    if env:
        try:
            key = bytes.fromhex(env.strip())
        except ValueError:
            raise ConfigError(f"{_ENV_FOR_KEY[name]} must be hex (64 hex digits)") from None
        return _check_key_length(key, _ENV_FOR_KEY[name])
    path = key_path(name, instance)
    if not path.exists():
        return None
    try:
        key = bytes.fromhex(path.read_text().strip())
    except ValueError:
        raise ConfigError(f"key file {path} must hold 64 hex digits") from None
    return _check_key_length(key, str(path))


BLINDING_KEYS_DIR = "blinding_keys"


def _other_blinding_keys() -> tuple[bytes, ...]:
    raw = os.environ.get("IWRS_BLINDING_KEYS_OTHER", "")
    keys = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        try:
            key = bytes.fromhex(part)
        except ValueError:
            raise ConfigError(
                "IWRS_BLINDING_KEYS_OTHER must be hex keys, comma-separated"
            ) from None
        keys.append(_check_key_length(key, "IWRS_BLINDING_KEYS_OTHER"))
    return tuple(keys)


def blinding_key_files(instance: Path) -> list[bytes]:
    """Every blinding key in the instance folder: blinding_key.key, then blinding_keys/*.key
    (one key per file, named by its key id; written by `iwrs keys rotate-blinding`)."""
    paths = [key_path("blinding_key", instance)]
    folder = instance / BLINDING_KEYS_DIR
    if folder.is_dir():
        paths += sorted(folder.glob("*.key"))
    keys = []
    for path in paths:
        try:
            text = path.read_text()
        except FileNotFoundError:  # retired (or replaced) between listing and reading
            continue
        try:
            keys.append(_check_key_length(bytes.fromhex(text.strip()), str(path)))
        except ValueError:
            raise ConfigError(f"key file {path} must hold 64 hex digits") from None
    return keys


def write_key_file(path: Path, key: bytes) -> None:
    """A new key file, mode 0600, never overwriting one (FileExistsError)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key.hex() + "\n")


def _check_key_length(key: bytes, where: str) -> bytes:
    if len(key) != 32:
        raise ConfigError(
            f"{where} must hold a 256-bit key (64 hex digits), got {len(key) * 8} bits"
        )
    return key


def create_missing_keys(instance: Path) -> list[Path]:
    """Write a fresh random key file (mode 0600) for each key not given; return what was written."""
    instance.mkdir(parents=True, exist_ok=True)
    os.chmod(instance, stat.S_IRWXU)
    written = []
    for name in KEY_NAMES:
        if os.environ.get(_ENV_FOR_KEY[name]) or key_path(name, instance).exists():
            continue
        path = key_path(name, instance)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
        written.append(path)
    return written


# --- read when used ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Smtp:
    """How the outbox is delivered: by SMTP to `host` (None: to the log)."""

    host: str | None
    port: int
    sender: str


def smtp() -> Smtp:
    """IWRS_SMTP_HOST, IWRS_SMTP_PORT (25) and IWRS_SMTP_FROM (iwrs@localhost), read at each
    delivery. Decision: `Settings.from_env` calls it too, so a malformed port (not a whole
    number from 1 to 65535) stops the application and the worker at start with a ConfigError
    naming IWRS_SMTP_PORT, instead of every delivery raising ValueError."""
    port = _int_env("IWRS_SMTP_PORT", 25, "port number")
    if port > 65535:
        raise ConfigError(f"IWRS_SMTP_PORT must be a port number up to 65535, got {port}")
    return Smtp(
        os.environ.get("IWRS_SMTP_HOST") or None,
        port,
        os.environ.get("IWRS_SMTP_FROM", "iwrs@localhost"),
    )


def notify_claim_lease() -> timedelta:
    """IWRS_NOTIFY_CLAIM_SECONDS (300): how long an outbox claim stands (checked at start too)."""
    return timedelta(seconds=_int_env("IWRS_NOTIFY_CLAIM_SECONDS", 300, "seconds"))


def behind_proxy() -> bool:
    """IWRS_BEHIND_PROXY=1: trust one proxy's X-Forwarded-For/Proto/Host."""
    return os.environ.get("IWRS_BEHIND_PROXY") == "1"


def blinding_key_from_environment() -> bool:
    """Whether the blinding key comes from IWRS_BLINDING_KEY (not from a key file)."""
    return bool(os.environ.get(_ENV_FOR_KEY["blinding_key"]))


def failpoint_armed(name: str) -> tuple[bool, Path | None]:
    """Tests only: whether IWRS_FAILPOINT names the point `name`, and the marker file
    IWRS_FAILPOINT_MARKER to write then (iwrs.locking.failpoint)."""
    marker = os.environ.get("IWRS_FAILPOINT_MARKER")
    return os.environ.get("IWRS_FAILPOINT") == name, Path(marker) if marker else None


def cli_traceback() -> bool:
    """IWRS_CLI_TRACEBACK=1: the CLI shows an unexpected error's traceback."""
    return os.environ.get("IWRS_CLI_TRACEBACK") == "1"


def loaded_for_a_command() -> bool:
    """Whether the `flask` command (FLASK_RUN_FROM_CLI, set by Flask) loads the application for
    one of its commands other than `flask run`: such a command may run without keys (`iwrs init`
    writes them). `flask run` serves requests, so it is held to the same key check as gunicorn."""
    if os.environ.get("FLASK_RUN_FROM_CLI") != "true":
        return False
    command = click.get_current_context(silent=True)
    return command is None or command.info_name != "run"
