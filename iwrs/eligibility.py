"""The pure eligibility engine: a subject's answers + the protocol's criteria -> an assessment.

Criteria are data: each [[eligibility.criteria]] of the protocol file names a `check` and its
params; the inputs are [eligibility.fields]. Checks are code (iwrs.eligibility_checks). Pure: no
Flask, no database, no I/O, no clock ("today" comes in the Context); dict order never matters.

A check says whether the criterion's statement holds ("met"): inclusion met -> pass, not met ->
fail; exclusion met -> fail, not met -> pass. Missing data is never a pass. The checks, by name:

  attestation        [field]: the investigator's yes/no to the criterion text (attest_<number>)
  age_between        minimum, maximum, [reference]: completed years at screening, both inclusive
  diagnosis          fields, levels: exactly one yes; its level is the stratum of a
                     stratification factor with derived_from = "diagnosis"
  date_window        field, reference, days|weeks|months|years, [until]: the event date is on or
                     after the window's edge day; "never" = no such event, "ongoing" = inside
  compare            value, op, limit, [per], [label]: a number answer, its ratio to a ULN answer
                     (per), or a derived value (qtcf_ms, egfr) compared with a limit
  lab                test, positive, [and_test, and_positive], [only_sex], [only_if]: a
                     categorical result (and a second one); not applicable outside only_sex/only_if
  glucocorticoid     days|weeks, limit, [table], [reference]: the summed prednisone-equivalent
                     highest daily dose of glucocorticoids taken in the window exceeds limit
  washout            drugs|classes, days|weeks|months, [half_lives], [reference]: a listed drug
                     (or a drug of a listed class) taken in the washout (N half-lives from
                     [eligibility.half_life_hours] if longer)
  immunosuppressant  drugs|classes, months, [max_count], [reference]: at most max_count listed
                     drugs in the window, each ongoing at a dose stable since the edge day
  date_window and compare also take an optional yes/no field (event, only_if) that states the
  negative finding: "HRCT confirms ILD = no", "catheterisation done = no".
Drug names are resolved through the drug dictionary (iwrs.drugs, [eligibility] drug_dictionary);
a drug off the dictionary ("other:<name>" or any unknown name) keeps every medication criterion
it could affect from passing until the investigator classifies it (Context.drug_classes); a
medication entry lacking a detail a criterion needs (its last dose, a glucocorticoid's dose) does
the same: the assessment is incomplete, naming "drug_class:<name>" or "<drug>.<key>".
Reference dates: "screening" = Context.screening_date, "day1" = the answer planned_day1.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import date, datetime, timedelta
from typing import Any

from iwrs.drugs import OTHER, DrugDictionary, normalize
from iwrs.eligibility_checks import (
    CHECKS,
    SEX_CHOICES,
    Check,
    Context,
    DateWindow,
    Diagnosis,
    Env,
    FieldSpec,
    Finding,
    MedicationCheck,
    add_months,
    ckd_epi_2021,
    completed_years,
    months_before,
)
from iwrs.protocol import Criterion, Protocol

__all__ = [
    "Assessment",
    "Context",
    "CriterionResult",
    "Engine",
    "FieldError",
    "FieldSpec",
    "add_months",
    "ckd_epi_2021",
    "completed_years",
    "months_before",
]

SETTINGS = (
    "fields",
    "prednisone_equivalent_mg",
    "half_life_hours",
    "drug_groups",
    "drug_dictionary",
    "screening_window_days",
)
KINDS = ("date", "number", "choice", "yesno", "medications")
MEDICATION_KEYS = ("drug", "last_dose", "ongoing", "max_daily_dose_mg", "dose_stable_since")
_ENTRY_VALUES = (
    ("last_dose", "date", ""),
    ("dose_stable_since", "date", ""),
    ("ongoing", "yesno", ""),
    ("max_daily_dose_mg", "number", "mg/day"),
)
# A typed number: ASCII digits, one optional sign and decimal point (float() would also take
# "١٢", "1_000", "1e3", "inf" and "nan").
_NUMBER = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)")
_DOSE = FieldSpec(
    "max_daily_dose_mg", "Highest daily dose", "Medications", "number", "mg/day", 0, 2000
)


@dataclass(frozen=True)
class FieldError:
    """A refused answer: the field, the rule it breaks and a message naming both (and the unit)."""

    field: str
    rule: str
    message: str


@dataclass(frozen=True)
class CriterionResult:
    """One criterion's verdict for one subject, with the reason in words."""

    number: str
    type: str
    text: str
    status: str  # "pass" | "fail" | "missing" | "not_applicable"
    detail: str
    missing: tuple[str, ...] = ()


