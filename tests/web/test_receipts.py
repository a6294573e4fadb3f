"""Printable receipts (issue 15, problem 10): each act's receipt names the study, the site, the
person and role, the site's local time and UTC, what was done (subject and kit numbers, never
an arm for a blinded reader) and the trail's proof; the PDF is a real PDF; a blinded reader's
receipt is the same byte for byte whatever the subject's arm.

One world (tests/web/blind_world.py, SQLite, ~5 s) holds every act: randomizations, day-1 and
V2 dispensations, received shipments, and S3's emergency unblinding by dr.li.
"""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from iwrs.audit_anchor import take_checkpoint
from tests.web.blind_world import ARM_CODES, SWAP, World

_CSRF = re.compile(rb'(?<=name="csrf_token" value=")[^"]+')


def _needs_weasyprint() -> None:
    """Skip where WeasyPrint or the Pango library it draws with is missing (the receipt pages
    still work there; the PDF answers 503 pdf_unavailable)."""
    try:
        import weasyprint  # noqa: F401
    except (ImportError, OSError) as missing:
        pytest.skip(f"no PDF library here: {missing}")


ARM_NAMES = re.compile(r"\bGenakumab\b|\bPlacebo\b(?!-controlled)")


@pytest.fixture
def world(trial_world: World) -> World:
    return trial_world  # tests/web/conftest.py


def _facts(html: str) -> dict[str, str]:
    """The receipt's <dt>label</dt><dd>value</dd> pairs, tags stripped."""
    body = html.split('<article class="receipt"', 1)[1].split("</article>", 1)[0]
    pairs = re.findall(r"<dt[^>]*>(.*?)</dt><dd[^>]*>(.*?)</dd>", body, re.S)
    return {k.strip(): re.sub(r"<[^>]+>", "", v).strip() for k, v in pairs}


def _rows(world: World, model, **where):  # type: ignore[no-untyped-def]
    from iwrs.db import read_session

    with world.app.app_context():
        session = read_session()
        session.rollback()
        query = select(model)
        for name, value in where.items():
            query = query.where(getattr(model, name) == value)
        return list(session.scalars(query.order_by(model.id)))


