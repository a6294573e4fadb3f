"""Load and validate a protocol file (TOML) into plain, frozen values.

A bad file is refused whole with one message per problem, each naming the key and the rule.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_PROTOCOL = Path(__file__).parent / "protocols" / "gensci048-204.toml"
CRITERION_KINDS = ("computed", "lab", "attestation")
CRITERION_TYPES = ("inclusion", "exclusion")
RESUPPLY_POLICIES = ("threshold", "predictive")  # the names supply.resupply.POLICIES knows


class ProtocolError(ValueError):
    """The protocol file is invalid; `problems` lists every bad key with the rule it breaks."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source, self.problems = source, problems
        super().__init__(f"protocol file {source} is invalid:\n  - " + "\n  - ".join(problems))


@dataclass(frozen=True)
class Arm:
    code: str
    name: str
    ratio: int


@dataclass(frozen=True)
class Level:
    code: str
    label: str


@dataclass(frozen=True)
class StratificationFactor:
    factor: str
    label: str
    derived_from: str
    levels: tuple[Level, ...]


@dataclass(frozen=True)
class KitType:
    code: str
    description: str
    units_per_kit: int
    storage: str


@dataclass(frozen=True)
class Visit:
    code: str
    name: str
    day: int
    window_before: int
    window_after: int
    kit_type: str
    kits: int


@dataclass(frozen=True)
class SupplyLevel:
    """An initial-shipment quantity, or the arm-agnostic resupply levels of one kit type (see
    supply/blind_resupply.py): maximum and emergency_minimum per treatment, total_trigger and
    guard in kits of all treatments together."""

    kit_type: str
    quantity: int = 0
    maximum: int = 0
    total_trigger: int = 0
    guard: int = 0
    guard_basis: str = ""  # "exact" or "quantile"
    guard_quantile: float = 0.0
    guard_source: str = ""
    emergency_minimum: int = 0


@dataclass(frozen=True)
class Criterion:
    number: str
    type: str
    kind: str
    text: str
    params: dict[str, Any]


@dataclass(frozen=True)
class Place:
    code: str
    name: str
    country: str
    city: str = ""
    resupply_policy: str = ""  # sites only: overrides supply.default_policy
    # IANA zone: every clinical date at this place is its local date (README rule 13).
    time_zone: str = "UTC"


@dataclass(frozen=True)
class Protocol:
    study_id: str
    registry_id: str
    title: str
    sponsor: str
    phase: str
    version: str
    planned_enrolment: int
    enrolment_cap: int
    site_cap: int
    stratum_cap: int
    arms: tuple[Arm, ...]
    stratification: tuple[StratificationFactor, ...]
    algorithm: str
    block_sizes: tuple[int, ...]
    slots_per_stratum: int
    kit_types: tuple[KitType, ...]
    visits: tuple[Visit, ...]
    do_not_ship_days: int
    do_not_dispense_days: int
    shipping_lead_days: int
    default_resupply_policy: str
    predictive_randomizations_per_week: float
    predictive_safety_stock: int
    extra_kits_per_visit: int
    lot_balance_tolerance: int
    initial_shipment: tuple[SupplyLevel, ...]
    resupply: tuple[SupplyLevel, ...]
    rescreens_allowed: int
    qtcf_exponent: float
    criteria: tuple[Criterion, ...]
    # The rest of [eligibility] (drug lists, conversion tables…), read by iwrs.eligibility.
    eligibility_tables: dict[str, Any]
    unblinding_discontinues_treatment: bool
    unblinding_notify: tuple[str, ...]
    # Reasons that may be given about a subject once it is unblinded (no free text then).
    unblinding_coded_reasons: tuple[str, ...]
    depot: Place
    sites: tuple[Place, ...]
    sha256: str
    source: str

    @property
    def ratio_sum(self) -> int:
        return sum(arm.ratio for arm in self.arms)

    @property
    def criteria_version(self) -> str:
        """Protocol version plus a digest of everything that decides eligibility: an
        assessment made under other criteria can never be confirmed."""
        content = json.dumps(
            {
                "criteria": [[c.number, c.type, c.kind, c.text, c.params] for c in self.criteria],
                "tables": self.eligibility_tables,
                "qtcf_exponent": self.qtcf_exponent,
            },
            sort_keys=True,
            default=str,
        )
        return f"{self.version}+{hashlib.sha256(content.encode()).hexdigest()[:12]}"


