"""One widget per kind of conversation block; each renders its block from the model.

A widget is made for a block and then told about each new version of it through
:meth:`BlockWidget.show`: the same code path for history, live events and replay.
"""

from __future__ import annotations

import difflib
import json
from datetime import datetime
from typing import Any, ClassVar

from rich.console import Group, RenderableType
from rich.syntax import Syntax
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Button, Collapsible, Markdown, Static

from axtui.tui import model as m


def clock(ts: int) -> str:
    """Local wall-clock time of an event, ``HH:MM:SS``."""
    return datetime.fromtimestamp(ts / 1000).strftime("%H:%M:%S")


STATUS_ICONS = {"pending": "○", "in_progress": "◐", "completed": "✓", "failed": "✗"}
PLAN_ICONS = {"pending": "○", "in_progress": "▶", "completed": "✓"}


class BlockWidget(Widget):
    """Base of the block widgets: knows its block's key and the version it shows."""

    DEFAULT_CSS = """
    BlockWidget { height: auto; margin-bottom: 1; }
    BlockWidget > .meta { height: 1; }
    """

    time_format = staticmethod(clock)

    def __init__(self, block: m.Block) -> None:
        super().__init__(classes="block")
        self.block_key = block.key
        self.seq = block.seq
        self.shown_version = -1
        self.retired = False  # set when the view drops this widget (it may not be mounted yet)
        self._initial = block
        self._ready = False
        self._content: RenderableType = ""

    def on_mount(self) -> None:
        self._ready = True
        self.show(self._initial)

    def show(self, block: m.Block) -> None:
        """Render ``block`` if it is newer than what is on screen (once mounted)."""
        self._initial = block
        if self._ready and not self.retired and block.version != self.shown_version:
            self.shown_version = block.version
            self.render_block(block)

    def render_block(self, block: m.Block) -> None:
        """Draw the block; each subclass draws its own kind, this is the plain fallback."""
        self.draw(Text(f"{type(block).__name__} at seq {block.seq}", style="dim"))

    def draw(self, content: RenderableType) -> None:
        """Show ``content`` as the whole block (blocks without child widgets: cheap to mount,
        which matters when hundreds of events a second arrive)."""
        self._content = content
        self.refresh(layout=True)

    def render(self) -> RenderableType:
        return self._content


class UserMessage(BlockWidget):
    """A person's message: who, from where, when, and the text."""

    DEFAULT_CSS = """
    UserMessage { border-left: outer $accent; padding: 0 1; background: $boost; }
    """

    def render_block(self, block: m.Block) -> None:
        assert isinstance(block, m.UserBlock)
        via = f" via {block.client}" if block.client else ""
        self.draw(Text.assemble((block.name or "someone", "bold"), (via, "dim"),
                                ("  " + self.time_format(block.ts), "dim"), "\n", block.text))


class AgentMessage(BlockWidget):
    """An agent's answer, Markdown, streamed in as its chunks arrive."""

    DEFAULT_CSS = """
    AgentMessage { border-left: outer $primary; padding: 0 1; }
    AgentMessage > Markdown { margin: 0; padding: 0; }
    AgentMessage > Markdown > MarkdownBlock:last-child { margin-bottom: 0; }
    """

    def __init__(self, block: m.Block) -> None:
        super().__init__(block)
        self._source = ""

    def compose(self) -> ComposeResult:
        yield Static(classes="meta")
        yield Markdown()

    def render_block(self, block: m.Block) -> None:
        assert isinstance(block, m.TextBlock)
        state = "" if block.complete else "  writing…"
        self.query_one(".meta", Static).update(
            Text.assemble((block.agent or "agent", "bold"), (state, "dim italic")))
        markdown = self.query_one(Markdown)
        if block.text.startswith(self._source):
            delta = block.text[len(self._source):]
            if delta:
                markdown.append(delta)
        else:
            markdown.update(block.text)
        self._source = block.text


class Thought(BlockWidget):
    """An agent's thought, collapsed by default; hidden everywhere by one key."""

    DEFAULT_CSS = """
    Thought { margin-bottom: 0; }
    Thought > Collapsible { border: none; padding: 0; background: transparent;
                            color: $text-muted; }
    Thought > Collapsible > Contents { padding: 0 0 0 3; }
    """

    def compose(self) -> ComposeResult:
        with Collapsible(title="thinking", collapsed=True):
            yield Static(classes="body")

    def render_block(self, block: m.Block) -> None:
        assert isinstance(block, m.TextBlock)
        first = block.text.strip().splitlines()[0] if block.text.strip() else ""
        title = "thought" if block.complete else "thinking…"
        self.query_one(Collapsible).title = f"{title}: {_clip(first, 60)}"
        self.query_one(".body", Static).update(Text(block.text, style="italic"))


