"""The ``axtui`` command. One function a command; all wiring is here.

Exit codes are :class:`axtui.exitcodes.ExitCode`'s: 0 success, 1 the command failed, 2 bad
usage or config, 3 cannot reach or authenticate with the hub, 130 interrupted.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from axtui import __version__
from axtui.exitcodes import ExitCode

_Command = TypeVar("_Command", bound=Callable[..., Any])


def _fail(message: str, code: ExitCode = ExitCode.USAGE) -> NoReturn:
    """Say what is wrong on one line and exit (by default: bad usage or config)."""
    click.echo(f"axtui: {message}", err=True)
    sys.exit(code)


def _load(config_path: Path | None, **overrides: object):  # type: ignore[no-untyped-def]
    """Load the config (with command-line overrides) or exit 2 with its one clear message."""
    from server.config import ConfigError, load_config

    try:
        config = load_config(config_path)
        return config.with_overrides(**overrides)  # type: ignore[arg-type]
    except ConfigError as exc:
        _fail(str(exc))


def _run_hub(config) -> None:  # type: ignore[no-untyped-def]
    from server.app import run, serve_until_stopped, setup_logging
    from server.catalog import CatalogUnreadable, DataDirLocked
    from server.clustererrors import StoreUnavailable

    setup_logging(config)
    try:
        run(serve_until_stopped(config))
    except (DataDirLocked, CatalogUnreadable) as exc:
        _fail(str(exc))
    except StoreUnavailable as exc:
        _fail(f"cannot reach the cluster's Redis (cluster.redis): {exc.detail or exc.message}")
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            from axtui.embedded import in_use

            _fail(f"{in_use(exc)}: pass another --port or --http-port (0 picks a free one)")
        _fail(f"cannot listen on {config.hub.host}:{config.hub.port}: {exc}")


config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
    help="YAML config file (see config.example.yaml).",
)


http_port_option = click.option(
    "--http-port", type=int,
    help="Port of the HTTP API (default 8495, or hub.http_port; 0 picks a free one).",
)


@click.group(invoke_without_command=True)
@click.version_option(__version__, prog_name="axtui")
@click.pass_context
def main(ctx: click.Context) -> None:
    """axtui: a durable hub for long-lived, multi-client agent sessions."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(tui)