@dataclass(frozen=True)
class Assessment:
    """Every criterion's result, the outcome, the values computed on the way and the stratum."""

    outcome: str  # "eligible" | "not_eligible" | "incomplete"
    results: tuple[CriterionResult, ...]
    computed: dict[str, float | int | str]
    stratum: dict[str, str] | None

    @property
    def failing(self) -> tuple[CriterionResult, ...]:
        return tuple(r for r in self.results if r.status == "fail")

    @property
    def missing_fields(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(name for r in self.results for name in r.missing))


_STATUS = {
    ("inclusion", "met"): "pass",
    ("inclusion", "not_met"): "fail",
    ("exclusion", "met"): "fail",
    ("exclusion", "not_met"): "pass",
}


class Engine:
    """The protocol's criteria, compiled once: the inputs they need, how to read and judge them."""

    def __init__(self, protocol: Protocol) -> None:
        self.protocol = protocol
        tables = protocol.eligibility_tables
        for key in tables:
            if key not in SETTINGS:
                raise ValueError(
                    f"eligibility.{key}: unknown setting (known: {', '.join(SETTINGS)})"
                )
        catalogue = _field_specs(tables.get("fields", {}))
        raw = tables.get("drug_dictionary")
        self.dictionary = DrugDictionary.from_table(raw) if raw is not None else None
        env = Env(catalogue, tables, protocol.qtcf_exponent, self.dictionary)
        self._checks: list[tuple[Criterion, Check]] = []
        for criterion in protocol.criteria:
            name = criterion.params.get("check")
            if not isinstance(name, str) or name not in CHECKS:
                known = ", ".join(CHECKS)
                where = f"criterion {criterion.number}: param 'check'"
                raise ValueError(f"{where}: {name!r} is not a check ({known})")
            self._checks.append((criterion, CHECKS[name](criterion, env)))
        specs = dict(catalogue)
        for _, check in self._checks:
            for spec in check.specs():
                specs.setdefault(spec.name, spec)
        for criterion, check in self._checks:
            for name in check.fields:
                if name not in specs:
                    where = f"criterion {criterion.number}: field {name!r}"
                    raise ValueError(f"{where}: not defined in [eligibility.fields]")
        used = {name for _, check in self._checks for name in check.fields}
        self._fields = tuple(spec for name, spec in specs.items() if name in used)
        self._specs = {spec.name: spec for spec in self._fields}
        for name, kind in (("planned_day1", "date"), ("medications", "medications")):
            if name in self._specs and self._specs[name].kind != kind:
                raise ValueError(f"eligibility.fields.{name}.kind: must be {kind!r}")
        groups = tables.get("drug_groups", {})
        if not isinstance(groups, dict) or not all(_names(v) for v in groups.values()):
            raise ValueError("eligibility.drug_groups: each group must be a list of drug names")
        drugs = {d for _, c in self._checks for d in c.drugs} | {
            d for g in groups.values() for d in g
        }
        drugs |= {d.name for d in self.dictionary.drugs} if self.dictionary else set()
        bad = sorted(d for d in drugs if d != d.strip().lower() or d.startswith("other:"))
        if bad:
            raise ValueError(f"eligibility: drug name {bad[0]!r} must be lower case and trimmed")
        self._drugs = tuple(sorted(drugs))
        window = tables.get("screening_window_days", 60)
        if not isinstance(window, int) or isinstance(window, bool) or window < 0:
            raise ValueError("eligibility.screening_window_days: must be a whole number ≥ 0")
        self._day1_window = window
        self._not_after_screening = {
            c.field for _, c in self._checks if isinstance(c, DateWindow) and c.until == "screening"
        }
        self._strata = self._stratum_sources()

    # ------------------------------------------------------------ what is asked

    def fields(self) -> tuple[FieldSpec, ...]:
        """Every input the criteria need, in form order: [eligibility.fields], then attestations."""
        return self._fields

    def fields_for(self, number: str) -> tuple[str, ...]:
        """The inputs one criterion reads."""
        for criterion, check in self._checks:
            if criterion.number == number:
                return check.fields
        raise KeyError(number)

    def drug_names(self) -> tuple[str, ...]:
        """The canonical drug names a medication entry may use (besides "other:<name>")."""
        return self._drugs

    def resolve_drug(self, name: str) -> str:
        """A written drug name -> its canonical name, or "other:<name>" when it is unknown
        (dictionary synonyms and misspellings resolve; the "other:" prefix is no bypass)."""
        key = normalize(name)
        known = self.dictionary.lookup(key) if self.dictionary else None
        if known is not None:
            return known.name
        return key if key in self._drugs else OTHER + key

    def drug_class(self, drug: str) -> str | None:
        """The dictionary class of a canonical drug name (None if off the dictionary)."""
        known = self.dictionary.lookup(drug) if self.dictionary else None
        return known.drug_class if known else None

    def _stratum_sources(self) -> list[tuple[str, Check | str, set[str]]]:
        sources: list[tuple[str, Check | str, set[str]]] = []
        for factor in self.protocol.stratification:
            codes = {level.code for level in factor.levels}
            where = f"stratification {factor.factor!r}: derived_from {factor.derived_from!r}"
            if factor.derived_from == "diagnosis":
                check = next((c for _, c in self._checks if isinstance(c, Diagnosis)), None)
                if check is None:
                    raise ValueError(f"{where}: no criterion has check = 'diagnosis'")
                for level in check.levels:
                    if level not in codes:
                        raise ValueError(
                            f"criterion {check.criterion.number}: param 'levels': {level!r} is "
                            f"not a level of stratification factor {factor.factor!r}"
                        )
                sources.append((factor.factor, check, codes))
            elif getattr(self._specs.get(factor.derived_from), "kind", "") == "choice":
                sources.append((factor.factor, factor.derived_from, codes))
            else:
                raise ValueError(f"{where}: must be 'diagnosis' or a choice field a criterion uses")
        return sources

    # ------------------------------------------------------------ reading answers

    def parse(self, raw: Mapping[str, Any]) -> tuple[dict[str, Any], list[FieldError]]:
        """Form strings or JSON values -> typed answers; blanks are left out; never raises."""
        answers: dict[str, Any] = {}
        errors = [
            FieldError(str(key), "unknown_field", f"{key}: not a field of this protocol")
            for key in sorted(raw, key=str)
            if key not in self._specs
        ]
        for spec in self._fields:
            value = raw.get(spec.name)
            if value is None or (isinstance(value, str) and not value.strip()):
                continue
            if spec.kind == "medications":
                parsed, problems = self._parse_medications(value)
            else:
                parsed, problems = _parse_value(spec, value)
            errors += problems
            if not problems:
                answers[spec.name] = parsed
        return answers, errors

    def _parse_medications(self, value: Any) -> tuple[Any, list[FieldError]]:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                return None, [FieldError("medications", "medications", "medications: not JSON")]
        if not isinstance(value, list):
            rule = "medications: must be a list of entries (drug, last_dose, ongoing, ...)"
            return None, [FieldError("medications", "medications", rule)]
        entries, errors = [], []
        for i, item in enumerate(value):
            entry, problems = self._parse_entry(f"medications[{i}]", item)
            entries.append(entry)
            errors += problems
        return entries, errors

    def _parse_entry(self, where: str, item: Any) -> tuple[dict[str, Any], list[FieldError]]:
        if not isinstance(item, Mapping):
            return {}, [FieldError(where, "medications", f"{where}: must be an object")]
        errors = [
            FieldError(f"{where}.{key}", "unknown_field", f"{where}.{key}: not a medication key")
            for key in sorted(item, key=str)
            if key not in MEDICATION_KEYS
        ]
        entry: dict[str, Any] = dict.fromkeys(MEDICATION_KEYS)
        entry["ongoing"] = False
        drug = item.get("drug")
        if isinstance(drug, str) and normalize(drug):
            entry["drug"] = self.resolve_drug(drug)
        else:
            message = f"{where}.drug: the drug's name is required"
            errors.append(FieldError(f"{where}.drug", "required", message))
        for key, kind, unit in _ENTRY_VALUES:
            value = item.get(key)
            if value is not None and not (isinstance(value, str) and not value.strip()):
                spec = FieldSpec(f"{where}.{key}", key, "Medications", kind, unit)
                entry[key], problems = _parse_value(spec, value)
                errors += problems
        # Decision: a missing detail (last dose, dose) is not refused: the assessment is
        # incomplete, naming it (Engine.assess), like every other missing answer.
        return entry, errors

    def validate(self, answers: Mapping[str, Any], ctx: Context) -> list[FieldError]:
        """Plausibility: out-of-range numbers and impossible dates are refused, never judged."""
        errors = []
        if ctx.sex not in SEX_CHOICES:
            errors.append(FieldError("sex", "choice", f"sex: {ctx.sex!r} is not female or male"))
        for spec in self._fields:
            value = answers.get(spec.name)
            if spec.kind == "number" and isinstance(value, int | float) and _is_number(value):
                errors += _range(spec.name, float(value), spec)
            elif spec.kind == "date" and isinstance(value, date):
                errors += self._check_date(spec.name, value, ctx)
            elif spec.kind == "medications" and isinstance(value, list):
                for i, entry in enumerate(value):
                    if not isinstance(entry, Mapping):
                        continue
                    for key in ("last_dose", "dose_stable_since"):
                        if isinstance(entry.get(key), date):
                            errors += self._check_date(f"medications[{i}].{key}", entry[key], ctx)
                    if _is_number(entry.get("max_daily_dose_mg")):
                        name = f"medications[{i}].max_daily_dose_mg"
                        errors += _range(name, float(entry["max_daily_dose_mg"]), _DOSE)
        return errors

    def _check_date(self, name: str, value: date, ctx: Context) -> list[FieldError]:
        screening = ctx.screening_date
        if name == "planned_day1":
            last = screening + timedelta(days=self._day1_window)
            if screening <= value <= last:
                return []
            message = f"{name}: {value} must be from the screening date {screening} to {last}"
            return [FieldError(name, "day1_window", message)]
        if value > ctx.today:
            message = f"{name}: {value} is in the future (today is {ctx.today})"
            return [FieldError(name, "future", message)]
        if value < ctx.date_of_birth:
            message = f"{name}: {value} is before the date of birth {ctx.date_of_birth}"
            return [FieldError(name, "before_birth", message)]
        if name in self._not_after_screening and value > screening:
            message = (
                f"{name}: {value} is after the screening date {screening}; must be on or before it"
            )
            return [FieldError(name, "after_screening", message)]
        return []

    # ------------------------------------------------------------ judging

    def assess(self, answers: Mapping[str, Any], ctx: Context) -> Assessment:
        """Judge every criterion on validated answers; pure and independent of any order."""
        answers = dict(answers)
        if isinstance(answers.get("medications"), list):
            answers["medications"] = sorted(
                (self._classed(e, ctx) for e in answers["medications"]),
                key=lambda e: [str(e.get(k)) for k in MEDICATION_KEYS],
            )
        computed: dict[str, float | int | str] = {
            "age": completed_years(ctx.date_of_birth, ctx.screening_date)
        }
        findings: dict[int, Finding] = {}
        results = []
        for criterion, check in self._checks:
            finding = check.evaluate(answers, ctx, computed)
            status = _STATUS.get((criterion.type, finding.state), finding.state)
            pending = (
                check.pending(answers.get("medications"))
                if isinstance(check, MedicationCheck)
                else ()
            )
            if pending and (status == "pass" or finding.missing == ("medications",)):
                # A pass that an unclassified drug or a missing detail could overturn.
                status = "missing"
                finding = Finding("missing", "not decided: " + ", ".join(pending), pending)
            findings[id(check)] = finding
            results.append(
                CriterionResult(
                    criterion.number,
                    criterion.type,
                    criterion.text,
                    status,
                    finding.detail,
                    finding.missing,
                )
            )
        statuses = {r.status for r in results}
        outcome = (
            "not_eligible"
            if "fail" in statuses
            else "incomplete"
            if "missing" in statuses
            else "eligible"
        )
        stratum: dict[str, str] = {}
        for factor, source, codes in self._strata:
            level = answers.get(source) if isinstance(source, str) else findings[id(source)].level
            if level in codes:
                stratum[factor] = level
        determined = len(stratum) == len(self._strata)
        return Assessment(outcome, tuple(results), computed, stratum if determined else None)

    def _classed(self, entry: Any, ctx: Context) -> Any:
        """The entry with its "drug_class": the dictionary's, else the investigator's."""
        if not isinstance(entry, Mapping):
            return entry
        drug = str(entry.get("drug") or "")
        if drug.startswith(OTHER):
            drug_class = ctx.drug_classes.get(drug[len(OTHER) :])
        else:
            drug_class = self.drug_class(drug) if drug else None
        return {**entry, "drug_class": drug_class}


