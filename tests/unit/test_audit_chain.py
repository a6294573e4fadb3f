"""The hash chain detects any altered, removed or inserted event, and names the first one."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from iwrs.audit import GENESIS, event_hash, event_mac, verify_events

KEY = secrets.token_bytes(32)


def build_chain(n: int, key: bytes = KEY) -> list[dict]:
    events, prev = [], GENESIS
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for seq in range(1, n + 1):
        fields = {
            "seq": seq,
            "occurred_at": start + timedelta(seconds=seq),
            "user_id": seq % 3,
            "username": f"user{seq % 3}",
            "role": "admin",
            "action": "user.created",
            "entity_type": "user",
            "entity_id": str(seq),
            "site_id": None,
            "subject_id": None,
            "before": None,
            "after": f'{{"n":{seq}}}',
            "reason": None,
            "prev_hash": prev,
        }
        fields["hash"] = event_hash(fields)
        fields["mac"] = event_mac(key, fields["hash"])
        prev = fields["hash"]
        events.append(fields)
    return events


def head_of(events: list[dict]) -> tuple[int, str]:
    return (len(events), events[-1]["hash"] if events else GENESIS)


def test_intact_chain_verifies_with_count():
    events = build_chain(25)
    result = verify_events(KEY, events, head=head_of(events))
    assert result.ok and result.count == 25
    assert str(result) == "OK: 25 audit events verified, chain intact"


def test_wrong_key_fails_at_first_event():
    events = build_chain(3)
    result = verify_events(secrets.token_bytes(32), events, head=head_of(events))
    assert not result.ok and result.first_bad_seq == 1


@given(st.integers(1, 30), st.data())
def test_altering_any_field_of_any_event_is_found_at_that_event(n, data):
    events = build_chain(n)
    head = head_of(events)
    victim = data.draw(st.integers(0, n - 1))
    field = data.draw(
        st.sampled_from(
            ["username", "role", "action", "entity_id", "after", "reason", "user_id", "occurred_at"]
        )
    )
    original = events[victim][field]
    if field == "occurred_at":
        events[victim][field] = original + timedelta(microseconds=1)
    elif field == "user_id":
        events[victim][field] = (original or 0) + 1
    else:
        events[victim][field] = (original or "") + "x"
    result = verify_events(KEY, events, head=head)
    assert not result.ok
    assert result.first_bad_seq == victim + 1


@given(st.integers(1, 30), st.data())
def test_removing_any_event_is_found(n, data):
    events = build_chain(n)
    head = head_of(events)
    victim = data.draw(st.integers(0, n - 1))
    del events[victim]
    result = verify_events(KEY, events, head=head)
    assert not result.ok
    assert result.first_bad_seq == victim + 1
    assert "missing" in result.problem


@given(st.integers(0, 20))
def test_event_appended_without_the_key_is_found(n):
    events = build_chain(n)
    head = head_of(events)
    forged = dict(build_chain(n + 1)[-1])  # a well-formed event, hashed with another key
    forged["prev_hash"] = events[-1]["hash"] if events else GENESIS
    forged["hash"] = event_hash(forged)  # a correct hash: only the MAC betrays it
    forged["mac"] = event_mac(secrets.token_bytes(32), forged["hash"])
    result = verify_events(KEY, [*events, forged], head=head)
    assert not result.ok
    assert result.first_bad_seq == n + 1


def test_event_appended_and_rehashed_without_moving_head_is_found():
    events = build_chain(5)
    head = head_of(events)
    extra = build_chain(6)[-1]  # correctly keyed, e.g. replayed from a copy
    extra = {**extra, "prev_hash": events[-1]["hash"]}
    extra["hash"] = event_hash(extra)
    extra["mac"] = event_mac(KEY, extra["hash"])
    result = verify_events(KEY, [*events, extra], head=head)
    assert not result.ok and result.first_bad_seq == 6


def test_offline_verification_without_the_key_finds_an_altered_event():
    events = build_chain(10)
    events[4]["reason"] = "edited later"
    result = verify_events(None, events, head=head_of(events))
    assert not result.ok and result.first_bad_seq == 5 and "altered" in result.problem


def test_rehashing_the_whole_chain_passes_offline_but_not_the_server_mac():
    events = build_chain(10)
    events[4]["reason"] = "edited later"
    prev = events[3]["hash"]
    for fields in events[4:]:  # an attacker recomputes every public hash after the edit
        fields["prev_hash"] = prev
        fields["hash"] = event_hash(fields)
        prev = fields["hash"]
    head = head_of(events)
    assert verify_events(None, events, head=head).ok
    result = verify_events(KEY, events, head=head)
    assert not result.ok and result.first_bad_seq == 5 and "MAC" in result.problem


def test_verification_continues_from_a_verified_checkpoint():
    events = build_chain(12)
    result = verify_events(KEY, events[7:], head=head_of(events), start=(7, events[6]["hash"]))
    assert result.ok and result.count == 12
