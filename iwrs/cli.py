"""The `iwrs` Flask command group: set-up and operations (`flask --app wsgi iwrs …`)."""

from __future__ import annotations

import functools
import getpass
import secrets
from collections.abc import Callable
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import AppGroup
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from iwrs import config, db, validation
from iwrs.audit import Actor
from iwrs.audit_anchor import load_public_key, public_key, public_key_pem, take_checkpoint
from iwrs.config import KEY_NAMES, ConfigError, create_missing_keys, read_key
from iwrs.demo import seed_demo_trial
from iwrs.errors import IWRSError
from iwrs.models.users import Role, User
from iwrs.protocol import ProtocolError
from iwrs.services import trial, users
from iwrs.uploads import MAX_UPLOAD_BYTES, decode_text


class CLIError(click.ClickException):
    """One line on stderr, `error: <field>: <message> (<rule>)`, and exit status 1."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.message}", err=True)


def one_line(error: BaseException) -> str:
    """The message of any refusal as one line naming the field and the rule, when known."""
    if isinstance(error, IWRSError):
        message = error.message
        if error.field and not message.startswith(error.field):
            message = f"{error.field}: {message}"
        message += f" ({error.rule})" if error.rule else ""
    elif isinstance(error, click.UsageError):
        message = f"{error.format_message()} (usage)"
    elif isinstance(error, click.ClickException):
        message = error.format_message()
    elif isinstance(error, OSError):
        message = f"{error.filename or 'file'}: {error.strerror or error} (file)"
    else:
        message = f"{error}"
    return " ".join(message.split())


class IWRSGroup(AppGroup):
    """The `iwrs` group: every error of every sub-command ends in one line and status 1, never
    a traceback (an unexpected error names its type; IWRS_CLI_TRACEBACK=1 shows the traceback)."""

    def invoke(self, ctx: click.Context) -> Any:

        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort, SystemExit, KeyboardInterrupt):
            raise
        except CLIError:
            raise
        except (IWRSError, ProtocolError, ConfigError, click.ClickException, OSError) as error:
            usage = isinstance(error, click.UsageError)  # click's convention: status 2
            raise CLIError(one_line(error), 2 if usage else 1) from None
        except OperationalError as error:
            url = _safe_url(current_app.extensions["iwrs.settings"].database_url)
            reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
            raise CLIError(f"cannot use the database at {url}: {reason}") from None
        except Exception as error:
            if config.cli_traceback():
                raise
            raise CLIError(
                f"unexpected {type(error).__name__}: {one_line(error)}; set "
                "IWRS_CLI_TRACEBACK=1 for the traceback (internal)"
            ) from None


iwrs_cli = IWRSGroup("iwrs", help="IWRS set-up and operations.")
user_cli = AppGroup("user", help="Accounts: create, list, assign sites, deactivate.")
audit_cli = AppGroup("audit", help="The audit trail.")
kits_cli = AppGroup("kits", help="Blinded kit lists: generate, import.")
supply_cli = AppGroup("supply", help="Drug supply operations: expiry, resupply, ledger check.")
keys_cli = AppGroup("keys", help="Key management.")
for group in (user_cli, audit_cli, kits_cli, supply_cli, keys_cli):
    iwrs_cli.add_command(group)

DEMO_USERS = [
    ("dr.li", "Dr Li Wei", Role.INVESTIGATOR, ["CN01"]),
    ("dr.zhang", "Dr Zhang Min", Role.INVESTIGATOR, ["CN02"]),
    ("dr.wu", "Dr Wu Tao", Role.INVESTIGATOR, ["CN03"]),
    ("dr.he", "Dr He Ping", Role.INVESTIGATOR, ["CN04"]),
    ("ph.wang", "Wang Fang (pharmacist)", Role.PHARMACIST, ["CN01"]),
    ("ph.zhou", "Zhou Jing (pharmacist)", Role.PHARMACIST, ["CN02"]),
    ("ph.sun", "Sun Hui (pharmacist)", Role.PHARMACIST, ["CN03"]),
    ("ph.ma", "Ma Lin (pharmacist)", Role.PHARMACIST, ["CN04"]),
    ("supply.chen", "Chen Jie (supply manager)", Role.SUPPLY_MANAGER, []),
    ("stat.liu", "Liu Yang (unblinded statistician)", Role.UNBLINDED_STATISTICIAN, []),
    ("audit.zhao", "Zhao Lei (auditor)", Role.AUDITOR, []),
    ("admin", "Trial administrator", Role.ADMIN, []),
]


def cli_actor() -> Actor:
    return Actor.system(f"cli:{getpass.getuser()}", auth="cli")


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def friendly_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """One clear line instead of a traceback for every refusal a command can meet."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (IWRSError, ProtocolError, ConfigError) as error:
            raise CLIError(one_line(error)) from None
        except OperationalError as error:
            url = _safe_url(current_app.extensions["iwrs.settings"].database_url)
            reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
            raise CLIError(f"cannot use the database at {url}: {reason}") from None

    return wrapper