class ToolCall(BlockWidget):
    """A tool call: title, kind and status; its input and content (and diffs) fold away."""

    DEFAULT_CSS = """
    ToolCall { margin-bottom: 0; }
    ToolCall > Collapsible { border: none; padding: 0; background: transparent; }
    ToolCall > Collapsible > CollapsibleTitle { color: $warning; }
    ToolCall.-completed > Collapsible > CollapsibleTitle { color: $success; }
    ToolCall.-failed > Collapsible > CollapsibleTitle { color: $error; }
    ToolCall > Collapsible > Contents { padding: 0 0 0 3; }
    """

    def compose(self) -> ComposeResult:
        with Collapsible(collapsed=True):
            yield Static(classes="body")

    def render_block(self, block: m.Block) -> None:
        assert isinstance(block, m.ToolBlock)
        icon = STATUS_ICONS.get(block.status, "•")
        kind = f" · {block.kind}" if block.kind else ""
        self.query_one(Collapsible).title = (
            f"{icon} {block.title or block.tool_call_id}{kind} · {block.status or 'pending'}")
        self.set_class(block.status == "failed", "-failed")
        self.set_class(block.status == "completed", "-completed")
        self.query_one(".body", Static).update(tool_details(block.input, block.content))


def tool_details(raw_input: Any, content: list[Any]) -> RenderableType:
    """A tool call's input as JSON and its content: text, diffs, terminals."""
    parts: list[RenderableType] = []
    if raw_input not in (None, {}, ""):
        parts.append(Syntax(json.dumps(raw_input, indent=2, ensure_ascii=False), "json",
                            theme="ansi_dark", background_color="default", word_wrap=True))
    for item in content or []:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "diff":
            old = str(item.get("oldText") or "").splitlines()
            new = str(item.get("newText") or "").splitlines()
            path = str(item.get("path") or "file")
            diff = "\n".join(difflib.unified_diff(old, new, f"a/{path}", f"b/{path}",
                                                  lineterm=""))
            parts.append(Syntax(diff or f"(no change to {path})", "diff", theme="ansi_dark",
                                background_color="default", word_wrap=True))
        elif item.get("type") == "terminal":
            parts.append(Text(f"terminal {item.get('terminalId', '')}", style="dim"))
        else:
            inner = item.get("content") if isinstance(item.get("content"), dict) else item
            parts.append(Text(str(inner.get("text", inner)) if isinstance(inner, dict)
                              else str(inner)))
    return Group(*parts) if parts else Text("no details", style="dim")


class PlanView(BlockWidget):
    """The agent's plan as a checklist."""

    DEFAULT_CSS = """
    PlanView { border-left: outer $secondary; padding: 0 1; }
    """

    def render_block(self, block: m.Block) -> None:
        assert isinstance(block, m.PlanBlock)
        text = Text("plan\n", style="bold")
        for entry in block.entries:
            status = entry.status
            style = {"completed": "dim strike", "in_progress": "bold"}.get(status, "")
            text.append(f"  {PLAN_ICONS.get(status, '○')} ", style="bold" if status ==
                        "in_progress" else "dim")
            text.append(entry.content + "\n", style=style)
        text.rstrip()
        self.draw(text)


