"""The auditor's trail page (issue 15, problem 12): the action filter in words matching by
category, the site filter whatever its case, a reversed date range refused by name, a CSV whose
first line is its column names (the signed manifest beside it), "Back to the trail" keeping the
filters and the page, and paging both ways by keyset."""

from __future__ import annotations

import html
import re

from sqlalchemy import select

from iwrs import audit
from iwrs.audit import Actor
from iwrs.audit_anchor import public_key
from iwrs.audit_export import package_files, verify_export
from iwrs.db import read_session, transaction
from iwrs.models.sites import Site
from iwrs.services.audit_views import ACTION_CATEGORIES

EVENT = re.compile(r'href="(/audit/events/(\d+)[^"]*)"')
OLDER = re.compile(r'href="([^"]*)">Older events')
NEWER = re.compile(r'href="([^"]*)">← Newer events')


def seqs(page: str) -> list[int]:
    return [int(seq) for _, seq in EVENT.findall(page)]


def link(pattern: re.Pattern[str], page: str) -> str | None:
    found = pattern.search(page)
    return html.unescape(found.group(1)) if found else None


def refusals(page: str) -> set[tuple[str, str]]:
    return set(re.findall(r'data-field="([^"]+)" data-rule="([^"]+)"', page))


def seed_trail(app) -> None:  # type: ignore[no-untyped-def]
    """120 scheduled-job events, and 3 at site CN01, written through the real audit writer."""
    with app.app_context():
        site_id = read_session().scalars(select(Site.id).where(Site.code == "CN01")).one()
        with transaction() as session:
            for n in range(120):
                audit.record(
                    session, actor=Actor.system("test"), action="job.ran", entity_type="job",
                    entity_id=n,
                )  # fmt: skip
            for n in range(3):
                audit.record(
                    session, actor=Actor.system("test"), action="site.checked", entity_type="site",
                    entity_id=n, site_id=site_id,
                )  # fmt: skip


def test_the_trail_filters_in_words_and_pages_both_ways(app, login_as):
    seed_trail(app)
    client, _ = login_as("auditor")
    first = client.get("/audit/").get_data(as_text=True)
    for key, (words, _) in ACTION_CATEGORIES.items():
        assert f'<option value="{key}" >{html.escape(words)}</option>' in first
    assert 'name="action" value=' not in first  # no free-text code prefix to guess

    signed = client.get("/audit/", query_string={"action": "sign_in"}).get_data(as_text=True)
    actions = set(re.findall(r"<td>(auth\.[a-z_]+|[a-z_]+\.[a-z_]+)</td>", signed))
    assert actions and all(a.startswith(("auth.", "esign.")) for a in actions)
    system = client.get("/audit/", query_string={"action": "system"}).get_data(as_text=True)
    assert set(re.findall(r"<td>([a-z_]+\.[a-z_]+)</td>", system)) == {"job.ran"}

    lower = seqs(client.get("/audit/?site=cn01").get_data(as_text=True))
    upper = seqs(client.get("/audit/?site=CN01").get_data(as_text=True))
    assert len(lower) >= 3 and lower == upper

    reversed_range = client.get("/audit/?date_from=2026-03-05&date_to=2026-03-01")
    assert reversed_range.status_code == 422
    shown = reversed_range.get_data(as_text=True)
    assert refusals(shown) == {("date_to", "date_range_order")}
    assert 'value="05-MAR-2026"' in shown and seqs(shown) == []

    # Paging: older, then newer again, by keyset; the pages do not overlap.
    newest = seqs(first)
    assert len(newest) == 50 and link(NEWER, first) is None
    older_url = link(OLDER, first)
    assert older_url
    second = client.get(older_url).get_data(as_text=True)
    older = seqs(second)
    assert len(older) == 50 and max(older) < min(newest)
    newer_url = link(NEWER, second)
    assert newer_url and "after=" in newer_url
    assert seqs(client.get(newer_url).get_data(as_text=True)) == newest

    # "Back to the trail" returns to the filtered page the event was opened from.
    filtered = client.get("/audit/", query_string={"action": "system"}).get_data(as_text=True)
    page_two = client.get(link(OLDER, filtered)).get_data(as_text=True)
    event_url = html.unescape(EVENT.search(page_two).group(1))  # type: ignore[union-attr]
    detail = client.get(event_url).get_data(as_text=True)
    back = html.unescape(re.search(r'href="([^"]*)">Back to the trail', detail).group(1))  # type: ignore[union-attr]
    assert "action=system" in back and "before=" in back
    assert seqs(client.get(back).get_data(as_text=True)) == seqs(page_two)


def test_the_csv_export_opens_as_a_plain_csv_and_still_verifies(app, login_as):
    client, _ = login_as("auditor")
    response = client.get("/audit/export.csv", query_string={"action": "users"})
    assert response.mimetype == "application/zip"
    assert "audit-trail-csv.zip" in response.headers["Content-Disposition"]
    csv_text, manifest = package_files(response.get_data())
    assert csv_text.splitlines()[0].startswith("seq,occurred_at,username,role")
    assert '"signature"' in manifest
    with app.app_context():
        assert verify_export(response.get_data(), public_key()).ok