def _run_job(name: str) -> Any:
    """One forced run of a worker job (iwrs/jobs.py) as the CLI user: the same code, lease and
    `job.ran` event as `iwrs worker`; refused when another process is running the job."""
    from iwrs.worker import run_once

    outcome = run_once(name, None, cli_actor())
    if outcome.state == "busy":
        raise click.ClickException(f"job {name} is running in another process; try again later")
    return outcome


def _require_keys() -> None:
    missing = current_app.extensions["iwrs.settings"].missing_keys()
    if missing:
        raise click.ClickException(
            f"missing key(s) {', '.join(missing)}: run "
            "`flask --app wsgi iwrs init` first or set the "
            "IWRS_*_KEY environment variables"
        )


@iwrs_cli.command("init")
@friendly_errors
def init_command() -> None:
    """Create missing keys, migrate the database, load the protocol (sites, depot)."""
    settings = current_app.extensions["iwrs.settings"]
    for path in create_missing_keys(settings.instance_path):
        click.echo(f"created key file {path} (mode 0600): keep it out of backups of the database")
    for name in KEY_NAMES:
        if getattr(settings, name) is None:
            setattr(settings, name, read_key(name, settings.instance_path))
    current_app.config["SECRET_KEY"] = settings.secret_key
    db.upgrade_schema(db.engine(), blinding_key=settings.blinding_key)
    click.echo(f"database schema up to date at {_safe_url(settings.database_url)}")
    protocol = current_app.extensions["iwrs.protocol"]
    for change in trial.load_protocol(actor=cli_actor(), protocol=protocol):
        click.echo(f"loaded {change}")
    from iwrs.services import stratum_tallies

    counted = stratum_tallies.fill_missing(cli_actor())  # a list from before migration 0021
    if counted:
        click.echo(f"counted the used slots of {counted} strata (the statistician's tallies)")
    click.echo(f"trial {protocol.study_id} ready (protocol file {protocol.source})")


@iwrs_cli.command("demo")
@friendly_errors
def demo_command() -> None:
    """Seed the demo trial: one user per role, and print their sign-ins."""
    _require_keys()
    settings = current_app.extensions["iwrs.settings"]
    settings.instance_path.mkdir(parents=True, exist_ok=True)
    credentials = settings.instance_path / "demo-sign-ins.txt"
    existing = set(db.read_session().scalars(select(User.username)))
    lines, passwords = [], {}
    for username, name, role, sites in DEMO_USERS:
        if username in existing:
            continue
        password = passwords[username] = "-".join(secrets.token_hex(3) for _ in range(3))
        users.create_user(
            actor=cli_actor(),
            username=username,
            full_name=name,
            role=role.value,
            password=password,
            site_codes=sites,
        )
        lines.append(
            f"{role.value:24} {username:12} {password}   sites: {', '.join(sites) or 'all'}"
        )
    if lines:
        with open(credentials, "a") as handle:
            handle.write("\n".join(lines) + "\n")
        credentials.chmod(0o600)
    if len(passwords) == len(DEMO_USERS):  # a fresh demo: seed the trial's activity too
        for line in seed_demo_trial(passwords):
            click.echo(line)
    click.echo(f"Demo sign-ins (also in {credentials}):")
    click.echo(credentials.read_text() if credentials.exists() else "(none recorded)")


