"""The message input: multi-line, Enter sends, with what was sent before."""

from __future__ import annotations

from textual import events
from textual.message import Message
from textual.widgets import TextArea

# Ctrl+J reaches us from every terminal (it sends "\n"); Shift+Enter only from those that
# report it apart from Enter (kitty's keyboard protocol), so Ctrl+J is the one advertised.
NEWLINE_KEYS = {"ctrl+j", "shift+enter", "alt+enter"}


class Composer(TextArea):
    """Enter sends; Ctrl+J (or Shift+Enter) starts a new line; Up and Down recall history.

    Posts :class:`Composer.Submitted` with the text; empty messages are not sent.
    """

    DEFAULT_CSS = """
    Composer { height: auto; min-height: 3; max-height: 10; border: tall $panel;
               padding: 0 1; }
    Composer:focus { border: tall $primary; }
    """

    class Submitted(Message):
        """The user sent ``text``."""

        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, soft_wrap=True, show_line_numbers=False, tab_behavior="focus",
                         placeholder="Write a message: Enter sends, Ctrl+J for a new line")
        self.sent: list[str] = []
        self._recall: int | None = None  # index into history while browsing it
        self._draft = ""

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            self._submit()
        elif event.key in NEWLINE_KEYS:
            event.stop()
            event.prevent_default()
            self.insert("\n")
        elif event.key == "up" and self.cursor_location[0] == 0 and self.sent:
            event.stop()
            event.prevent_default()
            self._browse(-1)
        elif (event.key == "down" and self._recall is not None
              and self.cursor_location[0] == self.document.line_count - 1):
            event.stop()
            event.prevent_default()
            self._browse(1)
        else:
            await super()._on_key(event)

    def _submit(self) -> None:
        text = self.text.strip()
        if not text:
            return
        if not self.sent or self.sent[-1] != text:
            self.sent.append(text)
        self._recall = None
        self.clear()
        self.post_message(self.Submitted(text))

    def _browse(self, step: int) -> None:
        if self._recall is None:
            self._draft = self.text
            index = len(self.sent) + step
        else:
            index = self._recall + step
        if index < 0:
            return
        if index >= len(self.sent):
            self._recall = None
            self.load_text(self._draft)
        else:
            self._recall = index
            self.load_text(self.sent[index])
        self.move_cursor(self.document.end)
