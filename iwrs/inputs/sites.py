"""Inputs of site management (pages only): status and time zone."""

from __future__ import annotations

from iwrs.inputs import Choice, Confirmation, Input, Secret, Text


class SiteStatusInput(Input):
    """Activate or close a site, signed, once confirmed (a status only moves forward)."""

    status = Choice(("active", "closed"), required=True)
    understood = Confirmation(message="tick the box: a site's status only moves forward")
    signature_password = Secret(required=True, blank="sign with your password")


class SiteTimeZoneInput(Input):
    """A site's IANA time zone, with a reason."""

    time_zone = Text(kind="code", required=True)
    reason = Text(kind="reason", required=True)
