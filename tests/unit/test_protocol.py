"""The protocol file: the shipped one loads; a bad one is refused naming the key and the rule."""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path

import pytest

from iwrs.protocol import DEFAULT_PROTOCOL, ProtocolError, load_protocol, parse_protocol

SHIPPED = tomllib.loads(DEFAULT_PROTOCOL.read_text())


def shipped() -> dict:
    return copy.deepcopy(SHIPPED)


def problems_of(data: dict) -> list[str]:
    with pytest.raises(ProtocolError) as refused:
        parse_protocol(data)
    return refused.value.problems


def test_shipped_protocol_describes_the_registry_trial():
    protocol = load_protocol()
    assert protocol.study_id == "GenSci048-204"
    assert protocol.registry_id == "NCT06189495"
    assert [a.name for a in protocol.arms] == ["Genakumab", "Placebo"]
    assert protocol.ratio_sum == 2
    assert all(size % protocol.ratio_sum == 0 for size in protocol.block_sizes)
    assert [lv.code for lv in protocol.stratification[0].levels] == ["RA", "SSc"]
    assert {s.city for s in protocol.sites} == {"Beijing", "Wuhan", "Jinan", "Chengdu"}
    assert protocol.planned_enrolment == 30
    assert len(protocol.sha256) == 64


def test_shipped_protocol_lists_every_criterion_of_the_listing():
    protocol = load_protocol()
    numbers = {c.number for c in protocol.criteria}
    roots = {n.rstrip("abc").split(".")[0] for n in numbers}
    assert roots == {f"I{i}" for i in range(1, 9)} | {f"E{i}" for i in range(1, 19)}
    # the sub-items of exclusions 3, 5, 13, 14 and 15 are separate entries
    for parent, count in {"E3": 3, "E5": 3, "E13": 4, "E14": 4, "E15": 4}.items():
        subs = {n.rstrip("abc") for n in numbers if n.startswith(parent + ".")}
        assert len(subs) == count, parent
    assert all(c.kind in ("computed", "lab", "attestation") for c in protocol.criteria)
    assert all(c.text.strip() for c in protocol.criteria)


def test_shipped_protocol_uses_real_drug_names():
    text = set(re.findall(r"[a-z-]+", DEFAULT_PROTOCOL.read_text().lower()))  # whole words:
    # certolizumab is a real drug that contains one of the seed's misspellings
    for right in (
        "tocilizumab",
        "nintedanib",
        "abatacept",
        "tofacitinib",
        "epoprostenol",
        "treprostinil",
        "parenteral",
    ):
        assert right in text
    for wrong in ("tolizumab", "nidanib", "abacil", "tofaciib", "eprostol", "extraenteral"):
        assert wrong not in text


def test_ratio_that_does_not_divide_a_block_size_is_refused():
    data = shipped()
    data["arms"][0]["ratio"] = 2  # 2:1 -> sum 3, blocks 4 and 6
    assert any(
        "randomization.block_sizes[0]: 4 is not a multiple of the allocation ratio sum 3" in p
        for p in problems_of(data)
    )


def test_missing_arm_table_is_refused():
    data = shipped()
    del data["arms"]
    assert "arms: at least one entry is required" in problems_of(data)


def test_single_arm_is_refused():
    data = shipped()
    data["arms"] = data["arms"][:1]
    assert "arms: at least two arms are required" in problems_of(data)


def test_repeated_stratum_level_is_refused():
    data = shipped()
    data["stratification"][0]["levels"].append({"code": "RA", "label": "again"})
    assert any(
        p.startswith("stratification[0].levels[2].code: level 'RA' repeated")
        for p in problems_of(data)
    )


def test_wrong_type_names_key_and_expected_type():
    data = shipped()
    data["study"]["planned_enrolment"] = "thirty"
    assert "study.planned_enrolment: must be a whole number, got 'thirty'" in problems_of(data)


def test_every_problem_is_reported_not_just_the_first():
    data = shipped()
    del data["study"]["id"]
    data["visits"][1]["kit_type"] = "NOPE"
    data["supply"]["resupply"][0]["maximum"] = 3
    problems = problems_of(data)
    assert "study.id: required key is missing" in problems
    assert "visits[1].kit_type: 'NOPE' is not a kit type of this protocol" in problems
    assert any(p.startswith("supply.resupply[0].total_trigger: must be below") for p in problems)


def test_unknown_criterion_kind_is_refused():
    data = shipped()
    data["eligibility"]["criteria"][0]["kind"] = "vibes"
    assert any(
        p.startswith("eligibility.criteria[0].kind: must be one of") for p in problems_of(data)
    )


def test_visit_days_out_of_order_are_refused():
    data = shipped()
    data["visits"][1]["day"] = 200
    assert "visits: days must strictly increase in the order visits are listed" in problems_of(data)


