"""Requests in the I/O-free core: parsing one frame, and who may run which method."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from server import protocol
from server.auth import Principal
from server.methods import METHODS
from server.protocol import Forbidden, InvalidRequest, MethodNotFound, ParseError, Role
from server.requests import RejectedFrame, Request, check_role, parse_request


def frame(**fields: Any) -> str:
    """A text frame holding ``fields`` as a JSON object."""
    return orjson.dumps(fields).decode()


def rejected(message: str | bytes) -> RejectedFrame:
    """What :func:`parse_request` raises for ``message``."""
    with pytest.raises(RejectedFrame) as info:
        parse_request(message)
    return info.value


def test_a_request_is_parsed() -> None:
    """A well-formed request gives its id, method and raw params."""
    request = parse_request(frame(jsonrpc="2.0", id=7, method="session/get",
                                  params={"sessionId": "s"}))
    assert request == Request(7, "session/get", {"sessionId": "s"})


def test_a_string_id_and_no_params() -> None:
    """A string id is kept as it is; absent params are None (the handler's Params reads {})."""
    assert parse_request(frame(jsonrpc="2.0", id="a", method="ping")) == Request("a", "ping",
                                                                                  None)


def test_a_notification_is_ignored() -> None:
    """A frame with a method and no id is a notification: nothing to answer."""
    assert parse_request(frame(jsonrpc="2.0", method="ping")) is None


def test_a_binary_frame_is_refused() -> None:
    """Binary frames are an invalid request with no id."""
    err = rejected(b'{"jsonrpc": "2.0", "id": 1, "method": "ping"}')
    assert isinstance(err.error, InvalidRequest) and err.request_id is None
    assert "binary" in err.error.message


def test_not_json_is_a_parse_error() -> None:
    """A frame that is not JSON is a parse error with no id."""
    err = rejected("{nope")
    assert isinstance(err.error, ParseError) and err.request_id is None


@pytest.mark.parametrize("message", ["[]", "1", '"ping"', "null"])
def test_not_an_object_is_refused(message: str) -> None:
    """A JSON value that is not an object is an invalid request with no id."""
    err = rejected(message)
    assert isinstance(err.error, InvalidRequest) and err.request_id is None


@pytest.mark.parametrize("request_id", [None, True, 1.5, [1], {"a": 1}])
def test_a_bad_id_is_refused(request_id: Any) -> None:
    """An id that is not an integer or a string is refused, answered with id null."""
    err = rejected(frame(jsonrpc="2.0", id=request_id, method="ping"))
    assert isinstance(err.error, InvalidRequest) and err.request_id is None
    assert "id must be" in err.error.message


def test_no_id_and_no_method_is_refused() -> None:
    """Without an id and without a string method it is not even a notification."""
    err = rejected(frame(jsonrpc="2.0", method=3))
    assert isinstance(err.error, InvalidRequest) and err.request_id is None


@pytest.mark.parametrize("fields", [
    {"id": 4, "method": "ping"},
    {"jsonrpc": "1.0", "id": 4, "method": "ping"},
    {"jsonrpc": "2.0", "id": 4},
    {"jsonrpc": "2.0", "id": 4, "method": 9},
])
def test_a_bad_envelope_keeps_its_id(fields: dict[str, Any]) -> None:
    """A request with a usable id but no "jsonrpc": "2.0" or string method is answered
    under that id."""
    err = rejected(frame(**fields))
    assert isinstance(err.error, InvalidRequest) and err.request_id == 4


def test_a_known_method_within_the_role_passes() -> None:
    """A method at or below the principal's role passes the check."""
    check_role(Principal("vera", Role.VIEWER), "session/get")
    check_role(Principal("ada", Role.ADMIN), "session/delete")


def test_an_unknown_method_is_not_found() -> None:
    """An unknown method is refused with its name in the data."""
    with pytest.raises(MethodNotFound) as info:
        check_role(Principal("ada", Role.ADMIN), "session/nope")
    assert info.value.data == {"method": "session/nope"}


def test_a_role_too_low_is_forbidden() -> None:
    """A method above the principal's role is forbidden, saying which role is needed."""
    with pytest.raises(Forbidden) as info:
        check_role(Principal("vera", Role.VIEWER), "session/publish")
    assert info.value.data == {"role": "viewer", "needed": "participant"}
    assert "session/publish needs the participant role; vera is viewer" in info.value.message


def test_every_method_has_a_role_and_a_handler() -> None:
    """The methods with a role are exactly the methods with a handler."""
    assert set(protocol.METHOD_ROLES) == set(METHODS)
