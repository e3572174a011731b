"""The errors of cluster mode (all -32029: try again; a client never sees OwnedElsewhere,
which makes the dispatcher forward the request)."""

from __future__ import annotations

from server.protocol import Overloaded, ProtocolError


class StoreUnavailable(Overloaded):
    """Redis cannot be reached: nothing was acknowledged (cluster.md §2.9)."""

    def __init__(self, detail: str = "") -> None:
        super().__init__("the cluster store is unreachable; try again"
                         + (f" ({detail})" if detail else ""))
        self.detail = detail


class Fenced(Overloaded):
    """This replica no longer owns the session: another took it over. Nothing of the
    batch was stored; the request may be retried (it then goes to the new owner)."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"session {session_id} moved to another replica; try again",
                         {"sessionId": session_id})


class OwnedElsewhere(ProtocolError):
    """The session is owned by replica ``node``: the request is forwarded there (clients
    never see this error: the dispatcher forwards instead)."""

    code = -32029

    def __init__(self, session_id: str, node: str) -> None:
        super().__init__(f"session {session_id} is served by replica {node}",
                         {"sessionId": session_id, "owner": node})
        self.session_id = session_id
        self.node = node


class PeerUnreachable(Overloaded):
    """The replica that owns a session cannot be reached (it may be gone: its lease runs
    out soon); the request may be retried."""
