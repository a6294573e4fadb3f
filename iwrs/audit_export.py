"""Signed audit exports (JSON Lines and CSV) and their verification with the public key alone.

A JSON Lines export is one header line, then the event lines. A CSV export is a ZIP of two
files: "audit-trail.csv", a plain CSV whose first line is the column names (a spreadsheet opens
it as it is), and "audit-trail.manifest.json", the same signed header as a separate file.
(Decision, issue 15 problem 12: a "# {json}" first line broke spreadsheets; a response header
would be lost on saving and is size-limited; the ZIP keeps the pair together in one download. A
CSV export of the earlier form, header line first, still verifies.) The header names the format,
the kind, the filter (and whether there is one), the seq range, the count, the SHA-256 of the
event lines as written, the chain head the export ends on, the checkpoint signed at the export
and every signed checkpoint inside the range; an Ed25519 signature covers the canonical JSON of
the header without its `signature`. So an altered, dropped, swapped or appended line, a changed
header, a fabricated export or one re-signed with another key all fail `verify_export`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from iwrs.audit import event_hash
from iwrs.audit_anchor import Problem, canonical, checkpoint_message, sign, signature_holds
from iwrs.csv_export import dicts_csv, original

EXPORT_FORMAT = "iwrs-audit-export/2"
PACKAGE_CSV = "audit-trail.csv"
PACKAGE_MANIFEST = "audit-trail.manifest.json"
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed: the same export packs to the same bytes
EXPORT_PROCEDURE = (
    "Take the public key from GET /audit/public-key. The header (JSON Lines: the first line; CSV: "
    "the file audit-trail.manifest.json beside audit-trail.csv in the ZIP) is JSON; its signature "
    "is Ed25519 over the canonical JSON (sorted keys, separators ',' and "
    "':', UTF-8, no ASCII escaping) of the header without 'signature'. SHA-256 of every byte "
    "after the header line (CSV: of audit-trail.csv) equals events_sha256; the event lines (CSV: "
    "rows after the column names) number count, their seq "
    "strictly increase from first_seq to last_seq, and when filtered is false they run 1..last_seq "
    "without a gap and the last hash is chain_head.hash. In JSON Lines each event's hash is "
    "SHA-256 of the canonical JSON of its fields seq, occurred_at (ISO 8601 UTC, microseconds), "
    "user_id, username, role, action, entity_type, entity_id, site_id, subject_id, before, after, "
    "reason, prev_hash, and auth when it is not null; consecutive seqs link by prev_hash. "
    "Each checkpoint's signature covers {format, seq, hash, signed_at}; an exported event at a "
    "checkpoint's seq has its hash. CSV rows end in CRLF (RFC 4180); a cell that would begin "
    "with = + - @ TAB CR or ' is written with one ' in front (spreadsheet formula injection): "
    "drop one leading ' from a cell that begins with one to read its value. "
    "`flask --app wsgi iwrs audit verify-export FILE --public-key KEY.pem` does exactly this."
)


def signed_header(header: dict[str, Any], body: str) -> dict[str, Any]:
    """The header with the body's digest and the server's signature added."""
    unsigned = {
        **header,
        "format": EXPORT_FORMAT,
        "events_sha256": hashlib.sha256(body.encode()).hexdigest(),
        "procedure": EXPORT_PROCEDURE,
    }
    return {**unsigned, "signature": sign(unsigned)}


def render(
    header: dict[str, Any], lines: list[str], kind: str, columns: tuple[str, ...]
) -> str | bytes:
    """The whole export: JSON Lines (signed header line, then the events) as text, or the CSV
    package (a ZIP of the plain CSV and its signed manifest) as bytes."""
    if kind == "jsonl":
        body = "".join(f"{line}\n" for line in lines)
        return json.dumps(signed_header(header, body), sort_keys=True) + "\n" + body
    # Cells are neutralised (iwrs/csv_export.py) before the digest: it covers the bytes written.
    body = dicts_csv(columns, (json.loads(line) for line in lines))
    manifest = json.dumps(signed_header(header, body), sort_keys=True, indent=2) + "\n"
    package = io.BytesIO()
    with zipfile.ZipFile(package, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in ((PACKAGE_CSV, body), (PACKAGE_MANIFEST, manifest)):
            archive.writestr(zipfile.ZipInfo(name, date_time=ZIP_TIME), text.encode("utf-8"))
    return package.getvalue()


def package_files(data: bytes) -> tuple[str, str]:
    """(the CSV, the manifest) of a CSV package; ValueError if it is not one."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return (
                archive.read(PACKAGE_CSV).decode("utf-8"),
                archive.read(PACKAGE_MANIFEST).decode("utf-8"),
            )
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError) as error:
        raise ValueError(f"not an audit CSV package ({error})") from None


@dataclass
class ExportCheck:
    """The outcome of verifying an export: OK with the count, or every problem found."""

    count: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def fail(self, code: str, detail: str, seq: int | None = None) -> ExportCheck:
        self.problems.append(Problem(code, seq, detail))
        return self

    def __str__(self) -> str:
        if self.ok:
            return f"OK: {self.count} exported events verified, signature valid"
        return "\n".join(f"FAILED {p}" for p in self.problems)


