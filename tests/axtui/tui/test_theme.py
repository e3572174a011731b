"""The TUI's theme: AXTUI_THEME, then tui.theme, then the last choice, then the default."""

from __future__ import annotations

from pathlib import Path

import pytest

from axtui.tui.app import AxtuiApp
from axtui.tui.launch import theme_for
from axtui.tui.theme import DEFAULT_THEME, ThemeChoice, ThemeMemory, choose_theme
from server.config import ConfigError, load_config
from tests.axtui.tui.conftest import wait_until
from tests.conftest import HubFactory


def test_the_environment_wins_then_the_config_then_the_last_choice(tmp_path: Path) -> None:
    """AXTUI_THEME beats tui.theme, which beats the remembered choice, which beats the
    default; each choice says where it came from."""
    memory = ThemeMemory(tmp_path / "theme")
    assert choose_theme({}, None, memory) == ThemeChoice(DEFAULT_THEME, "the default")
    memory.save("nord")
    assert choose_theme({}, None, memory) == ThemeChoice("nord", "your last choice")
    assert choose_theme({}, "gruvbox", memory) == ThemeChoice("gruvbox", "tui.theme")
    assert choose_theme({"AXTUI_THEME": "dracula"}, "gruvbox", memory) == ThemeChoice(
        "dracula", "AXTUI_THEME")
    assert choose_theme({"AXTUI_THEME": " "}, None, memory).name == "nord"  # blank: unset


def test_the_memory_survives_a_missing_or_unwritable_place(tmp_path: Path) -> None:
    """No file yet means no choice; a place that cannot be written loses the choice
    quietly (the TUI keeps running); the file holds only the theme's name."""
    memory = ThemeMemory(tmp_path / "sub" / "theme")
    assert memory.load() is None
    memory.save("nord")
    assert (tmp_path / "sub" / "theme").read_text(encoding="utf-8").strip() == "nord"
    blocked = tmp_path / "file"
    blocked.write_text("", encoding="utf-8")
    ThemeMemory(blocked / "theme").save("nord")  # a file where a directory must be
    assert ThemeMemory(blocked / "theme").load() is None


def test_the_config_file_takes_a_tui_theme(tmp_path: Path) -> None:
    """config.yaml's tui.theme is read (default none); an unknown tui key is an error that
    names it."""
    assert load_config(None).tui.theme is None
    config_file = tmp_path / "config.yaml"
    config_file.write_text("tui:\n  theme: nord\n", encoding="utf-8")
    assert load_config(config_file).tui.theme == "nord"
    config_file.write_text("tui:\n  colour: nord\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"tui\.colour: unknown key"):
        load_config(config_file)


def test_the_launcher_uses_the_config_and_the_environment(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """``axtui tui``/``up`` pick the theme from AXTUI_THEME and the config's tui.theme."""
    config_file = tmp_path / "config.yaml"
    config_file.write_text("tui:\n  theme: nord\n", encoding="utf-8")
    config = load_config(config_file)
    memory = ThemeMemory(tmp_path / "theme")
    monkeypatch.delenv("AXTUI_THEME", raising=False)
    assert theme_for(config, memory).name == "nord"
    monkeypatch.setenv("AXTUI_THEME", "dracula")
    assert theme_for(config, memory).name == "dracula"


async def test_a_theme_chosen_in_the_app_is_kept_for_the_next_start(
        hub_factory: HubFactory, tmp_path: Path) -> None:
    """Choosing a theme (as the palette's "Change theme" does) remembers it; the next start
    uses it."""
    hub = await hub_factory()
    memory = ThemeMemory(tmp_path / "theme")
    app = AxtuiApp(hub.url, theme=choose_theme({}, None, memory), theme_memory=memory)
    async with app.run_test() as pilot:
        assert app.theme == DEFAULT_THEME
        await pilot.pause()
        assert memory.load() is None  # starting is not choosing
        app.theme = "nord"
        await wait_until(pilot, lambda: memory.load() == "nord", "the choice to be kept")
    again = AxtuiApp(hub.url, theme=choose_theme({}, None, memory), theme_memory=memory)
    async with again.run_test():
        assert again.theme == "nord"


async def test_an_unknown_theme_falls_back_to_the_default_and_says_where_it_came_from(
        hub_factory: HubFactory) -> None:
    """A theme name Textual does not know gives the default theme and a note naming the
    setting to fix."""
    hub = await hub_factory()
    app = AxtuiApp(hub.url, theme=ThemeChoice("no-such-theme", "AXTUI_THEME"))
    async with app.run_test() as pilot:
        await pilot.pause()
        assert app.theme == DEFAULT_THEME
        messages = [n.message for n in app._notifications]
        assert any("no-such-theme" in m and "AXTUI_THEME" in m for m in messages)
