"""SQLAlchemy 2 typed models by area; importing this package registers every table."""

from iwrs.models.audit import AuditChainHead, AuditEvent
from iwrs.models.sites import Depot, Site, SiteStatus, Trial
from iwrs.models.subjects import Decision, EligibilityAssessment, Outcome, Subject, SubjectStatus
from iwrs.models.supply import Destruction, Kit, KitEvent, Lot, Shipment, SupplyAlert
from iwrs.models.users import ApiToken, Role, Signature, User, UserSite

__all__ = [
    "ApiToken",
    "AuditChainHead",
    "AuditEvent",
    "Decision",
    "Depot",
    "Destruction",
    "EligibilityAssessment",
    "Kit",
    "KitEvent",
    "Lot",
    "Outcome",
    "Role",
    "Shipment",
    "Signature",
    "Site",
    "SiteStatus",
    "Subject",
    "SubjectStatus",
    "SupplyAlert",
    "Trial",
    "User",
    "UserSite",
]
