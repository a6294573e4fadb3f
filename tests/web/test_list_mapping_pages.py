"""The list import's mapping step on the statistician's page: files statisticians already have
(tests/fixtures/lists/) import through a column mapping, the mapping is stored sealed with the
list, shown on the list page and audited without its arm map; a wrong mapping is refused by
rule, naming the field; blinded roles reach none of it."""

from __future__ import annotations

import html
import io
import json
import re
from pathlib import Path

from sqlalchemy import select

from iwrs.db import read_session
from iwrs.models import AuditEvent
from iwrs.models.randomization import RandomizationList
from tests.conftest import csrf_from

FIXTURES = Path(__file__).parents[1] / "fixtures" / "lists"


def refusals(html: str) -> set[tuple[str, str]]:
    return set(re.findall(r'data-field="([^"]+)" data-rule="([^"]+)"', html))


def upload(client, name: str):  # type: ignore[no-untyped-def]
    token = csrf_from(client.get("/lists/").get_data(as_text=True))
    data = {
        "csrf_token": token,
        "name": name.split(".")[0],
        "file": (io.BytesIO((FIXTURES / name).read_bytes()), name),
    }
    return client.post("/lists/import/map", data=data, content_type="multipart/form-data")


def mapped(client, page: str, **fields: object):  # type: ignore[no-untyped-def]
    csv_text = re.search(r'<textarea name="csv_text"[^>]*>(.*?)</textarea>', page, re.S)
    assert csv_text, "the mapping page carries the file"

    data = {
        "csrf_token": csrf_from(page),
        "name": "mapped",
        "csv_text": html.unescape(csv_text.group(1)),
        "factor": "disease",
        **fields,
    }
    return client.post("/lists/import/mapped", data=data)


def test_a_redcap_table_and_a_blockrand_file_import_through_the_mapping_page(app, login_as):
    client, _ = login_as("unblinded_statistician")
    page = upload(client, "redcap_allocation_raw.csv")
    assert page.status_code == 200
    shown = page.get_data(as_text=True)
    assert "redcap_randomization_group" in shown and "notes" in shown

    wrong = mapped(
        client,
        shown,
        arm_column="redcap_randomization_group",
        arm_values="1=A; 2=Genakumab",
        factor_column="disease",
        factor_values="1=RA; 2=SSc; 3",
    )
    assert wrong.status_code == 422
    again = wrong.get_data(as_text=True)
    assert refusals(again) == {("factor_disease_values", "value_map_syntax")}
    assert 'value="1=A; 2=Genakumab"' in again  # inputs kept
    wrong = mapped(
        client,
        again,
        arm_column="redcap_randomization_group",
        arm_values="1=A; 2=Genakumab",
        factor_column="notes",
        factor_values="1=RA; 2=SSc",
    )
    assert refusals(wrong.get_data(as_text=True)) >= {("arm_values", "arm_known")}
    with app.app_context():
        assert read_session().scalars(select(RandomizationList)).all() == []

    done = mapped(
        client,
        shown,
        arm_column="redcap_randomization_group",
        arm_values="1=A; 2=P",
        factor_column="disease",
        factor_values="1=RA; 2=SSc",
    )
    assert done.status_code == 302, refusals(done.get_data(as_text=True))
    lists_page = client.get("/lists/").get_data(as_text=True)
    assert "Column mapping" in lists_page
    assert "<code>redcap_randomization_group</code>" in lists_page
    assert "1 → A" in lists_page

    with app.app_context():
        session = read_session()
        row = session.scalars(select(RandomizationList)).one()
        assert row.sealed_mapping and "redcap" not in row.sealed_mapping  # sealed
        event = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "list.imported")
        ).one()
        after = json.loads(event.after) if isinstance(event.after, str) else event.after
        assert after["mapping"]["columns"]["arm_column"] == "redcap_randomization_group"
        assert after["mapping"]["arm_values_mapped"] == 2
        assert "1=A" not in json.dumps(after) and '"1": "A"' not in json.dumps(after)

    page = upload(client, "blockrand_by_stratum.csv").get_data(as_text=True)
    assert "R blockrand output" in page  # the known layout's columns are chosen to start from
    arm_select = page.split('name="arm_column"', 1)[1].split("</select>", 1)[0]
    assert '<option value="treatment" selected>' in arm_select
    done = mapped(
        client,
        page,
        arm_column="treatment",
        arm_values="A=A; B=P",
        factor_column="stratum",
        factor_values="",
        sequence_column="id",
        sequence_scope="stratum",
        block_column="block.id",
        block_size_column="block.size",
    )
    assert done.status_code == 302, refusals(done.get_data(as_text=True))
    assert "<code>block.size</code>" in client.get("/lists/").get_data(as_text=True)


def test_blinded_roles_reach_neither_step_of_the_mapping(app, login_as):
    for role in ("pharmacist", "admin"):
        client, _ = login_as(role, ["CN01"] if role == "pharmacist" else None)
        token = csrf_from(client.get("/").get_data(as_text=True))
        body = {"csrf_token": token, "csv_text": "a,b\n1,2\n", "arm_column": "a"}
        refused = client.post("/lists/import/mapped", data=body)
        assert refused.status_code in (403, 404)
        assert "arm_known" not in refused.get_data(as_text=True)


def test_a_list_file_of_real_size_passes_both_steps_of_the_mapping(app, login_as):
    """A ~300 KB file accepted at step 1 (2 MB limit) is carried to step 2 in a multipart form,
    so the request guard applies the file limit to it, not the 256 KB form limit."""
    client, _ = login_as("unblinded_statistician")
    rows = ["redcap_randomization_number,redcap_randomization_group,disease,notes"]
    rows += [f",{1 + (i // 2 + i) % 2},{1 + (i // 4) % 2},{'n' * 150}" for i in range(2000)]
    body = ("\n".join(rows) + "\n").encode()
    assert len(body) > 300_000
    token = csrf_from(client.get("/lists/").get_data(as_text=True))
    step1 = client.post(
        "/lists/import/map",
        data={"csrf_token": token, "name": "big", "file": (io.BytesIO(body), "big.csv")},
        content_type="multipart/form-data",
    )
    assert step1.status_code == 200
    page = step1.get_data(as_text=True)
    form = page.split('action="/lists/import/mapped"', 1)[1].split(">", 1)[0]
    assert 'enctype="multipart/form-data"' in form
    csv_text = re.search(r'<textarea name="csv_text"[^>]*>(.*?)</textarea>', page, re.S)
    assert csv_text
    data = {
        "csrf_token": csrf_from(page),
        "name": "big",
        "csv_text": html.unescape(csv_text.group(1)),
        "factor": "disease",
        "arm_column": "redcap_randomization_group",
        "arm_values": "1=A; 2=P",
        "factor_column": "disease",
        "factor_values": "1=RA; 2=SSc",
    }
    done = client.post("/lists/import/mapped", data=data, content_type="multipart/form-data")
    assert done.status_code == 302, refusals(done.get_data(as_text=True))
