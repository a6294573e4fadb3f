"""CSV cells safe to open in a spreadsheet: the one helper every CSV export writes through.

OWASP "CSV injection": a cell beginning with = + - @ TAB or CR is a formula to Excel, LibreOffice
and Google Sheets (`=HYPERLINK("http://x","y")` in a username becomes a link). Such a cell is
written with a single quote (') in front, which every spreadsheet shows as text. Decision: a cell
that itself begins with a quote gets one more in front, so the rule is reversible for a program
reading the file: drop ONE leading quote from any cell that begins with one (`original`). Numbers
written by the system never begin with these characters except a negative number, which becomes
'-1 (none of our exports writes one).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from typing import Any

TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "'")


def neutralise(value: Any) -> str:
    """The cell as written: str(value) ("" for None), quoted in front when it would be a formula."""
    cell = "" if value is None else str(value)
    return "'" + cell if cell.startswith(TRIGGERS) else cell


def original(cell: str) -> str:
    """The value a neutralised cell was written from (the inverse of `neutralise` on strings)."""
    return cell[1:] if cell.startswith("'") else cell


def rows_csv(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    """A whole CSV document (RFC 4180: CRLF line ends) with every cell, header included,
    neutralised. CRLF, not LF: Python's writer quotes a cell holding a character of the line
    terminator only, so with LF a reason holding a bare CR would end the row early."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([neutralise(h) for h in header])
    for row in rows:
        writer.writerow([neutralise(cell) for cell in row])
    return buffer.getvalue()


def dicts_csv(columns: Iterable[str], rows: Iterable[Mapping[str, Any]]) -> str:
    """A whole CSV document from mappings, in `columns` order (other keys ignored)."""
    names = list(columns)
    return rows_csv(names, ([row.get(name) for name in names] for row in rows))
