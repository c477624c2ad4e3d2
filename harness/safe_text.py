"""Text from a database or a study file, made safe for where it is shown.

- A terminal: control characters (C0, DEL, C1: escape sequences that recolour, retitle or clear a
  terminal) and Unicode bidirectional overrides are printed as visible escapes (``\\x1b``).
- A spreadsheet (CSV files): a text cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return
  is a formula to Excel, LibreOffice and Google Sheets; OWASP's "CSV injection" advice is to prefix such a
  cell with a single quote, which shows the text as written. Numbers stay numbers: numeric columns are not
  touched, and a text cell that is a plain decimal number (``-0.5``, ``+3e-4``) is not a formula.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

_UNSAFE_FOR_TERMINAL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal_safe(text: str) -> str:
    """``text`` with every control character written as a visible escape."""
    return _UNSAFE_FOR_TERMINAL.sub(_escape, text)


def spreadsheet_safe(value: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula, prefixed with ``'``; anything else as is."""
    if isinstance(value, str) and value.startswith(_FORMULA_START) and not _PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


def _map_text(frame: pd.DataFrame, fn) -> pd.DataFrame:
    # deferred: pandas is a third of a second of start-up for the command lines that never print a frame
    from pandas.api.types import is_string_dtype

    out = frame.copy()
    for i in range(out.shape[1]):  # by position: a query may return two columns of one name
        column = out.iloc[:, i]
        if column.dtype == object or is_string_dtype(column):
            out.isetitem(i, column.map(lambda v: fn(v) if isinstance(v, str) else v))
    out.columns = [fn(c) if isinstance(c, str) else c for c in out.columns]
    return out


def frame_for_terminal(frame: pd.DataFrame) -> pd.DataFrame:
    return _map_text(frame, terminal_safe)


def frame_for_spreadsheet(frame: pd.DataFrame) -> pd.DataFrame:
    return _map_text(frame, spreadsheet_safe)
