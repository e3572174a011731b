"""Event text cannot drive the terminal it is printed on: `replay`, `exec` and the printer
strip escape sequences, control characters and bidi controls, and keep the text."""

from __future__ import annotations

import io
import re
from typing import Any

import orjson
import pytest
from rich.console import Console

from axtui.client import HubClient
from axtui.execute import note
from axtui.render import EventPrinter
from axtui.terminal import safe_json_line, safe_text, safe_value
from server.hub import Hub
from tests.axtui.conftest import CliRun, cli_events

# Set the window title, clear the screen, home the cursor, C1 CSI, a bidi override, a
# carriage return that would overwrite the line, a DCS query, a full reset.
HOSTILE = ("hi\x1b]0;pwned\x07 \x1b[2J\x1b[H there\x9b31m \u202eevil\u202c \rover"
           " \x1bP1$qm\x1b\\dcs \x1bc end\x00\x7f\x85")
SGR = re.compile(r"\x1b\[[0-9;]*m")  # the printer's own colours
UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def shown(output: str) -> str:
    """What a terminal would be sent, less the printer's own colour codes."""
    return SGR.sub("", output)


@pytest.mark.parametrize(("text", "expected"), [
    ("\x1b]0;title\x07after", "after"),
    ("\x1b]52;c;ZXZpbA==\x1b\\after", "after"),  # OSC 52: write the clipboard
    ("\x1b[2J\x1b[1;1Hafter", "after"),
    ("\x1b[?1049hafter", "after"),
    ("\x9b2Jafter", "after"),
    ("\x9d0;t\x9cafter", "after"),
    ("\x1bPq#0;2;0;0;0\x1b\\after", "after"),
    ("\x1bcafter", "after"),
    ("\x1b(0after", "after"),
    ("a\x1b]0;unterminated", "a0;unterminated"),
    ("a\x1b", "a"),
    ("line one\r\nline two\roverwrite", "line one\nline twooverwrite"),
    ("\u202eabc\u202c \u2066x\u2069 \u200fy", "abc x y"),
    ("bell\x07 bs\x08 nul\x00 del\x7f c1\x85", "bell bs nul del c1"),
])
def test_safe_text_strips_what_a_terminal_acts_on(text: str, expected: str) -> None:
    """CSI, OSC, DCS, C1 and other escape sequences, control characters and bidi controls go."""
    assert safe_text(text) == expected


@pytest.mark.parametrize("text", [
    "plain", "two\nlines\tand a tab", "Zoë 李雷 مرحبا 👨‍👩‍👧", "", "[1;31m is just text",
])
def test_safe_text_keeps_ordinary_text(text: str) -> None:
    """Newlines, tabs, every script, emoji with joiners and brackets are left as they are."""
    assert safe_text(text) == text


def test_safe_value_cleans_every_string_of_an_event() -> None:
    """Nested strings and keys are cleaned; numbers, booleans and null are kept."""
    value = {"a\x1b[2J": ["x\x1b]0;t\x07", {"n": 1, "b": True, "z": None}]}
    assert safe_value(value) == {"a": ["x", {"n": 1, "b": True, "z": None}]}


def event(seq: int, kind: str, data: dict[str, Any], name: str = "alice",
          client: str = "cli", state: Any = None) -> dict[str, Any]:
    """An event as the hub sends it."""
    out = {"seq": seq, "id": f"e{seq}", "ts": 1_700_000_000_000 + seq, "type": kind,
           "source": {"kind": "client", "name": name, "client": client}, "data": data,
           "idempotencyKey": None, "turnId": None}
    if state is not None:
        out["state"] = state
    return out


# Imported sessions and session files can hold any source name; agents write any text.
HOSTILE_EVENTS = [
    event(1, "user.message", {"text": HOSTILE}, name="bob\x1b]0;t\x07", client="x\x1b[2J"),
    event(2, "user.message", {"text": "hi"}, name="Bob", client="slack") | {
        "source": {"kind": "client", "name": "Bob", "client": "slack",
                   "principal": "bot\x1b[2J"}},
    event(3, "tool.call", {"toolCallId": "t\x1b[2J", "title": HOSTILE, "kind": "read",
                           "status": "pending", "content": [
                               {"type": "content", "content": {"type": "text",
                                                               "text": HOSTILE}}]}),
    event(4, "ci.build_failed", {"log": HOSTILE}),
    event(5, "permission.request", {"requestId": "r1", "toolCall": {"title": HOSTILE},
                                    "options": [{"optionId": "ok\x1b[2J", "kind": "allow_once",
                                                 "name": HOSTILE}]}),
    event(6, "turn.failed", {"turnId": "t", "reason": "crashed",
                             "error": {"message": HOSTILE}}),
    event(7, "note", {}, state=[{"sql": f"INSERT INTO t VALUES ('{HOSTILE}')"}]),
    event(8, "plan", {"entries": [{"content": HOSTILE, "status": "pending"}]}),
]


