"""The exact bytes an audit event's hash covers (what an offline verifier recomputes), and the
whole outcome of verifying a chain for each kind of fault: which event, how many verified before
it, the last good hash and the kind (found by `make mutation`; tests/MUTATION.md)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from iwrs.audit import Verification, event_mac, event_message, verify_events
from tests.unit.test_audit_chain import KEY, build_chain

FIELDS = {
    "seq": 1,
    "occurred_at": datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC),
    "user_id": 7,
    "username": "Zhāng",
    "role": "admin",
    "action": "user.created",
    "entity_type": "user",
    "entity_id": "1",
    "site_id": None,
    "subject_id": None,
    "before": None,
    "after": '{"n":1}',
    "reason": None,
    "prev_hash": "00",
}
MESSAGE = (
    '{"action":"user.created","after":"{\\"n\\":1}",AUTH"before":null,"entity_id":"1",'
    '"entity_type":"user","occurred_at":"2026-01-01T00:00:01.000000+00:00","prev_hash":"00",'
    '"reason":null,"role":"admin","seq":1,"site_id":null,"subject_id":null,"user_id":7,'
    '"username":"Zhāng"}'
)


def test_the_hashed_message_is_sorted_compact_utf8_json_with_auth_only_when_set():
    assert event_message(FIELDS) == MESSAGE.replace("AUTH", "").encode()
    with_auth = {**FIELDS, "auth": "password"}
    assert event_message(with_auth) == MESSAGE.replace("AUTH", '"auth":"password",').encode()


def outcome(result: Verification) -> tuple[object, ...]:
    return (result.ok, result.count, result.first_bad_seq, result.last_hash, result.kind)


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        (lambda chain: chain.pop(2), "missing"),
        (lambda chain: chain[2].update(prev_hash=chain[0]["hash"]), "link"),
        (lambda chain: chain[2].update(reason="edited"), "hash"),
        (lambda chain: chain[2].update(mac=event_mac(b"x" * 32, chain[2]["hash"])), "mac"),
    ],
)
def test_a_fault_at_event_3_is_reported_with_2_verified_and_the_last_good_hash(fault, kind):
    chain = build_chain(5)
    good = chain[1]["hash"]
    fault(chain)
    assert outcome(verify_events(KEY, chain)) == (False, 2, 3, good, kind)


def test_the_chain_head_is_checked_against_the_last_event():
    chain = build_chain(5)
    last = chain[-1]["hash"]
    assert outcome(verify_events(KEY, chain, head=(5, last))) == (True, 5, None, last, None)
    assert outcome(verify_events(KEY, chain, head=(6, last))) == (False, 5, 6, last, "missing")
    assert outcome(verify_events(KEY, chain, head=(4, last))) == (False, 5, 5, last, "head")
    assert outcome(verify_events(KEY, chain, head=(5, "0" * 64))) == (False, 5, 5, last, "head")
