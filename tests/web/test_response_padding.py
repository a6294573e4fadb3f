"""Answers that carry an arm have a length independent of the arms (iwrs/padding.py): lengths
are seen by people who never see the text (access logs, TLS record sizes).

The two mirror worlds of tests/web/blind_world.py differ only in the arms (the distinctive codes
ACTIVEQX and PLACEBOZK, and the names Genakumab and Placebo, differ in length). Everything the
unblinded statistician and the unblinding investigators can fetch, and a fresh unblinding by the
page and by the API, must have the same status and byte length in both worlds, while the
answers that show arms really do differ in content.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

import pytest

from tests.conftest import PASSWORD, csrf_from
from tests.web.blind_world import (
    STATISTICIAN,
    Fetched,
    World,
    build_world,
    crawl,
    fresh_databases,
)

# The answers that show arms (or counts by arm), each of which must differ between the worlds.
ARM_ANSWERS = [
    "/lists/",
    "/lists/allocations",
    "/lists/allocations.csv",
    "/lists/status.csv",
    "API /api/v1/lists/status",
]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def worlds(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[World, World]]:
    directory = tmp_path_factory.mktemp("padding-worlds")
    with fresh_databases(request, request.param, directory, 2) as (plain_url, mirror_url):
        plain = build_world(directory / "plain", plain_url, mirror=False)
        mirror = build_world(directory / "mirror", mirror_url, mirror=True)
        yield plain, mirror
        plain.dispose()
        mirror.dispose()


def _length(fetched: Fetched) -> tuple[int, str | None]:
    return fetched.status, dict(fetched.headers).get("Content-Length")


def _differing_lengths(plain: dict[str, Fetched], mirror: dict[str, Fetched]) -> list[str]:
    assert plain.keys() == mirror.keys()
    return sorted(url for url in plain if _length(plain[url]) != _length(mirror[url]))


def test_everything_the_statistician_fetches_has_the_same_length_in_both_worlds(worlds):
    plain, mirror = (crawl(world, STATISTICIAN) for world in worlds)
    for url in ARM_ANSWERS:
        assert plain[url].status == 200, url
        assert plain[url].body != mirror[url].body, f"{url} should show the (swapped) arms"
        assert _length(plain[url])[1] is not None, url
    assert not _differing_lengths(plain, mirror)


def test_the_csv_padding_column_holds_only_spaces_and_the_values_stay_exact(worlds):
    for world in worlds:  # both, so the worlds stay in step (each export is audited)
        client = world.client(STATISTICIAN)
        text = client.get("/lists/allocations.csv").get_data(as_text=True)
        rows = list(csv.DictReader(io.StringIO(text)))
        assert rows and {row["arm"] for row in rows} == {"ACTIVEQX", "PLACEBOZK"}
        assert all(set(row["padding"]) <= {" "} for row in rows)
        assert {len(row["arm"]) + len(row["padding"]) for row in rows} == {len("PLACEBOZK")}
        text = client.get("/lists/status.csv").get_data(as_text=True)
        status = list(csv.DictReader(io.StringIO(text)))
        assert [k for k in status[0] if k.startswith("used_")] == [
            "used_ACTIVEQX",
            "used_PLACEBOZK",
        ]


def test_the_unblinding_investigators_see_their_arm_in_answers_of_one_length(worlds):
    plain, mirror = (crawl(world, "dr.li") for world in worlds)
    for url in worlds[0].may_see_arms("dr.li"):  # S3, unblinded by dr.li: page and receipt
        assert plain[url].status == 200 and plain[url].body != mirror[url].body
    assert not _differing_lengths(plain, mirror)
    # S7, unblinded by dr.zhang: the same page, the other arm of the other world.
    url = f"/subjects/{worlds[0].subject_ids['S7']}/unblinded"
    views = [world.client("dr.zhang").get(url) for world in worlds]
    assert [v.status_code for v in views] == [200, 200]
    assert views[0].get_data() != views[1].get_data()
    assert len(views[0].get_data()) == len(views[1].get_data())


def test_a_fresh_unblinding_answers_with_one_length_on_the_page_and_the_api(worlds):
    """S1 through the signed form, S2 through the API: the arms differ between the worlds, the
    lengths do not."""
    pages, answers = [], []
    for world in worlds:
        client = world.client("dr.li")
        subject_id = world.subject_ids["S1"]
        token = csrf_from(client.get(f"/subjects/{subject_id}/randomization").get_data(True))
        pages.append(
            client.post(
                f"/subjects/{subject_id}/unblind",
                data={
                    "category": "sae",
                    "reason": "Anaphylaxis at home",
                    "understood": "y",
                    "signature_password": PASSWORD,
                    "csrf_token": token,
                },
            )
        )
        answers.append(
            world.app.test_client().post(
                f"/api/v1/subjects/{world.subject_ids['S2']}/unblinding",
                json={
                    "category": "sae",
                    "reason": "Anaphylaxis at home",
                    "understood": True,
                    "signature_password": PASSWORD,
                },
                headers={"Authorization": f"Bearer {world.tokens['dr.li']}"},
            )
        )
    for plain, mirror in (pages, answers):
        assert plain.status_code == mirror.status_code == 200
        assert plain.get_data() != mirror.get_data()
        assert len(plain.get_data()) == len(mirror.get_data())
        assert plain.headers["Content-Length"] == mirror.headers["Content-Length"]
    assert answers[0].get_json()["arm_code"] != answers[1].get_json()["arm_code"]


def test_counts_by_arm_take_the_room_of_their_total_on_the_list_page_and_api(app):
    """The mirror worlds swap counts, so they cannot show this: allocations of 9:1 and 5:5 in a
    stratum of 10 (and 10:0) give pages and list-status answers of one length."""
    from flask import render_template

    from iwrs import padding
    from iwrs.services.randomization_views import ListStatus, StratumStatus

    def status(ra: int, ssc: int) -> ListStatus:
        strata = [
            StratumStatus("disease=RA", 10, 110, {"A": ra, "P": 10 - ra}),
            StratumStatus("disease=SSc", 10, 110, {"A": ssc, "P": 10 - ssc}),
        ]
        overall = {"A": ra + ssc, "P": 20 - ra - ssc}
        return ListStatus(1, "v1", False, "generated", "f" * 64, True, strata, overall)

    pages, pads = set(), set()
    with app.test_request_context("/lists/"):
        for ra, ssc in ((9, 1), (5, 5), (10, 0), (0, 10), (10, 10)):
            shown = status(ra, ssc)
            pages.add(len(render_template("lists.html", status=shown).encode()))
            counts = [(n, s.used) for s in shown.strata for n in s.by_arm.values()]
            counts += [(n, 20) for n in shown.overall_by_arm.values()]
            digits = sum(len(str(n)) for n, _ in counts)
            pads.add(digits + padding.json_padding(counts=counts))
    assert len(pages) == 1 and len(pads) == 1
