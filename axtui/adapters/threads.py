"""Chat threads and the sessions they map to.

The map lives in the hub, not in the adapter: a thread's session id is derived from the
thread's key (platform, workspace, channel, thread id), and the session is created with
the thread in its ``metadata`` (``{"slack": {...}}`` for Slack). An adapter that restarts,
or runs on another machine, finds the session again from the thread alone.
"""

from __future__ import annotations

import hashlib
from typing import Any

from axtui.client import HubClient
from server.protocol import SESSION_ID_RE, Conflict


def thread_session_id(platform: str, *parts: str) -> str:
    """The session id of a thread: ``<platform>-<part>-<part>...`` when that is a valid id,
    else ``<platform>-`` and a hash of it (ids allow ``[A-Za-z0-9._-]``, 128 characters)."""
    raw = "-".join((platform, *parts))
    if SESSION_ID_RE.fullmatch(raw):
        return raw
    return f"{platform}-{hashlib.sha256(raw.encode()).hexdigest()[:40]}"


async def open_session(hub: HubClient, session_id: str, *, agent: str | None, title: str,
                       metadata: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The thread's session, created if it does not exist yet: ``(session, created)``.

    Raises ``NotFound`` when the hub has no such agent.
    """
    try:
        session = await hub.create_session(sessionId=session_id, agent=agent, title=title,
                                           metadata=metadata)
        return session, True
    except Conflict:
        return await hub.get_session(session_id), False
