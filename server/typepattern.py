"""Event type patterns: ``*`` matches any run of characters and nothing else is special
(``wake_on``, ``session/history``'s ``types``, ``--types``, the inspector's filter)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class TypePattern:
    """An event type pattern: ``*`` matches any run of characters, nothing else is special
    (``wake_on``, ``session/history``'s ``types``, ``--types``, the inspector's filter)."""

    text: str
    _regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        regex = ".*".join(map(re.escape, self.text.split("*")))
        object.__setattr__(self, "_regex", re.compile(regex, re.DOTALL))

    def matches(self, event_type: str) -> bool:
        """Whether ``event_type`` matches the whole pattern."""
        return self._regex.fullmatch(event_type) is not None

    @property
    def sqlite_glob(self) -> str:
        """The same pattern as an SQLite ``GLOB`` (where ``?`` and ``[`` are special too)."""
        return "".join({"?": "[?]", "[": "[[]"}.get(c, c) for c in self.text)


@dataclass(frozen=True, slots=True)
class TypeFilter:
    """Any of several patterns; with none, every type matches."""

    patterns: tuple[TypePattern, ...] = ()

    @classmethod
    def of(cls, patterns: Iterable[str] | None) -> TypeFilter:
        """A filter from pattern strings (``None`` or empty: everything)."""
        return cls(tuple(TypePattern(p) for p in patterns or ()))

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def matches(self, event_type: str) -> bool:
        """Whether ``event_type`` matches one of the patterns (or there are none)."""
        return not self.patterns or any(p.matches(event_type) for p in self.patterns)
