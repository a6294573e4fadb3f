"""Inputs of the statistician's list pages (pages only): generate, import, extend."""

from __future__ import annotations

from iwrs.inputs import Flag, HexBytes, Input, Text, WholeNumber


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
