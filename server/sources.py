"""Who an event comes from: the ``source`` object of every event, and its labels."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson


def _text(value: object) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


@dataclass(frozen=True, slots=True)
class Source:
    """Who an event comes from (the ``source`` object); ``principal`` is set when a client
    published on behalf of someone (``name``), and is then the token's own name."""

    kind: str
    name: str
    client: str | None = None
    principal: str | None = None

    def to_json(self) -> bytes:
        """The encoded ``source`` object."""
        obj: dict[str, Any] = {"kind": self.kind, "name": self.name}
        if self.client is not None:
            obj["client"] = self.client
        if self.principal is not None:
            obj["principal"] = self.principal
        return orjson.dumps(obj)

    @classmethod
    def from_json(cls, obj: object) -> Source:
        """Read a ``source`` object (anything that is not one reads as an unknown author)."""
        if not isinstance(obj, Mapping):
            return UNKNOWN_SOURCE
        kind = _text(obj.get("kind")) or "?"
        client = obj.get("client")
        principal = obj.get("principal")
        return cls(kind, _text(obj.get("name")) or kind,
                   client if isinstance(client, str) and client else None,
                   principal if isinstance(principal, str) and principal else None)

    @property
    def via(self) -> str:
        """The client kind it came through (``tui``, ``slack``), else its kind (``agent``)."""
        return self.client or self.kind

    def label(self, via: str = " via ", *, clients_only: bool = False) -> str:
        """Who, for people: ``alice via slack``, ``demo`` (an agent) or ``hub``; ``via`` is
        what joins a client's name to its client kind (``"/"`` in narrow columns);
        ``clients_only`` names every other source alone (an agent publishing over a
        connection has a client kind too: noise in a narrow column)."""
        if self.client and (self.kind == "client" or not clients_only):
            return f"{self.name}{via}{self.client}"
        return self.name


HUB_SOURCE = Source("hub", "hub")
UNKNOWN_SOURCE = Source("?", "?")
