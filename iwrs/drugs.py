"""The drug dictionary: drug names, synonyms and misspellings -> a canonical drug, its ATC code
and the protocol class that decides its washout (pure: standard library only).

The data is a file the protocol points to ([eligibility] drug_dictionary, read by
iwrs.protocol.load_protocol into the eligibility tables); shape:

  [classes.<code>]  label = "...", classifiable = true|false
  [[drug]]          name = "tocilizumab", atc = "L04AC07", class = "<code>",
                    synonyms = ["tolizumab", ...]

A name is looked up lower-cased with its spaces collapsed and an "other:" prefix removed, so
`other:tolizumab` is tocilizumab. A name that is not in the dictionary is *unknown*: it is never
judged as harmless; the investigator classifies it (a signed attestation) or the assessment stays
incomplete (iwrs.eligibility).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

OTHER = "other:"
_ATC = re.compile(r"[A-Z]\d\d[A-Z]{2}\d\d")


@dataclass(frozen=True)
class Drug:
    """One dictionary drug: canonical name, ATC code ("" when none is assigned) and class."""

    name: str
    atc: str
    drug_class: str
    synonyms: tuple[str, ...] = ()


@dataclass(frozen=True)
class DrugClass:
    """A protocol class; `classifiable`: offered to the investigator for an unknown drug."""

    code: str
    label: str
    classifiable: bool


def normalize(name: str) -> str:
    """Lower case, single spaces, no "other:" prefix: the key every lookup uses."""
    text = " ".join(name.strip().lower().split())
    if text.startswith(OTHER):
        text = " ".join(text[len(OTHER) :].split())
    return text


class DrugDictionary:
    """Lookup of names (canonical, synonyms, misspellings) -> Drug; refuses ambiguous data."""

    def __init__(self, drugs: tuple[Drug, ...], classes: tuple[DrugClass, ...]) -> None:
        self.drugs, self.classes = drugs, {c.code: c for c in classes}
        self._index: dict[str, Drug] = {}
        for drug in drugs:
            if drug.drug_class not in self.classes:
                raise ValueError(f"drug {drug.name!r}: class {drug.drug_class!r} is not defined")
            for key in (drug.name, *drug.synonyms):
                other = self._index.get(normalize(key))
                if other is not None and other != drug:
                    raise ValueError(f"drug name {key!r} names both {other.name} and {drug.name}")
                self._index[normalize(key)] = drug

    @classmethod
    def from_table(cls, table: Any) -> DrugDictionary:
        """Build from the parsed file; every problem names the entry and key (ValueError)."""
        if not isinstance(table, Mapping):
            raise ValueError("eligibility.drug_dictionary: must be a table")
        raw_classes = table.get("classes")
        if not isinstance(raw_classes, Mapping) or not raw_classes:
            raise ValueError("drug dictionary: [classes] is required")
        classes = []
        for code, entry in raw_classes.items():
            if not isinstance(entry, Mapping) or not isinstance(entry.get("label"), str):
                raise ValueError(f"drug dictionary: classes.{code}.label is required text")
            classes.append(DrugClass(code, entry["label"], bool(entry.get("classifiable", True))))
        drugs = []
        for i, entry in enumerate(table.get("drug", [])):
            where = f"drug dictionary: drug[{i}]"
            if not isinstance(entry, Mapping):
                raise ValueError(f"{where}: must be a table")
            name, atc, code = entry.get("name"), entry.get("atc", ""), entry.get("class")
            synonyms = entry.get("synonyms", [])
            if not isinstance(name, str) or name != normalize(name) or not name:
                raise ValueError(f"{where}.name: lower-case trimmed text required, got {name!r}")
            if not isinstance(atc, str) or (atc and not _ATC.fullmatch(atc)):
                raise ValueError(f"{where}.atc: {atc!r} is not an ATC level-5 code (L04AC07)")
            if not isinstance(code, str):
                raise ValueError(f"{where}.class: required")
            if not isinstance(synonyms, list) or not all(isinstance(s, str) for s in synonyms):
                raise ValueError(f"{where}.synonyms: must be a list of text")
            drugs.append(Drug(name, atc, code, tuple(normalize(s) for s in synonyms)))
        return cls(tuple(drugs), tuple(classes))

    def lookup(self, name: str) -> Drug | None:
        """The drug a written name means, or None when the dictionary does not know it."""
        return self._index.get(normalize(name))

    def in_classes(self, codes: tuple[str, ...]) -> tuple[str, ...]:
        """Canonical names of the drugs in these classes (unknown class: ValueError)."""
        for code in codes:
            if code not in self.classes:
                raise ValueError(f"class {code!r} is not defined in the drug dictionary")
        return tuple(sorted(d.name for d in self.drugs if d.drug_class in codes))

    def classifiable(self) -> tuple[DrugClass, ...]:
        """The classes an investigator may put an unknown drug in."""
        return tuple(c for c in self.classes.values() if c.classifiable)

    def listing(self) -> list[dict[str, Any]]:
        """Every accepted name (canonical and synonyms) with its drug, class and ATC code."""
        return [
            {
                "name": name,
                "drug": drug.name,
                "class": drug.drug_class,
                "class_label": self.classes[drug.drug_class].label,
                "atc": drug.atc,
            }
            for name, drug in sorted(self._index.items())
        ]
