"""Investigator pages: the subject list, screening, the eligibility form and its decisions."""

from __future__ import annotations

import json
import secrets
from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user
from werkzeug.datastructures import MultiDict

from iwrs.audit import Actor
from iwrs.auth import Permission, requires
from iwrs.errors import InvalidInput, IWRSError
from iwrs.inputs import load_form
from iwrs.inputs.randomization import DiscontinueInput, KitRequestInput, RandomizeInput
from iwrs.inputs.subjects import (
    AnswersInput,
    DecisionInput,
    DrugClassificationInput,
    ScreenInput,
)
from iwrs.models.sites import SiteStatus
from iwrs.services import drug_classes, eligibility_drafts, queries, subject_views, subjects
from iwrs.validation import page_key
from iwrs.web import flash_refusal

bp = Blueprint("subjects", __name__, url_prefix="/subjects")
MEDICATION_ROWS = 8
MEDICATION_KEYS = ("drug", "last_dose", "ongoing", "max_daily_dose_mg", "dose_stable_since")


@bp.get("/")
@requires(Permission.SCREEN_SUBJECTS)
def index():  # type: ignore[no-untyped-def]
    return _render_index()


def _render_index(status: int = 200, distinct_meaning: str | None = None):  # type: ignore[no-untyped-def]
    """The subject list (search, filters, keyset pages; `subject_views`) and the registration
    form."""
    visible = queries.visible_sites(actor=Actor.of(current_user))
    filters = subject_views.Filters(
        search=request.args.get("q", ""),
        status=request.args.get("status", ""),
        site_code=request.args.get("site", ""),
    )
    try:
        shown = subject_views.subject_list(
            actor=Actor.of(current_user),
            filters=filters,
            before=request.args.get("before", type=page_key),
        )
    except IWRSError as refusal:  # a filter no form offers (a typed URL)
        flash_refusal(refusal)
        shown, status = subject_views.SubjectPage([], None), refusal.status
    return render_template(
        "subjects.html",
        listing=shown,
        filters=filters,
        filtered=any((filters.search, filters.status, filters.site_code)),
        statuses=subject_views.STATUS_FILTERS,
        sites=visible,
        active_sites=[s for s in visible if s.status == SiteStatus.ACTIVE],
        form=request.form,
        distinct_meaning=distinct_meaning,
    ), status


@bp.post("/")
@requires(Permission.SCREEN_SUBJECTS)
def screen():  # type: ignore[no-untyped-def]
    try:
        given = load_form(ScreenInput, request.form)
        site = queries.visible_site_by_code(actor=Actor.of(current_user), code=given["site_code"])
        subject = subjects.screen_subject(
            actor=Actor.of(current_user),
            site_id=site.id,
            date_of_birth=given["date_of_birth"],
            sex=given["sex"],
            screening_date=given["screening_date"],
            backdate_reason=given["backdate_reason"],
            initials=given["initials"],
            different_person_password=given["different_person_signature_password"],
        )
    except IWRSError as refusal:
        flash_refusal(refusal)
        return _render_index(refusal.status, getattr(refusal, "meaning", None))
    flash(f"Subject {subject.screening_number} registered for screening.", "info")
    return redirect(url_for("subjects.detail", subject_id=subject.id))


def answers_from_form(form: MultiDict[str, str]) -> dict[str, Any]:
    """The form's flat fields as engine answers: blanks are unanswered, ticked "not done" and
    "never" boxes stand for those words, medication rows become the medications list."""
    answers: dict[str, Any] = {}
    for spec in subjects.engine().fields():
        if spec.kind == "medications":
            rows = []
            for i in range(MEDICATION_ROWS):
                row = {k: form.get(f"med-{i}-{k}", "").strip() for k in MEDICATION_KEYS}
                if row["drug"]:
                    rows.append(
                        {k: (v == "y" if k == "ongoing" else v or None) for k, v in row.items()}
                    )
            if rows or form.get("medications-none") == "y":
                answers[spec.name] = rows
            continue
        for word in ("not_done", *spec.choices):
            if spec.kind != "choice" and form.get(f"{spec.name}--{word}") == "y":
                answers[spec.name] = word
        value = form.get(spec.name, "").strip()
        if spec.name not in answers and value:
            answers[spec.name] = value
    return answers