@main.command()
@config_option
@click.option("--host", help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=int, help="Port to listen on (default 8494; 0 picks a free one).")
@http_port_option
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where sessions are stored (default: the platform's data dir).")
@click.option("--cluster", "cluster", metavar="URL",
              help="Run as a replica of the cluster on this Redis (sets cluster.redis; the"
                   " secret comes from cluster.secret or $AXTUI_CLUSTER_SECRET).")
def serve(config_path: Path | None, host: str | None, port: int | None,
          http_port: int | None, data_dir: Path | None, cluster: str | None) -> None:
    """Run the hub (websocket and HTTP API) until Ctrl+C or SIGTERM."""
    _run_hub(_load(config_path, host=host, port=port, http_port=http_port, data_dir=data_dir,
                   cluster=cluster))


@main.command()
@config_option
@click.option("--port", type=int, help="Port for the hub (default 8494; 0 picks a free one).")
@http_port_option
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where sessions are stored (default: the platform's data dir).")
def up(config_path: Path | None, port: int | None, http_port: int | None,
       data_dir: Path | None) -> None:
    """The main job: a hub on the local data dir with the bundled agents, and the TUI on it.

    The hub stops when the TUI quits. Other clients (`axtui exec --server ...`, Slack)
    can join it on its port meanwhile. If a hub already runs on the data dir, the TUI
    opens on that one instead.
    """
    from axtui.tui.launch import open_up

    sys.exit(open_up(_load(config_path, port=port, http_port=http_port, data_dir=data_dir)))


# --- the terminal UI (issue 4): tui ---


@main.command()
@config_option
@click.option("--server", help="The hub's websocket URL (default: the config's client.server).")
@click.option("--token", envvar="AXTUI_TOKEN", help="Token for the hub (or $AXTUI_TOKEN).")
@click.option("--session", "session_id", help="Open this session, with the input focused.")
def tui(config_path: Path | None, server: str | None, token: str | None,
        session_id: str | None) -> None:
    """Open the terminal UI on a running hub (also plain `axtui`)."""
    from axtui.tui.launch import open_tui

    sys.exit(open_tui(_load(config_path), server, token, session_id))


# --- headless commands (issue 6): exec, replay, export, import, publish, state, sessions,
# fork, delete, agents ---


def _hub_options(fn: _Command) -> _Command:
    """--config, --server and --token: where the hub is and how to get in."""
    fn = click.option("--token", envvar="AXTUI_TOKEN",
                      help="Token for the hub (or $AXTUI_TOKEN; default: client.token).")(fn)
    fn = click.option("--server", envvar="AXTUI_SERVER",
                      help="The hub's websocket URL (or $AXTUI_SERVER;"
                           " default: the config's client.server).")(fn)
    return config_option(fn)


json_option = click.option("--json", "as_json", is_flag=True,
                           help="Machine-readable output: JSON, one object a line.")


def _target(config_path: Path | None, server: str | None, token: str | None):  # type: ignore[no-untyped-def]
    from axtui.headless import CommandError, resolve_target

    try:
        return resolve_target(_load(config_path), server, token)
    except CommandError as exc:
        _fail(exc.message, exc.code)


def _finish(main_coro) -> None:  # type: ignore[no-untyped-def]
    from axtui.headless import finish

    finish(main_coro)


@main.command("exec")
@_hub_options
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Data dir of the embedded hub (when no --server is given).")
@click.option("--agent", help="Agent of a new session (default: the hub's first agent).")
@click.option("--session", "session_id", help="Run in this session instead of a new one.")
@click.option("--input", "text", help="The message that starts the turn.")
@click.option("--title", help="Title of a new session (default: the input's first line).")
@click.option("--resume", is_flag=True,
              help="Re-attach to the session's running or queued turn (needs --session).")
@click.option("--last-seq", type=click.IntRange(min=0),
              help="Print everything after this seq first (what a resumed run last saw).")
@click.option("--approve", is_flag=True,
              help="Answer permission requests with their first allow option.")
@click.option("--format", "fmt", type=click.Choice(["pretty", "jsonl"]), default="pretty",
              show_default=True, help="Readable lines, or one JSON event a line.")
@click.option("--json", "as_json", is_flag=True,
              help="Same as --format jsonl: events exactly as the hub sent them.")
def exec_(config_path: Path | None, server: str | None, token: str | None,
          data_dir: Path | None, agent: str | None, session_id: str | None, text: str | None,
          title: str | None, resume: bool, last_seq: int | None, approve: bool, fmt: str,
          as_json: bool) -> None:
    """Run one turn headless, streaming the session's events; exit 0 if it completes.

    Without --server an embedded hub runs on the local data dir for the duration.
    Ctrl+C cancels the turn and prints the command that resumes.
    """
    from axtui.execute import ExecOptions, run_exec

    config = _load(config_path, data_dir=data_dir)
    target = _target(config_path, server, token) if server else None
    flags = ("--server", server) if server else (
        ("--data-dir", str(data_dir)) if data_dir else ())
    opts = ExecOptions(agent=agent, session=session_id, input=text, resume=resume,
                       last_seq=last_seq, jsonl=as_json or fmt == "jsonl", approve=approve,
                       title=title,
                       resume_flags=flags)
    _finish(run_exec(config, target, opts))


@main.command()
@_hub_options
@click.argument("session_id", metavar="SESSION", required=False)
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path),
              help="Read this session file directly (no hub needed).")
@click.option("--from-seq", type=click.IntRange(min=1), default=1, help="First seq to show.")
@click.option("--to-seq", type=click.IntRange(min=1), help="Last seq to show.")
@click.option("--types", multiple=True,
              help="Only these types; globs with *, comma-separated or repeated.")
@click.option("--speed", type=click.FloatRange(min=0, min_open=True),
              help="Replay with the recorded timing, this many times faster.")
