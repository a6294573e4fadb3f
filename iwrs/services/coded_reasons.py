"""Reasons about an unblinded subject are coded (README rule 2: free text that blinded readers
see is written before its writer could know the arm).

Once a subject is emergency-unblinded (`Subject.unblinded_at`), every reason written about it
that a blinded role reads - the pharmacist (extra-kit and dispensing reasons), the auditor (the
trail), sponsor contacts - is one of the protocol's `[unblinding] coded_reasons`, never free
text: "on placebo" cannot be typed into a withdrawal reason.

Decision: the rule binds EVERY writer about an unblinded subject, not only the investigator who
unblinded it (the `Unblinding` row's `unblinded_by_id`, the one user who may view the arm
again). A second investigator or the pharmacist of the site may have been told the arm orally,
and the system cannot know they were not; a reason code loses little, the detail belongs in the
site's source record. A subject still blinded keeps free text. The unblinded statistician never
writes these reasons.

Use cases that take such a reason call `coded_reason` (one helper, not copies):
`subjects.withdraw_subject` (reason), `dispensing.discontinue_treatment` (reason),
`dispensing.request_extra_kit` (reason), `dispensing.dispense` (reason: out of window;
backdate_reason: a back-dated visit), `accountability.report_kit` (reason, for a kit once
dispensed to the subject, e.g. a return reported lost). Assessment back-dating, drug
classification and re-screening only apply to subjects not yet randomized, never unblinded.
"""

from __future__ import annotations

from iwrs.errors import InvalidInput
from iwrs.models.subjects import Subject

RULE = "coded_reason_after_unblinding"


def choices() -> tuple[str, ...]:
    """The protocol's coded reasons, in the file's order (what a page's select offers)."""
    from iwrs.services.subjects import protocol

    return protocol().unblinding_coded_reasons


def coded_reason(subject: Subject, text: str | None, *, field: str = "reason") -> str | None:
    """`text` unchanged (stripped) when `subject` is still blinded or `text` is empty (whether a
    reason is required is the caller's rule); when it is unblinded, `text` must be exactly one
    of the coded reasons. Raises InvalidInput(field=`field`, rule=`coded_reason_after_unblinding`)
    for anything else; the message lists the codes, never the arm."""
    if text is None or subject.unblinded_at is None:
        return text
    stripped = text.strip()
    if not stripped or stripped in choices():
        return stripped
    raise InvalidInput(
        f"{field}: subject {subject.screening_number} has been unblinded; choose one of the "
        f"coded reasons ({'; '.join(choices())}) and record details in the source record",
        field=field,
        rule=RULE,
    )


def needs_code(subject: Subject) -> bool:
    """Whether a page must offer the coded reasons (a select) instead of a text box."""
    return subject.unblinded_at is not None
