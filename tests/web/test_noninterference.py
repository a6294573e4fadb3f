"""Noninterference, the test of a blind (README rule 2): swap every arm and every kit's
treatment, replay the same actions, and nothing a blinded role can fetch may change.

Two worlds run the same script (tests/web/blind_world.py); in the mirror world every sealed kit
treatment and list slot holds the other arm. Each blinded role crawls both worlds (every page
reachable from "/", every page and API GET for every row id) and every (status, headers, body)
must be identical, as must the set of URLs reached. The unblinded statistician's list page must
differ (so the worlds really are mirrored), and a randomization refused for lack of one arm
must read the same whichever arm is missing.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from tests.conftest import PASSWORD, csrf_from
from tests.web.blind_world import (
    ARM_CODES,
    BLINDED,
    LIST_SEED,
    STATISTICIAN,
    SWAP,
    World,
    build_world,
    crawl,
    fresh_databases,
    normalize,
)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def worlds(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[World, World]]:
    directory = tmp_path_factory.mktemp("mirror-worlds")
    with fresh_databases(request, request.param, directory, 2) as (plain_url, mirror_url):
        plain = build_world(directory / "plain", plain_url, mirror=False)
        mirror = build_world(directory / "mirror", mirror_url, mirror=True)
        yield plain, mirror
        plain.dispose()
        mirror.dispose()


def _explain(plain: dict, mirror: dict, differing: list[str], limit: int = 6) -> str:
    lines = [f"{len(differing)} URL(s) differ between the mirror worlds:"]
    lines += [f"  {url}" for url in differing]
    for url in differing[:limit]:
        a, b = plain.get(url), mirror.get(url)
        lines.append(f"--- {url}")
        if a is None or b is None:
            lines.append(
                f"  reached in only one world: plain={a is not None} mirror={b is not None}"
            )
            continue
        if a.status != b.status:
            lines.append(f"  status {a.status} != {b.status}")
        if a.headers != b.headers:
            lines.append(f"  headers {a.headers} != {b.headers}")
        lines += list(
            difflib.unified_diff(
                a.body.splitlines(), b.body.splitlines(), "plain", "mirror", n=1, lineterm=""
            )
        )[:40]
    return "\n".join(lines)


# --- the worlds really are mirrors ---------------------------------------------------------------


def test_the_mirror_world_holds_every_arm_swapped(worlds):
    """Every kit's treatment and every slot's arm is the other one; kit numbers are the same."""
    from iwrs.db import read_session
    from iwrs.models.randomization import Randomization, RandomizationSlot
    from iwrs.models.supply import Kit
    from iwrs.services.randomization import slot_arm
    from iwrs.services.supply import treatment_of

    def arms(world: World) -> tuple[dict[str, str], dict[tuple[str, int], str], dict[int, str]]:
        with world.app.app_context():
            session = read_session()
            kits = {k.number: treatment_of(k) for k in session.scalars(select(Kit))}
            slots = {
                (s.stratum, s.sequence): slot_arm(s)
                for s in session.scalars(select(RandomizationSlot))
            }
            subjects = {
                r.subject_id: slot_arm(session.get(RandomizationSlot, r.slot_id))
                for r in session.scalars(select(Randomization))
            }
            return kits, slots, subjects

    plain, mirror = (arms(world) for world in worlds)
    for a, b in zip(plain, mirror, strict=True):
        assert a.keys() == b.keys()
        assert a and all(b[key] == SWAP[arm] for key, arm in a.items())
    assert set(plain[2].values()) == set(ARM_CODES)  # both arms were allocated


def test_the_statisticians_list_page_differs_between_the_worlds(worlds):
    """The unblinded view does change: proof that the crawl below could see a difference."""
    pages = []
    for world in worlds:
        response = world.client(STATISTICIAN).get("/lists/")
        assert response.status_code == 200
        pages.append(normalize(response.get_data(as_text=True)))
    assert pages[0] != pages[1]


# --- what blinded roles fetch ---------------------------------------------------------------------


@pytest.mark.parametrize("role", sorted(BLINDED))
def test_a_blinded_role_fetches_the_same_in_both_worlds(worlds, role):
    plain_world, mirror_world = worlds
    plain = crawl(plain_world, BLINDED[role])
    mirror = crawl(mirror_world, BLINDED[role])
    assert sum(1 for f in plain.values() if f.status == 200) >= 10, "the crawl reached too little"
    differing = sorted(u for u in plain.keys() | mirror.keys() if plain.get(u) != mirror.get(u))
    # The one exception: an investigator sees the arm of a subject they emergency-unblinded.
    permitted = plain_world.may_see_arms(BLINDED[role])
    assert set(differing) >= permitted, "the unblinded view should show the (swapped) arm"
    differing = [url for url in differing if url not in permitted]
    assert not differing, _explain(plain, mirror, differing)
    assert plain.keys() == mirror.keys()
    for pattern, text in REACHED.get(role, ()):  # issue 15: returns and destruction were crawled
        assert any(
            re.fullmatch(pattern, url.split("?")[0]) and f.status == 200 and text in f.body
            for url, f in plain.items()
        ), (role, pattern, text)


# Pages of returns and destruction (issue 15) each blinded role's crawl must have reached, with
# a word showing the page held the world's return, verification or destruction.
REACHED = {
    "pharmacist": (
        (r"/dispensing/\d+", "partly used"),  # S2's page: its kit returned, verified, destroyed
        (r"/supply/kits/\d+/verify", "Verify returned kit"),
        (r"/supply/sites/\d+", "returned"),
    ),
    "supply_manager": ((r"/supply/destruction", "damaged"),),
}


# --- a refusal for lack of one arm ----------------------------------------------------------------


def _by_site(text: str) -> str:
    """A refusal with its site and subject made anonymous, to compare CN03 with CN04."""
    return re.sub(r"/subjects/\d+", "/subjects/<id>", re.sub(r"CN0\d(-\d+)?", "<site>", text))


def test_randomization_refused_for_lack_of_one_arm_reads_the_same(worlds):
    """CN03 lacks one arm and CN04 the other (the other way round in the mirror world). Both
    refuse, in the same words, in both worlds: stock of every arm is checked, so a refusal
    never says which arm the next slot holds."""
    refusals = [world.refusals for world in worlds]
    assert refusals[0] == refusals[1]
    assert all("site_stock" in r or "no dispensable kit" in r for r in refusals[0].values())
    assert _by_site(refusals[0]["S8"]) == _by_site(refusals[0]["S9"])

    pages, problems = [], []
    for world in worlds:
        for key, investigator in (("S8", "dr.sun"), ("S9", "dr.ma")):
            subject_id = world.subject_ids[key]
            client = world.client(investigator)
            token = csrf_from(client.get(f"/subjects/{subject_id}").get_data(as_text=True))
            page = client.post(
                f"/subjects/{subject_id}/randomize",
                data={"understood": "y", "signature_password": PASSWORD, "csrf_token": token},
            )
            pages.append((key, page.status_code, normalize(page.get_data(as_text=True))))
            api = world.app.test_client().post(
                f"/api/v1/subjects/{subject_id}/randomization",
                json={"signature_password": PASSWORD, "understood": True},
                headers={"Authorization": f"Bearer {world.tokens[investigator]}"},
            )
            problems.append((key, api.status_code, api.get_json()))
    plain_pages, mirror_pages = pages[:2], pages[2:]
    assert plain_pages == mirror_pages
    assert problems[:2] == problems[2:]
    for key, status, body in problems[:2]:
        assert status == 409, (key, body)
        assert not any(code in json.dumps(body) for code in ARM_CODES)
    flashes = [re.findall(r'<p class="flash error"[^>]*>([^<]*)</p>', html) for _, _, html in pages]
    assert flashes[0] and _by_site(str(flashes[0])) == _by_site(str(flashes[1]))
    assert _by_site(json.dumps(problems[0][2])) == _by_site(json.dumps(problems[1][2]))


# --- the database a blinded reader could dump -----------------------------------------------------

# Columns that legitimately differ: sealed values (fresh nonces; arms swapped), salted hashes and
# the digests of random session keys (256 fresh random bits per sign-in, by design).
SEALED_OR_SALTED = {
    "sealed_treatment",
    "sealed_arm",
    "sealed_block",
    "sealed_seed",
    "sealed_counts",  # a stratum's used slots by arm (fixed width: the lengths agree)
    "sealed_mapping",
    "password_hash",
    "key_sha256",
}


def _rows(world: World) -> dict[str, list[tuple]]:
    import iwrs.models  # noqa: F401 - every table registered on Base
    from iwrs.db import Base, read_session

    with world.app.app_context():
        session = read_session()
        tables = {}
        for table in Base.metadata.sorted_tables:
            columns = [c for c in table.columns if c.name not in SEALED_OR_SALTED]
            order = list(table.primary_key.columns) or columns
            tables[table.name] = [
                tuple(row) for row in session.execute(select(*columns).order_by(*order))
            ]
        return tables


def test_the_worlds_differ_only_in_sealed_columns(worlds):
    """Every row of every table, but sealed values and password hashes, is the same in both
    worlds: every page, export and audit record is computed from these rows."""
    plain, mirror = (_rows(world) for world in worlds)
    assert plain.keys() == mirror.keys()
    differing = [name for name in plain if plain[name] != mirror[name]]
    assert not differing, {
        name: [(a, b) for a, b in zip(plain[name], mirror[name], strict=False) if a != b][:3]
        for name in differing
    }


def test_the_audit_trail_carries_nothing_computed_from_the_arms(worlds):
    """Generated in the mirror world, the same list (same seed, arms swapped) has another
    fingerprint; the trail a blinded auditor reads and exports must not carry it."""
    from blinding import schedules
    from iwrs.services import randomization

    plain = worlds[0]
    with plain.app.app_context():
        p = randomization.protocol()
        slots = schedules.generate_schedule(
            seed=LIST_SEED,
            strata=randomization._strata(),
            arms=randomization._arms(),
            block_sizes=p.block_sizes,
            slots_per_stratum=p.slots_per_stratum,
            algorithm=p.algorithm,
        )
    mirrored = [
        schedules.Slot(s.stratum, s.sequence, s.block, s.block_size, SWAP[s.arm]) for s in slots
    ]
    with plain.app.app_context():
        fingerprint = randomization.list_fingerprint(slots)
        assert fingerprint != randomization.list_fingerprint(mirrored)
    # The auditor's export, fetched in both worlds alike (the worlds stay in step).
    exports = []
    for world in worlds:
        response = world.client(BLINDED["auditor"]).get("/audit/export.jsonl")
        assert response.status_code == 200
        exports.append(response.get_data(as_text=True))
    assert fingerprint not in exports[0]
