"""The subject list's actions that change a subject for good, each on a page of its own that
states what will happen before anything is done (issue 15): emergency unblinding (a form, then
a confirmation page with the e-signature), withdrawal and re-screening (a reason and a
confirmation); and the eligibility draft the subject page saves as the investigator types.

A refused value is shown beside its field (the field's `aria-describedby` names the message)
and everything typed is kept, never a password."""

from __future__ import annotations

from typing import Any

from flask import flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user

from iwrs.audit import Actor
from iwrs.auth import Permission, requires
from iwrs.errors import Conflict, IWRSError
from iwrs.inputs import load_form
from iwrs.inputs.randomization import UnblindInput, UnblindRequestInput
from iwrs.inputs.subjects import RescreenPageInput, WithdrawalPageInput
from iwrs.services import eligibility_drafts, queries, randomization_views, subjects
from iwrs.web import flash_refusal
from iwrs.web.subjects import answers_from_form, bp

Errors = dict[str, dict[str, str]]  # field -> {rule, message}
# A signature's refusal names the service's `password`; the page's field is signature_password.
_PAGE_FIELD = {"password": "signature_password"}


def field_errors(refusal: IWRSError, fields: tuple[str, ...]) -> Errors:
    """The refusal's problems ({rule, message}) by the page's field names, the message without
    its leading field name (the label says it); problems of no field on the page are flashed
    at the top instead (with their field and rule)."""
    beside: Errors = {}
    for problem in refusal.problems() or [{"field": "", "rule": "", "message": refusal.message}]:
        name = _PAGE_FIELD.get(problem["field"], problem["field"])
        if name in fields:
            message = problem["message"]
            for prefix in (f"{problem['field']}: ", f"{name}: "):
                message = message.removeprefix(prefix)
            beside[name] = {"rule": problem["rule"], "message": message[:1].upper() + message[1:]}
        elif problem["field"]:
            flash(problem, "problem")
        else:
            flash(refusal.message, "error")
    return beside


# --- emergency unblinding: form, confirmation, done ---------------------------------------------

_REQUEST_FIELDS = ("category", "reason", "sae_led_to_unblinding")
_SIGNING_FIELDS = ("understood", "signature_password")


def _subject_to_unblind(subject_id: int) -> Any:
    """The subject, if the actor may unblind at its site; a subject already unblinded or not
    randomized is refused here, before any reason is typed (the service refuses it again)."""
    actor = Actor.of(current_user)
    subject = queries.visible_subject(
        actor=actor, subject_id=subject_id, permission=Permission.EMERGENCY_UNBLIND
    )
    if randomization_views.result_of(actor=actor, subject_id=subject.id) is None:
        raise Conflict(
            f"subject {subject.screening_number} is not randomized: there is no arm to reveal",
            field="subject_id",
            rule="randomized",
        )
    if subject.unblinded_at is not None:
        raise Conflict(
            f"subject {subject.screening_number} is already emergency-unblinded",
            field="subject_id",
            rule="already_unblinded",
        )
    return subject


def _unblind_form(subject: Any, errors: Errors | None = None, status: int = 200):  # type: ignore[no-untyped-def]
    return render_template("unblind_form.html", subject=subject, errors=errors or {}), status


def _unblind_confirmation(  # type: ignore[no-untyped-def]
    subject: Any, given: dict[str, Any], errors: Errors | None = None, status: int = 200
):
    return render_template(
        "unblind_confirm.html", subject=subject, given=given, errors=errors or {}
    ), status


@bp.get("/<int:subject_id>/unblind")
@requires(Permission.EMERGENCY_UNBLIND)
def unblind_form(subject_id: int):  # type: ignore[no-untyped-def]
    return _unblind_form(_subject_to_unblind(subject_id))


@bp.post("/<int:subject_id>/unblind/confirm")
@requires(Permission.EMERGENCY_UNBLIND)
def unblind_confirm(subject_id: int):  # type: ignore[no-untyped-def]
    subject = _subject_to_unblind(subject_id)
    try:
        given = load_form(UnblindRequestInput, request.form)
    except IWRSError as refusal:
        return _unblind_form(subject, field_errors(refusal, _REQUEST_FIELDS), refusal.status)
    return _unblind_confirmation(subject, given)


