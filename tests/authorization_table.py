"""The one permissions table: who may run each service use case and each route (issue 14).

tests/integration/test_authorization_matrix.py calls every entry as every role, as the system
(CLI) actor and as a user of another site, and asserts allowed or refused from this table
alone; a completeness test there fails when a route or a public service function is missing
here. The application's own walls are `iwrs.auth.ROLE_PERMISSIONS` (what a role holds), the
services' checks (`supply.acting_user`, `subjects._investigator`, `users.require`,
`users.require_system`, `users.site_reader` for reads, site scope by `auth.require_site` /
`auth.require_in_scope`) and the routes' `@requires` decorators (a second wall, never the
only one).

Decision: the table names roles, not permissions, so a wrong role → permission mapping fails
the test as surely as a missing check. `scoped`: a user of another site is refused as "not
found" (rule exists, 404), never told the record is elsewhere. `owned`: the record is the
actor's own (notice, token); another person's is refused as not found unless the role is in
`others`. A scoped read that lists records (`LISTS` in the matrix test) answers a user of
another site without CN01's records instead.

A route's site scope is asserted over HTTP for its GET; a scoped POST validates its form or
body before it names the record to the service, so its site rule is asserted by the service
pass, where the check lives (a POST for another site's record then answers exactly as for a
record that does not exist).
"""

from __future__ import annotations

from dataclasses import dataclass, field

INV = "investigator"
PHA = "pharmacist"
SUP = "supply_manager"
STAT = "unblinded_statistician"
AUD = "auditor"
ADM = "admin"
SYS = "system"  # the CLI operator / scheduled jobs: Actor.system()
ROLES = (INV, PHA, SUP, STAT, AUD, ADM)
PEOPLE = frozenset(ROLES)
EVERYONE = frozenset({*ROLES, SYS})
PUBLIC = "public"  # a route anyone reaches, signed in or not


@dataclass(frozen=True)
class Access:
    roles: frozenset[str]
    scoped: bool = False
    owned: bool = False
    others: frozenset[str] = field(default_factory=frozenset)


def only(*roles: str, scoped: bool = False) -> Access:
    return Access(frozenset(roles), scoped=scoped)


# --- service use cases ("module.function" in iwrs/services) ---------------------------------------

