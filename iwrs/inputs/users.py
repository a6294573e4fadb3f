"""Inputs of users, unblinded-access requests and API tokens: one schema each, for the page and
the API."""

from __future__ import annotations

from iwrs.inputs import Choice, Confirmation, Input, Many, Secret, Text
from iwrs.inputs.subjects import SIGNATURE
from iwrs.models.users import Role


class UserCreateInput(Input):
    """A new user with one role; the system sends a temporary password to the e-mail."""

    username = Text(kind="username", min_length=3, required=True)
    full_name = Text(kind="name", required=True)
    email = Text(
        kind="email",
        required=True,
        blank="the temporary password is sent to the user's e-mail; give one",
    )
    role = Choice([r.value for r in Role], required=True)
    site_codes = Many(Text(kind="code", required=True), load_default=list)


class AccessRequestCreateInput(Input):
    """An admin's request for an unblinded statistician account."""

    username = Text(kind="username", min_length=3, required=True)
    full_name = Text(kind="name", required=True)
    email = Text(kind="email", min_length=3, required=True)


class AccessDecisionInput(Input):
    """An unblinded statistician's signed approval or rejection (with a reason) of a request."""

    decision = Choice(("approve", "reject"), required=True)
    reason = Text(kind="reason", load_default="")
    signature_password = Secret(required=True, metadata=SIGNATURE)


class TokenCreateInput(Input):
    """A personal API token, with the caller's password re-entered."""

    name = Text(kind="reference", required=True)
    password = Secret(
        required=True,
        max_length=256,
        metadata={"description": "the caller's password, re-entered"},
    )


# Page-only inputs (no API endpoint takes them).


class SignInInput(Input):
    """Sign in with a username and password."""

    username = Text(kind="username", required=True)
    password = Secret(required=True, max_length=256, blank="enter your password")


class PasswordChangeInput(Input):
    """One's own password change: the current password and the new one."""

    current_password = Secret(required=True, blank="enter your current password")
    new_password = Secret(required=True, blank="choose a new password")


class SiteAssignmentInput(Input):
    """The sites of an investigator or pharmacist."""

    site_codes = Many(Text(kind="code", required=True), load_default=list)


class DeactivationInput(Input):
    """An admin's signed deactivation of a user, with a reason."""

    reason = Text(kind="reason", required=True)
    understood = Confirmation(message="tick the box: the user can no longer sign in")
    signature_password = Secret(required=True, blank="sign with your password")


class PasswordResetInput(Input):
    """An admin's signed reset (the temporary password goes to the user's e-mail)."""

    signature_password = Secret(required=True, blank="sign with your password")
