"""What the block widgets draw, rendered to plain text (no app needed)."""

from __future__ import annotations

from rich.console import Console

from axtui.tui.widgets.blocks import tool_details


def plain(renderable: object) -> str:
    """``renderable`` as the text a wide terminal would show."""
    console = Console(width=100, color_system=None, record=True)
    console.print(renderable)
    return console.export_text()


def test_a_tool_call_shows_its_input_text_output_and_diffs() -> None:
    """Input as JSON, text content as is, and a diff as a unified diff of the file."""
    text = plain(tool_details({"path": "app.py"}, [
        {"type": "content", "content": {"type": "text", "text": "3 tests fixed"}},
        {"type": "diff", "path": "app.py", "oldText": "a = 1\nb = 2\n",
         "newText": "a = 1\nb = 3\n"},
        {"type": "terminal", "terminalId": "t1"},
    ]))
    assert '"path": "app.py"' in text
    assert "3 tests fixed" in text
    assert "--- a/app.py" in text and "+++ b/app.py" in text
    assert "-b = 2" in text and "+b = 3" in text
    assert "terminal t1" in text


def test_a_tool_call_without_details_says_so() -> None:
    """No input and no content: a short note instead of an empty fold."""
    assert "no details" in plain(tool_details(None, []))
