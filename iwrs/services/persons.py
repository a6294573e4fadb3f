"""One person, one subject: the keyed person hash and the duplicate-person check at screening.

The person is identified by date of birth, sex and initials, stored only as
HMAC-SHA256(key, "<YYYY-MM-DD>|<sex>|<INITIALS>") with a key derived by HKDF-SHA256 from the
audit key (outside the database) with its own label: the database alone cannot be searched for a
person, and the initials are never stored in clear.

Decision: a match at the investigator's own site names the earlier screening number(s) (the
investigator sees those subjects anyway); a match at another site says only "at another site",
never the site, number, status or anything arm-related. The investigator then either opens the
re-screen of their own site's subject, or signs that this is a different person (audited); a
person matched at another site can only be screened here with that signature (a re-screen is
opened at the site that screened the person).
Decision: without initials (callers that do not ask for them) the key covers date of birth and
sex alone: the match is broader, never narrower.
Decision: the key follows the audit key; rotating the audit key needs the keys recomputed (a
screening-time check only: a missed match is never silently counted as "different").
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import date

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import current_app
from sqlalchemy import select
from sqlalchemy.orm import Session

from iwrs import signatures
from iwrs.errors import Conflict, InvalidInput
from iwrs.models.subjects import Subject

LABEL = "iwrs person match v1"
_LETTERS = re.compile(r"[A-Za-z]{1,6}")  # ASCII only: "ß".upper() would be "SS"


def normalize_initials(initials: str | None) -> str:
    """Upper-case letters only ("z.-y. l" -> "ZYL"); 1-6 letters, or "" when not given."""
    if initials is None:
        return ""
    letters = "".join(c for c in initials if not c.isspace() and c not in ".-'")
    if not _LETTERS.fullmatch(letters):
        raise InvalidInput(
            "initials: 1 to 6 letters A-Z (e.g. ZYL)", field="initials", rule="initials"
        )
    return letters.upper()


def person_key(*, date_of_birth: date, sex: str, initials: str) -> str:
    """The keyed hash of one person (hex, 64 characters); `initials` already normalized."""
    audit_key = current_app.extensions["iwrs.settings"].audit_key
    if not audit_key:
        raise RuntimeError("no audit key configured")
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=LABEL.encode()).derive(
        bytes(audit_key)
    )
    message = f"{date_of_birth.isoformat()}|{sex}|{initials}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Matches:
    """Earlier subjects with the same person key: own site's, and how many elsewhere."""

    here: tuple[Subject, ...]
    elsewhere: int

    def __bool__(self) -> bool:
        return bool(self.here) or self.elsewhere > 0

    def described(self) -> str:
        """What the investigator may read: own-site numbers, "at another site" otherwise."""
        parts = [", ".join(s.screening_number for s in self.here)] if self.here else []
        parts += ["a subject at another site"] if self.elsewhere else []
        return " and ".join(parts)


def matches(session: Session, *, key: str, site_id: int) -> Matches:
    """Every earlier subject screened with this person key, split by site (the other sites'
    subjects only counted). Locks nothing: the site row lock of the caller serialises."""
    found = session.scalars(select(Subject).where(Subject.person_key == key)).all()
    here = tuple(sorted((s for s in found if s.site_id == site_id), key=lambda s: s.id))
    return Matches(here, sum(1 for s in found if s.site_id != site_id))


class PossibleDuplicate(Conflict):
    """A possible duplicate and no choice made; `meaning` is what the investigator's signature
    that this is a different person means (the screening page shows it)."""

    def __init__(self, found: Matches) -> None:
        super().__init__(
            f"date_of_birth: a person with this date of birth, sex and initials was already "
            f"screened ({found.described()}): open the re-screen of that subject, or confirm "
            "with your signature that this is a different person",
            field="date_of_birth",
            rule="possible_duplicate",
        )
        self.meaning = signatures.distinct_person(described=found.described())


def refuse_duplicate(found: Matches) -> None:
    """The refusal shown when a possible duplicate exists and no choice was made."""
    raise PossibleDuplicate(found)


def screenings_of_person(session: Session, subject: Subject) -> int:
    """How many times this person was screened, every path counted: the subjects sharing the
    person key that were not signed off as a different person (0 when the subject has no key
    or was itself signed off: then only its re-screen chain counts)."""
    if subject.person_key is None or subject.distinct_person_signature_id is not None:
        return 0
    return len(
        session.scalars(
            select(Subject.id).where(
                Subject.person_key == subject.person_key,
                Subject.distinct_person_signature_id.is_(None),
            )
        ).all()
    )
