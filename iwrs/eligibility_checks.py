"""The eligibility checks behind `check = "<name>"` in the protocol file, and what they read.

Pure: the standard library and iwrs.protocol only; no I/O, no clock. iwrs.eligibility is the
engine that builds these checks from the protocol and runs them; this module owns the rules: the
date arithmetic, the derived values (QTcF, eGFR, ratios to the ULN) and one class per check.
The fields themselves (labels, units, plausible ranges) are data: [eligibility.fields].
"""

from __future__ import annotations

import calendar
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from iwrs.drugs import OTHER, DrugDictionary
from iwrs.protocol import Criterion

REFERENCES = {"screening": "screening", "day1": "day 1"}
SEX_CHOICES = ("female", "male")


@dataclass(frozen=True)
class FieldSpec:
    """One input the form / API asks for; for a "date", `choices` are words accepted instead."""

    name: str
    label: str
    section: str
    kind: str  # "date" | "number" | "choice" | "yesno" | "medications"
    unit: str = ""
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    not_done_allowed: bool = False
    help: str = ""


@dataclass(frozen=True)
class Context:
    """What the engine knows of the subject besides the answers; `today` is the app's clock."""

    screening_date: date
    today: date
    date_of_birth: date
    sex: str  # "female" | "male"
    # The investigator's signed classifications of drugs off the dictionary: name -> class.
    drug_classes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Finding:
    """What a check found: whether the criterion's statement holds ("met") and why."""

    state: str  # "met" | "not_met" | "missing" | "not_applicable"
    detail: str
    missing: tuple[str, ...] = ()
    level: str | None = None  # the stratum level a diagnosis check derived


def _missing(*names: str) -> Finding:
    return Finding("missing", "not answered: " + ", ".join(names), tuple(names))


# ---------------------------------------------------------------- date arithmetic


def add_months(day: date, months: int) -> date:
    """Calendar months, clamped to the month's last day (31 May + 1 month = 30 June)."""
    years, month0 = divmod(day.month - 1 + months, 12)
    year = day.year + years
    return date(year, month0 + 1, min(day.day, calendar.monthrange(year, month0 + 1)[1]))


def months_before(day: date, months: int) -> date:
    """The edge day of "within N months before `day`" (31 May - 3 months = 28/29 Feb)."""
    return add_months(day, -months)


def completed_years(born: date, on: date) -> int:
    """Age in completed years; a 29 February birthday falls on 1 March in other years."""
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


@dataclass(frozen=True)
class Period:
    """A window length in calendar months plus days (weeks = 7 days, years = 12 months)."""

    months: int
    days: int
    text: str

    def start(self, reference: date) -> date:
        """The first day inside "within this period before `reference`" (edge included)."""
        return months_before(reference, self.months) - timedelta(days=self.days)


# ---------------------------------------------------------------- derived values


def ckd_epi_2021(creatinine_umol_l: float, age: int, female: bool) -> float:
    """eGFR (mL/min/1.73 m²) by the race-free CKD-EPI 2021 creatinine equation."""
    kappa, alpha = (0.7, -0.241) if female else (0.9, -0.302)
    ratio = creatinine_umol_l / 88.4 / kappa
    egfr: float = 142 * min(ratio, 1.0) ** alpha * max(ratio, 1.0) ** -1.200 * 0.9938**age
    return egfr * 1.012 if female else egfr


def _dec(value: float) -> Decimal:
    return Decimal(repr(float(value)))


def exact_ratio(value: float, per: float) -> float:
    """value / per on the decimals as entered: 1.8 / 1.2 is exactly 1.5, not 1.5000000000000002."""
    return float(_dec(value) / _dec(per))


Derived = tuple[float | None, tuple[str, ...], str]


def _qtcf(answers: Mapping[str, Any], ctx: Context, env: Env) -> Derived:
    qt, rr, rate = (_number(answers, k) for k in ("qt_ms", "rr_ms", "heart_rate_bpm"))
    rr_s = rr / 1000 if rr is not None else 60 / rate if rate is not None else None
    if qt is None or rr_s is None:
        missing = (("qt_ms",) if qt is None else ()) + (
            ("rr_ms", "heart_rate_bpm") if rr_s is None else ()
        )
        return None, missing, ""
    # RR in seconds; the exponent is the protocol's (0.33 as written), not necessarily 1/3
    return qt / rr_s**env.qtcf_exponent, (), f"QT {qt:g} ms, RR {rr_s:.4g} s"