class _Reader:
    """Reads typed values out of the parsed TOML, collecting every problem with its key path."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def get(
        self,
        table: dict[str, Any],
        key: str,
        kind: type | tuple[type, ...],
        path: str,
        default: Any = ...,
        minimum: float | None = None,
    ) -> Any:
        where = f"{path}.{key}" if path else key
        if key not in table:
            if default is ...:
                self.problems.append(f"{where}: required key is missing")
                return None
            return default
        value: Any = table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            self.problems.append(f"{where}: must be {_kind_name(kinds)}, got {value!r}")
            return None
        if not isinstance(value, kinds):
            self.problems.append(f"{where}: must be {_kind_name(kinds)}, got {value!r}")
            return None
        if minimum is not None and cast(float, value) < minimum:
            self.problems.append(f"{where}: must be at least {minimum:g}, got {value!r}")
            return None
        return value

    def tables(
        self, table: dict[str, Any], key: str, path: str, *, required: bool = True
    ) -> list[tuple[str, dict[str, Any]]]:
        where = f"{path}.{key}" if path else key
        items = table.get(key)
        if items is None:
            if required:
                self.problems.append(f"{where}: at least one entry is required")
            return []
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            self.problems.append(f"{where}: must be an array of tables ([[{where}]])")
            return []
        return [(f"{where}[{i}]", item) for i, item in enumerate(items)]

    def unique(self, values: list[tuple[str, Any]], what: str) -> None:
        seen: dict[Any, str] = {}
        for where, value in values:
            if value is None:
                continue
            if value in seen:
                self.problems.append(f"{where}: {what} {value!r} repeated (first at {seen[value]})")
            else:
                seen[value] = where


def _time_zone(r: _Reader, table: dict[str, Any], path: str) -> str:
    """The place's required IANA time zone (`time_zone`), checked against the tz database."""
    name = r.get(table, "time_zone", str, path)
    if name is None:
        return "UTC"
    try:
        known = bool(name) and name == name.strip() and ZoneInfo(name) is not None
    except (ZoneInfoNotFoundError, ValueError):
        known = False
    if not known:
        r.problems.append(
            f"{path}.time_zone: {name!r} is not an IANA time zone (rule iana_time_zone)"
        )
        return "UTC"
    return str(name)