def _render_detail(
    subject_id: int,
    *,
    answers: dict[str, Any] | None = None,
    errors: list[dict[str, str]] | None = None,
    result: Any = None,
    status: int = 200,
):  # type: ignore[no-untyped-def]
    subject = queries.visible_subject(actor=Actor.of(current_user), subject_id=subject_id)
    history = queries.assessments_of(actor=Actor.of(current_user), subject_id=subject.id)
    latest = history[0] if history else None
    draft = eligibility_drafts.draft_of(actor=Actor.of(current_user), subject_id=subject.id)
    if answers is None and draft is not None:  # typed, not yet checked: the form as it was left
        answers = draft.answers
    if answers is None:
        answers = json.loads(latest.answers) if latest else {}
    if result is None and latest is not None:
        result = subjects.evaluate_stored(subject, latest)
    engine = subjects.engine()
    return render_template(
        "subject.html",
        subject=subject,
        history=history,
        latest=latest,
        result=result,
        answers=answers,
        errors={e["field"]: e["message"] for e in (errors or [])},
        error_list=errors or [],
        sections=_sections(engine.fields()),
        labels={spec.name: spec.label for spec in engine.fields()},
        drugs=engine.drug_names(),
        drug_classes=engine.dictionary.classifiable() if engine.dictionary else (),
        medication_rows=MEDICATION_ROWS,
        rescreen=queries.rescreen_of(actor=Actor.of(current_user), subject_id=subject.id),
        # A fresh key on every render: a resubmitted form (double click, reload) is one
        # randomization, and a new attempt after a refusal is a new request, never its replay.
        idempotency_key=secrets.token_urlsafe(24),
        criteria_version=subjects.protocol().criteria_version,
        draft=draft,
    ), status


def _sections(specs: Any) -> list[tuple[str, list[Any]]]:
    """Fields grouped by section, in the protocol's order (Jinja's groupby would sort them)."""
    grouped: dict[str, list[Any]] = {}
    for spec in specs:
        grouped.setdefault(spec.section, []).append(spec)
    return list(grouped.items())


@bp.get("/<int:subject_id>")
@requires(Permission.SCREEN_SUBJECTS)
def detail(subject_id: int):  # type: ignore[no-untyped-def]
    return _render_detail(subject_id)


@bp.post("/<int:subject_id>/assessment")
@requires(Permission.SCREEN_SUBJECTS)
def assess(subject_id: int):  # type: ignore[no-untyped-def]
    answers = answers_from_form(request.form)
    try:
        # Every submit keeps the form as typed first: a refused value loses nothing, and the
        # recorded assessment removes the draft in its own transaction.
        eligibility_drafts.save_draft(
            actor=Actor.of(current_user),
            subject_id=subject_id,
            answers=answers,
            assessment_date=request.form.get("assessment_date", ""),
            backdate_reason=request.form.get("backdate_reason", ""),
        )
        given = load_form(AnswersInput, request.form, answers=answers)
        record = subjects.record_assessment(
            actor=Actor.of(current_user),
            subject_id=subject_id,
            answers=given["answers"],
            assessment_date=given["assessment_date"],
            backdate_reason=given["backdate_reason"],
        )
    except InvalidInput as refusal:
        flash(
            "Some values were refused; nothing was saved. Correct the fields marked below.", "error"
        )
        return _render_detail(subject_id, answers=answers, errors=refusal.problems(), status=422)
    except IWRSError as refusal:
        flash_refusal(refusal)
        return _render_detail(subject_id, answers=answers, status=refusal.status)
    flash(f"Assessment saved: {record.result.outcome.replace('_', ' ')}.", "info")
    return redirect(url_for("subjects.detail", subject_id=subject_id) + "#result")


@bp.post("/<int:subject_id>/decision")
@requires(Permission.SCREEN_SUBJECTS)
def decide(subject_id: int):  # type: ignore[no-untyped-def]
    try:
        given = load_form(DecisionInput, request.form)
        subject = subjects.decide_eligibility(
            actor=Actor.of(current_user),
            subject_id=subject_id,
            assessment_id=given["assessment_id"],
            decision=given["decision"],
            signer_password=given["signature_password"],
            understood=given["understood"],
        )
    except IWRSError as refusal:
        flash_refusal(refusal)
        return _render_detail(subject_id, status=refusal.status)
    flash(f"Subject {subject.screening_number} is now {subject.status.replace('_', ' ')}.", "info")
    return redirect(url_for("subjects.detail", subject_id=subject_id))