@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "file"])
def test_the_printer_sends_no_control_sequences(terminal: bool) -> None:
    """Every event's pretty lines hold no escape sequence but the printer's own colours."""
    buffer = io.StringIO()
    printer = EventPrinter(jsonl=False, file=buffer)
    printer.console = Console(file=buffer, highlight=False, soft_wrap=True,
                              force_terminal=terminal, color_system="truecolor")
    for e in HOSTILE_EVENTS:
        printer.print(e)
    out = shown(buffer.getvalue())
    assert not UNSAFE.search(out), repr(out)
    assert "hi  there evil over dcs  end" in out  # the text itself is kept
    assert "pwned" not in out
    assert "(sent by bot)" in out


def test_streamed_chunks_send_no_control_sequences() -> None:
    """`exec`'s streamed chunks are cleaned as they are written."""
    buffer = io.StringIO()
    printer = EventPrinter(jsonl=False, stream_chunks=True, file=buffer)
    for seq, text in enumerate(["one\x1b]0;", "pwned\x07 two", " \x1b[2Jthree"], start=1):
        printer.print(event(seq, "agent.message.chunk", {"messageId": "m", "text": text},
                            name="echo"))
    printer.close()
    out = shown(buffer.getvalue())
    assert not UNSAFE.search(out), repr(out)
    assert "one" in out and "two" in out and "three" in out


def test_json_lines_escape_what_json_leaves_raw() -> None:
    """JSON Lines hold C1 and bidi controls as \\u escapes: the same JSON value, nothing raw."""
    buffer = io.StringIO()
    printer = EventPrinter(jsonl=True, file=buffer)
    for e in HOSTILE_EVENTS:
        printer.print(e)
    lines = buffer.getvalue().splitlines()
    assert not UNSAFE.search(buffer.getvalue())
    assert [orjson.loads(line) for line in lines] == HOSTILE_EVENTS
    assert safe_json_line('{"a":"\u202e\x9b"}') == '{"a":"\\u202e\\u009b"}'


async def hostile_session(hub: Hub, sid: str = "h") -> None:
    """A session whose messages, event data and statements hold escape sequences."""
    async with HubClient(hub.url) as client:
        await client.create_session(sessionId=sid, title="t\x1b]0;pwned\x07")
        await client.publish(sid, "user.message", {"text": HOSTILE})
        await client.publish(sid, "ci.build_failed", {"log": HOSTILE})


async def test_replay_prints_no_control_sequences(cli_hub: Hub, cli_run: CliRun) -> None:
    """`axtui replay` of a session full of escape sequences prints the text without them."""
    await hostile_session(cli_hub)
    result = await cli_run("replay", "h", "--server", cli_hub.url)
    assert result.exit_code == 0, result.output
    assert not UNSAFE.search(result.stdout), repr(result.stdout)
    assert "hi  there evil over dcs  end" in result.stdout
    jsonl = await cli_run("replay", "h", "--server", cli_hub.url, "--json")
    assert not UNSAFE.search(jsonl.stdout)
    assert cli_events(jsonl.stdout)[1]["data"]["text"] == HOSTILE


async def test_exec_prints_no_control_sequences(cli_hub: Hub, cli_run: CliRun) -> None:
    """`axtui exec` streaming an agent's echo of escape sequences prints the text only."""
    result = await cli_run("exec", "--server", cli_hub.url, "--agent", "echo",
                           "--input", HOSTILE, "--title", "t")
    assert result.exit_code == 0, result.output
    assert not UNSAFE.search(result.stdout), repr(result.stdout)
    # (the agent's own output may lose a C1 byte on the way: what is left is only text)
    assert "echo: hi  there" in result.stdout and "evil over dcs  end" in result.stdout


def test_exec_notes_carry_no_control_sequences(capsys: pytest.CaptureFixture[str]) -> None:
    """`exec`'s notes on stderr (a failed turn's message, a hub's error) are cleaned too."""
    note(f"the turn failed (crashed): {HOSTILE}")
    err = capsys.readouterr().err
    assert not UNSAFE.search(err), repr(err)
    assert "axtui: the turn failed (crashed): hi  there" in err