def test_a_randomization_receipt_names_study_site_person_time_subject_and_kit(world):
    from iwrs.models.randomization import Randomization
    from iwrs.models.supply import Kit

    subject_id = world.subject_ids["S1"]
    (row,) = _rows(world, Randomization, subject_id=subject_id)
    (kit,) = _rows(world, Kit, id=_day1_kit_id(world, subject_id))
    page = world.client("dr.li").get(f"/receipts/randomization/{subject_id}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    facts = _facts(html)
    assert facts["Study"].startswith("GenSci048-204")
    assert facts["Site"].startswith("CN01 ")
    assert facts["By"] == "Dr Li Wei (investigator)"
    assert facts["Randomization number"] == row.randomization_number
    assert facts["Kit for day 1"] == kit.number
    assert re.fullmatch(
        r"\d\d-[A-Z]{3}-\d{4} \d\d:\d\d \S+ \(Asia/Shanghai\) · \d\d-[A-Z]{3}-\d{4} \d\d:\d\d UTC",
        facts["When"],
    ), facts["When"]
    assert re.search(r"event \d+ of the audit trail, chain hash <code[^>]*>[0-9a-f]{64}<", html)
    assert not ARM_NAMES.search(html.split("<main>", 1)[1]) and not any(
        code in html for code in ARM_CODES
    )


def _day1_kit_id(world: World, subject_id: int) -> int:
    from iwrs.models.randomization import Dispensation

    return _rows(world, Dispensation, subject_id=subject_id)[0].kit_id


def test_each_dispensation_has_a_receipt_with_its_visit_and_kit(world):
    from iwrs.models.randomization import Dispensation
    from iwrs.models.supply import Kit

    client = world.client("ph.wang")
    for row in _rows(world, Dispensation, subject_id=world.subject_ids["S1"]):
        (kit,) = _rows(world, Kit, id=row.kit_id)
        page = client.get(f"/receipts/dispensation/{row.id}")
        assert page.status_code == 200, row.visit_code
        facts = _facts(page.get_data(as_text=True))
        assert facts["By"].endswith("(pharmacist)") or facts["By"].endswith("(investigator)")
        assert kit.number in (facts.get("Kit"), facts.get("Kit for day 1"))
        if "Visit" in facts:
            assert facts["Visit"] == row.visit_code


def test_a_shipment_receipt_lists_its_kits_by_condition(world):
    from iwrs.models.supply import Shipment

    received = [s for s in _rows(world, Shipment, site_id=world.site_ids["CN02"]) if s.received_at]
    assert received
    shipment = received[0]
    page = world.client("ph.zhou").get(f"/receipts/shipment/{shipment.id}")
    assert page.status_code == 200
    facts = _facts(page.get_data(as_text=True))
    assert facts["Shipment"] == shipment.number
    assert facts["By"] == "Zhou Jing (pharmacist)"
    assert facts["Kits damaged"] == "1"  # the world damages one kit at CN02's first receipt
    assert facts["Temperature excursion reported"] == "no"
    # another site's pharmacist: not found, as for a shipment that does not exist
    assert world.client("ph.wang").get(f"/receipts/shipment/{shipment.id}").status_code == 404


def test_an_unblinding_receipt_shows_the_arm_only_to_the_unblinding_investigator(world):
    url = f"/receipts/unblinding/{world.subject_ids['S3']}"
    mine = world.client("dr.li").get(url).get_data(as_text=True)
    assert _facts(mine)["Reason category"] == "serious adverse event"
    assert ARM_NAMES.search(_facts(mine)["Treatment"])
    auditor = world.client("audit.zhao").get(url)
    assert auditor.status_code == 200
    facts = _facts(auditor.get_data(as_text=True))
    assert "Treatment" not in facts and facts["Subject"] == _facts(mine)["Subject"]
    assert not any(code in auditor.get_data(as_text=True) for code in ARM_CODES)


def test_a_receipt_shows_the_signed_checkpoint_that_covers_its_event(world):
    with world.app.app_context():
        anchor = take_checkpoint(occasion="test")
    html = (
        world.client("dr.li")
        .get(f"/receipts/randomization/{world.subject_ids['S1']}")
        .get_data(as_text=True)
    )
    assert f"signed checkpoint {anchor.id} (trail head at event {anchor.seq}" in html
    assert anchor.signature in html


def test_a_blinded_readers_receipts_are_the_same_bytes_whatever_the_arm(world):
    """Change one subject's arm (its list slot resealed with the other arm) and every receipt a
    blinded reader gets is unchanged. The PDF is drawn from the same receipt values through the
    same partial (receipts/_receipt.html), so the page stands for it."""
    from iwrs.models.randomization import Dispensation, Randomization
    from iwrs.models.supply import Shipment

    subject_id = world.subject_ids["S1"]
    urls = {
        "dr.li": [f"/receipts/randomization/{subject_id}"],
        "ph.wang": [
            f"/receipts/dispensation/{d.id}"
            for d in _rows(world, Dispensation, subject_id=subject_id)
        ]
        + [
            f"/receipts/shipment/{s.id}"
            for s in _rows(world, Shipment, site_id=world.site_ids["CN01"])
            if s.received_at
        ],
        "audit.zhao": [f"/receipts/unblinding/{world.subject_ids['S3']}"],
    }
    clients = {who: world.client(who) for who in urls}

    def fetch() -> dict[str, bytes]:
        # The sign-out form's CSRF token is signed with the wall clock: the one varying part.
        return {
            u: _CSRF.sub(b"<csrf>", clients[who].get(u).get_data())
            for who, us in urls.items()
            for u in us
        }

    before = fetch()
    (randomization,) = _rows(world, Randomization, subject_id=subject_id)
    _swap_slot(world, randomization.slot_id)
    after = fetch()
    _swap_slot(world, randomization.slot_id)
    assert all(b.count(b"<article") == 1 for b in before.values()), "a receipt was refused"
    assert before == after


def _swap_slot(world: World, slot_id: int) -> None:
    from sqlalchemy import update

    from iwrs.db import engine, read_session
    from iwrs.models.randomization import RandomizationSlot
    from iwrs.services.randomization import SLOT_CONTEXT
    from iwrs.services.supply import sealer

    with world.app.app_context(), engine().begin() as connection:
        row = (
            connection.execute(
                select(RandomizationSlot.__table__).where(RandomizationSlot.id == slot_id)
            )
            .mappings()
            .one()
        )
        context = SLOT_CONTEXT.format(
            list_id=row["list_id"], stratum=row["stratum"], sequence=row["sequence"]
        )
        arm = sealer().unseal(row["sealed_arm"], context=context)
        connection.execute(
            update(RandomizationSlot.__table__)
            .where(RandomizationSlot.id == slot_id)
            .values(sealed_arm=sealer().seal(SWAP[arm], context=context))
        )
        read_session().rollback()


def test_the_treatment_is_never_on_paper(world):
    """The unblinding investigator's PDF is the same bytes whatever the subject's arm."""
    _needs_weasyprint()
    from iwrs.models.randomization import Randomization

    url = f"/receipts/unblinding/{world.subject_ids['S3']}"
    client = world.client("dr.li")
    (randomization,) = _rows(world, Randomization, subject_id=world.subject_ids["S3"])
    before = client.get(f"{url}?format=pdf").get_data()
    _swap_slot(world, randomization.slot_id)
    after = client.get(f"{url}?format=pdf").get_data()
    _swap_slot(world, randomization.slot_id)
    assert before.startswith(b"%PDF-") and before == after
    page = client.get(url).get_data(as_text=True)
    assert re.search(r'<dt class="noprint">Treatment</dt><dd class="noprint">', page)


def test_the_pdf_receipt_is_a_real_pdf(world):
    _needs_weasyprint()
    response = world.client("dr.li").get(
        f"/receipts/randomization/{world.subject_ids['S1']}?format=pdf"
    )
    assert response.status_code == 200
    assert response.mimetype == "application/pdf"
    body = response.get_data()
    assert body.startswith(b"%PDF-") and body.rstrip().endswith(b"%%EOF")
    objects = _pdf_objects(body)
    assert len(re.findall(rb"/Type\s*/Page\b", objects)) == 1  # one page
    assert re.search(rb"/Count\s+1\b", objects)


def _pdf_objects(body: bytes) -> bytes:
    """The PDF's text with every Flate stream inflated (WeasyPrint packs objects in streams)."""
    import zlib

    parts = [body]
    for stream in re.findall(rb"stream\r?\n(.*?)\r?\nendstream", body, re.S):
        try:
            parts.append(zlib.decompress(stream))
        except zlib.error:
            continue
    return b"\n".join(parts)


def test_a_printed_randomization_page_names_study_person_and_time(world):
    page = world.client("dr.li").get(f"/subjects/{world.subject_ids['S1']}/randomization")
    printed = re.search(r'<p class="print-only printed">(.*?)</p>', page.get_data(as_text=True))
    assert printed, "no line for print"
    assert re.fullmatch(
        r"GenSci048-204 · printed by Dr Li Wei \(investigator\) · "
        r"\d\d-[A-Z]{3}-\d{4} \d\d:\d\d UTC",
        printed.group(1),
    ), printed.group(1)
    style = world.app.static_folder + "/style.css"  # type: ignore[operator]
    with open(style, encoding="utf-8") as sheet:
        assert ".print-only { display:block; }" in sheet.read()  # shown on paper only


def test_only_the_receipt_page_records_a_view_of_the_arm(world):
    """The PDF never shows the treatment, so asking for it records no `unblinding.viewed`; the
    page, which shows it, records one. (Without WeasyPrint the PDF answers 503: still none.)"""
    from iwrs.models import AuditEvent

    url = f"/receipts/unblinding/{world.subject_ids['S3']}"
    client = world.client("dr.li")

    def views() -> int:
        from sqlalchemy import func

        from iwrs.db import read_session

        with world.app.app_context():
            session = read_session()
            session.rollback()
            query = select(func.count()).where(AuditEvent.action == "unblinding.viewed")
            return int(session.scalar(query) or 0)

    before = views()
    assert client.get(f"{url}?format=pdf").status_code in (200, 503)
    assert views() == before
    assert client.get(url).status_code == 200
    assert views() == before + 1
