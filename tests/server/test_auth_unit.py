"""The authenticator with no hub: configured tokens, local mode, agents' tokens and scope."""

from __future__ import annotations

import pytest

from server.auth import LOCAL_PRINCIPAL, Authenticator, Principal, check_agent_scope
from server.config import TokenConfig
from server.protocol import Forbidden, Role

TOKENS = (TokenConfig("vera", "viewer-token", Role.VIEWER),
          TokenConfig("ada", "admin-token", Role.ADMIN))
URL = "ws://127.0.0.1:1/ws"


def serving(auth: Authenticator) -> Authenticator:
    """``auth`` once the hub listens at :data:`URL`."""
    auth.serving_at(URL)
    return auth


def test_a_configured_token_is_its_principal() -> None:
    """Each configured token stands for its name and role; any other token for no one."""
    auth = Authenticator(TOKENS)
    assert auth.principal_for_token("viewer-token") == Principal("vera", Role.VIEWER)
    assert auth.principal_for_token("admin-token") == Principal("ada", Role.ADMIN)
    assert auth.principal_for_token("admin-token ") is None
    assert auth.principal_for_token("") is None
    assert not auth.local_mode and auth.default_principal is None


def test_a_bearer_header_is_read() -> None:
    """A Bearer header gives its token's principal; a bad token or scheme is refused."""
    auth = Authenticator(TOKENS)
    assert auth.principal_for_header("Bearer admin-token") == Principal("ada", Role.ADMIN)
    assert auth.principal_for_header("bearer  viewer-token ") == Principal("vera", Role.VIEWER)
    assert auth.principal_for_header("Bearer wrong") is None
    assert auth.principal_for_header("Basic admin-token") is None


def test_local_mode_makes_everyone_admin() -> None:
    """With no tokens every client is the local admin, whatever header it sends."""
    auth = Authenticator(())
    assert auth.local_mode and auth.default_principal is LOCAL_PRINCIPAL
    assert auth.principal_for_header("Bearer anything") is LOCAL_PRINCIPAL
    assert auth.principal_for_header("Basic xyz") is LOCAL_PRINCIPAL
    assert auth.principal_for_token("anything") is None


def test_agent_credentials_need_the_url() -> None:
    """Agents' credentials are refused until the hub knows its URL."""
    with pytest.raises(RuntimeError):
        Authenticator(TOKENS).agent_credentials("s1", "demo")


def test_an_agent_token_is_confined_and_revocable() -> None:
    """A minted token is a participant agent of its session until it is revoked."""
    auth = serving(Authenticator(TOKENS))
    url, token, revoke = auth.agent_credentials("s1", "demo")
    assert url == URL
    assert auth.principal_for_token(token) == Principal("demo", Role.PARTICIPANT, "agent", "s1")
    assert auth.principal_for_header(f"Bearer {token}") == auth.principal_for_token(token)
    _, other, _ = auth.agent_credentials("s1", "demo")
    assert other != token
    revoke()
    assert auth.principal_for_token(token) is None
    assert auth.principal_for_token(other) is not None


def test_an_agent_reaches_only_its_session_and_the_state_methods() -> None:
    """An agent may ping, and use the state methods on its own session only."""
    agent = Principal("demo", Role.PARTICIPANT, "agent", "s1")
    check_agent_scope(agent, "ping", None)
    check_agent_scope(agent, "state/exec", {"sessionId": "s1"})
    for method, params in [("state/query", {"sessionId": "s2"}), ("state/query", None),
                           ("session/publish", {"sessionId": "s1"}),
                           ("session/delete", {"sessionId": "s1"})]:
        with pytest.raises(Forbidden) as info:
            check_agent_scope(agent, method, params)
        assert info.value.data == {"session": "s1"}
