"""The meaning of each electronic signature, one function per signed act (README rule 10).

The one source of each text: the service records it (`users.sign(meaning=...)`) and the page
shows it before the password is entered (templates call these through `signatures`), so the page
shows exactly what is recorded (issue 14). Where the form offers a choice (a category, a kind,
a visit, a class, approve or reject) the page shows the meaning of each choice.
"""

from __future__ import annotations

from collections.abc import Iterable

from iwrs.models.unblinding import UnblindingCategory

UNBLINDING_CATEGORIES = {c.value: c.label for c in UnblindingCategory}


def deactivate_account(username: str) -> str:
    return f"I deactivate the account {username}"


def reset_password(username: str) -> str:
    return f"I reset the password of {username}"


def change_site_status(*, activate: bool, code: str, name: str) -> str:
    return f"I {'activate' if activate else 'close'} site {code} {name}"


def distinct_person(*, described: str) -> str:
    # Shown when the possible duplicate is found, before the new screening number exists (the
    # signature names the new subject as its record).
    return (
        f"I confirm that the person I am screening is not the person already screened as "
        f"{described}"
    )


def eligibility(
    *,
    eligible: bool,
    screening_number: str,
    study_id: str,
    criteria_version: str,
    failing: Iterable[str],
) -> str:
    if eligible:
        return (
            f"I confirm that subject {screening_number} meets every eligibility criterion of "
            f"protocol {study_id} ({criteria_version})"
        )
    return (
        f"I confirm that subject {screening_number} is a screen failure "
        f"(failing criteria {', '.join(failing)})"
    )


def randomize(*, screening_number: str, study_id: str) -> str:
    return f"I randomize subject {screening_number} in protocol {study_id}"


def unblind(*, screening_number: str, category: str) -> str:
    return (
        f"I break the blind of subject {screening_number} "
        f"({UNBLINDING_CATEGORIES[category]}); I understand it cannot be undone"
    )


def request_kit(*, kind: str, screening_number: str, visit_code: str) -> str:
    return f"I request a {kind} kit for subject {screening_number} at visit {visit_code}"


def decide_unblinded_access(*, approve: bool, username: str, full_name: str, email: str) -> str:
    # The approver vouches for the person and the address the credential goes to.
    verb = "approve" if approve else "reject"
    return f"I {verb} unblinded access for {username} ({full_name}, temporary password to {email})"


def classify_drug(*, drug: str, screening_number: str, class_label: str, study_id: str) -> str:
    return (
        f"I classify {drug}, taken by subject {screening_number}, as {class_label} under "
        f"protocol {study_id}"
    )


def destroy_kits(*, kit_numbers: Iterable[str], reference: str) -> str:
    numbers = list(kit_numbers)
    return (
        f"I confirm that {len(numbers)} kit(s) ({', '.join(numbers)}) were destroyed under "
        f"{reference}; they leave the inventory for good and this cannot be undone"
    )
