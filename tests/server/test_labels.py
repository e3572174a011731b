"""Labels clients choose (clientInfo.name and .kind, onBehalfOf) are printable one-liners,
protocolVersion is exactly the integer 1, and client text cannot forge a log line."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from server.protocol import InvalidParams, check_display_name
from server.redact import Redactor, escape_controls
from tests.conftest import Raw, RawFactory
from tests.server.raw_helpers import INVALID_PARAMS, assert_error, create, head

BAD_LABELS = [
    pytest.param("bob\nINFO forged line", id="newline"),
    pytest.param("bob\r", id="carriage-return"),
    pytest.param("\x1b]0;pwned\x07", id="osc-title"),
    pytest.param("bob\x1b[2J", id="csi-clear"),
    pytest.param("bob\x9b2J", id="c1-csi"),
    pytest.param("bob\x85", id="c1-next-line"),
    pytest.param("bob\x7f", id="del"),
    pytest.param("evil\u202egnp.exe", id="bidi-override"),
    pytest.param("a\u2066b\u2069", id="bidi-isolate"),
    pytest.param("a\u200fb", id="rtl-mark"),
    pytest.param("a\u2028b", id="line-separator"),
    pytest.param("x" * 65, id="65-chars"),
    pytest.param("   ", id="blank"),
]
GOOD_LABELS = ["bob", "Zoë Ünal", "李雷", "👨‍👩‍👧 family", "x" * 64, "مرحبا"]


@pytest.mark.parametrize("label", BAD_LABELS)
def test_check_display_name_refuses_unprintable_labels(label: str) -> None:
    """Control characters, C1, DEL, separators, bidi controls, over 64 chars, blank: -32602."""
    with pytest.raises(InvalidParams):
        check_display_name(label, "clientInfo.kind")


@pytest.mark.parametrize("label", GOOD_LABELS)
def test_check_display_name_accepts_every_script_and_emoji(label: str) -> None:
    """Accents, CJK, right-to-left letters, emoji with joiners are labels."""
    assert check_display_name(label) == label


def _info(**fields: Any) -> dict[str, Any]:
    return {"protocolVersion": 1, "clientInfo": {"name": "t", "kind": "t", "version": "0",
                                                 **fields}}


@pytest.mark.parametrize("field", ["kind", "name"])
@pytest.mark.parametrize("label", BAD_LABELS)
async def test_initialize_refuses_bad_client_labels(
    raw_factory: RawFactory, field: str, label: str,
) -> None:
    """A bad clientInfo.kind or .name gets -32602 naming it; the connection stays open."""
    raw = await raw_factory(initialize=False)
    err = assert_error(await raw.request("initialize", _info(**{field: label})), INVALID_PARAMS)
    assert err["data"] == {"param": f"clientInfo.{field}"}
    assert (await raw.initialize())["protocolVersion"] == 1


@pytest.mark.parametrize("field", ["kind", "name"])
@pytest.mark.parametrize("value", [5, True, ["bot"], {"a": 1}])
async def test_initialize_refuses_client_labels_that_are_not_strings(
    raw_factory: RawFactory, field: str, value: Any,
) -> None:
    """clientInfo.kind and .name must be strings (-32602)."""
    raw = await raw_factory(initialize=False)
    err = assert_error(await raw.request("initialize", _info(**{field: value})), INVALID_PARAMS)
    assert err["data"] == {"param": f"clientInfo.{field}"}


async def test_good_client_kind_is_the_event_source(raw_factory: RawFactory) -> None:
    """A printable kind with emoji becomes source.client; an empty one is "unknown"."""
    raw = await raw_factory(initialize=False)
    await raw.call("initialize", _info(kind="bot 🤖", name="Zoë"))
    await create(raw, "lab")
    await raw.call("session/publish", {"sessionId": "lab", "type": "note"})
    events = (await raw.call("session/history", {"sessionId": "lab"}))["events"]
    assert events[-1]["source"]["client"] == "bot 🤖"
    other = await raw_factory(initialize=False)
    await other.call("initialize", _info(kind=""))
    await other.call("session/publish", {"sessionId": "lab", "type": "note"})
    events = (await other.call("session/history", {"sessionId": "lab"}))["events"]
    assert events[-1]["source"]["client"] == "unknown"


@pytest.mark.parametrize("label", ["evil\u202egnp.exe", "a\u2066b\u2069", "bob\x85", "a\u2028b"])
async def test_on_behalf_of_refuses_bidi_controls_and_c1(raw: Raw, label: str) -> None:
    """onBehalfOf with a bidi control, a C1 control or a separator gets -32602; nothing stored."""
    await create(raw, "obo")
    before = await head(raw, "obo")
    err = assert_error(await raw.request("session/publish", {
        "sessionId": "obo", "type": "note", "onBehalfOf": label}), INVALID_PARAMS)
    assert err["data"] == {"param": "onBehalfOf"}
    assert await head(raw, "obo") == before


@pytest.mark.parametrize("text", ["1.0", "1e0", "1.000"])
async def test_protocol_version_as_a_float_is_refused(raw_factory: RawFactory, text: str) -> None:
    """protocolVersion 1.0 (a float equal to 1) gets -32602 with the supported list."""
    raw = await raw_factory(initialize=False)
    await raw.send('{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": '
                   f'{{"protocolVersion": {text}}}}}')
    err = assert_error(await raw.response(1), INVALID_PARAMS)
    assert err["data"] == {"supported": [1]}
    assert (await raw.initialize())["protocolVersion"] == 1


# --- log lines ---------------------------------------------------------------------------

def test_escape_controls_keeps_text_and_escapes_controls() -> None:
    """Control characters, C1, separators and bidi controls are written as escapes."""
    assert escape_controls("plain text, émoji 🎉, tab\there") == "plain text, émoji 🎉, tab\there"
    assert escape_controls("a\nb\rc\x1b[2J\x9b\u202e\u2028") == (
        "a\\nb\\rc\\x1b[2J\\x9b\\u202e\\u2028")


def test_client_text_cannot_forge_a_log_line(tmp_path: Path) -> None:
    """A record whose message or arguments hold line breaks and escapes is one line in the file."""
    path = tmp_path / "hub.log"
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(Redactor())
    logger = logging.getLogger("tests.labels.forge")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        logger.warning("client %s is slow", "bob\nERROR hub: forged\x1b]0;t\x07")
        logger.warning("raw message\u202e with\r controls")
        try:
            raise ValueError("bad\rthing")
        except ValueError:
            logger.exception("handler for %s failed", "x\ny")
    finally:
        logger.removeHandler(handler)
        handler.close()
    lines = path.read_text().splitlines()
    assert lines[0] == "WARNING client bob\\nERROR hub: forged\\x1b]0;t\\x07 is slow"
    assert lines[1] == "WARNING raw message\\u202e with\\r controls"
    assert lines[2] == "ERROR handler for x\\ny failed"
    assert lines[3] == "Traceback (most recent call last):"  # a traceback keeps its lines
    assert "\r" not in path.read_text() and "ValueError: bad\\rthing" in lines
