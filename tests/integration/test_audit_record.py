"""What `audit.record` stores, field by field, and how the commit hook chains it: the columns of
each event, the refusal of an over-long field, who the actor is, the bookkeeping exemption of the
outbox, the JSON Lines export record. Written against the surviving mutants of
`make mutation-audit` (tests/MUTATION.md)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pytest
from flask import g
from sqlalchemy import func, select, text

from iwrs import audit
from iwrs.audit import GENESIS, Actor, AuditFieldTooLong, AuditMissing, verify_chain
from iwrs.db import engine, read_session, transaction
from iwrs.models import AuditEvent
from iwrs.models.audit import AuditChainHead
from iwrs.models.unblinding import Notification, OutboxState
from tests.integration.test_audit_trail import _drop_append_only_guard

ADMIN = Actor(7, "test-admin", "admin", "session")


def events_after(seq: int) -> list[AuditEvent]:
    read_session().rollback()
    return list(
        read_session().scalars(select(AuditEvent).where(AuditEvent.seq > seq).order_by("seq"))
    )


def last_seq() -> int:
    read_session().rollback()
    return read_session().scalar(select(func.coalesce(func.max(AuditEvent.seq), 0)))


def test_every_field_given_is_stored_as_given(ctx, clock):
    before = last_seq()
    with transaction() as session:
        audit.record(
            session,
            actor=ADMIN,
            action="test.first",
            entity_type="site",
            entity_id=12,
            before={"b": 2, "a": "é"},
            after={"on": date(2026, 1, 2)},
            reason="because",
            site_id=1,
            subject_id=None,
        )
        audit.record(session, actor=Actor.system(), action="test.second", entity_type="kit")
    first, second = events_after(before)
    assert (first.seq, second.seq) == (before + 1, before + 2)
    assert (first.user_id, first.username, first.role, first.auth) == (
        7,
        "test-admin",
        "admin",
        "session",
    )
    assert (first.action, first.entity_type, first.entity_id) == ("test.first", "site", "12")
    assert (first.site_id, first.subject_id, first.reason) == (1, None, "because")
    assert first.before == '{"a":"é","b":2}'
    assert first.after == '{"on":"2026-01-02"}'
    assert first.occurred_at == clock.current
    assert (second.user_id, second.username, second.role, second.auth) == (
        None,
        "system",
        "system",
        "system",
    )
    assert (second.entity_id, second.before, second.after, second.reason) == (None,) * 4
    assert (second.site_id, second.subject_id) == (None, None)


def test_each_event_links_to_the_one_before_and_the_head_to_the_last(ctx, app):
    before = last_seq()
    read_session().rollback()
    head_before = read_session().get(AuditChainHead, 1).hash if before else GENESIS
    with transaction() as session:
        for n in range(3):
            audit.record(session, actor=ADMIN, action=f"test.{n}", entity_type="site")
    events = events_after(before)
    assert [e.action for e in events] == ["test.0", "test.1", "test.2"]
    assert events[0].prev_hash == head_before
    assert [e.prev_hash for e in events[1:]] == [e.hash for e in events[:-1]]
    key = app.extensions["iwrs.settings"].audit_key
    for event in events:
        fields = audit.event_fields(event)
        assert event.hash == audit.event_hash(fields)
        assert event.mac == audit.event_mac(key, event.hash)
    read_session().rollback()
    head = read_session().get(AuditChainHead, 1)
    assert (head.seq, head.hash) == (before + 3, events[-1].hash)
    outcome = verify_chain(read_session())
    assert (outcome.ok, outcome.count) == (True, before + 3)


def test_a_transaction_with_no_event_and_no_change_writes_nothing(ctx):
    before = last_seq()
    with transaction() as session:
        session.get(AuditChainHead, 1)
    assert last_seq() == before


@pytest.mark.parametrize("name", sorted(audit.BOUNDED_FIELDS))
def test_an_over_long_field_is_refused_naming_it_and_nothing_is_written(ctx, name):
    width = audit.BOUNDED_FIELDS[name]
    long = "x" * (width + 1)
    actor = Actor(
        1,
        long if name == "username" else "u",
        long if name == "role" else "admin",
        long if name == "auth" else "session",
    )
    before = last_seq()
    with pytest.raises(AuditFieldTooLong) as refused, transaction() as session:
        audit.record(
            session,
            actor=actor,
            action=long if name == "action" else "test.long",
            entity_type=long if name == "entity_type" else "site",
            entity_id=long if name == "entity_id" else 1,
        )
    assert (refused.value.field, refused.value.width, refused.value.length) == (
        name,
        width,
        width + 1,
    )
    assert last_seq() == before


def test_a_field_exactly_as_long_as_its_column_is_stored(ctx):
    width = audit.BOUNDED_FIELDS["entity_id"]
    before = last_seq()
    with transaction() as session:
        audit.record(
            session, actor=ADMIN, action="test.wide", entity_type="site", entity_id="9" * width
        )
    assert events_after(before)[0].entity_id == "9" * width


def test_the_actor_says_how_the_user_authenticated(app, ctx):
    class User:
        id, username, role = 5, "pat", "pharmacist"

    assert Actor.of(User()) == Actor(5, "pat", "pharmacist", "cli")
    with app.test_request_context("/"):
        assert Actor.of(User()) == Actor(5, "pat", "pharmacist", "session")
        g.api_token_id = 31
        assert Actor.of(User()) == Actor(5, "pat", "pharmacist", "token:31")
    assert Actor.system() == Actor(None, "system", "system", "system")
    assert Actor.system("worker", auth="cli") == Actor(None, "worker", "system", "cli")


def test_canonical_json_is_sorted_compact_and_keeps_none():
    assert audit.canonical_json(None) is None
    assert audit.canonical_json({"b": [1, 2], "a": "ü"}) == '{"a":"ü","b":[1,2]}'
    assert audit.canonical_json({}) == "{}"


def queued(session) -> Notification:  # type: ignore[no-untyped-def]
    return Notification(
        recipient="a@example.org", subject_line="s", body="b", created_at=datetime.now(UTC)
    )


def test_an_outbox_claim_needs_no_event_but_a_delivery_or_other_change_does(ctx):
    with transaction() as session:
        notice = queued(session)
        session.add(notice)
        audit.record(session, actor=ADMIN, action="test.queued", entity_type="notification")
    before = last_seq()
    with transaction() as session:  # a claim: bookkeeping only, every such column at once
        claimed = session.get(Notification, notice.id)
        claimed.state, claimed.claimed_by = OutboxState.SENDING, "host:1"
        claimed.claimed_at = datetime(2026, 1, 2, tzinfo=UTC)
    with transaction() as session:  # and its release
        session.get(Notification, notice.id).state = OutboxState.QUEUED
    with transaction() as session:  # a claim's columns without its state
        session.get(Notification, notice.id).claimed_by = "host:2"
    assert last_seq() == before
    with pytest.raises(AuditMissing), transaction() as session:
        session.get(Notification, notice.id).state = OutboxState.SENT
    with pytest.raises(AuditMissing), transaction() as session:
        session.get(Notification, notice.id).attempts = 3
    with pytest.raises(AuditMissing), transaction() as session:
        session.get(Notification, notice.id).body = "changed"
    read_session().rollback()
    kept = read_session().get(Notification, notice.id)
    assert (kept.state, kept.attempts, kept.body) == (OutboxState.QUEUED, 0, "b")


def test_the_export_line_is_the_event_without_its_mac(ctx):
    before = last_seq()
    with transaction() as session:
        audit.record(session, actor=ADMIN, action="test.export", entity_type="site", reason="é")
    event = events_after(before)[0]
    line = audit.export_line(audit.event_fields(event))
    body = json.loads(line)
    assert set(body) == set(audit.EVENT_FIELDS) - {"mac"}
    assert body["occurred_at"] == event.occurred_at.astimezone(UTC).isoformat(
        timespec="microseconds"
    )
    assert body["hash"] == event.hash and body["reason"] == "é"
    assert "é" in line and list(body) == sorted(body)


def record_three(ctx) -> int:  # type: ignore[no-untyped-def]
    with transaction() as session:
        for n in range(3):
            audit.record(session, actor=ADMIN, action=f"test.{n}", entity_type="site")
    return last_seq()


def test_the_server_finds_a_trail_rehashed_without_its_key(ctx):
    last = record_three(ctx)
    rows = [audit.event_fields(e) for e in events_after(0)]
    with engine().begin() as connection:
        _drop_append_only_guard(connection)
        prev = rows[last - 3]["prev_hash"]
        for fields in rows[last - 3 :]:  # rewrite the last three, every hash recomputed
            fields = {**fields, "reason": "rewritten", "prev_hash": prev}
            prev = audit.event_hash(fields)
            connection.execute(
                text(
                    "UPDATE audit_event SET reason = :r, prev_hash = :p, hash = :h WHERE seq = :s"
                ),
                {"r": "rewritten", "p": fields["prev_hash"], "h": prev, "s": fields["seq"]},
            )
        connection.execute(text("UPDATE audit_chain_head SET hash = :h WHERE id = 1"), {"h": prev})
    read_session().rollback()
    outcome = verify_chain(read_session())
    assert (outcome.ok, outcome.kind, outcome.first_bad_seq) == (False, "mac", last - 2)


def test_the_server_finds_the_last_events_cut_off(ctx):
    last = record_three(ctx)
    with engine().begin() as connection:
        _drop_append_only_guard(connection)
        connection.execute(text("DELETE FROM audit_event WHERE seq = :s"), {"s": last})
    read_session().rollback()
    outcome = verify_chain(read_session())
    assert (outcome.ok, outcome.kind, outcome.first_bad_seq) == (False, "missing", last)
