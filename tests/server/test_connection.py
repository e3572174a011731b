"""The hand-built websocket frames of :mod:`server.connection` against websockets' own."""

from __future__ import annotations

import pytest
from websockets.protocol import State
from websockets.server import ServerProtocol

from server.connection import text_frame


def websockets_frame(payload: bytes) -> bytes:
    """The bytes websockets' server protocol writes for ``send_text(payload)`` when open."""
    protocol = ServerProtocol()
    protocol.state = State.OPEN  # as after the handshake; no extensions were negotiated
    protocol.send_text(payload)
    return b"".join(protocol.data_to_send())


@pytest.mark.parametrize("length", [
    pytest.param(0, id="empty"),
    pytest.param(1, id="1"),
    pytest.param(125, id="125-last-7-bit-length"),
    pytest.param(126, id="126-first-16-bit-length"),
    pytest.param(65535, id="65535-last-16-bit-length"),
    pytest.param(65536, id="65536-first-64-bit-length"),
    pytest.param(1 << 20, id="1MiB"),
])
def test_text_frame_matches_websockets(length: int) -> None:
    """A payload of each header size is framed byte for byte as websockets frames it."""
    payload = bytes(b"x" * length)
    assert text_frame(payload) == websockets_frame(payload)


@pytest.mark.parametrize("text", [
    pytest.param("é", id="two-byte-char"),
    pytest.param("日本語", id="three-byte-chars"),
    pytest.param("🙂" * 31 + "a", id="125-bytes-of-emoji"),
    pytest.param("€" * 42, id="126-bytes-of-euro"),
    pytest.param('{"text": "naïve café ☕"}' * 3000, id="json-over-64KiB"),
])
def test_text_frame_of_utf8_matches_websockets(text: str) -> None:
    """Non-ASCII UTF-8 payloads are framed by their length in bytes, as websockets does."""
    payload = text.encode()
    assert text_frame(payload) == websockets_frame(payload)


def test_frame_header_lengths() -> None:
    """The header is 2, 4 or 10 bytes for lengths under 126, under 65536, and above."""
    assert len(text_frame(b"a" * 125)) - 125 == 2
    assert len(text_frame(b"a" * 126)) - 126 == 4
    assert len(text_frame(b"a" * 65536)) - 65536 == 10


def test_cached_frame_is_right_for_an_equal_but_distinct_payload() -> None:
    """An equal payload that is another object (a cache miss) is framed to equal bytes."""
    first = b"".join([b'{"events":', b"[1,2,3]}"])
    second = b"".join([b'{"events":', b"[1,2,3]}"])
    assert first == second and first is not second
    framed = text_frame(first)
    assert text_frame(second) == framed == websockets_frame(first)


def test_cache_returns_the_frame_of_the_same_payload_object() -> None:
    """The same payload object framed again (the next subscriber) gets the same frame."""
    payload = b"".join([b"x" * 300, b"y"])
    framed = text_frame(payload)
    assert text_frame(payload) is framed
    assert framed == websockets_frame(payload)


def test_cache_never_returns_a_stale_frame() -> None:
    """After one payload, a different one (of any length) gets its own frame."""
    one = b"".join([b"a" * 10])
    other = b"".join([b"b" * 200])
    assert text_frame(one) == websockets_frame(one)
    assert text_frame(other) == websockets_frame(other)
    assert text_frame(one) == websockets_frame(one)
