"""Inputs of randomization, dispensing, kit requests and emergency unblinding: one schema each,
for the page and the API."""

from __future__ import annotations

from iwrs.inputs import Choice, Confirmation, DayDate, Flag, Input, Secret, Text
from iwrs.inputs.subjects import CODED_REASON, SIGNATURE
from iwrs.services.dispensing import EXTRA_KINDS, KINDS
from iwrs.services.unblinding import CATEGORIES

IDEMPOTENCY = (
    "Idempotency (Stripe's semantics). Send a key of 1-100 characters of your choice, a fresh "
    "one (e.g. a UUID) for each new attempt, in the `Idempotency-Key` header or the "
    "`idempotency_key` field (the same value if both). The key is yours alone (scoped to your "
    "user) and bound on first use to this operation and subject. The first outcome under the "
    "key, the 201 result or the refusal (status and problem+json), is stored and every retry "
    "with the key gets it back byte for byte, with `Idempotent-Replayed: true`; nothing is "
    "decided again, even if the situation changed (stock arrived): a new attempt after a "
    "refusal needs a new key. The same key for another subject or operation: 422 "
    "`idempotency_key_reused`. A retry while the first request is still running waits for its "
    "outcome (up to IWRS_IDEMPOTENCY_WAIT_SECONDS), then gets 409 `in_progress` with "
    "`Retry-After`. Not stored (the key may be sent again): a wrong signature (401), invalid "
    "input (422 before anything ran), and refusals that carry `Retry-After`. A key whose request "
    "crashed may be claimed again after IWRS_IDEMPOTENCY_LEASE_SECONDS; the request still takes "
    "effect at most once."
)


def _idempotency_key() -> Text:
    return Text(kind="reference", load_default=None, metadata={"description": IDEMPOTENCY})


class RandomizeInput(Input):
    """Randomize a subject (e-signature, confirming it cannot be undone), optionally under an
    idempotency key."""

    signature_password = Secret(required=True, metadata=SIGNATURE)
    understood = Confirmation(
        message="tick the box to confirm randomization cannot be undone",
        metadata={"description": "true: the caller confirms a randomization cannot be undone"},
    )
    idempotency_key = _idempotency_key()


class DispenseInput(Input):
    """Dispense a kit at a visit (pharmacist)."""

    visit_code = Text(kind="code", required=True)
    kind = Choice(KINDS, load_default="scheduled")
    reason = Text(
        kind="reason",
        load_default="",
        metadata={"description": "required when out of window. " + CODED_REASON},
    )
    visit_date = DayDate(
        load_default=None,
        metadata={
            "description": "DD-MMM-YYYY or YYYY-MM-DD, the site's local date of the visit; "
            "default today at the site. Not in the future, not before day 1 or an earlier "
            "visit; a date before today needs backdate_reason"
        },
    )
    backdate_reason = Text(kind="reason", load_default=None, metadata={"description": CODED_REASON})
    idempotency_key = _idempotency_key()


class KitRequestInput(Input):
    """The investigator's signed request for an unscheduled or replacement kit at a visit."""

    visit_code = Text(kind="code", required=True)
    kind = Choice(EXTRA_KINDS, required=True)
    reason = Text(kind="reason", required=True, metadata={"description": CODED_REASON})
    signature_password = Secret(required=True, metadata=SIGNATURE)


class ConfirmInput(Input):
    """The number of the kit in hand, confirmed after dispensing."""

    kit_number = Text(kind="kit", required=True)


class DiscontinueInput(Input):
    """Discontinue a subject's study treatment, with a reason (page only)."""

    reason = Text(kind="reason", required=True, metadata={"description": CODED_REASON})


class UnblindRequestInput(Input):
    """The first step of an emergency unblinding on the page: category and reason, checked
    before the confirmation page states what will happen (nothing is recorded yet)."""

    category = Choice(CATEGORIES, required=True)
    reason = Text(kind="reason", required=True, blank="describe why the blind must be broken")
    sae_led_to_unblinding = Flag(load_default=False)


class UnblindInput(UnblindRequestInput):
    """An emergency unblinding request: category, reason, confirmation, e-signature."""

    understood = Confirmation(
        message="confirm that an unblinding cannot be undone",
        metadata={"description": "true: the caller confirms an unblinding cannot be undone"},
    )
    signature_password = Secret(required=True, metadata=SIGNATURE)