# ---------------------------------------------------------------- helpers


def _field_specs(table: Any) -> dict[str, FieldSpec]:
    """[eligibility.fields] -> FieldSpecs, refusing unknown keys, kinds and bad ranges."""
    if not isinstance(table, dict):
        raise ValueError("eligibility.fields: must be a table of fields")
    allowed = {f.name for f in fields(FieldSpec)} - {"name"}
    specs = {}
    for name, entry in table.items():
        where = f"eligibility.fields.{name}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: must be a table (label, section, kind, ...)")
        for key in entry:
            if key not in allowed:
                raise ValueError(
                    f"{where}.{key}: unknown key (known: {', '.join(sorted(allowed))})"
                )
        if entry.get("kind") not in KINDS:
            raise ValueError(f"{where}.kind: must be one of {', '.join(KINDS)}")
        if not isinstance(entry.get("label"), str) or not isinstance(entry.get("section"), str):
            raise ValueError(f"{where}: label and section are required text")
        for key, ok in (
            ("minimum", _is_number),
            ("maximum", _is_number),
            ("not_done_allowed", lambda v: isinstance(v, bool)),
            ("unit", lambda v: isinstance(v, str)),
            ("help", lambda v: isinstance(v, str)),
            ("choices", _names),
        ):
            if key in entry and not ok(entry[key]):
                raise ValueError(f"{where}.{key}: wrong type, got {entry[key]!r}")
        spec = FieldSpec(name=name, **{**entry, "choices": tuple(entry.get("choices", ()))})
        if spec.kind == "choice" and not spec.choices:
            raise ValueError(f"{where}.choices: a choice field needs choices")
        if spec.minimum is not None and spec.maximum is not None and spec.minimum > spec.maximum:
            raise ValueError(f"{where}.minimum: above maximum")
        specs[name] = spec
    return specs