def _egfr(answers: Mapping[str, Any], ctx: Context, env: Env) -> Derived:
    entered, creatinine = _number(answers, "egfr"), _number(answers, "creatinine")
    if entered is not None:
        return entered, (), "entered"
    if creatinine is None:
        return None, ("egfr", "creatinine"), ""
    age = completed_years(ctx.date_of_birth, ctx.screening_date)
    source = f"CKD-EPI 2021 from creatinine {creatinine:g} µmol/L, age {age}, {ctx.sex}"
    return ckd_epi_2021(creatinine, age, ctx.sex == "female"), (), source


DERIVED: dict[str, tuple[str, str, tuple[str, ...], Callable[..., Derived]]] = {
    "qtcf_ms": ("QTcF", "ms", ("qt_ms", "rr_ms", "heart_rate_bpm"), _qtcf),
    "egfr": ("eGFR", "mL/min/1.73 m²", ("egfr", "creatinine"), _egfr),
}


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def _number(answers: Mapping[str, Any], name: str) -> float | None:
    value = answers.get(name)
    return None if isinstance(value, bool) or not isinstance(value, int | float) else float(value)


# ---------------------------------------------------------------- params


@dataclass(frozen=True)
class Env:
    """What checks may read besides their own params: the fields and the protocol's tables."""

    catalogue: Mapping[str, FieldSpec]
    tables: Mapping[str, Any]
    qtcf_exponent: float
    drugs: DrugDictionary | None = None


