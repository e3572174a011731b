"""Keep tokens out of every log an axtui process writes (the hub, the TUI, the CLI, Slack),
and keep every log line one line.

Libraries log secrets on their own: ``websockets`` logs every handshake header at DEBUG
(``Authorization: Bearer …``, on the client's side and on the hub's) and every frame (an
``initialize`` frame may carry ``params.token``). A :class:`Redactor` masks, in each record
it sees, bearer credentials, ``token``-like key/value pairs, Slack tokens, and any secret it
was given verbatim. It is installed on the loggers that write such records (so whatever
handler a program sets up, caplog and ``logging.basicConfig`` included, gets them masked)
and on a program's own handlers (so nothing that reaches them escapes, whatever logger it
came from). This is the one place for that logic: ``server/`` and ``axtui/`` both use it.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterable
from pathlib import Path

from websockets.frames import DATA_OPCODES, Frame

REDACTED = "(redacted)"
LIBRARY_LOGGERS = ("websockets.server", "websockets.client")  # log headers and frames at DEBUG

_PATTERNS = (
    # An Authorization header's credentials (any logger, any format).
    re.compile(r"(?i)(\bbearer\s+)[^\s'\",;]+"),
    # "token": "…" in JSON, token=… in a query or repr; also the Slack and API key names.
    re.compile(r"""(?i)(["']?\b(?:token|app_token|bot_token|api_key|password|secret)["']?"""
               r"""\s*[:=]\s*["']?)[^\s"',}&]+"""),
    # Slack tokens wherever they appear (xoxb-…, xoxp-…, xapp-…).
    re.compile(r"()\bx(?:ox[abeoprs]|app)-[A-Za-z0-9-]+"),
)


# What could forge a log line or hide what it says: C0 controls (but tab), DEL, C1, the
# line and paragraph separators and the bidi controls. Client text (names, ids, SQL, agent
# output) reaches log messages, so every message is escaped here, once, not at each call.
_OTHER_CONTROLS = r"\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_CONTROLS = re.compile(rf"[\x00-\x08\n{_OTHER_CONTROLS}]")
_CONTROLS_BUT_NEWLINE = re.compile(rf"[\x00-\x08{_OTHER_CONTROLS}]")
_NAMED = {"\n": "\\n", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    c = match.group()
    return _NAMED.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")


def escape_controls(text: str, *, newlines: bool = False) -> str:
    """``text`` with control characters written as escapes (``\\n``, ``\\x1b``,
    ``\\u202e``), so it stays one line of a log and shows what it holds; ``newlines``
    keeps line breaks (a traceback is several lines)."""
    pattern = _CONTROLS_BUT_NEWLINE if newlines else _CONTROLS
    return pattern.sub(_escape, text)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with known ``secrets`` and anything shaped like a credential masked."""
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, REDACTED)
    for pattern in _PATTERNS:
        text = pattern.sub(rf"\g<1>{REDACTED}", text)
    return text


def hide_paths(text: str, data_dir: Path) -> str:
    """``text`` with the hub's own paths replaced by what they stand for, for answers to
    clients (who have no business knowing where the hub keeps its files): a session file
    (``sessions/<id>.db``, ``-wal`` and the like) becomes ``session <id>``, any other path
    in the data dir ``the hub's data dir``. The data dir is matched as configured and as
    an absolute path."""
    for root in _roots(data_dir):
        if root not in text:
            continue
        # A relative root counts only where it starts a path: "data" is an ordinary word.
        absolute = root.startswith("/")
        prefix = ("" if absolute else r"(?<![\w./-])") + re.escape(root)
        text = re.sub(prefix + r"/sessions/([A-Za-z0-9][A-Za-z0-9._-]*?)\.db"
                      r"(?:-wal|-shm|-journal)?(?![\w.-])", r"session \1", text)
        rest = r"(?:/[^\s'\":;,]*)?(?![\w.-])" if absolute else r"/[^\s'\":;,]*"
        text = re.sub(prefix + rest, "the hub's data dir", text)
    return text


def _roots(data_dir: Path) -> list[str]:
    """The spellings of ``data_dir`` a message may hold, longest first."""
    forms = {str(data_dir), str(data_dir.absolute()), str(data_dir.resolve())}
    return sorted((f for f in forms if f not in ("", ".", "/")), key=len, reverse=True)


class Redactor(logging.Filter):
    """A filter that masks secrets in every record it sees; it never drops a record.

    ``secrets`` are strings masked wherever they appear, on top of the patterns of
    :func:`redact`. A websockets frame in a record's arguments is masked whole before
    websockets shortens it for display, so a secret cut in two by the elision cannot leak
    half of itself.
    """

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        super().__init__()
        self.secrets: set[str] = set()
        self.add(secrets)

    def add(self, secrets: Iterable[str | None]) -> None:
        """Mask these strings too (``None`` and empty strings are skipped)."""
        self.secrets.update(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message (and traceback) with secrets masked and control
        characters escaped (:func:`escape_controls`)."""
        args = record.args
        if isinstance(args, tuple) and any(isinstance(a, Frame) for a in args):
            record.args = tuple(self._frame(a) if isinstance(a, Frame) else a for a in args)
        try:
            message = record.getMessage()
        except Exception:  # a broken log call: the handler reports it, as it would have
            return True
        masked = escape_controls(redact(message, self.secrets))
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = escape_controls(
                redact(logging.Formatter().formatException(record.exc_info), self.secrets),
                newlines=True)
        return True

    def _frame(self, frame: Frame) -> Frame:
        if frame.opcode not in DATA_OPCODES:
            return frame
        text = bytes(frame.data).decode("utf-8", "replace")
        masked = redact(text, self.secrets)
        return frame if masked == text else dataclasses.replace(frame, data=masked.encode())


_SHARED = Redactor()


def protect_logs(secrets: Iterable[str | None] = (),
                 handlers: Iterable[logging.Handler] = ()) -> Redactor:
    """Mask secrets in the process's logs: installs the process's one :class:`Redactor` on
    :data:`LIBRARY_LOGGERS` and on ``handlers``, and adds ``secrets`` to what it masks.

    Safe to call many times (each logger or handler gets the filter once); the filter
    stays for the life of the process, since masking never hurts.
    """
    _SHARED.add(secrets)
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).addFilter(_SHARED)  # addFilter skips a filter already there
    for handler in handlers:
        handler.addFilter(_SHARED)
    return _SHARED
