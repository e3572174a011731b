"""``axtui exec``: one turn, headless, streaming the session's events as they happen.

The run is attached to one *goal turn*: the turn triggered by the ``--input`` it
published, or, with ``--resume``, the session's queued or running turn. It prints every
event of the session from its starting point until that turn ends: exit 0 on
``turn.completed``, 1 on ``turn.failed``, and 1 with the reason when the agent cannot be
started for it (``agent.status failed`` before the turn began: it gets no turn).

Where printing starts: after ``--last-seq N`` if given; else a new session from seq 1, an
existing one from its head before the input is published, and a resumed one from just
before the goal turn's trigger (so the trigger, ``turn.started`` and everything since are
shown). Because printing follows one gap-free subscription and each event is flushed as it
is printed, the last seq printed is exactly what was shown: resuming with
``--last-seq <that seq>`` prints nothing twice and misses nothing.

Ctrl+C cancels the goal turn (``session/cancel``), keeps printing until it ends (at most
``CANCEL_WAIT`` seconds; a second Ctrl+C leaves at once), prints the command that resumes
to stderr and exits 130.

Permission requests of the goal turn are asked at the terminal; when stdin is not a
terminal they are refused (the first ``reject_*`` option, else outcome cancelled) unless
``--approve``, which picks the first ``allow_*`` option. Requests already in the backlog
are asked only once the run has caught up, and only if nobody answered them meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

import click

from axtui.client import HubClient, Subscription
from axtui.embedded import HubAlreadyRunning, embedded_hub, running_hub
from axtui.exitcodes import ExitCode
from axtui.headless import CommandError, Target, connect, usage_error
from axtui.render import EventPrinter
from axtui.terminal import safe_text
from server.protocol import Conflict, NotFound, ProtocolError
from server.runner import on_signals
from server.sources import Source

CANCEL_WAIT = 8.0  # seconds to wait for the cancelled turn to end (the hub kills after 5)
TURN_ENDS = ("turn.completed", "turn.failed")


@dataclass
class ExecOptions:
    """What ``axtui exec`` was asked to do."""

    agent: str | None = None
    session: str | None = None
    input: str | None = None
    resume: bool = False
    last_seq: int | None = None
    jsonl: bool = False
    approve: bool = False
    title: str | None = None
    resume_flags: tuple[str, ...] = ()  # --server/--data-dir to repeat in the resume hint


@dataclass
class Goal:
    """The turn the run waits for: by its trigger's seq, then by its id once started."""

    trigger_seq: int | None = None
    turn_id: str | None = None
    ended: dict[str, Any] | None = None  # its turn.completed or turn.failed


@dataclass
class Attachment:
    """A session the run is attached to, where printing starts, and its goal turn."""

    session_id: str
    after_seq: int
    head_seq: int
    goal: Goal = field(default_factory=Goal)


def check_options(opts: ExecOptions) -> None:
    """Refuse option combinations that cannot work (exit 2)."""
    if opts.input is None and not opts.resume:
        raise usage_error("exec needs --input TEXT, or --session ID --resume")
    if opts.resume and opts.session is None:
        raise usage_error("--resume needs --session ID")
    if opts.last_seq is not None and opts.session is None:
        raise usage_error("--last-seq needs --session ID")


async def run_exec(config: Any, target: Target | None, opts: ExecOptions) -> ExitCode:
    """Run ``axtui exec`` against ``target``, or an embedded hub when it is None."""
    check_options(opts)
    if target is None:
        try:
            async with embedded_hub(config) as url:
                return await _run(Target(url), opts)
        except HubAlreadyRunning:
            # `axtui up` holds the data dir: run the turn on that hub, as `publish` does.
            running = running_hub(config)
            if running is None:
                raise
            note(f"using the hub already running on {config.hub.data_dir} ({running.url})")
            return await _run(running, opts)
    return await _run(target, opts)


async def _run(target: Target, opts: ExecOptions) -> ExitCode:
    async with connect(target, reconnect=True) as hub:
        return await ExecRun(hub, opts).main()


def note(text: str) -> None:
    """A line for the person on stderr (stdout is the event stream); it may quote an
    event or the hub, so it is made safe for the terminal."""
    click.echo(f"axtui: {safe_text(text)}", err=True)


