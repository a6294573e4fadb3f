"""WTForms that only render some pages' forms: labels, inputs and their names.

They carry no rule: every page loads request.form through its input's schema (iwrs/inputs),
the one the API uses where there is an endpoint. CSRF is flask-wtf's CSRFProtect (iwrs/__init__).
A field's name here is its input's field name (with the form's prefix, if any)."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import BooleanField, PasswordField, SelectField, SelectMultipleField, StringField
from wtforms.fields.choices import SelectChoice

from iwrs.models.users import Role


def choices(pairs: list[tuple[str, str]]) -> list[SelectChoice]:
    """Options for a select field from (value, label) pairs."""
    return [SelectChoice(value, label) for value, label in pairs]


class SignInForm(FlaskForm):
    """iwrs.inputs.users.SignInInput"""

    username = StringField("Username")
    password = PasswordField("Password")


class SignatureForm(FlaskForm):
    """The electronic-signature step: the signer re-enters their password."""

    signature_password = PasswordField("Your password (electronic signature)")


class UserCreateForm(FlaskForm):
    """iwrs.inputs.users.UserCreateInput"""

    username = StringField("Username")
    full_name = StringField("Full name")
    email = StringField("E-mail")
    role = SelectField("Role", choices=[SelectChoice(r.value, r.label) for r in Role])
    site_codes = SelectMultipleField("Sites (investigators and pharmacists)", choices=[])


class AccessRequestForm(FlaskForm):
    """iwrs.inputs.users.AccessRequestCreateInput: an admin's request for an unblinded
    statistician account."""

    username = StringField("Username")
    full_name = StringField("Full name")
    email = StringField("E-mail")


class AccessDecisionForm(SignatureForm):
    """iwrs.inputs.users.AccessDecisionInput"""

    decision = SelectField(
        "Decision",
        choices=[SelectChoice("approve", "approve"), SelectChoice("reject", "reject")],
    )
    reason = StringField("Reason (required to reject)")


class SiteAssignmentForm(FlaskForm):
    """iwrs.inputs.users.SiteAssignmentInput"""

    site_codes = SelectMultipleField("Sites", choices=[])


class DeactivateForm(SignatureForm):
    """iwrs.inputs.users.DeactivationInput"""

    reason = StringField("Reason")
    understood = BooleanField("I understand the user can no longer sign in")


class PasswordResetForm(SignatureForm):
    """iwrs.inputs.users.PasswordResetInput: a temporary password goes to the user's e-mail,
    never to the admin."""


class PasswordChangeForm(FlaskForm):
    """iwrs.inputs.users.PasswordChangeInput: one's own change."""

    current_password = PasswordField("Current password")
    new_password = PasswordField("New password (at least 12 characters)")


class TokenForm(FlaskForm):
    """iwrs.inputs.users.TokenCreateInput"""

    name = StringField("Token name")
    password = PasswordField("Your password (re-entered)")


class SiteTimeZoneForm(FlaskForm):
    """iwrs.inputs.sites.SiteTimeZoneInput"""

    time_zone = StringField("IANA time zone")
    reason = StringField("Reason")


class SiteStatusForm(SignatureForm):
    """iwrs.inputs.sites.SiteStatusInput"""

    status = SelectField(
        "New status",
        choices=[SelectChoice("active", "active"), SelectChoice("closed", "closed")],
    )
    understood = BooleanField("I understand a site's status only moves forward")