@click.option("--instant", is_flag=True, help="No pauses (the default).")
@click.option("--max-gap", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="Longest pause between two events with --speed, in seconds.")
@click.option("--follow", is_flag=True, help="Keep streaming live events (needs a hub).")
@click.option("--format", "fmt", type=click.Choice(["pretty", "jsonl"]), default="pretty",
              show_default=True, help="Readable lines, or one JSON event a line.")
@click.option("--json", "as_json", is_flag=True, help="Same as --format jsonl.")
@click.option("--rerun", is_flag=True,
              help="Send the session's input again into a fork and diff the agent output.")
@click.option("--agent", help="With --rerun: run the fork with this agent.")
@click.option("--turn-timeout", type=click.FloatRange(min=0, min_open=True), default=300.0,
              show_default=True, help="With --rerun: seconds a turn may take.")
def replay(config_path: Path | None, server: str | None, token: str | None,
           session_id: str | None, db: Path | None, from_seq: int, to_seq: int | None,
           types: tuple[str, ...], speed: float | None, instant: bool, max_gap: float,
           follow: bool, fmt: str, as_json: bool, rerun: bool, agent: str | None,
           turn_timeout: float) -> None:
    """Replay a session for debugging, from a hub or a session file (--db)."""
    from axtui.replay import ReplayOptions, replay_from_file, replay_from_hub

    if speed is not None and instant:
        _fail("--speed and --instant exclude each other")
    if db is not None and server is not None:
        _fail("--db and --server exclude each other")
    if to_seq is not None and to_seq < from_seq:
        _fail("--to-seq must not be below --from-seq")
    if agent is not None and not rerun:
        _fail("--agent goes with --rerun")
    if rerun:
        if db is not None or session_id is None:
            _fail("--rerun needs SESSION on a hub (not --db)")
        from axtui.rerun import rerun as run_rerun

        _finish(run_rerun(_target(config_path, server, token), session_id, agent,
                          turn_timeout, as_json or fmt == "jsonl"))
    opts = ReplayOptions(
        from_seq=from_seq, to_seq=to_seq,
        types=tuple(t.strip() for group in types for t in group.split(",") if t.strip()),
        speed=speed, max_gap=max_gap, follow=follow, jsonl=as_json or fmt == "jsonl",
    )
    if db is not None:
        _finish(replay_from_file(db, session_id, opts))
    if session_id is None:
        _fail("replay needs SESSION (or --db FILE)")
    _finish(replay_from_hub(_target(config_path, server, token), session_id, opts))


@main.command()
@_hub_options
@click.argument("session_id", metavar="SESSION", required=False)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to this file (default: stdout).")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path),
              help="Export this session file directly (no hub needed).")
def export(config_path: Path | None, server: str | None, token: str | None,
           session_id: str | None, output: Path | None, db: Path | None) -> None:
    """Write a session as JSON Lines: a header line, then every event."""
    from axtui.replay import export_session

    if db is None and session_id is None:
        _fail("export needs SESSION (or --db FILE)")
    target = _target(config_path, server, token) if db is None else None
    _finish(export_session(target, session_id, db, output))


@main.command("import")
@_hub_options
@click.argument("path", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--session", "new_id",
              help="Id of the new session (default: the exported id if free, else a new one).")
@click.option("--title", help="Title of the new session (default: the exported title).")
@click.option("--agent", help="Agent of the new session (default: the exported one; 'none').")
@json_option
def import_(config_path: Path | None, server: str | None, token: str | None, path: Path,
            new_id: str | None, title: str | None, agent: str | None, as_json: bool) -> None:
    """Create a new session (new epoch) from an export file; prints its id."""
    from axtui.replay import import_session

    _finish(import_session(_target(config_path, server, token), path, new_id, title, agent,
                           as_json))


@main.command()
@_hub_options
@click.argument("session_id", metavar="SESSION")
@click.option("--type", "event_type", required=True, help="Event type, e.g. ci.build_failed.")
@click.option("--data", help="The event's data, a JSON object.")
@click.option("--idempotency-key", help="Publishing again with this key stores nothing new.")
@click.option("--state", help="SQL statements to run with it: a JSON list of {sql, params}.")
@json_option
def publish(config_path: Path | None, server: str | None, token: str | None,
            session_id: str, event_type: str, data: str | None,
            idempotency_key: str | None, state: str | None, as_json: bool) -> None:
    """Publish an event (from a script, a cron job or CI); prints its seq."""
    from axtui.commands import publish as run_publish

    _finish(run_publish(_target(config_path, server, token), session_id, event_type, data,
                        idempotency_key, state, as_json))