class ExecRun:
    """One ``axtui exec``: attach, print, answer permissions, end with the goal turn."""

    def __init__(self, hub: HubClient, opts: ExecOptions) -> None:
        self.hub = hub
        self.opts = opts
        self.printer = EventPrinter(jsonl=opts.jsonl, stream_chunks=True)
        self.session_id = ""
        self.last_seq = 0
        self.goal = Goal()
        self.open_requests: dict[str, dict[str, Any]] = {}
        self.caught_up_at = 0
        self.interrupted = False
        self._timeout: asyncio.Timeout | None = None
        self._prompt: asyncio.Future[str | None] | None = None
        self._asking: str | None = None  # the request id the terminal prompt is about
        self._line: asyncio.Future[str | None] | None = None  # the stdin read under way
        self._answering: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._main_task: asyncio.Task[Any] | None = None

    async def main(self) -> ExitCode:
        """Run to the end of the goal turn; the exit code."""
        self._main_task = asyncio.current_task()
        try:
            with on_signals(self.interrupt, [signal.SIGINT]):
                return await self._main()
        finally:
            self.printer.close()

    async def _main(self) -> ExitCode:
        attached = await self._attach()
        self.session_id, self.goal = attached.session_id, attached.goal
        self.last_seq = attached.after_seq
        self.caught_up_at = max(attached.after_seq, attached.head_seq)
        done = attached.goal.ended is not None and attached.after_seq >= attached.head_seq
        if not done:
            sub = self.hub.subscribe(self.session_id, attached.after_seq)
            try:
                async with asyncio.timeout(None) as self._timeout:
                    await self._follow(sub, attached.head_seq)
                self._timeout = None
            except TimeoutError:
                pass  # Ctrl+C and the cancelled turn did not end in time
            finally:
                if self._answering is not None:  # the turn ended: nothing left to answer
                    self._answering.cancel()
                await sub.close()
        self.printer.close()
        if self.interrupted:
            self._resume_hint()
            return ExitCode.INTERRUPTED
        return self._outcome()

    # --- attaching -------------------------------------------------------------------------

    async def _attach(self) -> Attachment:
        opts, hub = self.opts, self.hub
        created = opts.session is None
        if opts.session is None:
            session = await self._create()
            note(f"session {session['sessionId']} (agent {session['agent']})")
        else:
            session, created = await self._named_session(opts.session)
            if created:
                note(f"created session {opts.session} (agent {session['agent']})")
            if not session.get("agent"):
                raise CommandError(f"session {opts.session} has no agent: no turn would run")
            if opts.agent is not None and opts.agent != session["agent"]:
                raise usage_error(f"session {opts.session} runs agent {session['agent']};"
                                  f" --agent {opts.agent} does not apply")
        sid, head = session["sessionId"], session["headSeq"]
        if opts.input is not None:
            after = opts.last_seq if opts.last_seq is not None else (0 if created else head)
            # Subscribing from `after` shows every event after it, whenever it comes.
            result = await hub.publish(sid, "user.message", {"text": opts.input},
                                       idempotency_key=f"axtui-exec-{os.urandom(8).hex()}")
            return Attachment(sid, after, head, Goal(trigger_seq=result["seq"]))
        goal, start = await self._resume_goal(sid, head)
        after = opts.last_seq if opts.last_seq is not None else start
        if after > head:
            raise CommandError(f"--last-seq {after} is ahead of session {sid}'s head ({head})")
        return Attachment(sid, after, head, goal)

    async def _create(self, session_id: str | None = None) -> dict[str, Any]:
        """A new session (named ``session_id``) with ``--agent`` or the hub's first agent."""
        opts = self.opts
        assert opts.input is not None
        params: dict[str, Any] = {
            "agent": opts.agent or await self._default_agent(),
            "title": opts.title if opts.title is not None else opts.input.splitlines()[0][:80],
        }
        if session_id is not None:
            params["sessionId"] = session_id
        return await self.hub.create_session(**params)

    async def _named_session(self, session_id: str) -> tuple[dict[str, Any], bool]:
        """The session ``--session`` names and whether it was created: with ``--input`` a
        new name is created (a CI job names its session after its build), as
        ``ax exec --conversation`` does; ``--resume`` needs one that exists."""
        try:
            return await self.hub.get_session(session_id), False
        except NotFound:
            if self.opts.input is None:
                raise
        try:
            return await self._create(session_id), True
        except Conflict:  # another run created it meanwhile: join that one
            return await self.hub.get_session(session_id), False

    async def _default_agent(self) -> str:
        agents = (await self.hub.call("agents/list"))["agents"]
        if not agents:
            raise CommandError("the hub has no agents configured")
        return str(agents[0]["id"])

    async def _last(self, sid: str, head: int, types: list[str]) -> dict[str, Any] | None:
        events = (await self.hub.history(sid, beforeSeq=head + 1, limit=1, types=types))["events"]
        return events[-1] if events else None

    async def _resume_goal(self, sid: str, head: int) -> tuple[Goal, int]:
        """The queued turn (a user.message newer than the last turn's trigger) or the last
        turn (running, or ended: then the run just prints up to the head)."""
        started = await self._last(sid, head, ["turn.started"])
        user = await self._last(sid, head, ["user.message"])
        if user is not None and (started is None or started["data"]["triggerSeq"] < user["seq"]):
            return Goal(trigger_seq=user["seq"]), user["seq"] - 1
        if started is None:
            raise CommandError(f"session {sid} has no turn to resume; start one with --input")
        data = started["data"]
        goal = Goal(trigger_seq=data["triggerSeq"], turn_id=data["turnId"])
        ends = (await self.hub.history(sid, afterSeq=started["seq"], limit=1,
                                       types=list(TURN_ENDS)))["events"]
        if ends:
            goal.ended = ends[0]
        return goal, data["triggerSeq"] - 1

    # --- following -------------------------------------------------------------------------

    async def _follow(self, sub: Subscription, head: int) -> None:
        async for event in sub:
            self.printer.print(event)
            self.last_seq = event["seq"]
            self._track(event)
            if self.goal.ended is not None and (
                event is self.goal.ended or self.last_seq >= head
            ):
                return
            answering = self._answering
            if answering is not None and answering.done():
                self._answering = None
                answering.result()  # a lost connection while answering ends the run
            if (self.open_requests and self.last_seq >= self.caught_up_at
                    and self._answering is None):
                # Beside the feed, so an answer from another client ends the prompt.
                self._answering = asyncio.create_task(self._answer_open_requests())

    def _track(self, event: dict[str, Any]) -> None:
        kind, data, goal = event["type"], event.get("data") or {}, self.goal
        if kind == "turn.started" and data.get("triggerSeq") == goal.trigger_seq:
            goal.turn_id, goal.ended = data.get("turnId"), None  # a retry replaces the turn
            if self.interrupted:
                self._spawn(self._cancel())
        elif kind in TURN_ENDS and goal.turn_id is not None and data.get("turnId") == goal.turn_id:
            goal.ended = event
        elif (kind == "agent.status" and data.get("state") == "failed" and goal.turn_id is None
              and goal.trigger_seq is not None and event["seq"] > goal.trigger_seq):
            goal.ended = event  # the agent could not start: the trigger gets no turn
        elif (kind == "permission.request" and goal.turn_id is not None
              and event.get("turnId") == goal.turn_id):
            self.open_requests[str(data.get("requestId"))] = data
        elif kind == "permission.response":
            request_id = str(data.get("requestId"))
            # Our own answer was popped before it was sent: only another client's is news.
            if self.open_requests.pop(request_id, None) is not None and request_id == self._asking:
                who = Source.from_json(event.get("source")).label()
                note(f"permission request {request_id} answered by {who}")
                if self._prompt is not None and not self._prompt.done():
                    self._prompt.set_result(None)

    def _outcome(self) -> ExitCode:
        ended = self.goal.ended
        if ended is None:
            return ExitCode.FAILED
        if ended["type"] == "agent.status":
            reason = str((ended.get("data") or {}).get("reason") or "no reason given")
            note(f"the agent could not start: {reason}")
            return ExitCode.FAILED
        if ended["type"] == "turn.failed":
            data = ended.get("data") or {}
            message = str((data.get("error") or {}).get("message", "")).splitlines()
            note(f"the turn failed ({data.get('reason')}){': ' + message[0] if message else ''}")
            return ExitCode.FAILED
        return ExitCode.OK

    # --- permissions -----------------------------------------------------------------------

    async def _answer_open_requests(self) -> None:
        for request_id, data in list(self.open_requests.items()):
            if request_id not in self.open_requests or self.interrupted:
                continue
            options = [o for o in data.get("options") or [] if isinstance(o, dict)]
            self._asking = request_id
            try:
                choice = await self._choose(data, options)
            finally:
                self._asking = None
            if request_id not in self.open_requests:
                continue  # another client answered it meanwhile
            answer: dict[str, Any] = {"requestId": request_id}
            if choice is None:
                answer["outcome"] = "cancelled"
            else:
                answer["optionId"] = choice
            self.open_requests.pop(request_id, None)
            try:
                await self.hub.publish(self.session_id, "permission.response", answer,
                                       idempotency_key=f"axtui-exec-{request_id}")
            except Conflict as exc:
                note(exc.message)

    async def _choose(self, data: dict[str, Any], options: list[dict[str, Any]]) -> str | None:
        def first(prefix: str) -> str | None:
            return next((str(o["optionId"]) for o in options
                         if str(o.get("kind", "")).startswith(prefix)), None)

        if self.opts.approve:
            return first("allow")
        if not sys.stdin.isatty():
            choice = first("reject")
            note(f"refused permission request {data.get('requestId')} ({choice or 'cancelled'}):"
                 " stdin is not a terminal; pass --approve to allow")
            return choice
        title = (data.get("toolCall") or {}).get("title", "a tool call")
        keys = {str(i): str(o["optionId"]) for i, o in enumerate(options, 1)}
        menu = "  ".join(f"[{k}] {o.get('name', o['optionId'])}"
                         for k, o in zip(keys, options, strict=True))
        self.printer.close()
        request_id = str(data.get("requestId"))
        while request_id in self.open_requests:
            line = await self._ask(safe_text(f"Permission: {title}\n  {menu}  [c] cancel\n> "))
            if line is None or line.strip().lower() in ("c", "cancel"):
                return None
            if line.strip() in keys:
                return keys[line.strip()]
        return None

    async def _ask(self, prompt: str) -> str | None:
        """The next line typed, or None when the prompt is settled first (Ctrl+C, or another
        client answered). Lines are read in a daemon thread, so Ctrl+C (and exiting) never
        waits for one; a read still under way is kept for the next prompt, so a line typed
        late is never lost to a thread nobody listens to."""
        loop = asyncio.get_running_loop()
        self._prompt = loop.create_future()
        sys.stdout.write(prompt)
        sys.stdout.flush()
        line = self._line
        if line is None:
            line = self._line = loop.create_future()

            def settle(value: str | None, line: asyncio.Future[str | None] = line) -> None:
                if not line.done():
                    line.set_result(value)

            def read() -> None:
                try:
                    text: str | None = input()
                except (EOFError, OSError):
                    text = None
                loop.call_soon_threadsafe(settle, text)

            threading.Thread(target=read, daemon=True, name="permission prompt").start()
        try:
            await asyncio.wait([line, self._prompt], return_when=asyncio.FIRST_COMPLETED)
            if line.done():
                self._line = None
                return line.result()
            return None
        finally:
            self._prompt = None

    # --- Ctrl+C ----------------------------------------------------------------------------

    def interrupt(self) -> None:
        """First Ctrl+C: cancel the goal turn and wait for its end; second: leave now."""
        loop = asyncio.get_running_loop()
        if self._timeout is None:  # not attached yet: nothing to cancel
            if self._main_task is not None:
                self._main_task.cancel()
            return
        if self.interrupted:
            self._timeout.reschedule(loop.time())
            return
        self.interrupted = True
        self.printer.close()
        note("cancelling the turn (Ctrl+C again to leave at once)")
        if self._prompt is not None and not self._prompt.done():
            self._prompt.set_result(None)
        self._spawn(self._cancel())
        if self.goal.ended is None:
            self._timeout.reschedule(loop.time() + CANCEL_WAIT)
        else:
            self._timeout.reschedule(loop.time())

    async def _cancel(self) -> None:
        with contextlib.suppress(ProtocolError, ConnectionError, TimeoutError):
            await asyncio.wait_for(
                self.hub.call("session/cancel", {"sessionId": self.session_id}), 5.0)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _resume_hint(self) -> None:
        words = ["axtui", "exec", "--session", self.session_id, "--resume",
                 "--last-seq", str(self.last_seq), *self.opts.resume_flags]
        if self.opts.jsonl:
            words.append("--json")
        note("to resume: " + shlex.join(words))
