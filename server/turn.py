"""One turn of a session's agent: from the waking event to ``turn.completed`` or ``turn.failed``.

A turn records ``turn.started``, sends ``session/prompt`` with one text block (the
``context.sql`` rows, the log's transcript for a new conversation, then the event),
records the agent's updates in the order it sent them, turns its permission requests
into ``permission.request`` events whose first answer goes back to it, and ends with the
outcome. A cancel tells the agent, closes the open requests, and kills an agent that has
not answered ``CANCEL_GRACE`` seconds later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import orjson

from server import protocol
from server.acp import AgentError, AgentExited, describe_exit
from server.agent_start import StartedAgent
from server.config import AgentConfig
from server.events import (
    AgentState,
    AgentText,
    Event,
    PermissionOption,
    PermissionRequest,
    PermissionResponse,
    TurnCompleted,
    TurnFailed,
    TurnFailure,
    TurnStarted,
    UserMessage,
    loads_event,
)
from server.protocol import ProtocolError
from server.sessions import Session
from server.sources import HUB_SOURCE, Source
from server.updates import UpdateMapper
from server.writes import CommitResult

log = logging.getLogger("axtui.supervisor")

CANCEL_GRACE = 5.0  # seconds an agent gets to answer a cancelled prompt
CONTEXT_ROWS = 100  # rows of context.sql put into a prompt
TRANSCRIPT_EVENTS = 200  # messages of the log put ahead of a new conversation's prompt
CANCELLED = {"outcome": {"outcome": "cancelled"}}  # the ACP answer to a closed request


@dataclass(frozen=True, slots=True)
class Trigger:
    """An event that wakes the agent; ``retry_of`` is the interrupted turn it runs again."""

    event: Event
    retry_of: str | None = None


class Turn:
    """One turn, run by :meth:`run`; the turn's id exists (and it can be cancelled) at once."""

    def __init__(self, session: Session, agent: AgentConfig, started: StartedAgent,
                 trigger: Trigger, *, max_event_bytes: int = 1024 * 1024) -> None:
        self.session = session
        self.agent = agent
        self.started = started
        self.trigger = trigger
        self.id = protocol.new_event_id()
        self.source = Source("agent", agent.id)
        self.cancelled = False
        self.outcome: TurnCompleted | TurnFailed | None = None  # set as the turn ends
        self._mapper = UpdateMapper(max_event_bytes)
        self._permissions: dict[str, asyncio.Future[PermissionResponse]] = {}
        self._kill_timer: asyncio.TimerHandle | None = None

    async def run(self) -> None:
        """Run the turn to its outcome (``turn.completed`` or ``turn.failed``)."""
        session = self.session
        started = TurnStarted(self.id, self.trigger.event.seq, self.trigger.retry_of)
        await self._append(started)
        session.set_agent_state(AgentState.RUNNING)
        prompt = [{"type": "text", "text": await self._prompt_text()}]
        try:
            outcome = await self._prompt(prompt)
        finally:
            if self._kill_timer is not None:
                self._kill_timer.cancel()
        self.outcome = outcome
        self._record_all(self._mapper.finish())
        self._close_permissions()
        await self._append(outcome)

    async def _prompt(self, prompt: list[dict[str, Any]]) -> TurnCompleted | TurnFailed:
        """Send ``session/prompt`` (unless cancelled already); what came of it."""
        process = self.started.process
        try:
            result: dict[str, Any] = {}
            if not self.cancelled:  # cancelled before the prompt went out: do not send it
                async with asyncio.timeout(self.agent.turn_timeout):
                    result = await process.request("session/prompt", {
                        "sessionId": self.started.acp_session, "prompt": prompt,
                    }) or {}
            stop = "cancelled" if self.cancelled else str(result.get("stopReason", "end_turn"))
            return TurnCompleted(self.id, stop)
        except TimeoutError:
            # The agent may still be working on the prompt: a fresh process serves the next
            # turn, so nothing from this one can leak into it.
            process.kill()
            await process.exited
            return TurnFailed(self.id, TurnFailure.TIMEOUT,
                              f"the turn took longer than {self.agent.turn_timeout:g} s")
        except AgentExited:
            code = await process.exited
            tail = process.stderr_tail()  # its secrets masked: the log is for every viewer
            return TurnFailed(self.id, TurnFailure.CRASHED,
                              f"the agent {describe_exit(code)}"
                              + (f"; its last output:\n{tail}" if tail else ""))
        except AgentError as exc:
            return TurnFailed(self.id, TurnFailure.ERROR, str(exc))

    async def record_interrupted(self) -> None:
        """The hub stopped the agent during the turn: end it as ``turn.failed`` interrupted."""
        self._record_all(self._mapper.finish())
        await self._append(TurnFailed(self.id, TurnFailure.INTERRUPTED,
                                      "the hub stopped the agent during the turn"))

    async def _append(self, data: TurnStarted | TurnCompleted | TurnFailed) -> None:
        await self.session.append(data.TYPES[0], data.to_json(), HUB_SOURCE, turn_id=self.id)

    # --- the prompt ----------------------------------------------------------------------

    async def _prompt_text(self) -> str:
        event = self.trigger.event
        if isinstance(event.data, UserMessage):
            text = event.data.text
        else:
            text = f"Event {event.type}: {orjson.dumps(event.fields).decode()}"
        if self.agent.context_sql:
            text = f"{await self._context()}\n\n{text}"
        if self.started.take_transcript():
            transcript = await self._transcript(event.seq)
            if transcript:  # empty for a conversation that starts now: nothing is added
                text = ("The conversation so far (from the session's log):\n"
                        f"{transcript}\n\nNow: {text}")
        return text

    async def _context(self) -> str:
        """The rows of the agent's ``context.sql``, as text for the prompt."""
        sql = self.agent.context_sql or ""
        try:
            columns, rows, truncated = await self.session.db.query(sql, [], CONTEXT_ROWS)
        except ProtocolError as exc:
            log.warning("context.sql of agent %s failed: %s", self.agent.id, exc.message)
            return f"(The session's context query failed: {exc.message})"
        lines = [" | ".join(columns)] + [" | ".join(str(v) for v in row) for row in rows]
        more = "\n(more rows not shown)" if truncated else ""
        return "Context from the session's state:\n" + "\n".join(lines) + more

    async def _transcript(self, before_seq: int) -> str:
        raws = await self.session.db.history(
            None, before_seq, TRANSCRIPT_EVENTS, ["user.message", "agent.message"]
        )
        lines = []
        for raw in raws:
            data = loads_event(raw).data
            who = "user" if isinstance(data, UserMessage) else "assistant"
            text = data.text if isinstance(data, UserMessage | AgentText) else ""
            lines.append(f"{who}: {text}")
        return "\n".join(lines)

    # --- what the agent sends --------------------------------------------------------------

    def on_update(self, update: dict[str, Any]) -> None:
        """Record one ``session/update`` (synchronously: the log keeps the agent's order)."""
        self._record_all(self._mapper.map(update))

    def _record_all(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        for event_type, data in events:
            try:
                # Never refused for a full queue: the agent's output is paused instead.
                fut = self.session.enqueue(event_type, data, self.source, turn_id=self.id,
                                           bounded=False)
            except ProtocolError as exc:
                log.warning("dropped %s from agent in %s: %s", event_type, self.session.id, exc)
                continue
            fut.add_done_callback(_log_failure)

    async def ask_permission(self, params: dict[str, Any]) -> dict[str, Any]:
        """A permission request becomes an event any participant can answer; the first
        answer (see :meth:`answered`) is what the agent gets."""
        request_id = protocol.new_event_id()
        fut: asyncio.Future[PermissionResponse] = asyncio.get_running_loop().create_future()
        self._permissions[request_id] = fut
        self._record_all(self._mapper.finish())
        options = tuple(_option(o) for o in params.get("options") or [] if isinstance(o, dict))
        request = PermissionRequest(request_id, params.get("toolCall") or {}, options)
        await self.session.append("permission.request", request.to_json(), self.source,
                                  turn_id=self.id)
        self.session.set_agent_state(AgentState.WAITING)
        try:
            answer = await fut
        finally:
            self._permissions.pop(request_id, None)
            if not self._permissions and self.outcome is None:
                self.session.set_agent_state(AgentState.RUNNING)
        if answer.cancelled:
            return CANCELLED
        return {"outcome": {"outcome": "selected", "optionId": answer.option_id}}

    def answered(self, answer: PermissionResponse) -> None:
        """A ``permission.response`` was committed: the first answer goes to the agent."""
        fut = self._permissions.get(answer.request_id)
        if fut is not None and not fut.done():
            fut.set_result(answer)

    def _close_permissions(self) -> None:
        """Answer the open requests ``cancelled``, in the log and to the agent."""
        for request_id in list(self._permissions):
            answer = PermissionResponse(request_id)
            try:
                fut = self.session.enqueue("permission.response", answer.to_json(), HUB_SOURCE,
                                           turn_id=self.id)
            except ProtocolError as exc:
                log.warning("could not record closing %s in %s: %s", request_id,
                            self.session.id, exc)
            else:
                # Someone may have answered first (a Conflict): that answer stands.
                fut.add_done_callback(lambda f: None if f.cancelled() else f.exception())
            self.answered(answer)

    # --- cancel ----------------------------------------------------------------------------

    async def cancel(self) -> None:
        """Cancel the turn: the agent is told, open permission requests are closed, and an
        agent that has not ended the turn ``CANCEL_GRACE`` seconds later is killed."""
        if self.cancelled or self.outcome is not None:
            return
        self.cancelled = True
        self._close_permissions()
        process = self.started.process
        with contextlib.suppress(AgentError):
            await process.notify("session/cancel", {"sessionId": self.started.acp_session})
        if self.outcome is None:
            self._kill_timer = asyncio.get_running_loop().call_later(CANCEL_GRACE, process.kill)


def _option(option: dict[str, Any]) -> PermissionOption:
    """One of the options of an ACP permission request, its fields as the agent sent them."""
    option_id: Any = option.get("optionId")
    return PermissionOption(option_id, option.get("name", ""), option.get("kind", ""))


def _log_failure(fut: asyncio.Future[CommitResult]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.warning("an agent event was not stored: %s", fut.exception())