SERVICES: dict[str, Access] = {
    "accountability.report_kit": only(PHA, scoped=True),
    "accountability.record_return": only(PHA, scoped=True),
    "accountability.destroy_kits": only(SUP),
    "accountability.verify_return": only(PHA, scoped=True),
    "audit_views.verify_now": only(AUD, SYS),
    "audit_views.export": only(AUD, SYS),
    "dispensing.dispense": only(PHA, scoped=True),
    "dispensing.request_extra_kit": only(INV, scoped=True),
    "dispensing.confirm_kit": only(PHA, scoped=True),
    "dispensing.discontinue_treatment": only(INV, scoped=True),
    "drug_classes.classify_drug": only(INV, scoped=True),
    "keyed_dispensing.dispense_answer": only(PHA, scoped=True),
    "keyed_randomization.randomize_answer": only(INV, scoped=True),
    "keys.activate_blinding_key": only(SYS),
    "keys.reseal_all": only(SYS),
    "keys.rotate_blinding_key": only(SYS),
    "keys.retire_blinding_key": only(SYS),
    "keys.remaining": only(SYS),
    "passwords.reset_password": only(ADM),
    "passwords.change_own_password": Access(PEOPLE),
    "passwords.set_password": only(SYS),
    "passwords.mark_notice_read": Access(PEOPLE, owned=True),
    "inbox.mark_message_read": Access(PEOPLE, owned=True),
    "alerts.acknowledge_alert": only(SUP),
    "alerts.resolve_alert": only(SUP),
    "randomization.generate_list": only(STAT),
    "randomization.import_list": only(STAT),
    "randomization.extend_list": only(STAT),
    "randomization.randomize": only(INV, scoped=True),
    "randomization_views.list_status": only(STAT),
    "shipments.request_manual_shipment": only(SUP),
    "shipments.ship_shipment": only(SUP),
    "shipments.cancel_shipment": only(SUP),
    "shipments.receive_shipment": only(PHA, scoped=True),
    "shipments.decide_quarantine": only(SUP),
    "sites.change_site_status": only(ADM),
    "sites.change_site_time_zone": only(ADM),
    "statistics.allocations": only(STAT),
    "statistics.allocations_csv": only(STAT),
    "statistics.list_status_csv": only(STAT),
    "subjects.screen_subject": only(INV, scoped=True),
    "subjects.record_assessment": only(INV, scoped=True),
    "subjects.decide_eligibility": only(INV, scoped=True),
    "subjects.withdraw_subject": only(INV, scoped=True),
    "subjects.rescreen_subject": only(INV, scoped=True),
    "eligibility_drafts.save_draft": only(INV, scoped=True),
    "eligibility_drafts.draft_of": only(INV, SYS, scoped=True),
    "subject_views.subject_list": only(INV, SYS, scoped=True),
    "supply.generate_kits": only(SUP, SYS),
    "supply.import_kits": only(SUP, SYS),
    "supply.change_lot_expiry": only(SUP),
    "trial.load_protocol": only(SYS),
    "unblinded_access.request_unblinded_account": only(ADM, SYS),
    "unblinded_access.decide_unblinded_request": only(STAT),
    "unblinding.unblind": only(INV, scoped=True),
    "unblinding.view_arm": only(INV, scoped=True),
    "users.create_user": only(ADM, SYS),
    "users.assign_sites": only(ADM, SYS),
    "users.deactivate_user": only(ADM),
    "users.create_api_token": Access(PEOPLE, owned=True),
    "users.revoke_api_token": Access(EVERYONE, owned=True, others=frozenset({ADM, SYS})),
    # reads of protected data (each checks its caller itself; the routes check again)
    "audit_views.page": only(AUD, SYS),
    "audit_views.event": only(AUD, SYS),
    "audit_views.integrity": only(AUD, SYS),
    "audit_views.names_of": only(AUD, SYS),
    "queries.all_users": only(ADM, SYS),
    "queries.user_by_id": only(ADM, SYS),
    "queries.tokens_of": Access(EVERYONE, owned=True, others=frozenset({ADM, SYS})),
    "unblinded_access.access_requests": only(ADM, STAT, SYS),
    "supply_views.depot_stock": only(SUP, SYS),
    "supply_views.stock_by_site": only(SUP, SYS),
    "supply_views.open_alerts": only(SUP, SYS),
    "supply_views.quarantined": only(SUP, SYS),
    "supply_views.available_history": only(SUP, SYS),
    "accountability.reconciliation": only(SUP, SYS),
    "accountability.reconciliation_summary": only(SUP, SYS),
    "accountability.ledger_problems": only(SYS),
    "kit_counts.mismatches": only(SYS),
    "reconcile.reconcile": only(SYS),
    "unblinded_access.active_unblinded_users": only(SYS),
    "queries.all_site_codes": only(ADM, SYS),
    "queries.notices_of": Access(PEOPLE),  # the actor's own; the operator has none
    "inbox.inbox_of": Access(PEOPLE),  # the actor's own; the operator has none
    "inbox.unread_count": Access(PEOPLE),
    # the role homes (issue 15): each role's own; scoped to the actor's sites inside (their
    # scope is tested in tests/integration/test_homes.py)
    "homes.investigator_home": only(INV, SYS),
    "homes.pharmacist_home": only(PHA, SYS),
    "homes.supply_home": only(SUP, SYS),
    "homes.statistician_home": only(STAT),
    "homes.auditor_home": only(AUD, SYS),
    "homes.admin_home": only(ADM, SYS),
    "unblinding.report": only(INV, STAT, AUD, ADM, SYS, scoped=True),
    "queries.visible_sites": Access(EVERYONE, scoped=True),
    "queries.visible_site": Access(EVERYONE, scoped=True),
    "queries.visible_site_by_code": Access(EVERYONE, scoped=True),
    "queries.visible_subjects": only(INV, SYS, scoped=True),
    "queries.visible_subject": only(INV, SYS, scoped=True),
    "queries.assessments_of": only(INV, SYS, scoped=True),
    "queries.rescreen_of": only(INV, SYS, scoped=True),
    "randomization_views.result_of": only(INV, SYS, scoped=True),
    "receipts.randomization_receipt": only(INV, SYS, scoped=True),
    "receipts.dispensation_receipt": only(INV, PHA, SYS, scoped=True),
    "receipts.shipment_receipt": only(PHA, SUP, SYS, scoped=True),
    "receipts.unblinding_receipt": only(INV, STAT, AUD, ADM, SYS, scoped=True),
    "randomization_views.dispensations_of": only(INV, SYS, scoped=True),
    "randomization_views.visits_board": only(PHA, SYS, scoped=True),
    "randomization_views.visible_randomized_subject": only(PHA, SYS, scoped=True),
    "randomization_views.visit_row": only(PHA, SYS, scoped=True),
    "randomization_views.returns_of": only(PHA, SYS, scoped=True),
    "supply_views.site_kit_line": only(PHA, SUP, SYS, scoped=True),
    "supply_views.destroyable_kits": only(SUP, SYS),
    "supply_views.site_page": only(PHA, SUP, SYS, scoped=True),
    "supply_views.site_codes": only(PHA, SUP, SYS, scoped=True),
    "supply_views.site_inventory": only(PHA, SUP, SYS, scoped=True),
    "supply_views.visible_shipments": only(PHA, SUP, SYS, scoped=True),
    "supply_views.visible_shipment": only(PHA, SUP, SYS, scoped=True),
    "supply_views.shipment_kits": only(PHA, SUP, SYS, scoped=True),
}

