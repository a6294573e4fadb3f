"""SQLAlchemy 2 typed models by area; importing this package registers every table."""

from iwrs.models.audit import AuditChainHead, AuditEvent
from iwrs.models.sites import Depot, Site, SiteStatus, Trial
from iwrs.models.users import ApiToken, Role, Signature, User, UserSite

__all__ = [
    "ApiToken",
    "AuditChainHead",
    "AuditEvent",
    "Depot",
    "Role",
    "Signature",
    "Site",
    "SiteStatus",
    "Trial",
    "User",
    "UserSite",
]