def _kind_name(kinds: tuple[type, ...]) -> str:
    names = {
        str: "text",
        int: "a whole number",
        float: "a number",
        bool: "true or false",
        list: "a list",
        dict: "a table",
    }
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def load_protocol(path: Path | str | None = None) -> Protocol:
    """Read, parse and validate a protocol file (the shipped one by default)."""
    path = Path(path) if path else DEFAULT_PROTOCOL
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ProtocolError(str(path), [f"cannot be read: {exc.strerror}"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError(str(path), [f"is not valid TOML: {exc}"]) from None
    elig = data.get("eligibility")
    if isinstance(elig, dict) and isinstance(elig.get("drug_dictionary"), str):
        # The dictionary file sits beside the protocol; its content joins the eligibility
        # tables, so it is part of the criteria version.
        # Decision: looked up beside the protocol file, then among the shipped protocol files
        # (a protocol file copied elsewhere keeps the shipped dictionary).
        name = elig["drug_dictionary"]
        beside = path.parent / name
        try:
            extra = (beside if beside.exists() else DEFAULT_PROTOCOL.parent / name).read_bytes()
            elig["drug_dictionary"] = {"file": name, **tomllib.loads(extra.decode("utf-8"))}
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ProtocolError(str(path), [f"eligibility.drug_dictionary: {exc}"]) from None
        raw += extra
    return parse_protocol(data, source=str(path), sha256=hashlib.sha256(raw).hexdigest())


def parse_protocol(data: dict[str, Any], *, source: str = "<memory>", sha256: str = "") -> Protocol:
    r = _Reader()
    study = _table(r, data, "study")
    arms = _arms(r, data)
    factors = _stratification(r, data)
    algorithm, block_sizes, slots = _randomization(r, data, arms)
    kit_types = _kit_types(r, data)
    kit_codes = {k.code for k in kit_types}
    visits = _visits(r, data, kit_codes)

    supply = _table(r, data, "supply")
    levels_initial = tuple(_supply_levels(r, supply, "initial_shipment", kit_codes, ("quantity",)))
    levels_resupply = tuple(
        _resupply_levels(r, supply, kit_codes, arms, visits, levels_initial, factors, block_sizes)
    )

    elig = _table(r, data, "eligibility")
    criteria = _criteria(r, elig)
    unblinding = data.get("unblinding", {})
    depot, sites = _depot(r, data), _sites(r, data)
    default_policy = _default_policy(r, supply, sites)
    planned, cap = _enrolment(r, study, slots)

    # Read in the order of the Protocol fields: each problem is reported in that order.
    study_fields = _study_fields(r, study, planned, cap)
    supply_fields = _supply_settings(r, supply, default_policy)
    eligibility_fields = _eligibility_settings(r, elig)
    unblinding_fields = _unblinding_settings(r, unblinding, arms)
    protocol = Protocol(
        **study_fields,
        arms=arms,
        stratification=tuple(factors),
        algorithm=algorithm,
        block_sizes=tuple(block_sizes),
        slots_per_stratum=slots,
        kit_types=kit_types,
        visits=tuple(visits),
        **supply_fields,
        initial_shipment=levels_initial,
        resupply=levels_resupply,
        criteria=tuple(criteria),
        **eligibility_fields,
        **unblinding_fields,
        depot=depot,
        sites=sites,
        sha256=sha256,
        source=source,
    )
    if r.problems:
        raise ProtocolError(source, r.problems)
    return protocol


def _arms(r: _Reader, data: dict[str, Any]) -> tuple[Arm, ...]:
    """[[arms]]: at least two, codes unique."""
    arms = tuple(
        Arm(
            r.get(t, "code", str, p), r.get(t, "name", str, p), r.get(t, "ratio", int, p, minimum=1)
        )
        for p, t in r.tables(data, "arms", "")
    )
    if len(arms) == 1:
        r.problems.append("arms: at least two arms are required")
    r.unique([(f"arms[{i}].code", a.code) for i, a in enumerate(arms)], "arm code")
    return arms


def _stratification(r: _Reader, data: dict[str, Any]) -> list[StratificationFactor]:
    """[[stratification]] (optional): factors, unique, each with two or more unique levels."""
    factors = []
    for p, t in r.tables(data, "stratification", "", required=False):
        levels = _factor_levels(r, t, p)
        factors.append(
            StratificationFactor(
                r.get(t, "factor", str, p),
                r.get(t, "label", str, p),
                r.get(t, "derived_from", str, p),
                tuple(levels),
            )
        )
    r.unique([(f"stratification[{i}].factor", f.factor) for i, f in enumerate(factors)], "factor")
    return factors


def _factor_levels(r: _Reader, t: dict[str, Any], p: str) -> list[Level]:
    levels = []
    raw_levels = r.get(t, "levels", list, p)
    for i, lv in enumerate(raw_levels or []):
        lp = f"{p}.levels[{i}]"
        if not isinstance(lv, dict):
            r.problems.append(f"{lp}: must be a table with code and label")
            continue
        levels.append(Level(r.get(lv, "code", str, lp), r.get(lv, "label", str, lp)))
    if raw_levels is not None and len(levels) < 2:
        r.problems.append(f"{p}.levels: a factor needs at least two levels")
    r.unique([(f"{p}.levels[{i}].code", lv.code) for i, lv in enumerate(levels)], "level")
    return levels


def _randomization(
    r: _Reader, data: dict[str, Any], arms: tuple[Arm, ...]
) -> tuple[str, list[Any], int]:
    """[randomization]: algorithm, block sizes (multiples of the ratio sum), slots per stratum."""
    rand = _table(r, data, "randomization")
    algorithm = r.get(rand, "algorithm", str, "randomization")
    block_sizes = r.get(rand, "block_sizes", list, "randomization") or []
    ratio_sum = sum(a.ratio for a in arms if isinstance(a.ratio, int))
    for i, size in enumerate(block_sizes):
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            r.problems.append(f"randomization.block_sizes[{i}]: must be a positive whole number")
        elif ratio_sum and size % ratio_sum:
            r.problems.append(
                f"randomization.block_sizes[{i}]: {size} is not a multiple of the "
                f"allocation ratio sum {ratio_sum}"
            )
    if rand and not block_sizes:
        r.problems.append("randomization.block_sizes: at least one block size is required")
    slots = r.get(rand, "slots_per_stratum", int, "randomization", minimum=1)
    return algorithm, block_sizes, slots


def _kit_types(r: _Reader, data: dict[str, Any]) -> tuple[KitType, ...]:
    """[[kit_types]]: codes unique."""
    kit_types = tuple(
        KitType(
            r.get(t, "code", str, p),
            r.get(t, "description", str, p),
            r.get(t, "units_per_kit", int, p, default=1, minimum=1),
            r.get(t, "storage", str, p, default=""),
        )
        for p, t in r.tables(data, "kit_types", "")
    )
    r.unique([(f"kit_types[{i}].code", k.code) for i, k in enumerate(kit_types)], "kit type")
    return kit_types


def _visits(r: _Reader, data: dict[str, Any], kit_codes: set[str]) -> list[Visit]:
    """[[visits]]: codes unique, kit types known, days strictly increasing."""
    visits = []
    for p, t in r.tables(data, "visits", ""):
        visit = Visit(
            r.get(t, "code", str, p),
            r.get(t, "name", str, p),
            r.get(t, "day", int, p, minimum=1),
            r.get(t, "window_before", int, p, default=0, minimum=0),
            r.get(t, "window_after", int, p, default=0, minimum=0),
            r.get(t, "kit_type", str, p, default=""),
            r.get(t, "kits", int, p, default=0, minimum=0),
        )
        if visit.kits and visit.kit_type not in kit_codes:
            r.problems.append(
                f"{p}.kit_type: {visit.kit_type!r} is not a kit type of this protocol"
            )
        visits.append(visit)
    r.unique([(f"visits[{i}].code", v.code) for i, v in enumerate(visits)], "visit code")
    days = [v.day for v in visits if isinstance(v.day, int)]
    if days != sorted(set(days)):
        r.problems.append("visits: days must strictly increase in the order visits are listed")
    return visits


def _criteria(r: _Reader, elig: dict[str, Any]) -> list[Criterion]:
    """[[eligibility.criteria]] (optional): known kind and type, numbers unique."""
    criteria = []
    for p, t in r.tables(elig, "criteria", "eligibility", required=False):
        kind = r.get(t, "kind", str, p)
        ctype = r.get(t, "type", str, p)
        if kind is not None and kind not in CRITERION_KINDS:
            r.problems.append(
                f"{p}.kind: must be one of {', '.join(CRITERION_KINDS)}, got {kind!r}"
            )
        if ctype is not None and ctype not in CRITERION_TYPES:
            r.problems.append(f"{p}.type: must be inclusion or exclusion, got {ctype!r}")
        params = {k: v for k, v in t.items() if k not in ("number", "type", "kind", "text")}
        criteria.append(
            Criterion(r.get(t, "number", str, p), ctype, kind, r.get(t, "text", str, p), params)
        )
    r.unique(
        [(f"eligibility.criteria[{i}].number", c.number) for i, c in enumerate(criteria)],
        "criterion number",
    )
    return criteria


def _depot(r: _Reader, data: dict[str, Any]) -> Place:
    """[depot]: the one depot and its time zone."""
    depot_t = _table(r, data, "depot")
    return Place(
        r.get(depot_t, "code", str, "depot"),
        r.get(depot_t, "name", str, "depot"),
        r.get(depot_t, "country", str, "depot"),
        time_zone=_time_zone(r, depot_t, "depot"),
    )


def _sites(r: _Reader, data: dict[str, Any]) -> tuple[Place, ...]:
    """[[sites]]: codes unique, each with its time zone and optional resupply policy."""
    sites = tuple(
        Place(
            r.get(t, "code", str, p),
            r.get(t, "name", str, p),
            r.get(t, "country", str, p),
            r.get(t, "city", str, p),
            r.get(t, "resupply_policy", str, p, default=""),
            time_zone=_time_zone(r, t, p),
        )
        for p, t in r.tables(data, "sites", "")
    )
    r.unique([(f"sites[{i}].code", s.code) for i, s in enumerate(sites)], "site code")
    return sites


def _default_policy(r: _Reader, supply: dict[str, Any], sites: tuple[Place, ...]) -> Any:
    """supply.default_policy and every site's override must name a known resupply policy."""
    default_policy = r.get(supply, "default_policy", str, "supply", default="threshold")
    for where, policy in [("supply.default_policy", default_policy)] + [
        (f"sites[{i}].resupply_policy", s.resupply_policy) for i, s in enumerate(sites)
    ]:
        if policy and policy not in RESUPPLY_POLICIES:
            r.problems.append(
                f"{where}: {policy!r} is not a resupply policy ({', '.join(RESUPPLY_POLICIES)})"
            )
    return default_policy


def _enrolment(r: _Reader, study: dict[str, Any], slots: Any) -> tuple[Any, Any]:
    """study.planned_enrolment and enrolment_cap, checked against each other and the slots."""
    planned = r.get(study, "planned_enrolment", int, "study", minimum=1)
    cap = r.get(study, "enrolment_cap", int, "study", minimum=1)
    if isinstance(planned, int) and isinstance(cap, int) and cap < planned:
        r.problems.append(f"study.enrolment_cap: {cap} is below planned_enrolment {planned}")
    if (
        isinstance(slots, int)
        and isinstance(cap, int)
        and slots < (r.get(study, "stratum_cap", int, "study", minimum=1) or 0)
    ):
        r.problems.append("randomization.slots_per_stratum: must be at least study.stratum_cap")
    return planned, cap


def _study_fields(r: _Reader, study: dict[str, Any], planned: Any, cap: Any) -> dict[str, Any]:
    """The [study] fields of Protocol, read in field order."""
    return {
        "study_id": r.get(study, "id", str, "study"),
        "registry_id": r.get(study, "registry_id", str, "study", default=""),
        "title": r.get(study, "title", str, "study"),
        "sponsor": r.get(study, "sponsor", str, "study", default=""),
        "phase": r.get(study, "phase", str, "study", default=""),
        "version": r.get(study, "protocol_version", str, "study"),
        "planned_enrolment": planned,
        "enrolment_cap": cap,
        "site_cap": r.get(study, "site_cap", int, "study", minimum=1),
        "stratum_cap": r.get(study, "stratum_cap", int, "study", minimum=1),
    }


def _supply_settings(r: _Reader, supply: dict[str, Any], default_policy: Any) -> dict[str, Any]:
    """The [supply] scalar fields of Protocol (with supply.predictive and supply.kits)."""
    predictive = supply.get("predictive", {}) if isinstance(supply, dict) else {}
    kits_t = supply.get("kits", {}) if isinstance(supply, dict) else {}
    return {
        "do_not_ship_days": r.get(supply, "do_not_ship_days", int, "supply", minimum=0),
        "do_not_dispense_days": r.get(supply, "do_not_dispense_days", int, "supply", minimum=0),
        "shipping_lead_days": r.get(supply, "shipping_lead_days", int, "supply", minimum=0),
        "default_resupply_policy": default_policy,
        "predictive_randomizations_per_week": r.get(
            predictive,
            "randomizations_per_week",
            (int, float),
            "supply.predictive",
            default=1.0,
            minimum=0,
        ),
        "predictive_safety_stock": r.get(
            predictive, "safety_stock", int, "supply.predictive", default=1, minimum=0
        ),
        "extra_kits_per_visit": r.get(
            kits_t, "extra_kits_per_visit", int, "supply.kits", default=1, minimum=0
        ),
        "lot_balance_tolerance": r.get(
            kits_t, "lot_balance_tolerance", int, "supply.kits", default=2, minimum=0
        ),
    }


def _eligibility_settings(r: _Reader, elig: dict[str, Any]) -> dict[str, Any]:
    """The [eligibility] scalar fields of Protocol and the rest of the table as-is."""
    return {
        "rescreens_allowed": r.get(
            elig, "rescreens_allowed", int, "eligibility", default=0, minimum=0
        ),
        "qtcf_exponent": r.get(
            elig, "qtcf_exponent", (int, float), "eligibility", default=1 / 3, minimum=0.01
        ),
        "eligibility_tables": {
            k: v
            for k, v in elig.items()
            if k not in ("criteria", "rescreens_allowed", "qtcf_exponent")
        },
    }


def _unblinding_settings(
    r: _Reader, unblinding: dict[str, Any], arms: tuple[Arm, ...]
) -> dict[str, Any]:
    """The [unblinding] fields of Protocol."""
    return {
        "unblinding_discontinues_treatment": r.get(
            unblinding, "discontinues_treatment", bool, "unblinding", default=False
        ),
        "unblinding_notify": tuple(r.get(unblinding, "notify", list, "unblinding", default=[])),
        "unblinding_coded_reasons": _coded_reasons(r, unblinding, arms),
    }


CODED_REASON_MAX = 80


def _coded_reasons(
    r: _Reader, unblinding: dict[str, Any], arms: tuple[Arm, ...]
) -> tuple[str, ...]:
    """[unblinding] coded_reasons: 2 or more distinct one-line phrases of at most 80
    characters, none naming an arm (they are what is written about an unblinded subject)."""
    where = "unblinding.coded_reasons"
    values = r.get(unblinding, "coded_reasons", list, "unblinding")
    if values is None:
        return ()
    if len(values) < 2:
        r.problems.append(f"{where}: at least two coded reasons are required")
    names = {w for a in arms if isinstance(a.name, str) for w in re.findall(r"\w+", a.name.lower())}
    for i, value in enumerate(values):
        if (
            not isinstance(value, str)
            or value != value.strip()
            or not value
            or len(value) > CODED_REASON_MAX
            or any(c in value for c in "\r\n\t")
        ):
            r.problems.append(
                f"{where}[{i}]: must be one line of 1 to {CODED_REASON_MAX} characters, "
                f"got {value!r}"
            )
        elif set(re.findall(r"\w+", value.casefold())) & names:
            r.problems.append(f"{where}[{i}]: must not name an arm, got {value!r}")
    r.unique([(f"{where}[{i}]", v) for i, v in enumerate(values) if isinstance(v, str)], "reason")
    return tuple(v for v in values if isinstance(v, str))


def _table(r: _Reader, data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    if value is None:
        r.problems.append(f"{key}: required table [{key}] is missing")
        return {}
    if not isinstance(value, dict):
        r.problems.append(f"{key}: must be a table [{key}]")
        return {}
    return value


def _supply_levels(
    r: _Reader, supply: dict[str, Any], key: str, kit_codes: set[str], fields: tuple[str, ...]
) -> list[SupplyLevel]:
    levels = []
    for p, t in r.tables(supply, key, "supply"):
        kit_type = r.get(t, "kit_type", str, p)
        if kit_type is not None and kit_type not in kit_codes:
            r.problems.append(f"{p}.kit_type: {kit_type!r} is not a kit type of this protocol")
        values = {f: r.get(t, f, int, p, minimum=0) for f in fields}
        levels.append(SupplyLevel(kit_type, **values))
    r.unique(
        [(f"supply.{key}[{i}].kit_type", lv.kit_type) for i, lv in enumerate(levels)], "kit type"
    )
    return levels


GUARD_BASES = ("exact", "quantile")


def _resupply_levels(
    r: _Reader,
    supply: dict[str, Any],
    kit_codes: set[str],
    arms: tuple[Arm, ...],
    visits: list[Visit],
    initial: tuple[SupplyLevel, ...],
    factors: list[StratificationFactor],
    block_sizes: list[int],
) -> list[SupplyLevel]:
    """[[supply.resupply]]: the arm-agnostic levels, each inconsistency named with its rule."""
    levels = []
    n = len(arms) or 1
    for p, t in r.tables(supply, "resupply", "supply"):
        lv = _read_resupply_level(r, t, p, kit_codes)
        levels.append(lv)
        if None in (lv.maximum, lv.total_trigger, lv.guard, lv.emergency_minimum):
            continue
        per_arm = _check_resupply_triggers(r, p, lv, n, visits, initial)
        _check_guard(r, p, lv, n, per_arm, arms, visits, factors, block_sizes)
    r.unique(
        [(f"supply.resupply[{i}].kit_type", lv.kit_type) for i, lv in enumerate(levels)],
        "kit type",
    )
    return levels


def _read_resupply_level(r: _Reader, t: dict[str, Any], p: str, kit_codes: set[str]) -> SupplyLevel:
    kit_type = r.get(t, "kit_type", str, p)
    if kit_type is not None and kit_type not in kit_codes:
        r.problems.append(f"{p}.kit_type: {kit_type!r} is not a kit type of this protocol")
    return SupplyLevel(
        kit_type,
        maximum=r.get(t, "maximum", int, p, minimum=1),
        total_trigger=r.get(t, "total_trigger", int, p, minimum=0),
        guard=r.get(t, "guard", int, p, minimum=0),
        guard_basis=r.get(t, "guard_basis", str, p),
        guard_quantile=r.get(t, "guard_quantile", float, p, default=0.0),
        guard_source=r.get(t, "guard_source", str, p, default=""),
        emergency_minimum=r.get(t, "emergency_minimum", int, p, minimum=1),
    )


def _check_resupply_triggers(
    r: _Reader,
    p: str,
    lv: SupplyLevel,
    n: int,
    visits: list[Visit],
    initial: tuple[SupplyLevel, ...],
) -> int:
    """Trigger, guard and emergency minimum against each other, the visits and the initial
    shipment; returns the per-arm trigger the total stands for."""
    if lv.total_trigger >= n * lv.maximum:
        r.problems.append(
            f"{p}.total_trigger: must be below {n} treatments x maximum {lv.maximum} "
            f"(= {n * lv.maximum}), or a full site would trigger"
        )
    if lv.guard > lv.total_trigger:
        r.problems.append(f"{p}.guard: must not exceed total_trigger ({lv.total_trigger})")
    per_arm = (lv.total_trigger - lv.guard) // n
    if per_arm < lv.emergency_minimum:
        r.problems.append(
            f"{p}.emergency_minimum: above the per-arm trigger the total stands for "
            f"((total_trigger - guard) // {n} = {per_arm}): the fallback would fire first"
        )
    need = max((v.kits for v in visits if v.kit_type == lv.kit_type), default=0)
    if lv.emergency_minimum < need:
        r.problems.append(f"{p}.emergency_minimum: below the {need} kit(s) one dosing visit needs")
    first = next((x for x in initial if x.kit_type == lv.kit_type), None)
    if (
        first is not None
        and isinstance(first.quantity, int)
        and (first.quantity <= lv.total_trigger)
    ):
        r.problems.append(
            f"{p}.total_trigger: the initial shipment ({first.quantity} kits) is at or "
            "below it: every activation would trigger a resupply at once"
        )
    return per_arm


def _check_guard(
    r: _Reader,
    p: str,
    lv: SupplyLevel,
    n: int,
    per_arm: int,
    arms: tuple[Arm, ...],
    visits: list[Visit],
    factors: list[StratificationFactor],
    block_sizes: list[int],
) -> None:
    """The guard's basis: a quantile guard names its measurement, an exact guard covers the
    design's worst case."""
    if lv.guard_basis not in GUARD_BASES:
        r.problems.append(f"{p}.guard_basis: must be one of {', '.join(GUARD_BASES)}")
    elif lv.guard_basis == "quantile" and not (0 < lv.guard_quantile < 1 and lv.guard_source):
        r.problems.append(
            f"{p}.guard_quantile: a quantile guard needs 0 < guard_quantile < 1 and its "
            "guard_source (the command that measured it)"
        )
    elif lv.guard_basis == "exact" and 0 <= per_arm < lv.maximum:
        exact = _exact_guard(lv, n, per_arm, arms, visits, factors, block_sizes)
        if lv.guard < exact:
            r.problems.append(
                f"{p}.guard: an exact guard needs at least {exact} kit(s) for this design "
                "(supply.blind_resupply.exact_guard); raise it or use a quantile guard"
            )


def _exact_guard(
    lv: SupplyLevel,
    n: int,
    per_arm: int,
    arms: tuple[Arm, ...],
    visits: list[Visit],
    factors: list[StratificationFactor],
    block_sizes: list[int],
) -> int:
    """The smallest exact guard for this design: the cap bound, or the block bound when sites
    are a stratification factor, allocation is equal and every block holds whole arm cycles."""
    from supply.blind_resupply import block_guard, cap_guard

    exact = cap_guard(n_arms=n, maximum=lv.maximum, per_arm_trigger=per_arm)
    site_bounded = any(f.factor == "site" for f in factors)
    equal = len({a.ratio for a in arms}) == 1
    if site_bounded and equal and block_sizes and all(b % n == 0 for b in block_sizes):
        strata = math.prod(len(f.levels) for f in factors if f.factor != "site")
        doses = sum(v.kits for v in visits if v.kit_type == lv.kit_type)
        exact = min(
            exact,
            block_guard(
                block_sizes=block_sizes,
                n_arms=n,
                strata_at_site=strata,
                doses_per_subject=max(doses, 1),
            ),
        )
    return exact
