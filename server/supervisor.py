"""Agents as subprocesses: woken by events, one turn at a time, suspended when idle.

For a session with an agent, a committed event whose type matches the agent's ``wake_on``
and that a client published (agent output never wakes an agent) queues a turn. The
session's :class:`AgentRun` starts the process if none runs (``agent.status`` starting,
then ready with its ``resumeMode``), records ``turn.started``, sends ``session/prompt``,
records the agent's updates as events in the order it sent them, and ends the turn with
``turn.completed`` or ``turn.failed``. After ``idle_timeout`` with nothing to do the
process is stopped and ``agent.status suspended`` recorded; the next waking event brings
it back with its conversation (``session/resume``, else ``session/load`` with its replay
dropped, else ``session/new`` with the transcript from the log ahead of the prompt).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson

from server import __version__, protocol
from server.acp import AgentError, AgentExited, AgentProcess
from server.config import AgentConfig
from server.protocol import Conflict, ProtocolError, SessionInfo
from server.registry import SessionRegistry
from server.sessions import HUB_SOURCE, Session, Source
from server.sessiondb import CommitResult
from server.updates import UpdateMapper

log = logging.getLogger("axtui.supervisor")

START_TIMEOUT = 30.0  # seconds for initialize plus session/new, load or resume
CANCEL_GRACE = 5.0  # seconds an agent gets to answer a cancelled prompt
BASE_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TMPDIR", "TZ")
CLIENT_CAPABILITIES = {"fs": {"readTextFile": True, "writeTextFile": True}, "terminal": False}


# (session id, agent id) -> (hub url, token, revoke): a token for one agent process.
Credentials = Callable[[str, str], tuple[str, str, Callable[[], None]]]


class Supervisor:
    """Runs the agents of all sessions (a :class:`server.sessions.Observer`)."""

    def __init__(self, registry: SessionRegistry, data_dir: Path,
                 agents: Mapping[str, AgentConfig], credentials: Credentials) -> None:
        self.registry = registry
        self.data_dir = data_dir
        self.agents = agents
        self.credentials = credentials
        self.runs: dict[str, AgentRun] = {}
        registry.observers.append(self)

    # --- the observer ----------------------------------------------------------------------

    def events_committed(self, session: Session, events: list[tuple[int, bytes]]) -> None:
        """Queue turns for waking events; hand permission answers to the waiting agent."""
        agent = self.agents.get(session.info.agent or "")
        if agent is None:
            return
        for _, raw in events:
            event = orjson.loads(raw)
            run = self.runs.get(session.id)
            if event["type"] == "permission.response":
                if run is not None:
                    run.answered(event["data"])
            elif event["source"]["kind"] == "client" and wakes(agent, event["type"]):
                if run is None:
                    run = self.runs[session.id] = AgentRun(self, session, agent)
                run.enqueue(event)

    def session_changed(self, info: SessionInfo) -> None:
        """Nothing to do."""

    def session_deleted(self, session_id: str) -> None:
        """Stop the agent of a deleted session."""
        run = self.runs.pop(session_id, None)
        if run is not None:
            run.spawn_task(run.shutdown(record=False))

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
        if run.turn_id is not None or run.queue:
            raise Conflict(f"a turn is running in session {session.id}; cancel it first",
                           {"sessionId": session.id})
        await run.shutdown(record=True)

    async def close(self) -> None:
        """Stop every agent (hub shutdown): running turns are recorded as interrupted."""
        await asyncio.gather(*(run.shutdown(record=True, hub_stopping=True)
                               for run in list(self.runs.values())))
        self.runs.clear()

    async def recover(self) -> None:
        """After the hub starts: close what the last run left open, re-run what it may.

        A turn without an end is recorded as ``turn.failed`` reason interrupted, its open
        permission requests as cancelled; with the agent's ``retry_interrupted`` the turn's
        trigger runs once more (the new ``turn.started`` carries ``retryOf``).
        """
        catalog = self.registry.catalog
        for sid in await catalog.sessions_in_states(("starting", "idle", "running", "waiting")):
            try:
                session = await self.registry.get(sid)
                await self._recover(session)
            except Exception:
                log.exception("could not recover the agent of session %s", sid)

    async def _recover(self, session: Session) -> None:
        agent = self.agents.get(session.info.agent or "")
        head = session.info.head_seq
        last_two = await session.db.history(None, head + 1, 2, ["turn.*"])
        turns = [orjson.loads(r) for r in last_two]
        interrupted = None
        if turns and turns[-1]["type"] == "turn.started":
            interrupted = turns[-1]
            turn_id = interrupted["data"]["turnId"]
            await session.append("turn.failed", {
                "turnId": turn_id, "reason": "interrupted",
                "error": {"message": "the hub stopped during the turn"},
            }, HUB_SOURCE, turn_id=turn_id)
        elif (len(turns) == 2 and turns[-1]["type"] == "turn.failed"
              and turns[-1]["data"].get("reason") == "interrupted"
              and turns[0]["turnId"] == turns[-1]["turnId"]):
            interrupted = turns[0]  # the hub stopped cleanly during this turn
        for request_id, perm in list(session.db.permissions.items()):
            if perm.answered_by is None:
                await session.append("permission.response",
                                     {"requestId": request_id, "outcome": "cancelled"},
                                     HUB_SOURCE)
        session.set_agent_state("suspended")
        if (agent is None or not agent.retry_interrupted or interrupted is None
                or interrupted["data"].get("retryOf")):
            return
        trigger_seq = interrupted["data"]["triggerSeq"]
        [raw] = await session.db.history(trigger_seq - 1, None, 1, None)
        trigger = {**orjson.loads(raw), "retryOf": interrupted["data"]["turnId"]}
        run = self.runs[session.id] = AgentRun(self, session, agent)
        run.enqueue(trigger)


def wakes(agent: AgentConfig, event_type: str) -> bool:
    """Whether ``event_type`` matches one of the agent's ``wake_on`` patterns."""
    return any(fnmatch.fnmatchcase(event_type, p) for p in agent.wake_on)