@bp.post("/<int:subject_id>/classify-drug")
@requires(Permission.SCREEN_SUBJECTS)
def classify_drug(subject_id: int):  # type: ignore[no-untyped-def]
    try:
        given = load_form(DrugClassificationInput, request.form)
        row = drug_classes.classify_drug(
            actor=Actor.of(current_user),
            subject_id=subject_id,
            drug=given["drug"],
            drug_class=given["drug_class"],
            signer_password=given["signature_password"],
        )
    except IWRSError as refusal:
        flash_refusal(refusal)
        return _render_detail(subject_id, status=refusal.status)
    flash(f"{row.drug} classified as {row.drug_class}; assess again to apply it.", "info")
    return redirect(url_for("subjects.detail", subject_id=subject_id))


@bp.post("/<int:subject_id>/randomize")
@requires(Permission.RANDOMIZE)
def randomize(subject_id: int):  # type: ignore[no-untyped-def]
    from iwrs.services import randomization

    try:
        given = load_form(RandomizeInput, request.form)
        randomization.randomize(
            actor=Actor.of(current_user),
            subject_id=subject_id,
            signer_password=given["signature_password"],
            understood=given["understood"],
            idempotency_key=given["idempotency_key"],
        )
    except IWRSError as refusal:
        flash_refusal(refusal)
        return _render_detail(subject_id, status=refusal.status)
    return redirect(url_for("subjects.randomization_page", subject_id=subject_id))


@bp.get("/<int:subject_id>/randomization")
@requires(Permission.SCREEN_SUBJECTS)
def randomization_page(subject_id: int):  # type: ignore[no-untyped-def]
    from iwrs.errors import NotFound
    from iwrs.services import randomization_views

    subject = queries.visible_subject(actor=Actor.of(current_user), subject_id=subject_id)
    result = randomization_views.result_of(actor=Actor.of(current_user), subject_id=subject.id)
    if result is None:
        raise NotFound(
            f"subject {subject.screening_number} is not randomized",
            field="subject_id",
            rule="randomized",
        )
    return render_template(
        "randomization.html",
        subject=subject,
        result=result,
        dispensations=randomization_views.dispensations_of(
            actor=Actor.of(current_user), subject_id=subject.id
        ),
    )


@bp.post("/<int:subject_id>/kit-requests")
@requires(Permission.RANDOMIZE)
def request_kit(subject_id: int):  # type: ignore[no-untyped-def]
    from iwrs.services import dispensing

    try:
        given = load_form(KitRequestInput, request.form)
        row = dispensing.request_extra_kit(
            actor=Actor.of(current_user),
            subject_id=subject_id,
            visit_code=given["visit_code"],
            kind=given["kind"],
            reason=given["reason"],
            signer_password=given["signature_password"],
        )
    except IWRSError as refusal:
        flash_refusal(refusal)
        return redirect(url_for("subjects.randomization_page", subject_id=subject_id))
    flash(
        f"{row.kind.capitalize()} kit requested for {row.visit_code}; the pharmacist can "
        "dispense it now.",
        "info",
    )
    return redirect(url_for("subjects.randomization_page", subject_id=subject_id))


@bp.post("/<int:subject_id>/discontinue")
@requires(Permission.SCREEN_SUBJECTS)
def discontinue(subject_id: int):  # type: ignore[no-untyped-def]
    from iwrs.services import dispensing

    try:
        given = load_form(DiscontinueInput, request.form)
        subject = dispensing.discontinue_treatment(
            actor=Actor.of(current_user), subject_id=subject_id, reason=given["reason"]
        )
    except IWRSError as refusal:
        flash_refusal(refusal)
        return redirect(url_for("subjects.randomization_page", subject_id=subject_id))
    flash(f"Study treatment of {subject.screening_number} discontinued.", "info")
    return redirect(url_for("subjects.randomization_page", subject_id=subject_id))


@bp.get("/<int:subject_id>/unblinded")
@requires(Permission.EMERGENCY_UNBLIND)
def unblinded(subject_id: int):  # type: ignore[no-untyped-def]
    from iwrs.services import unblinding

    arm = unblinding.view_arm(actor=Actor.of(current_user), subject_id=subject_id)
    return render_template("unblinded.html", arm=arm, subject_id=subject_id)