@bp.post("/<int:subject_id>/unblind")
@requires(Permission.EMERGENCY_UNBLIND)
def unblind(subject_id: int):  # type: ignore[no-untyped-def]
    from iwrs.services import unblinding

    try:
        given = load_form(UnblindInput, request.form)
        arm = unblinding.unblind(
            actor=Actor.of(current_user),
            subject_id=subject_id,
            category=given["category"],
            reason=given["reason"],
            understood=given["understood"],
            signer_password=given["signature_password"],
            sae_led_to_unblinding=given["sae_led_to_unblinding"],
        )
    except IWRSError as refusal:
        fields = {p["field"] for p in refusal.problems()}
        if not fields or "subject_id" in fields:  # not this subject (any more): nothing to sign
            flash_refusal(refusal)
            return redirect(url_for("subjects.randomization_page", subject_id=subject_id)), 303
        subject = queries.visible_subject(
            actor=Actor.of(current_user),
            subject_id=subject_id,
            permission=Permission.EMERGENCY_UNBLIND,
        )
        if fields & set(_REQUEST_FIELDS):  # the request itself: back to its form
            return _unblind_form(subject, field_errors(refusal, _REQUEST_FIELDS), refusal.status)
        return _unblind_confirmation(
            subject,
            _typed_request(),
            field_errors(refusal, _SIGNING_FIELDS),
            refusal.status,
        )
    return render_template("unblinded.html", arm=arm, subject_id=subject_id)


def _typed_request() -> dict[str, Any]:
    """The unblinding request as typed, to show it again on the confirmation page."""
    return {
        "category": request.form.get("category", ""),
        "reason": request.form.get("reason", ""),
        "sae_led_to_unblinding": request.form.get("sae_led_to_unblinding") == "y",
    }


# --- withdrawal and re-screening: a reason and a confirmation page ------------------------------


def _step_page(template: str, subject_id: int, errors: Errors | None = None, status=200):  # type: ignore[no-untyped-def]
    subject = queries.visible_subject(actor=Actor.of(current_user), subject_id=subject_id)
    return render_template(template, subject=subject, errors=errors or {}), status


@bp.get("/<int:subject_id>/withdraw")
@requires(Permission.SCREEN_SUBJECTS)
def withdraw_form(subject_id: int):  # type: ignore[no-untyped-def]
    return _step_page("withdraw.html", subject_id)


@bp.post("/<int:subject_id>/withdraw")
@requires(Permission.SCREEN_SUBJECTS)
def withdraw(subject_id: int):  # type: ignore[no-untyped-def]
    try:
        given = load_form(WithdrawalPageInput, request.form)
        subject = subjects.withdraw_subject(
            actor=Actor.of(current_user), subject_id=subject_id, reason=given["reason"]
        )
    except IWRSError as refusal:
        errors = field_errors(refusal, ("reason", "understood"))
        return _step_page("withdraw.html", subject_id, errors, refusal.status)
    flash(f"Subject {subject.screening_number} withdrawn.", "info")
    return redirect(url_for("subjects.detail", subject_id=subject_id))


@bp.get("/<int:subject_id>/rescreen")
@requires(Permission.SCREEN_SUBJECTS)
def rescreen_form(subject_id: int):  # type: ignore[no-untyped-def]
    return _step_page("rescreen.html", subject_id)


@bp.post("/<int:subject_id>/rescreen")
@requires(Permission.SCREEN_SUBJECTS)
def rescreen(subject_id: int):  # type: ignore[no-untyped-def]
    try:
        given = load_form(RescreenPageInput, request.form)
        subject = subjects.rescreen_subject(
            actor=Actor.of(current_user), subject_id=subject_id, reason=given["reason"]
        )
    except IWRSError as refusal:
        errors = field_errors(refusal, ("reason", "understood"))
        return _step_page("rescreen.html", subject_id, errors, refusal.status)
    flash(f"Re-screening registered as {subject.screening_number}.", "info")
    return redirect(url_for("subjects.detail", subject_id=subject.id))


# --- the eligibility draft -----------------------------------------------------------------------


@bp.post("/<int:subject_id>/draft")
@requires(Permission.SCREEN_SUBJECTS)
def save_draft(subject_id: int):  # type: ignore[no-untyped-def]
    """The page's autosave (a small script posts the form as it is typed): JSON back."""
    draft = eligibility_drafts.save_draft(
        actor=Actor.of(current_user),
        subject_id=subject_id,
        answers=answers_from_form(request.form),
        assessment_date=request.form.get("assessment_date", ""),
        backdate_reason=request.form.get("backdate_reason", ""),
    )
    return jsonify(saved_at=draft.saved_at.isoformat())
