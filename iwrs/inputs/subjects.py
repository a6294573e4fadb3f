"""Inputs of screening and eligibility: one schema each, for the page and the API."""

from __future__ import annotations

from iwrs.inputs import (
    Answers,
    Choice,
    Confirmation,
    DayDate,
    Input,
    Secret,
    Text,
    WholeNumber,
)
from iwrs.services.subjects import SEXES

STATED = (
    "DD-MMM-YYYY or YYYY-MM-DD, the site's local date; default today at the site. Not in the "
    "future, not before the previous step; a date before today needs backdate_reason"
)
# The documentation of every reason written about a subject (iwrs/services/coded_reasons.py).
CODED_REASON = (
    "Free text while the subject is blinded. Once it is emergency-unblinded, exactly one of the "
    "protocol file's [unblinding] coded_reasons (listed in the refusal), whoever writes it; "
    "anything else is refused with 422, rule coded_reason_after_unblinding."
)
SIGNATURE = {"description": "electronic signature: the caller's password"}
ID_MAX = 2**31 - 1  # a row id (INTEGER; the routes' <int:…> stop there too)


class ScreenInput(Input):
    """Register a subject for screening (POST /subjects, the subjects page)."""

    site_code = Text(kind="code", required=True, metadata={"example": "CN01"})
    date_of_birth = DayDate(required=True, metadata={"example": "1966-09-30"})
    sex = Choice(SEXES, required=True)
    screening_date = DayDate(load_default=None, metadata={"description": STATED})
    backdate_reason = Text(kind="reason", load_default=None)
    initials = Text(
        kind="initials",
        load_default=None,
        metadata={
            "description": "the person's initials; stored only inside a keyed hash with date of "
            "birth and sex, to find the same person screened before at any site (without "
            "initials the match is on date of birth and sex alone)"
        },
    )
    different_person_signature_password = Secret(
        load_default=None,
        metadata={
            "description": "e-signature (the caller's password) confirming that a possible "
            "duplicate (409 possible_duplicate) is a different person"
        },
    )


class AnswersInput(Input):
    """An eligibility assessment: the answers, and the date they were assessed."""

    answers = Answers(
        required=True,
        metadata={"description": "field name → value; see GET /api/v1/subjects/fields"},
    )
    assessment_date = DayDate(load_default=None, metadata={"description": STATED})
    backdate_reason = Text(kind="reason", load_default=None)


class DecisionInput(Input):
    """Confirm the latest assessment as eligible or as a screen failure (e-signature)."""

    assessment_id = WholeNumber(minimum=1, maximum=ID_MAX, required=True)
    decision = Choice(("eligible", "screen_failure"), required=True)
    signature_password = Secret(required=True, metadata=SIGNATURE)
    understood = Confirmation(
        message="tick the box to confirm the decision cannot be undone",
        metadata={"description": "true: the caller confirms the decision cannot be undone"},
    )


class WithdrawalInput(Input):
    """Withdraw a subject, with a reason."""

    reason = Text(kind="reason", required=True, metadata={"description": CODED_REASON})


class WithdrawalPageInput(WithdrawalInput):
    """The withdrawal page's form: the reason and the confirmation that it cannot be undone."""

    understood = Confirmation(message="tick the box to confirm the withdrawal cannot be undone")


class RescreenInput(Input):
    """Re-screen a screen failure under a new screening number, with a reason."""

    reason = Text(
        kind="reason",
        required=True,
        blank="say why the person is screened again",
        metadata={"description": "why the person is screened again (recorded in the trail)"},
    )


class RescreenPageInput(RescreenInput):
    """The re-screening page's form: the reason and the confirmation of what will happen."""

    understood = Confirmation(message="tick the box to confirm a new screening number is taken")


class DrugClassificationInput(Input):
    """Classify a drug off the dictionary into a protocol class (e-signature)."""

    drug = Text(kind="drug", required=True)
    drug_class = Text(kind="code", required=True)
    signature_password = Secret(required=True, metadata=SIGNATURE)
