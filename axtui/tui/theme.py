"""Which theme the TUI starts with, and the last one chosen in it, kept across restarts.

The first of these that is set wins: ``$AXTUI_THEME``, the config's ``tui.theme``, the
theme last chosen in the TUI (its name in a small file in the user's config dir), and
:data:`DEFAULT_THEME`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import platformdirs

log = logging.getLogger(__name__)

DEFAULT_THEME = "tokyo-night"
THEME_VARIABLE = "AXTUI_THEME"
MAX_NAME = 100  # a theme's name is short; anything longer in the file is not one


@dataclass(frozen=True)
class ThemeChoice:
    """A theme's name and where it came from (said when the name is not a theme)."""

    name: str
    origin: str


class ThemeMemory:
    """The theme last chosen in the TUI, as its name in one small text file."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or platformdirs.user_config_path("axtui") / "tui-theme"

    def load(self) -> str | None:
        """The remembered theme's name; None if there is none (or it cannot be read)."""
        try:
            name = self.path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            return None
        return name if name and len(name) <= MAX_NAME and name.isprintable() else None

    def save(self, name: str) -> None:
        """Remember ``name``; a place that cannot be written only loses the choice (the
        TUI must not fail over a preference)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(name + "\n", encoding="utf-8")
        except OSError as exc:
            log.warning("cannot remember the theme in %s: %s", self.path, exc)


def choose_theme(environ: Mapping[str, str], configured: str | None,
                 memory: ThemeMemory | None) -> ThemeChoice:
    """The theme to start with: ``$AXTUI_THEME``, then ``tui.theme`` (``configured``), then
    the remembered choice, then :data:`DEFAULT_THEME` (blank values count as unset)."""
    variable = environ.get(THEME_VARIABLE, "").strip()
    if variable:
        return ThemeChoice(variable, THEME_VARIABLE)
    if configured and configured.strip():
        return ThemeChoice(configured.strip(), "tui.theme")
    remembered = memory.load() if memory is not None else None
    if remembered:
        return ThemeChoice(remembered, "your last choice")
    return ThemeChoice(DEFAULT_THEME, "the default")
