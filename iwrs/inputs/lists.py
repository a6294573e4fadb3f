"""Inputs of the statistician's list pages (pages only): generate, import (native or through a
column mapping), extend."""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError, fields, post_load

from blinding.list_mapping import SEQUENCE_SCOPES, FactorSource, ListMapping, parse_value_map
from iwrs.inputs import Choice, Flag, HexBytes, Input, Many, Problem, Text, WholeNumber
from iwrs.uploads import MAX_UPLOAD_BYTES

FACTOR_FIELDS = ("factor", "factor_column", "factor_values")


class Upload(fields.String):
    """A file's text carried in a form (at most the upload limit; decoded by iwrs/uploads.py)."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        text = super()._deserialize(value, attr, data, **kwargs)
        if not text.strip():
            raise ValidationError([Problem("required", f"{self.name}: choose a file")])  # type: ignore[list-item]
        if len(text.encode("utf-8")) > MAX_UPLOAD_BYTES:
            text_ = f"{self.name}: larger than {MAX_UPLOAD_BYTES} bytes"
            raise ValidationError([Problem("file_size", text_)])  # type: ignore[list-item]
        return text


class ListGenerationInput(Input):
    """Generate a list from the protocol's algorithm, with a seed of 32 bytes or a fresh one."""

    name = Text(kind="name", load_default="list")
    dummy = Flag(load_default=False)
    seed = HexBytes(length=32, load_default=None)


class ListImportInput(Input):
    """Import a list file (the file itself is read by the page: iwrs/uploads.py)."""

    name = Text(kind="name", load_default="imported")
    dummy = Flag(load_default=False)


class ListExtensionInput(Input):
    """Append blocks to a stratum, with a reason."""

    stratum = Text(kind="name", required=True)
    blocks = WholeNumber(minimum=1, maximum=100, required=True)
    reason = Text(kind="reason", required=True)


class ListMappingInput(Input):
    """A list file read through a column mapping (the mapping step of the import page): the
    file's text (carried from the upload), the columns of sequence, block, block size, each
    factor and the arm, and the raw value maps typed "raw=code; raw=code". Factors come as
    three repeated fields in the protocol's order: factor, factor_column, factor_values."""

    name = Text(kind="name", load_default="imported")
    dummy = Flag(load_default=False)
    csv_text = Upload(required=True)
    arm_column = Text(kind="reference", required=True)
    arm_values = Text(kind="note", load_default="")
    sequence_column = Text(kind="reference", load_default="")
    sequence_scope = Choice(SEQUENCE_SCOPES, load_default="stratum")
    block_column = Text(kind="reference", load_default="")
    block_size_column = Text(kind="reference", load_default="")
    factor = Many(Text(kind="code", required=True), load_default=list)
    factor_column = Many(Text(kind="reference", load_default=""), load_default=list)
    factor_values = Many(Text(kind="note", load_default=""), load_default=list)

    @post_load
    def _mapping(self, given: dict[str, Any], **_: Any) -> dict[str, Any]:
        """The typed fields as one ListMapping; a value map's fault named by its field."""
        problems: dict[str, list[Problem]] = {}
        arm_values, errors = parse_value_map(given.pop("arm_values"), field_name="arm_values")
        factors: dict[str, FactorSource] = {}
        names, columns, maps = (given.pop(key) for key in FACTOR_FIELDS)
        for index, factor in enumerate(names):
            column = columns[index] if index < len(columns) else ""
            typed = maps[index] if index < len(maps) else ""
            levels, found = parse_value_map(typed, field_name=f"factor_{factor}_values")
            factors[factor] = FactorSource(column, levels)
            errors += found
        for error in errors:
            problems.setdefault(error.field, []).append(Problem(error.rule, error.message))
        if problems:
            raise ValidationError(problems)  # type: ignore[arg-type]
        mapping = ListMapping(
            arm_column=given.pop("arm_column"),
            arm_values=arm_values,
            factors=factors,
            sequence_column=given.pop("sequence_column"),
            sequence_scope=given.pop("sequence_scope"),
            block_column=given.pop("block_column"),
            block_size_column=given.pop("block_size_column"),
        )
        return {**given, "mapping": mapping}