class Params:
    """Reads a criterion's params once; every problem names the criterion and the param."""

    def __init__(self, criterion: Criterion, check: str) -> None:
        self.criterion, self.check, self.seen = criterion, check, {"check"}

    def error(self, key: str, rule: str) -> ValueError:
        return ValueError(f"criterion {self.criterion.number}: param {key!r}: {rule}")

    def get(self, key: str, kind: str, default: Any = ...) -> Any:
        """kind: "str", "int", "number", "value" (text or true/false) or "strs" (list of text)."""
        self.seen.add(key)
        if key not in self.criterion.params:
            if default is ...:
                raise self.error(key, f"is required by check {self.check!r}")
            return default
        value = self.criterion.params[key]
        ok = {
            "str": isinstance(value, str) and value != "",
            "int": isinstance(value, int) and not isinstance(value, bool) and value >= 0,
            "number": isinstance(value, int | float) and not isinstance(value, bool),
            "value": isinstance(value, str | bool),
            "strs": isinstance(value, list) and all(isinstance(v, str) and v for v in value),
        }[kind]
        if not ok:
            raise self.error(key, f"must be {_KIND_TEXT[kind]}, got {value!r}")
        return value

    def field(self, key: str, env: Env, kinds: tuple[str, ...], default: Any = ...) -> Any:
        name = self.get(key, "str", default)
        spec = env.catalogue.get(name) if name is not None else None
        if name is not None and (spec is None or spec.kind not in kinds):
            raise self.error(key, f"{name!r} is not a {' or '.join(kinds)} field")
        return name

    def choice(self, key: str, options: Mapping[str, Any], default: Any = ...) -> Any:
        value = self.get(key, "str", default)
        if value is not None and value not in options:
            raise self.error(key, f"must be one of {', '.join(options)}, got {value!r}")
        return value

    def period(self) -> Period:
        given = [(k, self.get(k, "int", None)) for k in ("days", "weeks", "months", "years")]
        given = [(k, v) for k, v in given if v is not None]
        if len(given) != 1:
            raise self.error("days", "exactly one of days, weeks, months or years is required")
        unit, n = given[0]
        months = {"months": n, "years": 12 * n}.get(unit, 0)
        days = {"days": n, "weeks": 7 * n}.get(unit, 0)
        return Period(months, days, f"{n} {unit[:-1] if n == 1 else unit}")

    def drugs(self, env: Env | None = None) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The `drugs` param (canonical names, lower case and trimmed) and the `classes` param
        (classes of the drug dictionary, whose drugs join the names); one of them is required."""
        classes = tuple(self.get("classes", "strs", []))
        names = self.get("drugs", "strs", None if not classes else [])
        if names is None:
            raise self.error("drugs", "drugs or classes is required")
        if classes:
            if env is None or env.drugs is None:
                raise self.error("classes", "needs [eligibility] drug_dictionary")
            try:
                names = [*names, *env.drugs.in_classes(classes)]
            except ValueError as exc:
                raise self.error("classes", str(exc)) from None
        for name in names:
            if name != name.strip().lower() or name.startswith("other:"):
                raise self.error("drugs", f"{name!r} must be lower case and trimmed")
        return tuple(sorted(set(names))), classes

    def finish(self) -> None:
        unknown = sorted(set(self.criterion.params) - self.seen)
        if unknown:
            raise self.error(unknown[0], f"is not a parameter of check {self.check!r}")


_KIND_TEXT = {
    "str": "text",
    "int": "a whole number ≥ 0",
    "number": "a number",
    "value": "text or true/false",
    "strs": "a list of text",
}


def _reference_date(reference: str, answers: Mapping[str, Any], ctx: Context) -> date | None:
    if reference == "screening":
        return ctx.screening_date
    day1 = answers.get("planned_day1")
    return day1 if isinstance(day1, date) else None


def _show(value: float, holds: Callable[[float], bool]) -> str:
    """A computed value rounded only as far as the shown number still gets the same verdict."""
    for digits in range(1, 7):
        if holds(round(value, digits)) == holds(value):
            return f"{value:.{digits}f}"
    return repr(value)


# ---------------------------------------------------------------- checks


class Check:
    """One kind of criterion: reads and checks its params once, then evaluates answers."""

    name = ""
    fields: tuple[str, ...] = ()  # the answers it reads, in form order
    drugs: tuple[str, ...] = ()  # the medication names it knows

    def __init__(self, criterion: Criterion, env: Env) -> None:
        self.criterion, self.env = criterion, env
        params = Params(criterion, self.name)
        self.setup(params)
        params.finish()

    def setup(self, params: Params) -> None:
        raise NotImplementedError

    def specs(self) -> tuple[FieldSpec, ...]:
        """Fields this check defines itself (not in the catalogue)."""
        return ()

    def entry_needs(self, entry: Mapping[str, Any]) -> str | None:
        """The key a medication entry lacks for this check (e.g. a glucocorticoid's dose)."""
        return None

    def evaluate(
        self, answers: Mapping[str, Any], ctx: Context, computed: dict[str, float | int | str]
    ) -> Finding:
        raise NotImplementedError


class Attestation(Check):
    """The investigator answers yes/no to the criterion's own text."""

    name = "attestation"

    def setup(self, params: Params) -> None:
        default = "attest_" + self.criterion.number.replace(".", "_")
        self.field = params.get("field", "str", default)
        self.fields = (self.field,)

    def specs(self) -> tuple[FieldSpec, ...]:
        c = self.criterion
        hint = f"{c.type.capitalize()} {c.number}: answer yes if this is true of the subject"
        return (FieldSpec(self.field, c.text, "Attestations", "yesno", help=hint),)

    def evaluate(self, answers: Mapping[str, Any], ctx: Context, computed: Any) -> Finding:
        value = answers.get(self.field)
        if not isinstance(value, bool):
            return _missing(self.field)
        return Finding("met" if value else "not_met", f"answered {'yes' if value else 'no'}")


class AgeBetween(Check):
    """Age in completed years at the reference date within [minimum, maximum]."""

    name = "age_between"

    def setup(self, params: Params) -> None:
        self.minimum, self.maximum = params.get("minimum", "int"), params.get("maximum", "int")
        self.reference = params.choice("reference", REFERENCES, "screening")
        self.fields = ("planned_day1",) if self.reference == "day1" else ()

    def evaluate(self, answers: Mapping[str, Any], ctx: Context, computed: Any) -> Finding:
        on = _reference_date(self.reference, answers, ctx)
        if on is None:
            return _missing("planned_day1")
        age = completed_years(ctx.date_of_birth, on)
        computed["age"] = age
        if self.minimum <= age <= self.maximum:
            return Finding("met", f"age {age} at {on}: within {self.minimum}-{self.maximum}")
        side = f"below {self.minimum}" if age < self.minimum else f"above {self.maximum}"
        return Finding("not_met", f"age {age} at {on}: {side}")


class Diagnosis(Check):
    """Exactly one of several yes/no diagnoses; the one chosen is the stratum level."""

    name = "diagnosis"

    def setup(self, params: Params) -> None:
        self.fields = tuple(params.get("fields", "strs"))
        self.levels = tuple(params.get("levels", "strs"))
        if len(self.fields) < 2 or len(self.levels) != len(self.fields):
            raise params.error("levels", "needs one level per field, at least two")
        for name in self.fields:
            if getattr(self.env.catalogue.get(name), "kind", None) != "yesno":
                raise params.error("fields", f"{name!r} is not a yesno field")

    def evaluate(self, answers: Mapping[str, Any], ctx: Context, computed: Any) -> Finding:
        chosen = [lv for f, lv in zip(self.fields, self.levels, strict=True) if answers.get(f)]
        if len(chosen) > 1:
            return Finding("not_met", f"{' and '.join(chosen)} both selected: exactly one allowed")
        unanswered = [f for f in self.fields if not isinstance(answers.get(f), bool)]
        if unanswered:
            return _missing(*unanswered)
        if not chosen:
            return Finding("not_met", "none of " + ", ".join(self.levels) + " selected")
        return Finding("met", chosen[0], level=chosen[0])


class DateWindow(Check):
    """An event date on or after (reference - period); "never" = no such event, "ongoing" = now."""

    name = "date_window"

    def setup(self, params: Params) -> None:
        self.field = params.field("field", self.env, ("date",))
        self.reference = params.choice("reference", REFERENCES)
        self.period = params.period()
        self.until = params.choice("until", REFERENCES, None)
        self.event = params.field("event", self.env, ("yesno",), None)
        day1 = "day1" in (self.reference, self.until)
        event = (self.event,) if self.event else ()
        self.fields = ("planned_day1", *event, self.field) if day1 else (*event, self.field)

    def evaluate(self, answers: Mapping[str, Any], ctx: Context, computed: Any) -> Finding:
        if self.event:
            # Decision: the yes/no (e.g. "HRCT confirms ILD", "malignancy ever") decides "no"
            # alone; "yes" needs the date. Unanswered, the date alone decides as before (a date
            # = yes, "never" = no); "yes" with "never" contradicts and is not judged.
            happened, event = answers.get(self.event), answers.get(self.field)
            if happened is False:
                return Finding("not_met", f"{self.event} = no")
            if happened is True and not isinstance(event, date) and event != "ongoing":
                return _missing(self.field)
        ref = _reference_date(self.reference, answers, ctx)
        until = _reference_date(self.until, answers, ctx) if self.until else None
        event = answers.get(self.field)
        known = isinstance(event, date) or event in ("never", "ongoing")
        absent = ("planned_day1",) if ref is None or (self.until and until is None) else ()
        if absent or not known:
            return _missing(*absent, *(() if known else (self.field,)))
        if event == "never":
            return Finding("not_met", "never (no such event)")
        if event == "ongoing":
            return Finding("met", "ongoing")
        assert ref is not None and isinstance(event, date)
        start = self.period.start(ref)
        window = f"{self.period.text} before {REFERENCES[self.reference]} {ref} (from {start})"
        if event < start:
            return Finding("not_met", f"{event}: not within {window}")
        if until is not None and event > until:
            return Finding("not_met", f"{event}: after {REFERENCES[self.until or '']} {until}")
        return Finding("met", f"{event}: within {window}")


_OPS: dict[str, tuple[str, Callable[[float, float], bool]]] = {
    "<": ("<", operator.lt),
    "<=": ("≤", operator.le),
    ">": (">", operator.gt),
    ">=": ("≥", operator.ge),
}


class Compare(Check):
    """value op limit; value = a number answer, its ratio to a ULN answer, or a derived value."""

    name = "compare"

    def setup(self, params: Params) -> None:
        self.value = params.get("value", "str")
        self.op = params.choice("op", _OPS)
        self.limit = float(params.get("limit", "number"))
        self.per = params.field("per", self.env, ("number",), None)
        self.only_if = params.field("only_if", self.env, ("yesno",), None)
        if self.value in DERIVED:
            self.label, self.unit, inputs, _ = DERIVED[self.value]
            self.fields = inputs
        else:
            spec = self.env.catalogue[params.field("value", self.env, ("number",))]
            self.label, self.unit, self.fields = spec.label, spec.unit, (self.value,)
            self.fields += (self.per,) if self.per else ()
        self.label = params.get("label", "str", self.label)
        self.fields = ((self.only_if,) if self.only_if else ()) + self.fields

    def evaluate(
        self, answers: Mapping[str, Any], ctx: Context, computed: dict[str, float | int | str]
    ) -> Finding:
        symbol, holds = _OPS[self.op]
        if any(answers.get(f) == "not_done" for f in self.fields):
            return Finding("not_applicable", f"{self.label}: not done")
        if self.only_if and answers.get(self.only_if) is False:
            # Decision: "catheterisation done = no" is the negative finding: not applicable.
            return Finding("not_applicable", f"not applicable: {self.only_if} = no")
        if self.value in DERIVED:
            value, missing, source = DERIVED[self.value][3](answers, ctx, self.env)
            if value is None:
                return _missing(*missing)
            computed[self.value] = value
            if self.value == "egfr":
                computed["egfr_source"] = "entered" if source == "entered" else "ckd_epi_2021"
            shown = f"{_show(value, lambda v: holds(v, self.limit))} {self.unit} ({source})"
        else:
            value = _number(answers, self.value)
            per = _number(answers, self.per) if self.per else None
            numbers = (self.value, self.per) if self.per else (self.value,)
            missing = tuple(f for f in numbers if _number(answers, f) is None)
            if value is None or missing:
                return _missing(*missing)
            shown = f"{value:g} {self.unit}"
            if per is not None:
                value = exact_ratio(value, per)
                computed[f"{self.value}_x_uln"] = value
                shown += f" = {_show(value, lambda v: holds(v, self.limit))} × ULN ({per:g})"
        if holds(value, self.limit):
            return Finding("met", f"{self.label} {shown} {symbol} {self.limit:g}")
        return Finding("not_met", f"{self.label} {shown}: not {symbol} {self.limit:g}")


class Lab(Check):
    """A categorical result equals `positive` (and, if given, a second one equals its value)."""

    name = "lab"

    def setup(self, params: Params) -> None:
        kinds = ("choice", "yesno")
        self.test = params.field("test", self.env, kinds)
        self.positive = self._value(params, self.test, "positive")
        self.and_test = params.field("and_test", self.env, kinds, None)
        self.and_positive = self._value(params, self.and_test, "and_positive")
        self.only_sex = params.choice("only_sex", dict.fromkeys(SEX_CHOICES), None)
        self.only_if = params.field("only_if", self.env, ("yesno",), None)
        found = (self.only_if, self.test, self.and_test)
        self.fields = tuple(f for f in found if f)

    def _value(self, params: Params, field: str | None, key: str) -> Any:
        if field is None:
            return params.get(key, "value", None)
        spec = self.env.catalogue[field]
        value = params.get(key, "value")
        if value not in (spec.choices if spec.kind == "choice" else (True, False)):
            raise params.error(key, f"{value!r} is not an answer of {field!r}")
        return value

    def evaluate(self, answers: Mapping[str, Any], ctx: Context, computed: Any) -> Finding:
        if self.only_sex and ctx.sex != self.only_sex:
            return Finding("not_applicable", f"not applicable: {ctx.sex}")
        result = answers.get(self.test)
        if self.only_if and not (result == self.positive and not self.and_test):
            # Decision: a positive result that alone meets the criterion counts whatever
            # only_if says (a positive pregnancy test excludes even if "not of childbearing
            # potential" was answered); otherwise only_if = no makes it not applicable.
            applies = answers.get(self.only_if)
            if not isinstance(applies, bool):
                return _missing(self.only_if)
            if not applies:
                return Finding("not_applicable", f"not applicable: {self.only_if} = no")
        if result is None:
            return _missing(self.test)
        detail = f"{self.test} {_answer(result)}"
        if result != self.positive or not self.and_test:
            return Finding("met" if result == self.positive else "not_met", detail)
        second = answers.get(self.and_test)
        if second is None:
            return _missing(self.and_test)
        detail += f", {self.and_test} {_answer(second)}"
        return Finding("met" if second == self.and_positive else "not_met", detail)


def _answer(value: Any) -> str:
    return {True: "yes", False: "no"}.get(value, str(value)) if isinstance(value, bool) else value


def _taken_since(entry: Mapping[str, Any], start: date) -> bool:
    last = entry.get("last_dose")
    return bool(entry.get("ongoing")) or (isinstance(last, date) and last >= start)


def _taken(entry: Mapping[str, Any]) -> str:
    return "ongoing" if entry.get("ongoing") else f"last dose {entry.get('last_dose')}"


class MedicationCheck(Check):
    """A check on answers["medications"]; needs the reference date and the medication list.

    Entries reach a check with "drug_class" (the dictionary's class, or the investigator's
    signed classification of a drug off the dictionary, else None)."""

    reference = "day1"
    classes: tuple[str, ...] = ()

    def concerns(self, entry: Mapping[str, Any]) -> bool:
        """The entry's drug is one this check restricts (by name or by class)."""
        return entry.get("drug") in self.drugs or (
            bool(self.classes) and entry.get("drug_class") in self.classes
        )

    def pending(self, entries: Any) -> tuple[str, ...]:
        """What keeps a pass from being decided: each drug off the dictionary not yet
        classified ("drug_class:<name>"), each concerned entry lacking a detail it needs
        ("<drug>.last_dose", "<drug>.max_daily_dose_mg", ...)."""
        if not isinstance(entries, list):
            return ()
        names: list[str] = []
        for e in entries:
            drug = str(e.get("drug") or "")
            if drug.startswith(OTHER) and e.get("drug_class") is None:
                names.append("drug_class:" + drug[len(OTHER) :])
            elif self.concerns(e):
                if not e.get("ongoing") and not isinstance(e.get("last_dose"), date):
                    names.append(f"{drug}.last_dose")
                need = self.entry_needs(e)
                if need:
                    names.append(f"{drug}.{need}")
        return tuple(dict.fromkeys(sorted(names)))

    def setup_medications(self, params: Params, default_reference: str) -> None:
        self.reference = params.choice("reference", REFERENCES, default_reference)
        self.fields = ("planned_day1", "medications") if self.reference == "day1" else ()
        self.fields = self.fields or ("medications",)

    def inputs(
        self, answers: Mapping[str, Any], ctx: Context
    ) -> tuple[date | None, list[Mapping[str, Any]] | None, Finding | None]:
        ref, entries = _reference_date(self.reference, answers, ctx), answers.get("medications")
        absent = (("planned_day1",) if ref is None else ()) + (
            ("medications",) if not isinstance(entries, list) else ()
        )
        return ref, entries, (_missing(*absent) if absent else None)


class Glucocorticoid(MedicationCheck):
    """Sum of prednisone-equivalent max daily doses of glucocorticoids taken in the window."""

    name = "glucocorticoid"

    def setup(self, params: Params) -> None:
        self.setup_medications(params, "day1")
        self.period = params.period()
        self.limit = float(params.get("limit", "number"))
        table_name = params.get("table", "str", "prednisone_equivalent_mg")
        table = self.env.tables.get(table_name)
        if not isinstance(table, dict) or not all(_positive(v) for v in table.values()):
            raise params.error("table", f"[eligibility.{table_name}] must map drugs to mg > 0")
        if "prednisone" not in table:
            raise params.error("table", f"[eligibility.{table_name}] has no prednisone")
        self.table: dict[str, float] = table
        self.drugs = tuple(sorted(self.table))

    def entry_needs(self, entry: Mapping[str, Any]) -> str | None:
        gc = self.concerns(entry) and entry.get("max_daily_dose_mg") is None
        return "max_daily_dose_mg" if gc else None

    def evaluate(
        self, answers: Mapping[str, Any], ctx: Context, computed: dict[str, float | int | str]
    ) -> Finding:
        ref, entries, absent = self.inputs(answers, ctx)
        if absent or ref is None or entries is None:
            return absent or _missing("medications")
        start = self.period.start(ref)
        taken = [e for e in entries if self.concerns(e) and _taken_since(e, start)]
        if any(e.get("max_daily_dose_mg") is None for e in taken):
            return _missing("medications")
        prednisone = _dec(self.table["prednisone"])
        per_drug = sorted(
            (_dec(e["max_daily_dose_mg"]) * prednisone / _dec(self.table[e["drug"]]), e["drug"])
            for e in taken
        )
        total = float(sum((mg for mg, _ in per_drug), Decimal(0)))
        computed["prednisone_equivalent_mg"] = total
        window = f"within {self.period.text} before {REFERENCES[self.reference]} (from {start})"
        drugs = ", ".join(f"{d} {float(mg):g}" for mg, d in per_drug) or "no glucocorticoid"
        detail = f"prednisone-equivalent {total:g} mg/day {window} ({drugs})"
        met = total > self.limit
        return Finding(
            "met" if met else "not_met", f"{detail} {'>' if met else '≤'} {self.limit:g}"
        )


class Washout(MedicationCheck):
    """A listed drug taken on or after (reference - washout); optionally N half-lives if longer."""

    name = "washout"

    def setup(self, params: Params) -> None:
        self.setup_medications(params, "day1")
        self.drugs, self.classes = params.drugs(self.env)
        self.period = params.period()
        self.half_lives = params.get("half_lives", "int", None)
        self.half_life_hours: dict[str, float] = {}
        if self.half_lives is not None:
            table = self.env.tables.get("half_life_hours", {})
            for drug in self.drugs:
                hours = table.get(drug) if isinstance(table, dict) else None
                if not isinstance(hours, int | float) or not _positive(hours):
                    raise params.error("half_lives", f"no [eligibility.half_life_hours] {drug!r}")
                self.half_life_hours[drug] = float(hours)

    def start(self, drug: str, ref: date) -> date:
        """Edge day of the washout; N half-lives are rounded up to whole days."""
        start = self.period.start(ref)
        if self.half_lives is None:
            return start
        # Decision: a drug without a stored half-life (one the investigator classified)
        # takes the period alone.
        days = math.ceil(self.half_lives * self.half_life_hours.get(drug, 0) / 24)
        return min(start, ref - timedelta(days=days))

    def evaluate(self, answers: Mapping[str, Any], ctx: Context, computed: Any) -> Finding:
        ref, entries, absent = self.inputs(answers, ctx)
        if absent or ref is None or entries is None:
            return absent or _missing("medications")
        hits = sorted(
            f"{e['drug']} {_taken(e)} (window from {self.start(e['drug'], ref)})"
            for e in entries
            if self.concerns(e) and _taken_since(e, self.start(e["drug"], ref))
        )
        where = f"{self.period.text}{' or the half-lives' if self.half_lives else ''}"
        where += f" before {REFERENCES[self.reference]} {ref}"
        if hits:
            return Finding("met", f"within {where}: " + "; ".join(hits))
        listed = ", ".join(self.drugs) if len(self.drugs) <= 6 else f"the {len(self.drugs)} drugs"
        return Finding("not_met", f"none of {listed} within {where}")


class Immunosuppressant(MedicationCheck):
    """At most `max_count` listed drugs in the stability window, each at a dose stable since."""

    name = "immunosuppressant"

    def setup(self, params: Params) -> None:
        self.setup_medications(params, "day1")
        self.drugs, self.classes = params.drugs(self.env)
        self.max_count = params.get("max_count", "int", 1)
        self.period = params.period()

    def entry_needs(self, entry: Mapping[str, Any]) -> str | None:
        needs = self.concerns(entry) and entry.get("ongoing")
        return "dose_stable_since" if needs and entry.get("dose_stable_since") is None else None

    def evaluate(self, answers: Mapping[str, Any], ctx: Context, computed: Any) -> Finding:
        ref, entries, absent = self.inputs(answers, ctx)
        if absent or ref is None or entries is None:
            return absent or _missing("medications")
        edge = self.period.start(ref)
        taken = [e for e in entries if self.concerns(e) and _taken_since(e, edge)]
        names = sorted({e["drug"] for e in taken})
        window = f"{self.period.text} before {REFERENCES[self.reference]} (from {edge})"
        if len(names) > self.max_count:
            return Finding(
                "not_met", f"{', '.join(names)} within {window}: at most {self.max_count}"
            )
        problems, unknown = [], False
        for e in taken:
            since = e.get("dose_stable_since")
            if not e.get("ongoing"):
                problems.append(f"{e['drug']} stopped {e.get('last_dose')}, within {window}")
            elif not isinstance(since, date):
                unknown = True
            elif since > edge:
                problems.append(f"{e['drug']} dose changed {since}, after {edge}")
        if problems:
            return Finding("not_met", "; ".join(sorted(problems)))
        if unknown:
            return _missing("medications")
        if not names:
            return Finding("met", f"no immunosuppressant within {window}")
        return Finding("met", f"{names[0]} at a dose stable since on or before {edge}")


CHECKS: dict[str, type[Check]] = {
    c.name: c
    for c in (
        Attestation,
        AgeBetween,
        Diagnosis,
        DateWindow,
        Compare,
        Lab,
        Glucocorticoid,
        Washout,
        Immunosuppressant,
    )
}