# Public functions of iwrs/services that are not use cases of their own, each with the reason.
NOT_USE_CASES: dict[str, str] = {
    **{
        name: "pure helper: no database, no caller's data"
        for name in (
            "accountability.destruction_meaning",
            "accountability.return_visits",
            "coded_reasons.choices",
            "idempotency.check_key",
            "idempotency.refusal_body",
            "idempotency.replay",
            "idempotency.request_of",
            "keyed_dispensing.result_document",
            "keyed_randomization.result_document",
            "keyed_randomization.result_from_document",
            "outbox.claim_lease",
            "outbox.message_id",
            "outbox.sender_name",
            "passwords.temporary_password",
            "passwords.with_credentials",
            "passwords.without_credentials",
            "persons.normalize_initials",
            "persons.person_key",
            "randomization.list_fingerprint",
            "randomization.tie_break",
            "randomization.visit_plan",
            "sessions.session_digest",
            "stated_dates.parse_stated_date_text",
            "stratum_tallies.decode",
            "stratum_tallies.encode",
            "subjects.engine",
            "subjects.parse_date",
            "subjects.protocol",
            "supply.depot_today",
            "supply.kit_through",
            "supply.kit_today",
            "supply.protocol",
            "supply.schedule",
            "supply.sealer",
            "supply.usable_through",
            "supply_views.site_inventory_query",
            "users.check_identity",
            "users.check_password_rules",
            "users.clean_email",
            "users.parse_role",
        )
    },
    **{
        name: "part of a use case: runs inside the caller's transaction (takes its session or "
        "its rows), after the caller's own check"
        for name in (
            "accountability.replay_ledger",
            "audit_views.record_verification",
            "randomization.list_mapping_of",
            "audit_views.walk",
            "sessions.read_signer",
            "coded_reasons.coded_reason",
            "coded_reasons.needs_code",
            "drug_classes.drug_classes_for",
            "eligibility_drafts.discard_draft",
            "drug_classes.with_drug_classes",
            "idempotency.purge",
            "idempotency.run",
            "keys.fingerprint_key",
            "outbox.claim",
            "outbox.deliver",
            "outbox.mark",
            "outbox.send",
            "passwords.send_temporary_password",
            "persons.matches",
            "persons.refuse_duplicate",
            "persons.screenings_of_person",
            "randomization.share_active_list",
            "randomization.slot_arm",
            "randomization.slot_block",
            "randomization.stored_slot",
            "randomization_views.active_list_status",
            "refusals.record",
            "resupply.evaluate_resupply",
            "sessions.end_all_sessions",
            "sessions.revoke_all_tokens",
            "shipments.request_initial_shipment",
            "stated_dates.stated_date",
            "stratum_tallies.add_zero",
            "stratum_tallies.advanced",
            "stratum_tallies.count_missing",
            "stratum_tallies.count_stratum",
            "stratum_tallies.counts_of",
            "stratum_tallies.opened",
            "subjects.context_for",
            "subjects.evaluate_stored",
            "subjects.require_confirmed_eligible",
            "kit_counts.apply",
            "kit_counts.deltas",
            "kit_counts.fresh_counts",
            "kit_counts.rebuild",
            "supply.acting_user",
            "supply.apply_expiry",
            "supply.dispensable_shelf",
            "supply.kit_check",
            "supply.kits_by_number",
            "supply.lock_dispensable",
            "supply.lock_sites",
            "supply.open_alert",
            "supply.position",
            "supply.site_kit",
            "supply.site_of",
            "supply.site_todays",
            "supply.treatment_of",
            "supply.unseal_cached",
            "supply.usable_shelf",
            "users.add_account",
            "users.get_user",
            "users.may",
            "users.require",
            "users.require_person",
            "users.require_system",
            "users.site_reader",
            "users.require_unused_email",
            "users.sign",
        )
    },
    **{
        name: "the authentication itself (no actor yet, or the actor's own credentials)"
        for name in (
            "sessions.sign_in",
            "sessions.confirm_signature",
            "sessions.confirm_password",
            "sessions.sign_out",  # ends only the actor's own session; another's id is ignored
        )
    },
    **{
        name: "infrastructure: delivers messages already committed by a checked use case "
        "(worker, CLI, or right after that use case's commit)"
        for name in ("outbox.send_outbox",)
    },
    "resupply.run_resupply": "the scheduled job (iwrs/jobs.py); no person can call it",
    "stratum_tallies.fill_missing": "part of the statistician's status view and export (and of "
    "`iwrs init`), called first by them; each of its transactions checks SEE_ARM itself "
    "(acting_user), or the operator (require_system)",
}