class PermissionPrompt(BlockWidget, can_focus=True):
    """A permission request answered inline with a key per option.

    Posts :class:`PermissionPrompt.Answered`; when anyone answers (here or elsewhere) the
    options give way to what was chosen, by whom and from where.
    """

    DEFAULT_CSS = """
    PermissionPrompt { border: round $warning; padding: 0 1; }
    PermissionPrompt:focus { border: round $accent; background: $warning 10%; }
    PermissionPrompt.-answered { border: round $panel; }
    PermissionPrompt > .options { height: auto; margin-top: 1; }
    PermissionPrompt > .options > Button { margin-right: 2; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(str(n), f"choose({n})", f"option {n}", show=False) for n in range(1, 10)
    ]

    class Answered(Message):
        """Someone here chose ``option_id`` for ``request_id``."""

        def __init__(self, request_id: str, option_id: str) -> None:
            super().__init__()
            self.request_id = request_id
            self.option_id = option_id

    def __init__(self, block: m.Block, interactive: bool = True) -> None:
        super().__init__(block)
        assert isinstance(block, m.PermissionBlock)
        self.interactive = interactive
        self.can_focus = interactive
        self.request_id = block.request_id
        self.options = block.options
        self.is_open = block.open

    def compose(self) -> ComposeResult:
        yield Static(classes="meta")
        yield Static(classes="body")
        with Horizontal(classes="options"):
            for n, option in enumerate(self.options[:9], start=1):
                yield Button(f"{n} {option.name or option.option_id}",
                             variant="success" if option.kind.startswith("allow") else "error",
                             name=option.option_id, compact=True)
        yield Static(classes="answer")

    def render_block(self, block: m.Block) -> None:
        assert isinstance(block, m.PermissionBlock)
        self.is_open = block.open
        kind = f" ({block.tool_kind})" if block.tool_kind else ""
        self.query_one(".meta", Static).update(
            Text.assemble(("permission requested", "bold"), (kind, "dim")))
        body = Text(block.title or block.request_id)
        if isinstance(block.input, dict):
            for name, value in list(block.input.items())[:6]:
                body.append(f"\n  {name}: ", style="dim")
                body.append(_clip(str(value), 100))
        self.query_one(".body", Static).update(body)
        self.set_class(not block.open, "-answered")
        self.query_one(".options").display = block.open and self.interactive
        answer = self.query_one(".answer", Static)
        if block.open:
            hint = "press a number to answer" if self.interactive else "waiting for an answer"
            answer.update(Text(hint, style="dim italic"))
        else:
            who = ""
            if block.answered_by:
                via = f" via {block.answered_via}" if block.answered_via else ""
                who = f" — answered by {block.answered_by}{via}"
            answer.update(Text.assemble(("→ ", "bold"), (block.answer or "", "bold"), who))
            if self.has_focus:
                self.screen.focus_next()

    def action_choose(self, number: int) -> None:
        """Answer with the option numbered ``number`` (1-based)."""
        if self.is_open and self.interactive and 0 < number <= len(self.options):
            self.post_message(self.Answered(self.request_id,
                                            self.options[number - 1].option_id))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if self.is_open and self.interactive and event.button.name:
            self.post_message(self.Answered(self.request_id, event.button.name))


class StateChange(BlockWidget):
    """A change to the session's state: who ran which statements, and the rows changed."""

    DEFAULT_CSS = """
    StateChange { border-left: outer $success; padding: 0 1; color: $text-muted; }
    """

    def render_block(self, block: m.Block) -> None:
        assert isinstance(block, m.StateBlock)
        text = Text.assemble(("state changed", "bold"), (f" by {block.by}", "dim"))
        if block.changes is not None:
            text.append(f" · {block.changes} row{'s' if block.changes != 1 else ''}",
                        style="dim")
        for statement in block.statements[:5]:
            text.append("\n  " + _clip(" ".join(statement.sql.split()), 120))
        if len(block.statements) > 5:
            text.append(f"\n  … {len(block.statements) - 5} more", style="dim")
        self.draw(text)


class Notice(BlockWidget):
    """A quiet lifecycle line, or a failure stated plainly."""

    DEFAULT_CSS = """
    Notice { color: $text-muted; margin-bottom: 0; }
    Notice.-failure { color: $error; text-style: bold; margin-bottom: 1; }
    """

    def render_block(self, block: m.Block) -> None:
        assert isinstance(block, m.NoticeBlock)
        self.set_class(block.failure, "-failure")
        mark = "✗ " if block.failure else "· "
        self.draw(Text(f"{mark}{block.text}  {self.time_format(block.ts)}"))


class AppEvent(BlockWidget):
    """An application event (``ci.build_failed``): type, source and data."""

    DEFAULT_CSS = """
    AppEvent { border-left: outer $warning; padding: 0 1; }
    """

    def render_block(self, block: m.Block) -> None:
        assert isinstance(block, m.EventBlock)
        text = Text.assemble((block.type, "bold"), (f" from {block.by}", "dim"))
        for name, value in list(block.data.items())[:8]:
            text.append(f"\n  {name}: ", style="dim")
            text.append(_clip(value if isinstance(value, str) else json.dumps(value), 120))
        self.draw(text)


def widget_for(block: m.Block, interactive: bool = True) -> BlockWidget:
    """The widget that shows ``block`` (``interactive``: permission prompts can be answered)."""
    if isinstance(block, m.TextBlock):
        return Thought(block) if block.thought else AgentMessage(block)
    if isinstance(block, m.PermissionBlock):
        return PermissionPrompt(block, interactive)
    kinds: dict[type[m.Block], type[BlockWidget]] = {
        m.UserBlock: UserMessage, m.ToolBlock: ToolCall, m.PlanBlock: PlanView,
        m.StateBlock: StateChange,
        m.NoticeBlock: Notice, m.EventBlock: AppEvent,
    }
    return kinds[type(block)](block)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"

