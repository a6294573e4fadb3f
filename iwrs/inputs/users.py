"""Inputs of users, unblinded-access requests and API tokens: one schema each, for the page and
the API."""

from __future__ import annotations

from iwrs.inputs import Choice, Input, Many, Secret, Text
from iwrs.inputs.subjects import SIGNATURE
from iwrs.models.users import Role


class UserCreateInput(Input):
    """A new user with one role; the system sends a temporary password to the e-mail."""

    username = Text(kind="username", min_length=3, required=True)
    full_name = Text(kind="name", required=True)
    email = Text(kind="email", load_default=None)
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