def _names(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_YESNO = {"yes": True, "y": True, "true": True, "on": True, "no": False, "n": False, "false": False}


def _yesno(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    return _YESNO.get(value.strip().lower()) if isinstance(value, str) else None


def _parse_value(spec: FieldSpec, value: Any) -> tuple[Any, list[FieldError]]:
    """One raw value -> its typed value, or the FieldError saying what was expected."""
    text = value.strip().lower() if isinstance(value, str) else None
    if spec.kind == "number":
        if spec.not_done_allowed and text == "not_done":
            return "not_done", []
        try:
            if not _is_number(value) and not _NUMBER.fullmatch(text or ""):
                raise ValueError("not ASCII digits")
            number = float(value if _is_number(value) else text)  # type: ignore[arg-type]
        except (TypeError, ValueError, OverflowError):
            number = math.nan
        if math.isfinite(number):
            return number, []
        expected = "a number" + (" or not_done" if spec.not_done_allowed else "")
        expected += f" ({spec.unit})" if spec.unit else ""
    elif spec.kind == "date":
        if isinstance(value, datetime):
            return value.date(), []
        if isinstance(value, date):
            return value, []
        if text in spec.choices:
            return text, []
        written = _written_day(text) if text is not None else None
        if written is not None:
            return written, []
        expected = "a date DD-MMM-YYYY" + "".join(f" or {c!r}" for c in spec.choices)
    elif spec.kind == "choice":
        if text in spec.choices:
            return text, []
        expected = "one of " + ", ".join(spec.choices)
    else:
        answer = _yesno(value)
        if answer is not None:
            return answer, []
        expected = "yes or no"
    message = f"{spec.name}: {value!r} is not {expected}"
    return None, [FieldError(spec.name, spec.kind, message)]


_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")  # ASCII: \d would take "٢٠٢٠"
_DAY_MONTH_YEAR = re.compile(r"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})")
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


def _written_day(text: str) -> date | None:
    """A date answer typed DD-MMM-YYYY (05-MAR-1965) or YYYY-MM-DD, as every date field takes
    (iwrs.validation.day_date; the engine stays pure); None for any other writing (05/03/1965
    is never guessed) or a day that does not exist."""
    try:
        if _ISO_DATE.fullmatch(text):
            return date.fromisoformat(text)
        written = _DAY_MONTH_YEAR.fullmatch(text)
        if written and written.group(2).upper() in _MONTHS:
            day, month, year = written.groups()
            return date(int(year), _MONTHS.index(month.upper()) + 1, int(day))
    except ValueError:
        return None
    return None


def _range(name: str, value: float, spec: FieldSpec) -> list[FieldError]:
    """A number outside the field's plausible range, with the range and unit in the message."""
    low, high = spec.minimum, spec.maximum
    if (low is None or value >= low) and (high is None or value <= high):
        return []
    fraction = spec.unit == "fraction"
    show = "{:.2f}".format if fraction else "{:g}".format
    bounds = f"{show(low) if low is not None else ''}-{show(high) if high is not None else ''}"
    message = f"{name}: {value:g} is outside the plausible range {bounds} {spec.unit}".rstrip()
    if fraction:
        message += f": enter as a fraction {bounds} (0.70, not 70 %)"
    return [FieldError(name, "range", message)]