# --- routes ("endpoint METHOD" of app.url_map) -------------------------------------------------

_REPORT = (INV, STAT, AUD, ADM)  # VIEW_UNBLINDING_REPORT
_SUPPLY_VIEW = (PHA, SUP)  # VIEW_SUPPLY
_PUBLIC = Access(frozenset({PUBLIC}))
_SIGNED_IN = Access(PEOPLE)

ROUTES: dict[str, Access] = {
    "static GET": _PUBLIC,
    "main.health GET": _PUBLIC,
    "auth.sign_in GET": _PUBLIC,
    "auth.sign_in POST": _PUBLIC,
    "audit.public_key GET": _PUBLIC,
    "Unblinding and audit.AuditPublicKey GET": _PUBLIC,
    "api-docs.openapi_json GET": _PUBLIC,
    "main.home GET": _SIGNED_IN,
    "auth.sign_out POST": _SIGNED_IN,
    "auth.keep_alive POST": _SIGNED_IN,
    "account.index GET": _SIGNED_IN,
    "account.password_page GET": _SIGNED_IN,
    "account.password_page POST": _SIGNED_IN,
    "account.token_create POST": _SIGNED_IN,
    "account.token_revoke POST": Access(PEOPLE, owned=True),
    "account.notice_read POST": Access(PEOPLE, owned=True),
    "main.inbox_page GET": _SIGNED_IN,
    "main.message_read POST": Access(PEOPLE, owned=True),
    "main.alert_acknowledge POST": only(SUP),
    "main.alert_resolve POST": only(SUP),
    "Users.Me GET": _SIGNED_IN,
    "Users.Tokens GET": _SIGNED_IN,
    "Users.Tokens POST": _SIGNED_IN,
    "Users.TokenById DELETE": Access(PEOPLE, owned=True, others=frozenset({ADM})),
    "Users.Users GET": only(ADM),
    "Users.Users POST": only(ADM),
    "Users.AccessRequests GET": only(ADM, STAT),
    "Users.AccessRequests POST": only(ADM),
    "Users.AccessDecision POST": only(STAT),
    "admin.user_list GET": only(ADM),
    "admin.user_detail GET": only(ADM),
    "admin.user_action POST": only(ADM),
    "admin.user_new GET": only(ADM),
    "admin.user_new POST": only(ADM),
    "admin.token_revoke POST": only(ADM),
    "admin.access_requests GET": only(ADM),
    "admin.access_requests POST": only(ADM),
    "access.index GET": only(STAT),
    "access.decide POST": only(STAT),
    "audit.index GET": only(AUD),
    "audit.detail GET": only(AUD),
    "audit.export GET": only(AUD),
    "audit.verify POST": only(AUD),
    "Unblinding and audit.AuditEvents GET": only(AUD),
    "Unblinding and audit.AuditExport GET": only(AUD),
    "Unblinding and audit.Unblindings GET": only(*_REPORT),
    "Unblinding and audit.SubjectUnblinding POST": only(INV, scoped=True),
    "unblinding.report GET": only(*_REPORT),
    "lists.index GET": only(STAT),
    "lists.allocations GET": only(STAT),
    "lists.allocations_csv GET": only(STAT),
    "lists.status_csv GET": only(STAT),
    "lists.extend POST": only(STAT),
    "lists.generate POST": only(STAT),
    "lists.import_ POST": only(STAT),
    "lists.import_map POST": only(STAT),
    "lists.import_mapped POST": only(STAT),
    "Randomization.ListStatus GET": only(STAT),
    "sites.index GET": _SIGNED_IN,
    "sites.detail GET": Access(PEOPLE, scoped=True),
    "sites.change_status POST": only(ADM),
    "sites.change_time_zone POST": only(ADM),
    "Sites.Sites GET": _SIGNED_IN,
    "Sites.SiteById GET": Access(PEOPLE, scoped=True),
    "subjects.index GET": only(INV),
    "subjects.screen POST": only(INV, scoped=True),
    "Subjects.Subjects GET": only(INV),
    "Subjects.Subjects POST": only(INV, scoped=True),
    "Subjects.Fields GET": only(INV),
    **{
        f"{endpoint} {method}": only(INV, scoped=True)
        for endpoint, method in (
            ("subjects.detail", "GET"),
            ("subjects.assess", "POST"),
            ("subjects.classify_drug", "POST"),
            ("subjects.decide", "POST"),
            ("subjects.discontinue", "POST"),
            ("subjects.request_kit", "POST"),
            ("subjects.randomization_page", "GET"),
            ("subjects.randomize", "POST"),
            ("subjects.rescreen", "POST"),
            ("subjects.unblind", "POST"),
            ("subjects.unblind_form", "GET"),
            ("subjects.unblind_confirm", "POST"),
            ("subjects.withdraw_form", "GET"),
            ("subjects.rescreen_form", "GET"),
            ("subjects.save_draft", "POST"),
            ("subjects.unblinded", "GET"),
            ("subjects.withdraw", "POST"),
            ("Subjects.SubjectById", "GET"),
            ("Subjects.Assessments", "GET"),
            ("Subjects.Assessments", "POST"),
            ("Subjects.DrugClassifications", "POST"),
            ("Subjects.EligibilityDecision", "POST"),
            ("Subjects.Withdrawal", "POST"),
            ("Subjects.Rescreen", "POST"),
            ("Randomization.SubjectRandomization", "GET"),
            ("Randomization.SubjectRandomization", "POST"),
            ("Randomization.KitRequests", "POST"),
        )
    },
    "dispensing.index GET": only(PHA),
    "dispensing.dispense POST": only(PHA, scoped=True),
    "dispensing.confirm POST": only(PHA, scoped=True),
    "dispensing.subject GET": only(PHA, scoped=True),
    "dispensing.record_return POST": only(PHA, scoped=True),
    "Randomization.Dispensations POST": only(PHA, scoped=True),
    "Randomization.Confirmation POST": only(PHA, scoped=True),
    "supply.index GET": only(*_SUPPLY_VIEW),
    "supply.chart GET": only(SUP),
    "supply.reconciliation GET": only(SUP),
    "supply.shipment GET": only(*_SUPPLY_VIEW, scoped=True),
    "receipts.randomization GET": only(INV, scoped=True),
    "receipts.dispensation GET": only(INV, PHA, scoped=True),
    "receipts.shipment GET": only(*_SUPPLY_VIEW, scoped=True),
    "receipts.unblinding GET": only(*_REPORT, scoped=True),
    "supply.site_inventory GET": only(*_SUPPLY_VIEW, scoped=True),
    "supply.report POST": only(PHA, scoped=True),
    "supply.report_form GET": only(PHA, scoped=True),
    "supply.verify_form GET": only(PHA, scoped=True),
    "supply.verify POST": only(PHA, scoped=True),
    "supply.destruction_list GET": only(SUP),
    "supply.receive POST": only(PHA, scoped=True),
    "supply.destruction POST": only(SUP),
    "supply.lot_expiry POST": only(SUP),
    "supply.quarantine POST": only(SUP),
    "supply.cancel POST": only(SUP),
    "supply.ship POST": only(SUP),
    "supply.request_shipment POST": only(SUP),
    "Supply.Inventory GET": only(*_SUPPLY_VIEW, scoped=True),
    "Supply.Shipments GET": only(*_SUPPLY_VIEW),
    "Supply.Shipments POST": only(SUP),
    "Supply.ShipmentById GET": only(*_SUPPLY_VIEW, scoped=True),
    "Supply.Receipt POST": only(PHA, scoped=True),
    "Supply.Shipping POST": only(SUP),
}
