"""WTForms that render some pages' forms (and carry their CSRF token).

Those of inputs a page shares with the API carry no rules: the page loads request.form through
the API's schema (iwrs/inputs). The page-only ones below still validate with WTForms."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import BooleanField, PasswordField, SelectField, SelectMultipleField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length

from iwrs.models.users import Role


def choices(pairs: list[tuple[str, str]]) -> list[SelectChoice]:
    """Options for a select field from (value, label) pairs."""
    return [SelectChoice(value, label) for value, label in pairs]


class SignInForm(FlaskForm):
    username = StringField("Username", validators=[DataRequired(), Length(max=64)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=256)])


class SignatureForm(FlaskForm):
    """The electronic-signature step: the signer re-enters their password."""

    signature_password = PasswordField(
        "Your password (electronic signature)", validators=[DataRequired()]
    )


class UserCreateForm(FlaskForm):
    """Rendering only: the input is iwrs.inputs.users.UserCreateInput."""

    username = StringField("Username")
    full_name = StringField("Full name")
    email = StringField("E-mail")
    role = SelectField("Role", choices=[SelectChoice(r.value, r.label) for r in Role])
    site_codes = SelectMultipleField("Sites (investigators and pharmacists)", choices=[])


class AccessRequestForm(FlaskForm):
    """An admin's request for an unblinded statistician account (rendering only: the input is
    iwrs.inputs.users.AccessRequestCreateInput)."""

    username = StringField("Username")
    full_name = StringField("Full name")
    email = StringField("E-mail")


class AccessDecisionForm(FlaskForm):
    """Rendering only: the input is iwrs.inputs.users.AccessDecisionInput."""

    decision = SelectField(
        "Decision",
        choices=[SelectChoice("approve", "approve"), SelectChoice("reject", "reject")],
    )
    reason = StringField("Reason (required to reject)")
    signature_password = PasswordField("Your password (electronic signature)")


class SiteAssignmentForm(FlaskForm):
    sites = SelectMultipleField("Sites", choices=[])


class DeactivateForm(SignatureForm):
    reason = StringField("Reason", validators=[DataRequired(), Length(max=500)])
    understood = BooleanField(
        "I understand the user can no longer sign in", validators=[DataRequired()]
    )


class PasswordResetForm(SignatureForm):
    """An admin's reset: a temporary password goes to the user's e-mail, never to the admin."""


class PasswordChangeForm(FlaskForm):
    """One's own change: the current password and the new one."""

    current_password = PasswordField("Current password", validators=[DataRequired()])
    new_password = PasswordField(
        "New password (at least 12 characters)", validators=[DataRequired()]
    )


class TokenForm(FlaskForm):
    """Rendering only: the input is iwrs.inputs.users.TokenCreateInput."""

    name = StringField("Token name")
    password = PasswordField("Your password (re-entered)")


class SiteTimeZoneForm(FlaskForm):
    time_zone = StringField("IANA time zone", validators=[DataRequired(), Length(max=64)])
    reason = StringField("Reason", validators=[DataRequired(), Length(max=500)])


class SiteStatusForm(SignatureForm):
    status = SelectField(
        "New status",
        choices=[SelectChoice("active", "active"), SelectChoice("closed", "closed")],
    )
    understood = BooleanField(
        "I understand a site's status only moves forward", validators=[DataRequired()]
    )