def verify_export(content: str | bytes, key: Ed25519PublicKey) -> ExportCheck:
    """Check a JSON Lines export, a CSV package (ZIP) or an earlier CSV export (header line
    first) with the public key alone (no database, no secret)."""
    if isinstance(content, bytes):
        if content.startswith(b"PK"):
            try:
                body, manifest = package_files(content)
            except ValueError as error:
                return ExportCheck().fail("package", str(error))
            return _verify(manifest, body, "csv", key)
        try:
            content = content.decode("utf-8")
        except UnicodeDecodeError:
            return ExportCheck().fail("header", "the export is not UTF-8 text")
    first, _, body = content.partition("\n")
    kind = "csv" if first.startswith("# ") else "jsonl"
    return _verify(first[2:] if kind == "csv" else first, body, kind, key)


def _verify(head: str, body: str, kind: str, key: Ed25519PublicKey) -> ExportCheck:
    check = ExportCheck()
    try:
        header = json.loads(head)
        assert isinstance(header, dict)
        unsigned = {k: v for k, v in header.items() if k != "signature"}
        canonical(unsigned)
    except (ValueError, AssertionError, TypeError):
        return check.fail("header", "the header (or manifest) is not a JSON export header")
    if header.get("format") != EXPORT_FORMAT:
        return check.fail("format", f"the header does not name {EXPORT_FORMAT}")
    if not signature_holds(key, unsigned, header.get("signature", "")):
        return check.fail("signature", "the header's signature does not verify with this key")
    if hashlib.sha256(body.encode()).hexdigest() != header.get("events_sha256"):
        check.fail("digest", "the event lines do not match the signed digest")
    try:
        events = _events(body, kind)
    except (ValueError, KeyError, TypeError) as error:
        return check.fail("event", f"an event line cannot be read: {error}")
    check.count = len(events)
    _check_sequence(check, header, events)
    if kind == "jsonl":
        _check_hashes(check, events)
    _check_checkpoints(check, header, key, {e["seq"]: e["hash"] for e in events})
    return check


def _events(body: str, kind: str) -> list[dict[str, Any]]:
    if kind == "jsonl":
        events = [json.loads(line) for line in body.splitlines()]
    else:
        events = [
            {name: original(cell) if isinstance(cell, str) else cell for name, cell in row.items()}
            for row in csv.DictReader(io.StringIO(body))
        ]
    for fields in events:
        fields["seq"] = int(fields["seq"])
    return events


def _check_sequence(
    check: ExportCheck, header: dict[str, Any], events: list[dict[str, Any]]
) -> None:
    if len(events) != header.get("count"):
        check.fail(
            "count", f"the header signs {header.get('count')} events, the file holds {len(events)}"
        )
    seqs = [e["seq"] for e in events]
    for earlier, later in zip(seqs, seqs[1:], strict=False):
        if later <= earlier:
            check.fail("order", f"event {later} follows event {earlier}", later)
            break
    if seqs and (seqs[0] != header.get("first_seq") or seqs[-1] != header.get("last_seq")):
        check.fail("range", "the events do not span the signed first_seq..last_seq")
    if header.get("filtered") is False:
        expected = list(range(1, len(seqs) + 1))
        if seqs != expected:
            gap = next((n for n, s in zip(expected, seqs, strict=False) if n != s), len(seqs) + 1)
            check.fail("gap", f"a full export misses event {gap}", gap)
        head = header.get("chain_head") or {}
        last = (seqs[-1], events[-1]["hash"]) if events else (0, "0" * 64)
        if last != (head.get("seq"), head.get("hash")):
            check.fail("head", "a full export does not end on the signed chain head")


def _check_hashes(check: ExportCheck, events: list[dict[str, Any]]) -> None:
    previous: dict[str, Any] | None = None
    for fields in events:
        try:
            computed = event_hash(
                {**fields, "occurred_at": datetime.fromisoformat(fields["occurred_at"])}
            )
        except (ValueError, KeyError, TypeError):
            computed = None
        if computed != fields.get("hash"):
            check.fail(
                "hash", f"event {fields['seq']} does not match its hash (altered)", fields["seq"]
            )
        elif (
            previous
            and fields["seq"] == previous["seq"] + 1
            and fields["prev_hash"] != previous["hash"]
        ):
            check.fail(
                "link",
                f"event {fields['seq']}'s link to event {previous['seq']} is broken",
                fields["seq"],
            )
        previous = fields


def _check_checkpoints(
    check: ExportCheck, header: dict[str, Any], key: Ed25519PublicKey, hashes: dict[int, str]
) -> None:
    for entry in [header.get("checkpoint"), *(header.get("checkpoints") or [])]:
        if entry is None:
            continue
        try:
            message = checkpoint_message(
                int(entry["seq"]), str(entry["hash"]), str(entry["signed_at"])
            )
            holds = signature_holds(key, message, entry["signature"])
        except (KeyError, TypeError, ValueError):
            holds = False
        if not holds:
            check.fail("checkpoint", "a checkpoint in the header is not signed by this key")
        elif message["seq"] in hashes and hashes[message["seq"]] != message["hash"]:
            check.fail(
                "checkpoint",
                f"event {message['seq']} differs from its signed checkpoint",
                message["seq"],
            )
