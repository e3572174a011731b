"""Keep secrets out of logs that libraries write on their own.

``websockets`` logs every handshake header at DEBUG, the hub token's ``Authorization``
header included; slack_sdk redacts its own headers but not everything else. A
:class:`Redactor` installed on such loggers replaces any secret it knows in a record's
message before a handler sees it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

REDACTED = "(redacted)"
LIBRARY_LOGGERS = ("websockets.client",)  # loggers seen writing a token at DEBUG


class Redactor(logging.Filter):
    """A filter that masks ``secrets`` in every record of the loggers it is installed on."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]
        self._loggers: list[logging.Logger] = []

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message if it holds a secret; never drops a record."""
        message = record.getMessage()
        if any(secret in message for secret in self.secrets):
            for secret in self.secrets:
                message = message.replace(secret, REDACTED)
            record.msg, record.args = message, None
        return True

    def install(self, names: Iterable[str] = LIBRARY_LOGGERS) -> None:
        """Filter the named loggers (filters do not reach child loggers: name each)."""
        for name in names:
            logger = logging.getLogger(name)
            logger.addFilter(self)
            self._loggers.append(logger)

    def remove(self) -> None:
        """Stop filtering."""
        for logger in self._loggers:
            logger.removeFilter(self)
        self._loggers.clear()
