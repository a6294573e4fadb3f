"""Each role's home is a task list (issue 15): its contents by value, the alerts' handling, the
inbox, and the blind of days of cover (swap two subjects' arms, then every arm: a blinded
role's home page does not change by a byte).

One trial for the module (SQLite; the statement counts run on both databases in
tests/integration/test_no_growth.py): CN01 randomizes five subjects and CN02 one on day 0;
on day 27 CN01's first subject has had V2. Cover at CN01: 8 kits - 5 day-1 kits - 1 V2 kit = 2
usable against 4 V2 kits due now: short today. At CN02: 7 usable, see the test for its days.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select, text, update

from iwrs.audit import Actor
from iwrs.errors import Conflict, InvalidInput, NotFound
from tests.conftest import PASSWORD, ManualClock, sign_in
from tests.integration.randomization_worker import (
    World,
    eligible_subject,
    make_world,
    randomize,
    screen,
)
from tests.web.blind_world import normalize

DAY = 27  # days after the randomizations: V2 (day 29, window -3/+3) is open


@pytest.fixture(scope="module")
def trial(tmp_path_factory: pytest.TempPathFactory, sqlite_template) -> Iterator[dict[str, Any]]:
    import shutil

    folder = tmp_path_factory.mktemp("homes")
    shutil.copy(sqlite_template, folder / "iwrs.sqlite")
    clock = ManualClock(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    world = make_world(
        folder, f"sqlite:///{folder / 'iwrs.sqlite'}", clock, lots=(("L-0001", 40, 730),)
    )
    world.user("auditor", name="auditor")
    with world.app.app_context():
        cn01 = [eligible_subject(world, "CN01") for _ in range(5)]
        cn02 = [eligible_subject(world, "CN02")]
        for subject_id in cn01 + cn02:
            randomize(world, subject_id)
        waiting = eligible_subject(world, "CN01")  # confirmed eligible, not randomized
        screening = screen(world, "CN01").id  # screened, nothing recorded yet
        clock.advance(days=DAY)
        from iwrs.services import dispensing

        dispensing.dispense(actor=world.actor("ph-CN01"), subject_id=cn01[0], visit_code="V2")
    yield {
        "world": world,
        "clock": clock,
        "cn01": cn01,
        "cn02": cn02,
        "waiting": waiting,
        "screening": screening,
    }
    world.app.extensions["iwrs.engine"].dispose()


@pytest.fixture
def ctx(trial: dict[str, Any]) -> Iterator[World]:
    world = trial["world"]
    with world.app.app_context():
        yield world


def test_the_investigators_home_lists_their_subjects_to_act_on_and_visits_due(trial, ctx):
    from iwrs.services import homes

    home = homes.investigator_home(actor=ctx.actor("inv-CN01"))
    assert [s.id for s in home.to_randomize] == [trial["waiting"]]
    assert [s.id for s in home.to_complete] == [trial["screening"]]
    # V2 given to the first subject: its next visit (V3) opens weeks later
    assert {d.subject_id for d in home.visits} == set(trial["cn01"][1:])
    assert {d.visit.code for d in home.visits} == {"V2"} and all(d.due_today for d in home.visits)
    other = homes.investigator_home(actor=ctx.actor("inv-CN02"))
    assert {d.subject_id for d in other.visits} == set(trial["cn02"])
    assert not other.to_randomize and not other.to_complete


def test_the_pharmacists_home_has_visits_due_shipments_to_receive_and_cover(trial, ctx):
    from iwrs.services import homes, shipments

    home = homes.pharmacist_home(actor=ctx.actor("ph-CN01"))
    assert {d.subject_id for d in home.due_today} == set(trial["cn01"][1:])
    assert home.due_this_week == [] and home.to_receive == []
    [cover] = home.covers
    assert (cover.site_code, cover.usable, cover.days, cover.warn) == ("CN01", 2, 0, True)
    # A shipment is the pharmacist's to receive once it is shipped, not while only requested
    row = shipments.request_manual_shipment(
        actor=ctx.actor("manager"), site_id=ctx.sites["CN02"], quantity=2
    )
    assert homes.pharmacist_home(actor=ctx.actor("ph-CN02")).to_receive == []
    shipments.ship_shipment(
        actor=ctx.actor("manager"), shipment_id=row.id, courier="C", tracking_number="T1"
    )
    cn02 = homes.pharmacist_home(actor=ctx.actor("ph-CN02"))
    assert [s.id for s in cn02.to_receive] == [row.id]
    assert homes.pharmacist_home(actor=ctx.actor("ph-CN01")).to_receive == []
    # CN02: 7 usable; needed from today: V2 now (1), an expected randomization at 0.5 a week
    # on days 14, 28, 42, 56, 70, V3 opening on day 26 and V4 on day 54: 8 kits on day 70.
    [cover] = cn02.covers
    assert (cover.site_code, cover.usable, cover.days, cover.warn) == ("CN02", 7, 70, False)


def test_the_supply_managers_home_orders_sites_by_cover_and_shows_shipments_in_flight(trial, ctx):
    from iwrs.services import homes

    home = homes.supply_home(actor=ctx.actor("manager"))
    assert [c.site_code for c in home.covers] == ["CN01", "CN02", "CN03", "CN04"]
    assert [c.active for c in home.covers] == [True, True, False, False]
    assert home.covers[0].warn and not home.covers[1].warn
    assert all(s.state in ("requested", "shipped") for s in home.in_flight)


def test_an_alert_is_acknowledged_then_resolved_with_a_reason_each_audited(trial, ctx):
    from iwrs.db import read_session, transaction
    from iwrs.models.audit import AuditEvent
    from iwrs.services import alerts, homes
    from iwrs.services.supply import open_alert

    with transaction() as session:
        alert_id = open_alert(
            session,
            kind="depot_shortfall",
            site_id=ctx.sites["CN01"],
            message="Depot short",
            actor=Actor.system("test"),
        ).id
    manager = ctx.actor("manager")
    assert [a.id for a in homes.supply_home(actor=manager).alerts] == [alert_id]
    alerts.acknowledge_alert(actor=manager, alert_id=alert_id)
    with pytest.raises(Conflict) as again:
        alerts.acknowledge_alert(actor=manager, alert_id=alert_id)
    assert again.value.rule == "acknowledged"
    seen = homes.supply_home(actor=manager).alerts[0]
    assert seen.acknowledged_by_id == ctx.people["manager"].id and seen.acknowledged_at
    with pytest.raises(InvalidInput) as empty:
        alerts.resolve_alert(actor=manager, alert_id=alert_id, reason="  ")
    assert (empty.value.field, empty.value.rule) == ("reason", "required")
    alerts.resolve_alert(actor=manager, alert_id=alert_id, reason="Depot restocked")
    with pytest.raises(Conflict) as twice:
        alerts.resolve_alert(actor=manager, alert_id=alert_id, reason="Again")
    assert twice.value.rule == "resolved"
    with pytest.raises(NotFound):
        alerts.acknowledge_alert(actor=manager, alert_id=alert_id + 1000)
    after = homes.supply_home(actor=manager)
    assert after.alerts == [] and [a.id for a in after.resolved] == [alert_id]
    done = after.resolved[0]
    assert (done.resolved_by_id, done.resolution) == (ctx.people["manager"].id, "Depot restocked")
    events = read_session().scalars(
        select(AuditEvent)
        .where(AuditEvent.entity_type == "supply_alert", AuditEvent.entity_id == str(alert_id))
        .order_by(AuditEvent.seq)
    )
    trail = [(e.action, e.username, e.reason) for e in events]
    name = ctx.people["manager"].username
    assert trail == [
        ("supply.alert_raised", "test", None),
        ("supply.alert_acknowledged", name, None),
        ("supply.alert_resolved", name, "Depot restocked"),
    ]


def test_the_statisticians_home_shows_balance_by_stratum_and_site_and_is_audited(trial, ctx):
    from iwrs.db import read_session
    from iwrs.models.audit import AuditEvent
    from iwrs.services import homes, statistics

    home = homes.statistician_home(actor=ctx.actor("stat"))
    allocations = statistics.allocations(actor=ctx.actor("stat"))
    by_site = {b.group: b.final for b in home.by_site}
    for code in ("CN01", "CN02"):
        expected = Counter(a.arm for a in allocations if a.site == code)
        assert by_site[code] == {arm: expected[arm] for arm in home.arms}
    assert sum(sum(b.final.values()) for b in home.by_stratum) == home.randomized == 6
    assert [b.label for b in home.by_stratum] == ["Underlying disease: RA"]
    assert home.lists is not None
    used = {st.stratum: st.used for st in home.lists.strata}
    assert used == {"disease=RA": 6, "disease=SSc": 0}
    viewed = (
        read_session()
        .scalars(select(AuditEvent).where(AuditEvent.action == "balance.viewed"))
        .all()
    )
    assert viewed and viewed[-1].username == ctx.people["stat"].username


def test_the_auditors_and_admins_homes(trial, ctx):
    from iwrs.db import engine
    from iwrs.services import homes, users

    events = homes.auditor_home(actor=ctx.actor("auditor"))
    assert len(events) == homes.RECENT_EVENTS
    assert [e.seq for e in events] == sorted((e.seq for e in events), reverse=True)
    # A site role can no longer be left without a site (users.create_user refuses it), but an
    # account from before that rule can be: the admin's home lists it, so it is found.
    nosite = users.create_user(
        actor=Actor.system("test"),
        username="ph.nosite",
        full_name="No Site",
        role="pharmacist",
        password=PASSWORD,
        site_codes=["CN01"],
    )
    with engine().begin() as connection:
        connection.execute(text("DELETE FROM user_site WHERE user_id = :u"), {"u": nosite.id})
    home = homes.admin_home(actor=ctx.actor("admin"))
    assert home.users_by_role["investigator"] == 4 and home.users_by_role["pharmacist"] == 5
    assert [u.username for u in home.without_site] == ["ph.nosite"]
    assert home.sites_by_status == {"active": 2, "inactive": 2}
    assert [s.code for s in home.inactive_sites] == ["CN03", "CN04"]


def test_the_inbox_holds_notices_and_messages_each_read_by_its_reader(trial, ctx):
    from iwrs.services import inbox, passwords, users

    person = users.create_user(
        actor=Actor.system("test"),
        username="aud.mail",
        full_name="Mail Reader",
        role="auditor",
        password=PASSWORD,
        email="aud.mail@example.org",
    )
    passwords.reset_password(actor=ctx.actor("admin"), user_id=person.id, signer_password=PASSWORD)
    reader = Actor.of(person)
    items = inbox.inbox_of(actor=reader)
    assert sorted(i.kind for i in items) == ["message", "notice"]
    message = next(i for i in items if i.kind == "message")
    assert passwords.SEALED not in message.text  # the temporary password never shows
    assert inbox.unread_count(actor=reader) == 2
    with pytest.raises(NotFound) as theirs:
        inbox.mark_message_read(actor=ctx.actor("auditor"), notification_id=message.id)
    assert theirs.value.rule == "exists"
    inbox.mark_message_read(actor=reader, notification_id=message.id)
    inbox.mark_message_read(actor=reader, notification_id=message.id)  # once is enough
    assert inbox.unread_count(actor=reader) == 1
    assert inbox.inbox_of(actor=ctx.actor("auditor")) == []


def test_an_address_given_to_a_new_person_does_not_open_the_former_users_messages(trial, ctx):
    """Messages to an address before the reader's account existed are not theirs (listed or
    marked read), though the address is the same (iwrs/services/inbox.py, decision)."""
    from sqlalchemy import update

    from iwrs.db import transaction
    from iwrs.models.users import User
    from iwrs.services import inbox, passwords, users

    def account(username: str) -> Any:
        return users.create_user(
            actor=Actor.system("test"),
            username=username,
            full_name="Mail Reader",
            role="auditor",
            password=PASSWORD,
            email="shared.mail@example.org",
        )

    former = account("aud.former")
    passwords.reset_password(actor=ctx.actor("admin"), user_id=former.id, signer_password=PASSWORD)
    (earlier,) = [i for i in inbox.inbox_of(actor=Actor.of(former)) if i.kind == "message"]
    with transaction() as session:  # the former user leaves; the address is free again
        session.execute(update(User).where(User.id == former.id).values(email=None))
    trial["clock"].advance(seconds=1)
    successor = Actor.of(account("aud.successor"))
    assert [i for i in inbox.inbox_of(actor=successor) if i.kind == "message"] == []
    with pytest.raises(NotFound) as theirs:
        inbox.mark_message_read(actor=successor, notification_id=earlier.id)
    assert (theirs.value.field, theirs.value.rule) == ("notification_id", "exists")


def _swap(table: Any, column: str, ids: list[int], context: Any) -> None:
    """Exchange the sealed values of two rows (each re-sealed under the other's context)."""
    from iwrs.db import engine, read_session
    from iwrs.services.supply import sealer

    with engine().begin() as connection:
        rows = connection.execute(select(table).where(table.c.id.in_(ids))).mappings().all()
        first, second = rows
        values = [sealer().unseal(r[column], context=context(r)) for r in rows]
        for row, value in ((first, values[1]), (second, values[0])):
            connection.execute(
                update(table)
                .where(table.c.id == row["id"])
                .values({column: sealer().seal(value, context=context(row))})
            )
    read_session().rollback()


def _mirror() -> None:
    """Every kit's treatment and every slot's arm becomes the other arm (two arms)."""
    from iwrs.db import engine, read_session
    from iwrs.models.randomization import RandomizationSlot
    from iwrs.models.supply import Kit
    from iwrs.services.randomization import SLOT_CONTEXT
    from iwrs.services.supply import KIT_CONTEXT, protocol, sealer

    first, second = (a.code for a in protocol().arms)
    other = {first: second, second: first}
    for table, column, context in (
        (Kit.__table__, "sealed_treatment", lambda r: KIT_CONTEXT.format(number=r["number"])),
        (
            RandomizationSlot.__table__,
            "sealed_arm",
            lambda r: SLOT_CONTEXT.format(
                list_id=r["list_id"], stratum=r["stratum"], sequence=r["sequence"]
            ),
        ),
    ):
        with engine().begin() as connection:
            for row in connection.execute(select(table)).mappings().all():
                arm = sealer().unseal(row[column], context=context(row))
                connection.execute(
                    update(table)
                    .where(table.c.id == row["id"])
                    .values({column: sealer().seal(other[arm], context=context(row))})
                )
    read_session().rollback()


def test_blinded_homes_do_not_change_when_arms_are_swapped(trial):
    """Noninterference: two subjects of different arms swap arms (their slots and their kits),
    then every arm and kit treatment is swapped; the pharmacist's, the supply manager's and the
    investigator's homes stay byte for byte the same (but for the CSRF token)."""
    from iwrs.db import read_session
    from iwrs.models.randomization import Dispensation, Randomization, RandomizationSlot
    from iwrs.models.supply import Kit
    from iwrs.services.randomization import SLOT_CONTEXT, slot_arm
    from iwrs.services.supply import KIT_CONTEXT

    world = trial["world"]
    readers = ["ph-CN01", "ph-CN02", "manager", "inv-CN01"]
    clients = {}
    for name in readers:
        clients[name] = world.app.test_client()
        with world.app.app_context():
            assert sign_in(clients[name], world.people[name].username).status_code == 302

    def homes() -> dict[str, str]:
        return {name: normalize(clients[name].get("/").get_data(as_text=True)) for name in readers}

    before = homes()
    with world.app.app_context():
        session = read_session()
        slots = {
            r.subject_id: session.get(RandomizationSlot, r.slot_id)
            for r in session.scalars(
                select(Randomization).where(Randomization.subject_id.in_(trial["cn01"]))
            )
        }
        arms = {subject: slot_arm(slot) for subject, slot in slots.items()}
        a = trial["cn01"][0]
        b = next(s for s in trial["cn01"] if arms[s] != arms[a])
        slot_table = RandomizationSlot.__table__
        _swap(
            slot_table,
            "sealed_arm",
            [slots[a].id, slots[b].id],
            lambda r: SLOT_CONTEXT.format(
                list_id=r["list_id"], stratum=r["stratum"], sequence=r["sequence"]
            ),
        )
        kits = [
            session.scalars(
                select(Dispensation.kit_id)
                .where(Dispensation.subject_id == s)
                .order_by(Dispensation.id)
            ).first()
            for s in (a, b)
        ]
        _swap(
            Kit.__table__,
            "sealed_treatment",
            kits,
            lambda r: KIT_CONTEXT.format(number=r["number"]),
        )
        assert slot_arm(read_session().get(RandomizationSlot, slots[a].id)) == arms[b]
    assert homes() == before
    with world.app.app_context():
        _mirror()
    assert homes() == before
    with world.app.app_context():
        _mirror()  # back as it was, for the other tests


def test_every_page_shows_the_mode_and_the_inbox_count(trial):
    world = trial["world"]
    client = world.app.test_client()
    with world.app.app_context():
        assert sign_in(client, world.people["ph-CN01"].username).status_code == 302
    for path in ("/", "/inbox", "/sites/"):
        html = client.get(path).get_data(as_text=True)
        assert 'data-mode="production"' in html and "favicon.svg" in html
        assert 'data-unread="0"' in html
    icon = client.get("/static/favicon.svg")
    assert icon.status_code == 200
    icon.close()