def test_malformed_toml_is_refused_with_its_location(tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[study\nid = 1\n")
    with pytest.raises(ProtocolError, match="is not valid TOML"):
        load_protocol(bad)


def test_missing_file_is_refused_by_name(tmp_path: Path):
    with pytest.raises(ProtocolError, match="cannot be read"):
        load_protocol(tmp_path / "absent.toml")


def test_another_protocol_file_is_chosen_by_environment(tmp_path: Path, monkeypatch):
    from iwrs.config import Settings

    other = tmp_path / "other.toml"
    dictionary = DEFAULT_PROTOCOL.parent / "drugs-gensci048-204.toml"
    (tmp_path / dictionary.name).write_text(dictionary.read_text())
    other.write_text(
        DEFAULT_PROTOCOL.read_text().replace('id = "GenSci048-204"', 'id = "OTHER-001"')
    )
    monkeypatch.setenv("IWRS_PROTOCOL", str(other))
    settings = Settings.from_env(instance_path=tmp_path)
    assert load_protocol(settings.protocol_path).study_id == "OTHER-001"


def resupply_problems(**changes: object) -> list[str]:
    data = shipped()
    data["supply"]["resupply"][0].update(changes)
    return [p for p in problems_of(data) if p.startswith("supply.resupply[0].")]


def test_shipped_resupply_levels_are_arm_agnostic_and_exact():
    level = load_protocol().resupply[0]
    assert (level.maximum, level.total_trigger, level.guard) == (4, 6, 2)
    assert (level.guard_basis, level.emergency_minimum) == ("exact", 1)


@pytest.mark.parametrize(
    ("changes", "prefix"),
    [
        ({"total_trigger": 8}, "supply.resupply[0].total_trigger: must be below 2 treatments"),
        ({"guard": 7}, "supply.resupply[0].guard: must not exceed total_trigger"),
        ({"emergency_minimum": 3}, "supply.resupply[0].emergency_minimum: above the per-arm"),
        ({"emergency_minimum": 0}, "supply.resupply[0].emergency_minimum: must be at least 1"),
        ({"guard": 1, "total_trigger": 5}, "supply.resupply[0].guard: an exact guard needs"),
        ({"guard_basis": "hope"}, "supply.resupply[0].guard_basis: must be one of"),
        ({"guard_basis": "quantile"}, "supply.resupply[0].guard_quantile: a quantile guard"),
        ({"maximum": 5, "total_trigger": 8}, "supply.resupply[0].total_trigger: the initial"),
    ],
)
def test_inconsistent_resupply_levels_are_refused_with_field_and_rule(changes, prefix):
    assert any(p.startswith(prefix) for p in resupply_problems(**changes)), resupply_problems(
        **changes
    )


def test_a_quantile_guard_with_its_source_is_accepted_below_the_exact_guard():
    data = shipped()
    data["supply"]["resupply"][0].update(
        guard=1,
        total_trigger=5,
        guard_basis="quantile",
        guard_quantile=0.99,
        guard_source="bench/bench_resupply_blind.py",
    )
    assert parse_protocol(data).resupply[0].guard == 1


@pytest.mark.parametrize(("site_factor", "needed"), [(True, 24), (False, 38)])
def test_the_block_guard_applies_only_when_the_site_is_a_stratification_factor(site_factor, needed):
    data = shipped()
    if site_factor:
        data["stratification"].append(
            {
                "factor": "site",
                "label": "Site",
                "derived_from": "site",
                "levels": [{"code": "CN01", "label": "Beijing"}],
            }
        )
    data["randomization"]["block_sizes"] = [2]
    data["supply"]["resupply"][0].update(maximum=40, total_trigger=24, guard=20)
    # per-arm trigger (24 - 20) // 2 = 2; cap guard (2 - 1) x (40 - 2) = 38; block guard with the
    # site a factor: 2 arms x 2 disease strata x 6 doses x 2h (h = 2 x 1 / 4) = 24
    assert any(
        p.startswith(f"supply.resupply[0].guard: an exact guard needs at least {needed} ")
        for p in problems_of(data)
    ), problems_of(data)


def test_every_shipped_site_and_the_depot_are_in_beijing_time():
    protocol = load_protocol()
    assert [s.time_zone for s in protocol.sites] == ["Asia/Shanghai"] * 4
    assert protocol.depot.time_zone == "Asia/Shanghai"


def test_a_site_in_an_unknown_time_zone_is_refused_by_field_and_rule():
    data = shipped()
    data["sites"][1]["time_zone"] = "Asia/Beijing"  # not an IANA zone (Beijing is Asia/Shanghai)
    data["depot"]["time_zone"] = "UTC+8"
    problems = problems_of(data)
    assert any(p.startswith("sites[1].time_zone:") and "iana_time_zone" in p for p in problems), (
        problems
    )
    assert any(p.startswith("depot.time_zone:") and "iana_time_zone" in p for p in problems)


def test_a_site_without_a_time_zone_is_refused():
    data = shipped()
    del data["sites"][0]["time_zone"]
    assert "sites[0].time_zone: required key is missing" in problems_of(data)


def test_a_site_in_new_york_is_accepted():
    data = shipped()
    data["sites"].append({**data["sites"][0], "code": "US01", "time_zone": "America/New_York"})
    assert parse_protocol(data).sites[-1].time_zone == "America/New_York"