@iwrs_cli.command("check")
@friendly_errors
def check_command() -> None:
    """Self-check: keys, database, schema version, protocol file."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    settings = current_app.extensions["iwrs.settings"]
    problems = [f"missing key: {name}" for name in settings.missing_keys()]
    protocol = current_app.extensions["iwrs.protocol"]
    click.echo(f"protocol: {protocol.study_id} {protocol.version} from {protocol.source}")
    with db.engine().connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    head = ScriptDirectory.from_config(
        db.migrations_config(settings.database_url)
    ).get_current_head()
    click.echo(
        f"database: {_safe_url(settings.database_url)} at revision {current} (newest {head})"
    )
    if current != head:
        problems.append("database schema is not up to date: run `flask --app wsgi iwrs init`")
    else:
        _echo_jobs()
    for problem in problems:
        click.echo(f"PROBLEM: {problem}", err=True)
    if problems:
        raise SystemExit(1)
    click.echo("OK")


def _echo_jobs() -> None:
    """Each worker job's last run and the outbox's oldest waiting message (is a worker up?)."""
    from sqlalchemy import func

    from iwrs.models import JobLease, Notification, OutboxState

    reader = db.read_session()
    for lease in reader.scalars(select(JobLease).order_by(JobLease.job)):
        last = (
            f"last ran {lease.last_run_at.isoformat(timespec='seconds')} by {lease.last_worker}"
            if lease.last_run_at
            else "never run"
        )
        click.echo(f"job {lease.job}: {last}")
    waiting, oldest = reader.execute(
        select(func.count(), func.min(Notification.created_at)).where(
            Notification.state != OutboxState.SENT
        )
    ).one()
    if waiting:
        click.echo(f"outbox: {waiting} message(s) waiting since {oldest} (is `iwrs worker` up?)")


@user_cli.command("create")
@click.option("--username", required=True)
@click.option("--full-name", required=True)
@click.option("--role", required=True, type=click.Choice([r.value for r in Role]))
@click.option("--site", "sites", multiple=True, help="site code (investigators, pharmacists)")
@click.option("--email", help="without --password, the temporary password is sent here")
@click.option("--password", help="a temporary password (prompted when neither it nor --email)")
@friendly_errors
def user_create(
    username: str,
    full_name: str,
    role: str,
    sites: tuple[str, ...],
    email: str | None,
    password: str | None,
) -> None:
    """Create a user with one role; the password is temporary (changed at the first sign-in).

    An unblinded statistician is created directly only while no active unblinded user exists
    (the bootstrap); afterwards this files a request that an unblinded statistician approves."""
    _require_keys()
    from iwrs.services import unblinded_access

    if role == Role.UNBLINDED_STATISTICIAN and unblinded_access.active_unblinded_users(
        actor=cli_actor()
    ):
        request = unblinded_access.request_unblinded_account(
            actor=cli_actor(), username=username, full_name=full_name, email=email or ""
        )
        click.echo(
            f"filed request {request.id} for {request.username}: an active unblinded "
            "statistician must approve it; the temporary password then goes to its e-mail"
        )
        return
    if password is None and not email:
        password = click.prompt("temporary password", hide_input=True, confirmation_prompt=True)
    user = users.create_user(
        actor=cli_actor(),
        username=username,
        full_name=full_name,
        role=role,
        password=password,
        temporary=True,
        email=email,
        site_codes=sites,
    )
    click.echo(f"created {user.username} ({user.role.label}); password to change at sign-in")


@user_cli.command("list")
@friendly_errors
def user_list() -> None:
    """List users with role, sites and status."""
    from iwrs.services import queries

    for user in queries.all_users(actor=cli_actor()):
        sites = ",".join(user.site_codes) if user.role.site_scoped else "all"
        click.echo(
            f"{user.username:16} {user.role.value:24} {sites:12} "
            f"{'active' if user.active else 'inactive'}"
        )


def _user_id(username: str) -> int:
    user_id = (
        db.read_session().scalars(select(User.id).where(User.username == username.lower())).first()
    )
    if user_id is None:
        raise click.ClickException(f"no user named {username!r}")
    return user_id


@user_cli.command("assign-sites")
@click.argument("username")
@click.option("--site", "sites", multiple=True, required=True)
@friendly_errors
def user_assign_sites(username: str, sites: tuple[str, ...]) -> None:
    """Replace an investigator's or pharmacist's sites."""
    _require_keys()
    users.assign_sites(actor=cli_actor(), user_id=_user_id(username), site_codes=sites)
    click.echo(f"{username}: sites {', '.join(sites)}")


@user_cli.command("deactivate")
@click.argument("username")
@click.option("--reason", required=True)
@click.option("--as", "admin_username", required=True, help="the admin who signs")
@click.option("--understood", is_flag=True, help="confirm that a deactivation cannot be undone")
@friendly_errors
def user_deactivate(username: str, reason: str, admin_username: str, understood: bool) -> None:
    """Deactivate a user (never deleted); the admin signs with their password. Without
    --understood the service refuses (field understood, rule required), as a page unticked."""
    _require_keys()
    admin = db.read_session().get(User, _user_id(admin_username))
    if admin is None or admin.role != Role.ADMIN:
        raise click.ClickException(f"{admin_username!r} is not an admin")
    password = click.prompt(f"password of {admin.username} (electronic signature)", hide_input=True)
    users.deactivate_user(
        actor=Actor.of(admin),
        user_id=_user_id(username),
        reason=reason,
        signer_password=password,
        understood=understood,
    )
    click.echo(f"{username} deactivated")


@user_cli.command("set-password")
@click.argument("username")
@click.password_option()
@friendly_errors
def user_set_password(username: str, password: str) -> None:
    """Set a temporary password (the user must change it at sign-in; it cannot sign); unlocks."""
    _require_keys()
    from iwrs.services import passwords

    passwords.set_password(actor=cli_actor(), user_id=_user_id(username), new_password=password)
    click.echo(f"temporary password set for {username}")


@audit_cli.command("verify")
@click.option("--record", is_flag=True, help="record the result (the page's last full walk)")
@friendly_errors
def audit_verify(record: bool) -> None:
    """Walk the whole chain and check it against every signed checkpoint (database and witness
    file); one line per problem and exit 1 on any. Run with --record from cron."""
    from iwrs.services import audit_views

    _require_keys()
    reader = current_app.extensions["iwrs.sessionmaker"]()
    try:
        result, problems = audit_views.walk(reader, full=True)
    finally:
        reader.close()
    for problem in problems:
        click.echo(f"FAILED {problem}")
    if not problems:
        click.echo(str(result))
    if record:
        audit_views.record_verification(
            actor=cli_actor(), result=result, problems=problems, full=True
        )
        anchor = take_checkpoint(occasion="verify")
        click.echo(f"recorded; checkpoint signed at event {anchor.seq}")
    if problems:
        raise SystemExit(1)


@audit_cli.command("checkpoint")
@friendly_errors
def audit_checkpoint() -> None:
    """Sign the chain head now (database and witness file); run from cron every M minutes."""
    _require_keys()
    anchor = _run_job("checkpoint").summary["checkpoint"]
    click.echo(f"checkpoint signed at event {anchor['seq']} ({anchor['hash']})")


@audit_cli.command("public-key")
@friendly_errors
def audit_public_key() -> None:
    """Print the Ed25519 public key (PEM) that verifies exports and checkpoints."""
    _require_keys()
    click.echo(public_key_pem(), nl=False)


@audit_cli.command("reconcile")
@friendly_errors
def audit_reconcile() -> None:
    """Rebuild users, subjects, randomizations, unblindings and kits from the trail and report
    every live row it does not explain (one line each; exit 1 on any)."""
    from iwrs.services import reconcile

    _require_keys()
    db.long_report(db.read_session())
    problems = reconcile.reconcile(actor=cli_actor())
    for problem in problems:
        click.echo(f"UNEXPLAINED {problem}")
    if problems:
        raise SystemExit(1)
    click.echo("OK: every user, subject, randomization, unblinding and kit row is explained")


@kits_cli.command("generate")
@click.option("--kit-type", required=True)
@click.option("--lot", required=True, help="blinded packaging lot code")
@click.option("--expiry", required=True, help="the lot's expiry date, YYYY-MM-DD")
@click.option("--count", required=True, type=int, help="kits in all, split by the ratio")
@click.option("--seed-hex", help="64 hex digits; default: a fresh random seed (printed)")
@click.option(
    "--kit-numbers",
    default="kit-numbers-v1",
    show_default=True,
    help="number scheme: kit-numbers-v1 (7 digits, 900,000 numbers) or kit-numbers-v2 "
    "(9 digits, 90,000,000); recorded on the lot",
)
@friendly_errors
def kits_generate(  # type: ignore[no-untyped-def]
    kit_type: str, lot: str, expiry, count: int, seed_hex: str | None, kit_numbers: str
) -> None:
    """Generate a blinded kit list at the depot (numbers carry no pattern by treatment)."""
    from iwrs.services import supply

    _require_keys()
    seed = (
        validation.hex_bytes(seed_hex, field="--seed-hex", length=32)
        if seed_hex is not None
        else secrets.token_bytes(32)
    )
    made = supply.generate_kits(
        actor=cli_actor(),
        kit_type=kit_type,
        lot=lot,
        expiry_date=validation.iso_date(expiry, field="--expiry"),
        count=count,
        seed=seed,
        kit_numbers=kit_numbers,
    )
    click.echo(
        f"generated {made.kits} kits in lot {lot} at the depot (seed {seed.hex()}: keep it "
        "with the unblinded records)"
    )


@kits_cli.command("import")
@click.argument("csv_file", type=click.File("rb"))
@click.option(
    "--mapping",
    "mapping_file",
    type=click.File("rb"),
    help='a JSON column mapping for the vendor\'s own layout: {"columns": {"kit_number": '
    'COLUMN, …}, "kit_types": {RAW: CODE}, "treatments": {RAW: CODE}, '
    '"expiry_format": "DD/MM/YYYY"} (blinding/kit_mapping.py)',
)
@friendly_errors
def kits_import(csv_file, mapping_file) -> None:  # type: ignore[no-untyped-def]
    """Import a packaging vendor's kit list (kit_number,kit_type,treatment,lot,expiry, or any
    layout through --mapping)."""
    from blinding import ranks
    from blinding.kit_mapping import KitListMapping
    from iwrs.services import supply

    _require_keys()
    text = decode_text(csv_file.read(MAX_UPLOAD_BYTES + 1), field="CSV_FILE")
    mapping = None
    if mapping_file is not None:
        try:
            mapping = KitListMapping.from_json(decode_text(mapping_file.read(), field="MAPPING"))
        except ValueError as error:
            raise click.ClickException(f"--mapping: {error}") from None
    report = supply.import_kits(actor=cli_actor(), csv_text=text, mapping=mapping)
    click.echo(f"imported {report.kits} kits in lot(s) {', '.join(report.lots)}")
    click.echo(
        f"kit numbers by treatment: rank test p = {report.rank_p_value:.4g}"
        + (
            f" - WARNING: below {ranks.ALPHA}, the kit numbers may tell the treatment; ask the "
            "vendor how they were assigned before shipping any kit"
            if report.rank_warning
            else " (no pattern found)"
        )
    )


@supply_cli.command("expire")
@friendly_errors
def supply_expire() -> None:
    """The daily expiry run: expire every kit past its lot's expiry (the worker's expiry job)."""
    _require_keys()
    expired = _run_job("expiry").summary.get("expired", [])
    click.echo(f"{len(expired)} kit(s) expired" + (f": {', '.join(expired)}" if expired else ""))


@supply_cli.command("resupply")
@click.option(
    "--slot",
    type=click.Choice(["daily", "intraday"]),
    default="daily",
    show_default=True,
    help="which scheduled run this is (recorded with every request it makes)",
)
@friendly_errors
def supply_resupply(slot: str) -> None:
    """The scheduled resupply run over every active site, recorded as the system's.

    Run it from cron at fixed times only, e.g. `0 6 * * *` with --slot daily and
    `0 13 * * *` with --slot intraday: resupply never runs inside a randomization or a
    dispensing, so a shipment's timing does not follow any subject's arm."""
    _require_keys()
    made = _run_job(f"resupply_{slot}").summary.get("requested", [])
    click.echo("\n".join(f"requested {m}" for m in made) or "no site needs resupply")


@supply_cli.command("check-ledger")
@friendly_errors
def supply_check_ledger() -> None:
    """Replay the kit ledger and reconcile every site; exit 1 on any difference."""
    from iwrs.services import accountability, kit_counts

    db.long_report(db.read_session())
    events, problems = accountability.ledger_problems(actor=cli_actor())
    for kit, problem in problems:
        click.echo(f"MISMATCH kit {kit}: {problem}")
    summary = kit_counts.mismatches(actor=cli_actor())
    for (kind, place, lot, state), kept, fresh in summary:
        click.echo(
            f"MISMATCH kit_count {kind} {place} lot {lot} {state}: summary {kept}, kits {fresh}"
        )
    rec = accountability.reconciliation(actor=cli_actor())
    click.echo(
        f"ledger: {events} kit events replayed; "
        + ("every kit matches" if not problems else f"{len(problems)} problem(s)")
    )
    click.echo(
        "kit_count summary: "
        + ("matches the kits" if not summary else f"{len(summary)} mismatch(es)")
    )
    click.echo(
        "reconciliation: "
        + ("balanced" if rec.balanced else f"DIFFERENCES: {', '.join(rec.differences)}")
    )
    if problems or summary or not rec.balanced:
        raise SystemExit(1)


@iwrs_cli.command("purge-idempotency-keys")
@friendly_errors
def purge_idempotency_keys_command() -> None:
    """Delete idempotency keys older than IWRS_IDEMPOTENCY_RETENTION_DAYS (the worker's daily
    idempotency_purge job)."""
    click.echo(f"{_run_job('idempotency_purge').summary.get('purged', 0)} key(s) purged")


@iwrs_cli.command("send-notifications")
@friendly_errors
def send_notifications_command() -> None:
    """Send the notification outbox (SMTP when IWRS_SMTP_HOST is set, the log otherwise)."""
    _require_keys()
    click.echo(f"{_run_job('notify').summary.get('sent', 0)} notification(s) sent")


@audit_cli.command("verify-export")
@click.argument("export_file", type=click.File("rb"))
@click.option(
    "--public-key",
    "key_file",
    type=click.File("rb"),
    help="the PEM public key (GET /audit/public-key); default: this instance's key",
)
def audit_verify_export(export_file, key_file) -> None:  # type: ignore[no-untyped-def]
    """Verify a signed export (JSON Lines, or the CSV package: the ZIP of the CSV and its signed
    manifest) with the public key alone; exit 1 if forged."""
    from iwrs.audit_export import verify_export

    try:
        key = load_public_key(key_file.read()) if key_file else public_key()
    except (ValueError, RuntimeError) as error:
        raise click.ClickException(f"--public-key: {error}") from None
    result = verify_export(export_file.read(), key)
    click.echo(str(result))
    if not result.ok:
        raise SystemExit(1)


def init_app(app: Flask) -> None:
    from iwrs import cli_keys  # noqa: F401 - registers the `iwrs keys …` commands
    from iwrs.worker import register

    register(iwrs_cli)
    app.cli.add_command(iwrs_cli)
