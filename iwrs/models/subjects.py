"""Subjects and their eligibility assessments."""

from __future__ import annotations

import enum
from datetime import date, datetime

from sqlalchemy import Date, ForeignKey, Index, String, Text, UniqueConstraint, case, select
from sqlalchemy.orm import Mapped, column_property, mapped_column, relationship

from iwrs.db import Base, UTCDateTime, enum_column


class SubjectStatus(enum.StrEnum):
    """screening → eligible → randomized, or screening → screen_failed; withdrawn from any."""

    SCREENING = "screening"
    ELIGIBLE = "eligible"
    RANDOMIZED = "randomized"
    SCREEN_FAILED = "screen_failed"
    WITHDRAWN = "withdrawn"


class Outcome(enum.StrEnum):
    ELIGIBLE = "eligible"
    NOT_ELIGIBLE = "not_eligible"
    INCOMPLETE = "incomplete"


class Decision(enum.StrEnum):
    """What the investigator confirmed with their signature."""

    ELIGIBLE = "eligible"
    SCREEN_FAILURE = "screen_failure"


class Sex(enum.StrEnum):
    FEMALE = "female"
    MALE = "male"


class EligibilityAssessment(Base):
    """One evaluation of the criteria on a set of answers; kept forever, newest one counts."""

    __tablename__ = "eligibility_assessment"

    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subject.id"), index=True)
    criteria_version: Mapped[str] = mapped_column(String(80))
    answers: Mapped[str] = mapped_column(Text)
    computed: Mapped[str] = mapped_column(Text)
    outcome: Mapped[Outcome] = mapped_column(enum_column(Outcome, "assessment_outcome"))
    failing: Mapped[str] = mapped_column(Text)
    missing: Mapped[str] = mapped_column(Text)
    stratum: Mapped[str | None] = mapped_column(String(200))
    assessed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # The date the facts were assessed at the site (stated, or the site's local today); NULL
    # only on rows written before issue 12 (then the local date of assessed_at).
    assessment_date: Mapped[date | None] = mapped_column(Date)
    assessed_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    decision: Mapped[Decision | None] = mapped_column(enum_column(Decision, "assessment_decision"))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    signature_id: Mapped[int | None] = mapped_column(ForeignKey("signature.id"))


class Subject(Base):
    """A screened person: no name, only what the criteria need (date of birth and sex)."""

    __tablename__ = "subject"
    __table_args__ = (
        Index("ix_subject_site_status", "site_id", "status"),
        # issue 13: the subject list (newest first) and the visit board (by number), paged
        Index("ix_subject_site_id", "site_id", "id"),
        Index("ix_subject_site_screening", "site_id", "screening_number"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"))
    screening_number: Mapped[str] = mapped_column(String(32), unique=True)
    status: Mapped[SubjectStatus] = mapped_column(enum_column(SubjectStatus, "subject_status"))
    sex: Mapped[Sex] = mapped_column(enum_column(Sex, "sex", length=8))
    date_of_birth: Mapped[date] = mapped_column(Date)
    screening_date: Mapped[date] = mapped_column(Date)
    # A re-screen is a new subject record linked to the screen failure it repeats (one each).
    rescreen_of_id: Mapped[int | None] = mapped_column(ForeignKey("subject.id"), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    status_changed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    withdrawal_reason: Mapped[str | None] = mapped_column(Text)
    # Study treatment stopped (the subject may stay in follow-up): no more kits are dispensed.
    treatment_discontinued_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # A fact everyone may see (never the arm): this subject was emergency-unblinded.
    unblinded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Who the person is, only as a keyed hash (HMAC of date of birth, sex and initials under a
    # key derived from the audit key): finds the same person screened again at any site.
    person_key: Mapped[str | None] = mapped_column(String(64), index=True)
    # The investigator's signature that this person is not the one(s) the key matched.
    distinct_person_signature_id: Mapped[int | None] = mapped_column(ForeignKey("signature.id"))

    site = relationship("Site", lazy="selectin")

    # The stratification factors (canonical JSON) of the confirmed eligible assessment: the
    # latest assessment's, when it is decided eligible (a newer one reopens screening), else
    # None. Derived, never stored (issue 14): the assessment holds the factors the investigator
    # signed; once randomized, the stratum key is the slot's (Randomization.stratum). Refreshed
    # by a query: a service that decides an assessment expires it (`session.expire`).
    stratum: Mapped[str | None] = column_property(
        select(
            case(
                (
                    EligibilityAssessment.decision == Decision.ELIGIBLE.value,
                    EligibilityAssessment.stratum,
                )
            )
        )
        .where(EligibilityAssessment.subject_id == id)
        .order_by(EligibilityAssessment.id.desc())
        .limit(1)
        .correlate_except(EligibilityAssessment)
        .scalar_subquery()
    )


class DrugClassification(Base):
    """The investigator's signed classification of a drug off the dictionary, for one subject:
    the class of the protocol's drug dictionary its washout or count follows."""

    __tablename__ = "drug_classification"
    __table_args__ = (UniqueConstraint("subject_id", "drug"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subject.id"), index=True)
    drug: Mapped[str] = mapped_column(String(120))
    drug_class: Mapped[str] = mapped_column(String(64))
    classified_at: Mapped[datetime] = mapped_column(UTCDateTime())
    classified_by_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    signature_id: Mapped[int] = mapped_column(ForeignKey("signature.id"))


class EligibilityDraft(Base):
    """The eligibility form as an investigator is typing it, one per subject (issue 15): kept
    so that a session that ends mid-entry loses nothing. Not an assessment, not a decision and
    not part of the signed record; replaced on every save, removed when an assessment is
    recorded from it."""

    __tablename__ = "eligibility_draft"

    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subject.id"), unique=True)
    # The form's answers as typed (field name -> text), the assessment date and its reason.
    answers: Mapped[str] = mapped_column(Text)
    saved_at: Mapped[datetime] = mapped_column(UTCDateTime())
    saved_by_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