@main.command()
@_hub_options
@click.argument("session_id", metavar="SESSION")
@click.argument("sql")
@click.option("-p", "--param", "params", multiple=True,
              help="A value for a ? in the SQL (JSON scalars, else text); repeat in order.")
@click.option("--limit", type=click.IntRange(1, 10000), help="At most this many rows (1000).")
@json_option
def state(config_path: Path | None, server: str | None, token: str | None, session_id: str,
          sql: str, params: tuple[str, ...], limit: int | None, as_json: bool) -> None:
    """Query a session's state (read-only SQL), printed as a table."""
    from axtui.commands import query_state

    _finish(query_state(_target(config_path, server, token), session_id, sql, list(params),
                        limit, as_json))


@main.command()
@_hub_options
@click.option("--agent", help="Only sessions of this agent.")
@json_option
def sessions(config_path: Path | None, server: str | None, token: str | None,
             agent: str | None, as_json: bool) -> None:
    """List sessions, newest activity first."""
    from axtui.commands import list_sessions

    _finish(list_sessions(_target(config_path, server, token), agent, as_json))


@main.command()
@_hub_options
@click.argument("session_id", metavar="SESSION")
@click.option("--at-seq", type=click.IntRange(min=1), help="Fork after this seq (default: head).")
@click.option("--session", "new_id", help="Id of the new session (default: the hub makes one).")
@click.option("--title", help="Title of the fork (default: '<title> (fork)').")
@click.option("--agent", help="Run the fork with another agent.")
@json_option
def fork(config_path: Path | None, server: str | None, token: str | None, session_id: str,
         at_seq: int | None, new_id: str | None, title: str | None, agent: str | None,
         as_json: bool) -> None:
    """Fork a session: its events up to --at-seq and the state they built; prints the id."""
    from axtui.commands import fork as run_fork

    _finish(run_fork(_target(config_path, server, token), session_id, at_seq, new_id, title,
                     agent, as_json))


@main.command()
@_hub_options
@click.argument("session_id", metavar="SESSION")
@click.option("--yes", is_flag=True, help="Delete without asking (needed without a terminal).")
def delete(config_path: Path | None, server: str | None, token: str | None, session_id: str,
           yes: bool) -> None:
    """Delete a session, its events and its state (admin); asks first at a terminal."""
    from axtui.commands import delete_question, delete_session, describe_session
    from axtui.headless import run

    target = _target(config_path, server, token)
    if not yes:
        if not sys.stdin.isatty():
            _fail("delete asks first, and stdin is not a terminal: pass --yes to delete"
                  " without asking")
        session: dict[str, Any] = {}
        code = run(describe_session(target, session_id, session))
        if code != ExitCode.OK:
            sys.exit(code)
        if not click.confirm(delete_question(session), default=False, err=True):
            _fail(f"session {session_id} was not deleted", ExitCode.FAILED)
    _finish(delete_session(target, session_id))


@main.command()
@_hub_options
@json_option
def agents(config_path: Path | None, server: str | None, token: str | None,
           as_json: bool) -> None:
    """List the agents the hub can run."""
    from axtui.commands import list_agents

    _finish(list_agents(_target(config_path, server, token), as_json))


# --- the Slack adapter (issue 5): slack ---

@main.command()
@config_option
def slack(config_path: Path | None) -> None:
    """Run the Slack adapter: each Slack thread is a session (see docs/slack.md)."""
    config = _load(config_path)
    try:
        from axtui.slack.app import run
    except ImportError as exc:
        _fail(f"the Slack adapter needs the slack extra ({exc.name} is missing):"
              " pip install 'axtui[slack]'")
    sys.exit(run(config))


if __name__ == "__main__":
    main()
