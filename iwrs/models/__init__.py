"""SQLAlchemy 2 typed models by area; importing this package registers every table."""

from iwrs.models.audit import AuditAnchor, AuditChainHead, AuditCheckpoint, AuditEvent
from iwrs.models.idempotency import IdempotencyKey, KeyState
from iwrs.models.jobs import JobLease
from iwrs.models.keys import BlindingKeyState
from iwrs.models.randomization import (
    Dispensation,
    KitRequest,
    Randomization,
    RandomizationCounter,
    RandomizationList,
    RandomizationSlot,
    StratumPosition,
)
from iwrs.models.sites import Depot, Site, SiteStatus, Trial
from iwrs.models.subjects import (
    Decision,
    DrugClassification,
    EligibilityAssessment,
    Outcome,
    Subject,
    SubjectStatus,
)
from iwrs.models.supply import Destruction, Kit, KitCount, KitEvent, Lot, Shipment, SupplyAlert
from iwrs.models.unblinding import Notification, OutboxState, Unblinding
from iwrs.models.users import (
    AccessRequestStatus,
    ApiToken,
    Role,
    Signature,
    UnblindedAccessRequest,
    User,
    UserNotice,
    UserSession,
    UserSite,
)

__all__ = [
    "AccessRequestStatus",
    "ApiToken",
    "AuditAnchor",
    "AuditChainHead",
    "AuditCheckpoint",
    "AuditEvent",
    "BlindingKeyState",
    "Decision",
    "Depot",
    "Destruction",
    "Dispensation",
    "DrugClassification",
    "EligibilityAssessment",
    "IdempotencyKey",
    "KeyState",
    "Kit",
    "KitCount",
    "KitEvent",
    "KitRequest",
    "Lot",
    "JobLease",
    "Notification",
    "OutboxState",
    "Outcome",
    "Randomization",
    "RandomizationCounter",
    "RandomizationList",
    "RandomizationSlot",
    "Role",
    "Shipment",
    "Signature",
    "Site",
    "SiteStatus",
    "StratumPosition",
    "Subject",
    "SubjectStatus",
    "SupplyAlert",
    "Trial",
    "UnblindedAccessRequest",
    "Unblinding",
    "User",
    "UserNotice",
    "UserSession",
    "UserSite",
]