class AgentRun:
    """One session's agent: its process, its queue of waking events, the current turn."""

    def __init__(self, supervisor: Supervisor, session: Session, agent: AgentConfig) -> None:
        self.supervisor = supervisor
        self.session = session
        self.agent = agent
        self.source = Source("agent", agent.id)
        self.queue: deque[dict[str, Any]] = deque()
        self.process: AgentProcess | None = None
        self.acp_session: str | None = None
        self.turn_id: str | None = None
        self.mapper = UpdateMapper()
        self.replaying = False  # session/load replays the conversation: dropped
        self.transcript_pending = False  # session/new: the log's transcript goes first
        self.cancelled = False
        self.permissions: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.stopping = False
        self._worker: asyncio.Task[None] | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._freeze: asyncio.TimerHandle | None = None
        self.frozen = False
        self._revoke: Callable[[], None] = lambda: None
        self._tasks: set[asyncio.Task[Any]] = set()
        session.agent_active = True

    def spawn_task(self, coro: Any) -> None:
        """Run ``coro`` in the background, keeping a reference until it ends."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- the queue of turns ----------------------------------------------------------------

    def enqueue(self, event: dict[str, Any]) -> None:
        """Queue a turn for a waking event; turns run one at a time, in order."""
        self.queue.append(event)
        self._cancel_timers()
        if self.frozen and self.process is not None:
            self.process.signal(signal.SIGCONT)
            self.frozen = False
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work(), name=f"agent {self.session.id}")

    async def _work(self) -> None:
        while self.queue and not self.stopping:
            event = self.queue.popleft()
            try:
                if await self._ensure_started():
                    await self._turn(event)
            except Exception:
                log.exception("turn for seq %s in session %s failed", event.get("seq"),
                              self.session.id)
        if self.stopping:
            return
        loop = asyncio.get_running_loop()
        self._idle = loop.call_later(
            self.agent.idle_timeout, lambda: self.spawn_task(self.shutdown(record=True))
        )
        freeze = self.agent.freeze_after
        if freeze is not None and freeze < self.agent.idle_timeout and self._alive():
            self._freeze = loop.call_later(freeze, self._freeze_now)

    def _freeze_now(self) -> None:
        """Pause an idle process (SIGSTOP): it costs no CPU, and wakes at once (SIGCONT)."""
        if self._alive() and not self.queue and self.turn_id is None and not self.permissions:
            assert self.process is not None
            self.process.signal(signal.SIGSTOP)
            self.frozen = True

    def _cancel_timers(self) -> None:
        for timer in (self._idle, self._freeze):
            if timer is not None:
                timer.cancel()
        self._idle = self._freeze = None

    # --- starting --------------------------------------------------------------------------

    def _alive(self) -> bool:
        return self.process is not None and not self.process.exited.done()

    async def _ensure_started(self) -> bool:
        if self._alive():
            return True
        session = self.session
        session.set_agent_state("starting")
        await session.append("agent.status", {"state": "starting"}, HUB_SOURCE)
        try:
            mode = await self._start()
        except (OSError, AgentError, TimeoutError) as exc:
            reason = self._start_failure(exc)
            log.warning("agent %s failed to start for %s: %s", self.agent.id, session.id, reason)
            if self.process is not None:
                self.process.kill()
            self.process = None
            self._revoke()
            await session.append("agent.status", {"state": "failed", "reason": reason},
                                 HUB_SOURCE)
            session.set_agent_state("failed")
            return False
        assert self.process is not None
        await session.append(
            "agent.status", {"state": "ready", "resumeMode": mode, "pid": self.process.pid},
            HUB_SOURCE,
        )
        session.set_agent_state("idle")
        self.process.exited.add_done_callback(lambda _: self._on_exit())
        return True

    def _start_failure(self, exc: BaseException) -> str:
        if isinstance(exc, OSError):
            return f"cannot run {' '.join(self.agent.command)}: {exc.strerror or exc}"
        detail = self.process.stderr_tail(5) if self.process else ""
        what = "did not answer within 30 s" if isinstance(exc, TimeoutError) else str(exc)
        return f"the agent {what}" + (f"; its last output:\n{detail}" if detail else "")

    async def _start(self) -> str:
        sid = self.session.id
        cwd = self._cwd()
        url, token, self._revoke = self.supervisor.credentials(sid, self.agent.id)
        self.process = await AgentProcess.spawn(
            self.agent.command, env=self._env(), cwd=str(cwd),
            stderr_path=self.supervisor.data_dir / "logs" / f"{sid}.agent.log",
            on_notification=self._on_notification, on_request=self._on_request,
        )
        async with asyncio.timeout(START_TIMEOUT):
            init = await self.process.request("initialize", {
                "protocolVersion": 1, "clientCapabilities": CLIENT_CAPABILITIES,
                "clientInfo": {"name": "axtui", "version": __version__},
            }) or {}
            caps = init.get("agentCapabilities") or {}
            known = await self.supervisor.registry.catalog.agent_session(sid)
            base = {"cwd": str(cwd), "mcpServers": [state_server(url, token, sid)]}
            if known and "resume" in (caps.get("sessionCapabilities") or {}):
                with contextlib.suppress(AgentError):
                    await self.process.request("session/resume", {"sessionId": known, **base})
                    self.acp_session = known
                    return "resume"
            if known and caps.get("loadSession"):
                self.replaying = True
                try:
                    await self.process.request("session/load", {"sessionId": known, **base})
                    self.acp_session = known
                    return "load"
                except AgentError:
                    pass
                finally:
                    self.replaying = False
            result = await self.process.request("session/new", base)
            new_id = result.get("sessionId") if isinstance(result, dict) else None
            if not isinstance(new_id, str):
                raise AgentError("session/new was answered without a sessionId")
            self.acp_session = new_id
            await self.supervisor.registry.catalog.set_agent_session(sid, self.acp_session)
            self.transcript_pending = True  # empty for a new conversation: nothing is added
            return "new"

    def _cwd(self) -> Path:
        if self.agent.cwd:
            return Path(self.agent.cwd).expanduser().resolve()
        path = self.supervisor.data_dir / "workspaces" / self.session.id
        path.mkdir(parents=True, exist_ok=True)
        return path.resolve()

    def _env(self) -> dict[str, str]:
        """Only what the agent needs: a few basics, then the agent's own ``env``."""
        env = {k: os.environ[k] for k in BASE_ENV if k in os.environ}
        env["AXTUI_SESSION_ID"] = self.session.id
        env.update(self.agent.env)
        return env

    # --- a turn ----------------------------------------------------------------------------

    async def _turn(self, event: dict[str, Any]) -> None:
        session, process = self.session, self.process
        assert process is not None and self.acp_session is not None
        turn_id = protocol.new_event_id()
        # The turn exists before clients can see it, so a cancel can never miss it.
        self.turn_id, self.cancelled, self.mapper = turn_id, False, UpdateMapper()
        started = {"turnId": turn_id, "triggerSeq": event["seq"]}
        if "retryOf" in event:
            started["retryOf"] = event["retryOf"]
        await session.append("turn.started", started, HUB_SOURCE, turn_id=turn_id)
        session.set_agent_state("running")
        prompt = [{"type": "text", "text": await self._prompt_text(event)}]
        outcome: tuple[str, dict[str, Any]]
        try:
            result: dict[str, Any] = {}
            if not self.cancelled:  # cancelled before the prompt went out: do not send it
                async with asyncio.timeout(self.agent.turn_timeout):
                    result = await process.request(
                        "session/prompt", {"sessionId": self.acp_session, "prompt": prompt}
                    ) or {}
            stop = "cancelled" if self.cancelled else str(result.get("stopReason", "end_turn"))
            outcome = ("turn.completed", {"turnId": turn_id, "stopReason": stop})
        except TimeoutError:
            # The agent may still be working on the prompt: a fresh process serves the next
            # turn, so nothing from this one can leak into it.
            process.kill()
            await process.exited
            outcome = self._failure(turn_id, "timeout",
                                    f"the turn took longer than {self.agent.turn_timeout:g} s")
        except AgentExited:
            code = await process.exited
            tail = process.stderr_tail()
            outcome = self._failure(turn_id, "crashed",
                                    f"the agent exited with code {code}"
                                    + (f"; its last output:\n{tail}" if tail else ""))
        except AgentError as exc:
            outcome = self._failure(turn_id, "error", str(exc))
        self._record_all(self.mapper.finish())
        self._cancel_permissions()
        await session.append(*outcome, HUB_SOURCE, turn_id=turn_id)
        self.turn_id = None
        if not self._alive():
            await self._exited()
        else:
            session.set_agent_state("idle")

    def _failure(self, turn_id: str, reason: str, message: str) -> tuple[str, dict[str, Any]]:
        return ("turn.failed", {"turnId": turn_id, "reason": reason,
                                "error": {"message": message}})

    async def _prompt_text(self, event: dict[str, Any]) -> str:
        data = event.get("data") or {}
        text = data.get("text") if event["type"] == "user.message" else None
        if not isinstance(text, str):
            text = f"Event {event['type']}: {orjson.dumps(data).decode()}"
        if self.agent.context_sql:
            text = f"{await self._context()}\n\n{text}"
        if self.transcript_pending:
            self.transcript_pending = False
            transcript = await self._transcript(event["seq"])
            if transcript:
                text = ("The conversation so far (from the session's log):\n"
                        f"{transcript}\n\nNow: {text}")
        return text

    async def _context(self) -> str:
        """The rows of the agent's ``context.sql``, as text for the prompt."""
        sql = self.agent.context_sql or ""
        try:
            columns, rows, truncated = await self.session.db.query(sql, [], 100)
        except ProtocolError as exc:
            log.warning("context.sql of agent %s failed: %s", self.agent.id, exc.message)
            return f"(The session's context query failed: {exc.message})"
        lines = [" | ".join(columns)] + [" | ".join(str(v) for v in row) for row in rows]
        more = "\n(more rows not shown)" if truncated else ""
        return "Context from the session's state:\n" + "\n".join(lines) + more

    async def _transcript(self, before_seq: int) -> str:
        raws = await self.session.db.history(
            None, before_seq, 200, ["user.message", "agent.message"]
        )
        lines = []
        for raw in raws:
            e = orjson.loads(raw)
            who = "user" if e["type"] == "user.message" else "assistant"
            lines.append(f"{who}: {e['data'].get('text', '')}")
        return "\n".join(lines)

    # --- what the agent sends ----------------------------------------------------------------

    def _on_notification(self, method: str, params: dict[str, Any]) -> None:
        """Record updates synchronously, so they are stored in the order they were sent."""
        if method != "session/update" or self.replaying or self.turn_id is None:
            return
        update = params.get("update")
        if isinstance(update, dict):
            self._record_all(self.mapper.map(update))

    def _record_all(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        for event_type, data in events:
            try:
                fut = self.session.enqueue(event_type, data, self.source, turn_id=self.turn_id)
            except ProtocolError as exc:
                log.warning("dropped %s from agent in %s: %s", event_type, self.session.id, exc)
                continue
            fut.add_done_callback(_log_failure)

    async def _on_request(self, method: str, params: dict[str, Any]) -> Any:
        if method == "session/request_permission":
            return await self._ask_permission(params)
        if method == "fs/read_text_file":
            path = self._confined(params.get("path"))
            try:
                text = path.read_text()
            except OSError as exc:
                raise AgentError(f"cannot read {path}: {exc.strerror}", -32602) from None
            line, limit = params.get("line"), params.get("limit")
            if isinstance(line, int) or isinstance(limit, int):
                lines = text.splitlines(keepends=True)
                start = max(0, (line or 1) - 1)
                text = "".join(lines[start:start + limit if isinstance(limit, int) else None])
            return {"content": text}
        if method == "fs/write_text_file":
            path = self._confined(params.get("path"))
            content = params.get("content")
            if not isinstance(content, str):
                raise AgentError("content must be a string", -32602)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
            return None
        raise AgentError(f"the hub does not offer {method}", -32601)

    def _confined(self, value: Any) -> Path:
        """An absolute path inside the agent's cwd, or an error: no escaping it."""
        root = self._cwd()
        if not isinstance(value, str) or not os.path.isabs(value):
            raise AgentError("path must be an absolute path", -32602)
        path = Path(value).resolve()
        if not path.is_relative_to(root):
            raise AgentError(f"{value} is outside the agent's working directory {root}", -32602)
        return path

    async def _ask_permission(self, params: dict[str, Any]) -> dict[str, Any]:
        """A permission request becomes an event any participant can answer."""
        if self.turn_id is None:
            return {"outcome": {"outcome": "cancelled"}}
        request_id = protocol.new_event_id()
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.permissions[request_id] = fut
        self._record_all(self.mapper.finish())
        options = [
            {"optionId": o.get("optionId"), "name": o.get("name", ""), "kind": o.get("kind", "")}
            for o in params.get("options") or [] if isinstance(o, dict)
        ]
        await self.session.append("permission.request", {
            "requestId": request_id, "toolCall": params.get("toolCall") or {}, "options": options,
        }, self.source, turn_id=self.turn_id)
        self.session.set_agent_state("waiting")
        try:
            answer = await fut
        finally:
            self.permissions.pop(request_id, None)
            if not self.permissions and self.turn_id is not None:
                self.session.set_agent_state("running")
        if answer.get("outcome") == "cancelled":
            return {"outcome": {"outcome": "cancelled"}}
        return {"outcome": {"outcome": "selected", "optionId": answer.get("optionId")}}

    def answered(self, data: dict[str, Any]) -> None:
        """A ``permission.response`` was committed: the first answer goes to the agent."""
        fut = self.permissions.get(data.get("requestId", ""))
        if fut is not None and not fut.done():
            fut.set_result(data)

    def _cancel_permissions(self) -> None:
        for request_id in list(self.permissions):
            self._record_cancelled_answer(request_id)

    def _record_cancelled_answer(self, request_id: str) -> None:
        try:
            fut = self.session.enqueue("permission.response",
                                       {"requestId": request_id, "outcome": "cancelled"},
                                       HUB_SOURCE, turn_id=self.turn_id)
        except ProtocolError:
            return
        fut.add_done_callback(lambda f: None if f.cancelled() else f.exception())
        self.answered({"requestId": request_id, "outcome": "cancelled"})

    # --- cancel, exit, suspend -----------------------------------------------------------------

    async def cancel(self) -> None:
        """Cancel the running turn: the agent is told, open permission requests are closed.

        An agent that has not ended the turn ``CANCEL_GRACE`` seconds later is killed.
        """
        turn_id, process = self.turn_id, self.process
        if turn_id is None or process is None or self.acp_session is None:
            return
        self.cancelled = True
        self._cancel_permissions()
        with contextlib.suppress(AgentError):
            await process.notify("session/cancel", {"sessionId": self.acp_session})

        def kill_if_still_running() -> None:
            if self.turn_id == turn_id:
                process.kill()

        asyncio.get_running_loop().call_later(CANCEL_GRACE, kill_if_still_running)

    def _on_exit(self) -> None:
        if self.stopping or self.turn_id is not None:
            return  # a turn in progress records the crash itself
        self.spawn_task(self._exited())

    async def _exited(self) -> None:
        """The process ended outside a shutdown: record it; the next event starts a new one."""
        process = self.process
        if process is None or self.stopping:
            return
        code = process.exited.result()
        self.process = None
        self._revoke()
        state = "exited" if code == 0 else "crashed"
        data: dict[str, Any] = {"state": state, "pid": process.pid}
        if code != 0:
            data["reason"] = f"exit code {code}"
        await self.session.append("agent.status", data, HUB_SOURCE)
        self.session.set_agent_state("suspended")

    async def shutdown(self, *, record: bool, hub_stopping: bool = False) -> None:
        """Stop the process (suspend). With ``record``, write what happened into the log.

        When the hub stops during a turn, the session keeps ``agentState`` running, so that
        the next start finds the interrupted turn (see :meth:`Supervisor.recover`).
        """
        if self.stopping:
            return
        self.stopping = True
        self._cancel_timers()
        worker = self._worker
        turn_id = self.turn_id
        if worker is not None and not worker.done():
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        process, self.process = self.process, None
        if process is not None:
            await process.stop()
        self._revoke()
        self.supervisor.runs.pop(self.session.id, None)
        self.session.agent_active = False
        if not record or self.session.closed:
            return
        if turn_id is not None:
            self._record_all(self.mapper.finish())
            await self.session.append("turn.failed", {
                "turnId": turn_id, "reason": "interrupted",
                "error": {"message": "the hub stopped the agent during the turn"},
            }, HUB_SOURCE, turn_id=turn_id)
        if process is not None:
            await self.session.append("agent.status", {"state": "suspended"}, HUB_SOURCE)
        self.session.set_agent_state("running" if hub_stopping and turn_id else "suspended")


def state_server(url: str, token: str, session_id: str) -> dict[str, Any]:
    """The MCP server (stdio) that gives an agent its session's state, for ``mcpServers``."""
    env = {"AXTUI_HUB_URL": url, "AXTUI_HUB_TOKEN": token, "AXTUI_SESSION_ID": session_id}
    return {
        "name": "axtui-state",
        "command": sys.executable,
        "args": ["-m", "server.mcp_state"],
        "env": [{"name": k, "value": v} for k, v in env.items()],
    }


def _log_failure(fut: asyncio.Future[CommitResult]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.warning("an agent event was not stored: %s", fut.exception())

