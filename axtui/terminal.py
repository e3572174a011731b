"""Text from a session made safe to show on a terminal: the one place that decides it.

Event text comes from clients and agents, and a terminal obeys what it is sent: an escape
sequence in a message can clear the screen, set the window title, move the cursor over
earlier lines or (with some terminals) write to the clipboard, and bidi controls can make a
line read differently from what it holds. :func:`safe_text` removes all of that and keeps
the text itself; :func:`safe_value` does it to every string of an event (for the TUI), and
:func:`safe_json_line` escapes what JSON leaves raw (for JSON Lines on a terminal). The
headless printer (``replay``, ``exec``) and the TUI use these, nothing else.
"""

from __future__ import annotations

import re
from typing import Any

# An escape sequence as a terminal parses it: CSI (ESC [ or C1 CSI) with its parameters
# and final byte; OSC, DCS, SOS, PM and APC strings up to their terminator (BEL, ESC \ or
# C1 ST); any other ESC sequence (intermediates and a final byte). An OSC with no
# terminator loses only its ESC below, so what follows it stays readable.
_SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)"
    r"|\x1b[\x20-\x2f]*[\x30-\x7e]"
)
# What is left: C0 controls but tab and newline, DEL, C1, and the bidi controls.
_CONTROL = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# JSON escapes only C0: the rest reaches the terminal raw unless written as a \u escape.
_JSON_RAW = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def safe_text(text: str) -> str:
    """``text`` with terminal control sequences and control characters removed (newlines
    and tabs kept; a carriage return before a newline is dropped, any other one removed,
    so it cannot overwrite a line)."""
    if text.isprintable():  # the common case: nothing to remove, and no newline either
        return text
    cleaned = _CONTROL.sub("", _SEQUENCE.sub("", text.replace("\r\n", "\n")))
    return text if cleaned == text else cleaned


def safe_value(value: Any) -> Any:
    """A JSON value with :func:`safe_text` applied to every string in it, keys included;
    ``value`` itself (not a copy) when nothing in it needed cleaning."""
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, dict):
        pairs = [(k, v, safe_value(k), safe_value(v)) for k, v in value.items()]
        if all(k is k2 and v is v2 for k, v, k2, v2 in pairs):
            return value
        return {k2: v2 for _, _, k2, v2 in pairs}
    if isinstance(value, list):
        items = [safe_value(v) for v in value]
        return value if all(a is b for a, b in zip(value, items, strict=True)) else items
    return value


def safe_json_line(line: str) -> str:
    """A JSON text with DEL, C1 controls, separators and bidi controls written as
    ``\\u`` escapes (``\\u0085``): the same JSON value, but nothing a terminal acts on (JSON
    already escapes C0, ESC included). They can only occur inside strings, so the
    escapes are valid JSON."""
    return _JSON_RAW.sub(lambda m: f"\\u{ord(m.group()):04x}", line)
