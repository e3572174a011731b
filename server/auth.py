"""Who a caller is: tokens from the config, local mode, and the tokens minted for agents.

No I/O: the hub asks :class:`Authenticator` for the principal of a ``Bearer`` header or of
``initialize``'s ``params.token``, and the supervisor asks it for each agent process's
credentials. An agent's principal reaches only its own session and the methods of
:data:`AGENT_METHODS` (:func:`check_agent_scope`).
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from server.config import TokenConfig
from server.protocol import Forbidden, Role


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: a token's name and role.

    An agent's principal (``kind="agent"``, minted by the hub for one agent process) is
    confined to its own ``session`` and to :data:`AGENT_METHODS`.
    """

    name: str
    role: Role
    kind: str = "client"
    session: str | None = None

    def to_json(self) -> dict[str, str]:
        """The wire form."""
        return {"name": self.name, "role": self.role.label}


LOCAL_PRINCIPAL = Principal("local", Role.ADMIN)
CLUSTER_PRINCIPAL = Principal("cluster", Role.ADMIN, "cluster")  # another replica

AGENT_METHODS = frozenset({
    "ping", "session/get", "session/history", "state/query", "state/exec",
})


def check_agent_scope(principal: Principal, method: str, params: Any) -> None:
    """An agent's token reaches only its own session, and only the state methods."""
    sid = params.get("sessionId") if isinstance(params, dict) else None
    if method not in AGENT_METHODS or (method != "ping" and sid != principal.session):
        raise Forbidden(
            f"an agent's token may only use {', '.join(sorted(AGENT_METHODS))}"
            f" on its own session ({principal.session})",
            {"session": principal.session},
        )


class Authenticator:
    """The principals of tokens: the configured ones, and those minted for agents.

    With no configured tokens (local mode) every client is :data:`LOCAL_PRINCIPAL`.
    """

    def __init__(self, tokens: Iterable[TokenConfig]) -> None:
        self.tokens = tuple(tokens)
        self._agent_tokens: dict[str, Principal] = {}
        # Told of each agent principal whose token is revoked (this very object: two agent
        # processes of one session have equal principals, never the same one).
        self.on_revoked: list[Callable[[Principal], None]] = []
        self._hub_url: str | None = None
        self._local_secret: str | None = None  # local mode's token, once the hub has one
        self.cluster_secret: str | None = None  # cluster.secret: other replicas show it

    @property
    def local_mode(self) -> bool:
        """No tokens are configured: every client is an admin."""
        return not self.tokens

    @property
    def default_principal(self) -> Principal | None:
        """Who a client is before it shows a token: :data:`LOCAL_PRINCIPAL` in local mode
        without a secret (:meth:`use_local_secret`), else nobody."""
        return LOCAL_PRINCIPAL if self.local_mode and self._local_secret is None else None

    def use_local_secret(self, secret: str) -> None:
        """In local mode, only a client that shows ``secret`` (kept in the data dir, so
        read only by who may read the data dir) is :data:`LOCAL_PRINCIPAL`."""
        if self.local_mode:
            self._local_secret = secret

    def serving_at(self, url: str) -> None:
        """Learn the hub's websocket URL (known once it listens), for agents' credentials."""
        self._hub_url = url

    def principal_for_token(self, token: str) -> Principal | None:
        """The principal a token stands for (compared in constant time), or ``None``."""
        agent = self._agent_tokens.get(token)
        if agent is not None:
            return agent
        if self.cluster_secret is not None and hmac.compare_digest(
                self.cluster_secret.encode(), token.encode()):
            return CLUSTER_PRINCIPAL
        if self._local_secret is not None:
            return (LOCAL_PRINCIPAL if hmac.compare_digest(self._local_secret.encode(),
                                                           token.encode()) else None)
        found = None
        for entry in self.tokens:  # every entry is compared: the time says nothing of which
            if hmac.compare_digest(entry.token.encode(), token.encode()):
                found = Principal(entry.name, entry.role)
        return found

    def principal_for_header(self, header: str) -> Principal | None:
        """The principal of an ``Authorization`` header, or ``None`` if it is refused.

        In local mode without a secret any header that is not a valid token is ignored.
        """
        scheme, _, token = header.partition(" ")
        principal = (self.principal_for_token(token.strip())
                     if scheme.lower() == "bearer" else None)
        return principal or self.default_principal

    def agent_credentials(
        self, session_id: str, agent_id: str
    ) -> tuple[str, str, Callable[[], None]]:
        """A token for one agent process, confined to its session: (url, token, revoke)."""
        if self._hub_url is None:
            raise RuntimeError("the hub is not listening yet: no URL to give an agent")
        token = secrets.token_urlsafe(32)
        principal = Principal(agent_id, Role.PARTICIPANT, "agent", session_id)
        self._agent_tokens[token] = principal

        def revoke() -> None:
            # Those who logged in with it are told too: a revoked token ends their access.
            if self._agent_tokens.pop(token, None) is not None:
                for callback in self.on_revoked:
                    callback(principal)

        return self._hub_url, token, revoke
