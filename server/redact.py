"""Keep tokens out of every log an axtui process writes (the hub, the TUI, the CLI, Slack).

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


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with known ``secrets`` and anything shaped like a credential masked."""
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, REDACTED)
    for pattern in _PATTERNS:
        text = pattern.sub(rf"\g<1>{REDACTED}", text)
    return text


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
        """Rewrite the record's message (and traceback) with secrets masked."""
        args = record.args
        if isinstance(args, tuple) and any(isinstance(a, Frame) for a in args):
            record.args = tuple(self._frame(a) if isinstance(a, Frame) else a for a in args)
        try:
            message = record.getMessage()
        except Exception:  # a broken log call: the handler reports it, as it would have
            return True
        masked = redact(message, self.secrets)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info),
                                     self.secrets)
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
