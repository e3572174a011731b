"""The conversation pane: the newest blocks of a :class:`~axtui.tui.model.Conversation`."""

from __future__ import annotations

from textual.containers import VerticalScroll
from textual.widgets import Static

from axtui.tui.model import Conversation
from axtui.tui.widgets.blocks import BlockWidget, widget_for


class ConversationView(VerticalScroll):
    """Shows the last ``max_widgets`` blocks of a conversation, anchored to the bottom.

    :meth:`sync` mounts widgets for new blocks, re-renders blocks whose version changed and
    removes the oldest widgets past the bound, so the widget tree stays small however long
    the session runs. Scrolling up releases the anchor; scrolling back down restores it.
    """

    DEFAULT_CSS = """
    ConversationView { height: 1fr; padding: 0 1; scrollbar-size-vertical: 1; }
    ConversationView > .earlier { color: $text-muted; text-style: italic; margin-bottom: 1; }
    """

    def __init__(self, max_widgets: int = 60, *, interactive: bool = True,
                 id: str | None = None) -> None:
        super().__init__(id=id)
        self.max_widgets = max_widgets
        self.interactive = interactive  # False in replay: the past cannot be answered
        self._widgets: dict[str, BlockWidget] = {}
        self._earlier = Static(classes="earlier")
        self._earlier.display = False

    def compose(self):  # type: ignore[no-untyped-def]
        yield self._earlier

    def on_mount(self) -> None:
        self.anchor()

    def reset(self) -> None:
        """Forget every widget (before showing another conversation or rewinding)."""
        if self._widgets:
            for widget in self._widgets.values():
                widget.retired = True
            self.remove_children(list(self._widgets.values()))
        self._widgets = {}
        self._earlier.display = False
        self.anchor()

    def sync(self, conversation: Conversation, earlier: str | None = None) -> None:
        """Bring the widgets up to date with ``conversation``'s newest blocks."""
        keys = list(conversation.blocks)[-self.max_widgets:]
        wanted = set(keys)
        stale = [w for k, w in self._widgets.items() if k not in wanted]
        if stale:
            for widget in stale:
                widget.retired = True
                del self._widgets[widget.block_key]
            self.remove_children(stale)
        fresh: list[BlockWidget] = []
        for key in keys:
            block = conversation.blocks[key]
            shown = self._widgets.get(key)
            if shown is None:
                shown = self._widgets[key] = widget_for(block, self.interactive)
                fresh.append(shown)
            else:
                shown.show(block)
        if fresh:
            self.mount_all(fresh)
        hidden = len(conversation.blocks) - len(keys) + conversation.dropped
        note = earlier
        if hidden:
            note = f"{hidden} earlier blocks not shown" + (f"; {earlier}" if earlier else "")
        self._earlier.display = bool(note)
        if note:
            self._earlier.update(f"… {note}")

    def widget_at(self, key: str) -> BlockWidget | None:
        """The widget showing the block ``key``, if it is on screen."""
        return self._widgets.get(key)

    @property
    def shown(self) -> int:
        """How many block widgets are mounted."""
        return len(self._widgets)
