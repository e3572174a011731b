"""Agents as subprocesses: woken by events, one turn at a time, suspended when idle.

For a session with an agent, a committed event whose type matches the agent's ``wake_on``
and that a client published (agent output never wakes an agent) queues a turn. The
session's :class:`AgentRun` starts the process if none runs (:mod:`server.agent_start`:
``agent.status`` starting, then ready with its ``resumeMode``), runs the turn
(:mod:`server.turn`), and after ``idle_timeout`` with nothing to do stops the process and
records ``agent.status suspended``; the next waking event brings it back with its
conversation. The agent's file requests are served by :mod:`server.agent_files`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import shlex
import signal
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from server.acp import AgentError, AgentUser, describe_exit
from server.agent_files import AgentFiles
from server.agent_start import (
    Credentials,
    StartedAgent,
    StartFailed,
    agent_cwd,
    agent_user,
    start_agent,
)
from server.config import AgentConfig
from server.events import (
    AgentState,
    AgentStatus,
    PermissionResponse,
    ProcessState,
    TurnFailed,
    TurnFailure,
    TurnStarted,
    loads_event,
)
from server.protocol import Conflict
from server.registry import SessionRegistry
from server.sessions import Session
from server.sources import HUB_SOURCE
from server.tasks import TaskSet
from server.turn import CANCELLED, Trigger, Turn
from server.typepattern import TypeFilter

WAKING_KINDS = ("client", "webhook")  # whose events may wake an agent (never its own)
log = logging.getLogger("axtui.supervisor")


class Supervisor:
    """Runs the agents of all sessions: committed events go to :meth:`events_committed`,
    deleted sessions to :meth:`session_deleted`."""

    def __init__(self, registry: SessionRegistry, data_dir: Path,
                 agents: Mapping[str, AgentConfig], credentials: Credentials) -> None:
        self.registry = registry
        self.data_dir = data_dir
        self.agents = agents
        self.credentials = credentials
        self.runs: dict[str, AgentRun] = {}
        self.tasks = TaskSet(log, "the agent supervisor")

    # --- the registry's callbacks -----------------------------------------------------------

    def events_committed(self, session: Session, events: list[tuple[int, bytes]]) -> None:
        """Queue turns for waking events; hand permission answers to the waiting agent."""
        agent = self.agents.get(session.info.agent or "")
        if agent is None:
            return
        for _, raw in events:
            event = loads_event(raw)
            run = self.runs.get(session.id)
            if isinstance(event.data, PermissionResponse):
                if run is not None:
                    run.answered(event.data)
            elif event.source.kind in WAKING_KINDS and wakes(agent, event.type):
                if run is None:
                    run = self.runs[session.id] = AgentRun(self, session, agent)
                run.enqueue(Trigger(event))

    def session_deleted(self, session_id: str) -> None:
        """Stop the agent of a deleted session."""
        run = self.runs.pop(session_id, None)
        if run is not None:
            self.tasks.spawn(run.shutdown(record=False), name=f"stop agent of {session_id}")

    # --- requests from clients -------------------------------------------------------------

    async def cancel(self, session: Session) -> None:
        """Cancel the running turn (and open permission requests), if any."""
        run = self.runs.get(session.id)
        if run is not None:
            await run.cancel()

    async def suspend(self, session: Session) -> None:
        """Stop the agent process now; refused while a turn runs."""
        run = self.runs.get(session.id)
        if run is None:
            return
        if run.busy:
            raise Conflict(f"a turn is running in session {session.id}; cancel it first",
                           {"sessionId": session.id})
        await run.shutdown(record=True)

    async def close(self) -> None:
        """Stop every agent (hub shutdown): running turns are recorded as interrupted."""
        await asyncio.gather(*(run.shutdown(record=True, hub_stopping=True)
                               for run in list(self.runs.values())))
        self.runs.clear()
        await self.tasks.wait()  # suspends and exits under way: their events go in first

    async def recover(self) -> None:
        """After the hub starts: close what the last run left open, re-run what it may.

        A turn without an end is recorded as ``turn.failed`` reason interrupted, its open
        permission requests as cancelled; with the agent's ``retry_interrupted`` the turn's
        trigger runs once more (the new ``turn.started`` carries ``retryOf``).
        """
        self._say_who_agents_run_as()
        active = tuple(state for state in AgentState if state.active)
        for sid in await self.registry.catalog.sessions_in_states(active):
            try:
                session = await self.registry.get(sid)
                await self._recover(session)
            except Exception:
                log.exception("could not recover the agent of session %s", sid)

    def taken_over(self, session: Session) -> None:
        """A session this replica just became the owner of (cluster mode): close what its
        last owner left open, as :meth:`recover` does at a start."""
        self.tasks.spawn(self._recover_logged(session), name=f"recover {session.id}")

    async def _recover_logged(self, session: Session) -> None:
        try:
            await self._recover(session)
        except Exception:
            log.exception("could not recover the agent of session %s", session.id)

    def _say_who_agents_run_as(self) -> None:
        """Once, at start, for a hub running as root: the user agents run as."""
        if os.geteuid() != 0 or not self.agents:
            return
        try:
            user = agent_user(self.registry.config.agent_user)
        except LookupError as exc:
            log.error("agents cannot start: %s", exc)
            return
        if user is None:
            log.info("the hub runs as root and so do its agents (hub.agent_user is root)")
        else:
            log.info("the hub runs as root; agents run as user %s (hub.agent_user)", user.name)

    async def _recover(self, session: Session) -> None:
        agent = self.agents.get(session.info.agent or "")
        head = session.info.head_seq
        turns = [loads_event(raw) for raw in await session.db.history(None, head + 1, 2,
                                                                      ["turn.*"])]
        last = turns[-1].data if turns else None
        interrupted: TurnStarted | None = None
        if isinstance(last, TurnStarted):
            interrupted = last
            failed = TurnFailed(last.turn_id, TurnFailure.INTERRUPTED,
                                "the hub stopped during the turn")
            await session.append("turn.failed", failed.to_json(), HUB_SOURCE,
                                 turn_id=last.turn_id)
        elif (len(turns) == 2 and isinstance(last, TurnFailed)
              and last.reason == TurnFailure.INTERRUPTED
              and isinstance(turns[0].data, TurnStarted)
              and turns[0].turn_id == turns[-1].turn_id):
            interrupted = turns[0].data  # the hub stopped cleanly during this turn
        for request_id, perm in list(session.db.permissions.items()):
            if perm.answered_by is None:
                await session.append("permission.response",
                                     PermissionResponse(request_id).to_json(), HUB_SOURCE)
        session.set_agent_state(AgentState.SUSPENDED)
        if (agent is None or not agent.retry_interrupted or interrupted is None
                or interrupted.retry_of):
            return
        [raw] = await session.db.history(interrupted.trigger_seq - 1, None, 1, None)
        run = self.runs[session.id] = AgentRun(self, session, agent)
        run.enqueue(Trigger(loads_event(raw), retry_of=interrupted.turn_id))


def wakes(agent: AgentConfig, event_type: str) -> bool:
    """Whether ``event_type`` matches one of the agent's ``wake_on`` patterns (``*`` is the
    only wildcard: ``?`` and ``[`` are themselves)."""
    patterns = _type_filter(agent.wake_on)
    return bool(patterns) and patterns.matches(event_type)


@functools.cache
def _type_filter(patterns: tuple[str, ...]) -> TypeFilter:
    return TypeFilter.of(patterns)


class AgentRun:
    """One session's agent process: its queue of waking events, the worker that runs them
    as turns, the idle and freeze timers, and what happens when the process ends."""

    def __init__(self, supervisor: Supervisor, session: Session, agent: AgentConfig) -> None:
        self.supervisor = supervisor
        self.session = session
        self.agent = agent
        self.user: AgentUser | None = None
        self.user_problem: str | None = None  # why the agent cannot run as hub.agent_user
        try:
            self.user = agent_user(supervisor.registry.config.agent_user)
        except LookupError as exc:
            self.user_problem = str(exc)
        owner = None if self.user is None else (self.user.uid, self.user.gid)
        self.files = AgentFiles(agent_cwd(agent, supervisor.data_dir, session.id, self.user),
                                owner)
        self.queue: deque[Trigger] = deque()
        self.started: StartedAgent | None = None  # the process, once its conversation is ready
        self.turn: Turn | None = None
        self.stopping = False
        self.frozen = False  # paused with SIGSTOP while idle
        self._worker: asyncio.Task[None] | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._freeze: asyncio.TimerHandle | None = None
        session.agent_active = True

    @property
    def busy(self) -> bool:
        """Whether a turn runs or is queued."""
        return self.turn is not None or bool(self.queue)

    async def _status(self, state: ProcessState, agent_state: AgentState, *,
                      resume_mode: str | None = None, pid: int | None = None,
                      reason: str | None = None) -> None:
        """Set the session's ``agentState`` and record what the process did as
        ``agent.status``: the two always change together."""
        self.session.set_agent_state(agent_state)
        status = AgentStatus(state, resume_mode, pid, reason)
        await self.session.append("agent.status", status.to_json(), HUB_SOURCE)

    # --- the queue of turns ----------------------------------------------------------------

    def enqueue(self, trigger: Trigger) -> None:
        """Queue a turn for a waking event; turns run one at a time, in order."""
        self.queue.append(trigger)
        self._cancel_timers()
        if self.frozen:
            self.frozen = False
            if self.started is not None:
                self.started.process.signal(signal.SIGCONT)
        if self._worker is None or self._worker.done():
            self._worker = self.supervisor.tasks.spawn(self._work(),
                                                       name=f"agent of {self.session.id}")

    async def _work(self) -> None:
        while self.queue and not self.stopping:
            trigger = self.queue.popleft()
            try:
                started = await self._ensure_started()
                if started is not None:
                    await self._run_turn(started, trigger)
            except Exception:
                log.exception("turn for seq %s in session %s failed", trigger.event.seq,
                              self.session.id)
        if self.stopping:
            return
        loop = asyncio.get_running_loop()
        self._idle = loop.call_later(self.agent.idle_timeout, self._suspend_when_idle)
        freeze = self.agent.freeze_after
        if freeze is not None and freeze < self.agent.idle_timeout and self._alive():
            self._freeze = loop.call_later(freeze, self._freeze_now)

    async def _run_turn(self, started: StartedAgent, trigger: Trigger) -> None:
        # The turn exists before clients can see it, so a cancel can never miss it.
        self.turn = Turn(self.session, self.agent, started, trigger,
                         max_event_bytes=self.supervisor.registry.config.max_event_bytes)
        try:
            await self.turn.run()
        finally:
            self.turn = None
        if started.alive:
            self.session.set_agent_state(AgentState.IDLE)
        else:
            await self._exited(started)

    def _suspend_when_idle(self) -> None:
        self.supervisor.tasks.spawn(self.shutdown(record=True),
                                    name=f"suspend agent of {self.session.id}")

    def _freeze_now(self) -> None:
        """Pause an idle process (SIGSTOP): it costs no CPU, and wakes at once (SIGCONT)."""
        if self.started is not None and self._alive() and not self.busy:
            self.started.process.signal(signal.SIGSTOP)
            self.frozen = True

    def _cancel_timers(self) -> None:
        for timer in (self._idle, self._freeze):
            if timer is not None:
                timer.cancel()
        self._idle = self._freeze = None

    # --- the process -------------------------------------------------------------------------

    def _alive(self) -> bool:
        return self.started is not None and self.started.alive

    async def _ensure_started(self) -> StartedAgent | None:
        """The running process, started now if need be; ``None`` if it cannot start."""
        if self.started is not None:
            if self.started.alive:
                return self.started
            await self._exited(self.started)  # ended between turns: recorded first
        await self._status(ProcessState.STARTING, AgentState.STARTING)
        began = time.perf_counter()
        try:
            if self.user_problem is not None:
                raise StartFailed(self.user_problem)
            started = await start_agent(
                self.agent, self.session.id, cwd=self.files.root,
                data_dir=self.supervisor.data_dir, catalog=self.supervisor.registry.catalog,
                credentials=self.supervisor.credentials,
                on_notification=self._on_notification, on_request=self._on_request,
                user=self.user, room=self.session.agent_room,
            )
        except StartFailed as exc:
            log.warning("agent %s failed to start for session %s: %s", self.agent.id,
                        self.session.id, exc)
            await self._status(ProcessState.FAILED, AgentState.FAILED, reason=str(exc))
            return None
        log.info("agent %s started for session %s: pid %d, resume mode %s, ready in %.0f ms"
                 "%s: %s", self.agent.id, self.session.id, started.process.pid, started.mode,
                 (time.perf_counter() - began) * 1000,
                 f", as user {self.user.name}" if self.user else "",
                 shlex.join(self.agent.command))
        self.started = started
        await self._status(ProcessState.READY, AgentState.IDLE, resume_mode=str(started.mode),
                           pid=started.process.pid)
        started.process.exited.add_done_callback(lambda _: self._on_exit(started))
        return started

    def _on_notification(self, method: str, params: dict[str, Any]) -> None:
        """Updates go to the running turn; outside one (a ``session/load`` replaying the
        conversation, or a stray update) they are dropped."""
        update = params.get("update")
        if method == "session/update" and self.turn is not None and isinstance(update, dict):
            self.turn.on_update(update)

    async def _on_request(self, method: str, params: dict[str, Any]) -> Any:
        if method == "session/request_permission":
            turn = self.turn
            return CANCELLED if turn is None else await turn.ask_permission(params)
        # Off the event loop: a slow disk (or a file that is not one) never stalls the hub.
        if method == "fs/read_text_file":
            return await asyncio.to_thread(self.files.read_text_file, params)
        if method == "fs/write_text_file":
            await asyncio.to_thread(self.files.write_text_file, params)
            return None
        raise AgentError(f"the hub does not offer {method}", -32601)

    def answered(self, answer: PermissionResponse) -> None:
        """A ``permission.response`` was committed: hand it to the running turn."""
        if self.turn is not None:
            self.turn.answered(answer)

    async def cancel(self) -> None:
        """Cancel the running turn, if any (see :meth:`Turn.cancel`)."""
        if self.turn is not None:
            await self.turn.cancel()

    def _on_exit(self, started: StartedAgent) -> None:
        if self.stopping or self.turn is not None:
            return  # a turn in progress records the crash itself
        self.supervisor.tasks.spawn(self._exited(started),
                                    name=f"agent of {self.session.id} exited")

    async def _exited(self, started: StartedAgent) -> None:
        """The process ended outside a shutdown: record it; the next event starts a new one."""
        if self.started is not started or self.stopping:
            return
        self.started = None
        started.revoke()
        code = started.process.exited.result()
        how = describe_exit(code)
        (log.info if code == 0 else log.warning)(
            "agent %s of session %s (pid %d) %s", self.agent.id, self.session.id,
            started.process.pid, how)
        await self._status(ProcessState.EXITED if code == 0 else ProcessState.CRASHED,
                           AgentState.SUSPENDED, pid=started.process.pid,
                           reason=None if code == 0 else how)

    async def shutdown(self, *, record: bool, hub_stopping: bool = False) -> None:
        """Stop the process (suspend). With ``record``, write what happened into the log.

        When the hub stops during a turn, the session keeps ``agentState`` running, so that
        the next start finds the interrupted turn (see :meth:`Supervisor.recover`).
        """
        if self.stopping:
            return
        self.stopping = True
        self._cancel_timers()
        turn, worker = self.turn, self._worker
        starting = self.session.info.agent_state == AgentState.STARTING
        if worker is not None and not worker.done():
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        started, self.started = self.started, None
        if started is not None:
            await started.process.stop()
            started.revoke()
            log.info("agent %s of session %s (pid %d) %s", self.agent.id, self.session.id,
                     started.process.pid, "stopped: the hub stops" if hub_stopping
                     else "suspended" if record else "stopped: the session was deleted")
        self.supervisor.runs.pop(self.session.id, None)
        self.session.agent_active = False
        if not record or self.session.closed:
            return
        if turn is not None:
            await turn.record_interrupted()
        final = AgentState.RUNNING if hub_stopping and turn else AgentState.SUSPENDED
        if started is not None or starting:
            await self._status(ProcessState.SUSPENDED, final)
        else:
            self.session.set_agent_state(final)
