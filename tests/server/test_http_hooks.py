"""Webhooks (http.md §6) against a real hub: GitHub's own deliveries (tests/server/data/github,
signed with GitHub's example secret) and a generic HMAC sender; signatures checked before
anything else, templates, redeliveries stored once, and a delivery that wakes an agent."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from server.config import load_config
from server.hub import Hub
from server.webhooks import parse_webhooks
from tests.conftest import HubFactory, make_config
from tests.server.agent_helpers import echo_agent
from tests.server.http_helpers import Answer, Http, http_client, sse
from tests.server.raw_helpers import (
    FORBIDDEN,
    INVALID_PARAMS,
    NOT_AUTHENTICATED,
    NOT_FOUND,
    PARSE_ERROR,
    TOO_LARGE,
)

DATA = Path(__file__).parent / "data" / "github"
GITHUB_SECRET = "It's a Secret to Everybody"
CI_SECRET = "ci-secret"

HOOKS: dict[str, Any] = {
    "github": {"secret": GITHUB_SECRET, "signature": "github",
               "session": "gh-{json.repository.name}-{json.pull_request.number}",
               "type": "github.{header.X-GitHub-Event}",
               "idempotency": "{header.X-GitHub-Delivery}", "agent": "echo"},
    "repo": {"secret": GITHUB_SECRET, "signature": "github",
             "session": "gh-{json.repository.name}", "type": "github.{header.X-GitHub-Event}",
             "idempotency": "{header.X-GitHub-Delivery}"},
    "pr-review": {"secret": GITHUB_SECRET, "signature": "github",
                  "session": "review-{json.pull_request.number}",
                  "type": "github.{header.X-GitHub-Event}",
                  "idempotency": "{header.X-GitHub-Delivery}", "agent": "reviewer"},
    "ci": {"secret": CI_SECRET, "signature": "hmac-sha256", "session": "{json.session}",
           "type": "ci.{json.status}"},
    "chat": {"secret": CI_SECRET, "signature": "hmac-sha256", "session": "{json.session}",
             "type": "user.message", "idempotency": "{json.id}", "agent": "echo"},
    "anything": {"signature": "none", "session": "{json.session}", "type": "{json.kind}"},
}


def delivery(event: str) -> tuple[bytes, dict[str, str]]:
    """A GitHub delivery as GitHub sent it: the raw body and its headers."""
    body = (DATA / f"{event}.json").read_bytes()
    headers: dict[str, str] = orjson.loads((DATA / f"{event}.headers.json").read_bytes())
    headers.pop("Content-Length", None)  # the client sends its own
    return body, headers


def signed(body: Any, secret: str = CI_SECRET) -> tuple[bytes, dict[str, str]]:
    """``body`` (JSON unless bytes) with the X-Axtui-Signature of the hmac-sha256 hooks."""
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    digest = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    return raw, {"Content-Type": "application/json", "X-Axtui-Signature": f"sha256={digest}"}


async def hook_hub(hub_factory: HubFactory, tmp_path: Path, *, tokens: bool = False,
                   **hub: Any) -> Hub:
    """A hub with HOOKS and two echo agents: ``echo`` (wakes on user.message) and
    ``reviewer`` (wakes on github.pull_request too)."""
    agents = {"echo": echo_agent(tmp_path),
              "reviewer": echo_agent(tmp_path, id="reviewer",
                                     wake_on=("user.message", "github.pull_request"))}
    config = make_config(tmp_path / "hub", tokens=tokens, agents=agents, **hub)
    hooks = dict(HOOKS) if not tokens else {k: v for k, v in HOOKS.items() if k != "anything"}
    config = replace(config, webhooks=parse_webhooks(hooks, local_mode=not tokens,
                                                     agents=list(agents)))
    return await hub_factory(config=config)


@pytest.fixture
async def http(hub_factory: HubFactory, tmp_path: Path) -> AsyncIterator[Http]:
    """A client of a local-mode hook hub."""
    hub = await hook_hub(hub_factory, tmp_path)
    async with http_client(hub) as client:
        yield client


async def deliver(http: Http, hook: str, body: bytes, headers: dict[str, str]) -> Answer:
    """POST a delivery as its sender would: no Authorization header."""
    return await http.post(f"/v1/hooks/{hook}", raw=body, headers=headers, auth=False)


async def session_ids(http: Http) -> list[str]:
    """The ids of every session of the hub."""
    body = await http.ok("GET", "/v1/sessions")
    return sorted(s["sessionId"] for s in body["sessions"])


def test_the_fixtures_are_signed_with_githubs_example_secret() -> None:
    """The fixtures' X-Hub-Signature-256 is the HMAC of their exact bytes."""
    for event in ("ping", "pull_request"):
        body, headers = delivery(event)
        digest = hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert headers["X-Hub-Signature-256"] == f"sha256={digest}"
        assert headers["X-GitHub-Event"] == event


async def test_github_ping_is_accepted(http: Http) -> None:
    """GitHub's ping: 202, the session created, the body stored as data from the hook."""
    body, headers = delivery("ping")
    answer = await deliver(http, "repo", body, headers)
    assert answer.status == 202, answer.body
    assert answer.body == {"sessionId": "gh-hello-world", "seq": 2, "duplicate": False,
                           "ts": answer.body["ts"]}
    events = await http.events("gh-hello-world")
    assert [e["type"] for e in events] == ["session.created", "github.ping"]
    event = events[1]
    assert event["data"] == orjson.loads(body)
    assert event["idempotencyKey"] == headers["X-GitHub-Delivery"]
    assert event["source"] == {"kind": "webhook", "name": "repo", "principal": "webhook:repo"}


async def test_github_pull_request_creates_the_session_with_the_agent(http: Http) -> None:
    """A pull_request delivery: 202, a session named from the body with the hook's agent,
    the event github.pull_request holding the body byte for byte (as JSON)."""
    body, headers = delivery("pull_request")
    answer = await deliver(http, "github", body, headers)
    assert answer.status == 202, answer.body
    assert answer.body == {"sessionId": "gh-hello-world-42", "seq": 2, "duplicate": False,
                           "ts": answer.body["ts"]}
    session = (await http.ok("GET", "/v1/sessions/gh-hello-world-42"))["session"]
    assert session["agent"] == "echo"
    (event,) = [e for e in await http.events("gh-hello-world-42") if e["seq"] == 2]
    assert event["type"] == "github.pull_request"
    assert event["data"] == orjson.loads(body)
    assert event["data"]["pull_request"]["title"].endswith("✓")


async def test_redelivery_is_stored_once(http: Http) -> None:
    """The same X-GitHub-Delivery again (GitHub's Redeliver): duplicate, the first seq."""
    body, headers = delivery("pull_request")
    first = await deliver(http, "github", body, headers)
    again = await deliver(http, "github", body, headers)
    assert again.status == 202
    assert again.body == {**first.body, "duplicate": True}
    other = await deliver(http, "github", body, {**headers, "X-GitHub-Delivery": "another"})
    assert other.body["seq"] == first.body["seq"] + 1 and other.body["duplicate"] is False
    assert (await http.history("gh-hello-world-42"))["headSeq"] == 3


async def test_concurrent_first_deliveries_create_the_session_once(http: Http) -> None:
    """Deliveries racing to a session that does not exist yet: all stored, one create."""
    answers = await asyncio.gather(*[
        deliver(http, "ci", *signed({"session": "race", "status": "passed", "n": n}))
        for n in range(8)])
    assert all(a.status == 202 for a in answers), [a.body for a in answers]
    assert sorted(a.body["seq"] for a in answers) == list(range(2, 10))
    events = await http.events("race")
    assert [e["type"] for e in events].count("session.created") == 1
    assert len(events) == 9


async def test_bad_signature_stores_nothing(http: Http) -> None:
    """A missing, wrong, malformed or other-secret signature: 401 and nothing created."""
    body, headers = delivery("pull_request")
    good = headers["X-Hub-Signature-256"]
    wrong_secret = hmac.new(b"not the secret", body, hashlib.sha256).hexdigest()
    cases = [
        {k: v for k, v in headers.items() if k != "X-Hub-Signature-256"},
        {**headers, "X-Hub-Signature-256": good[:-1] + ("0" if good[-1] != "0" else "1")},
        {**headers, "X-Hub-Signature-256": good.replace("sha256=", "sha1=")},
        {**headers, "X-Hub-Signature-256": good.removeprefix("sha256=")},
        {**headers, "X-Hub-Signature-256": f"sha256={wrong_secret}"},
        {**headers, "X-Hub-Signature-256": ""},
    ]
    for sent in cases:
        answer = await deliver(http, "github", body, sent)
        assert answer.status == 401, answer.body
        assert answer.code == NOT_AUTHENTICATED
    tampered = body.replace(b'"number":42', b'"number":43', 1)
    assert (await deliver(http, "github", tampered, headers)).status == 401
    ci_body, ci_headers = signed({"session": "x", "status": "ok"}, "wrong secret")
    assert (await deliver(http, "ci", ci_body, ci_headers)).status == 401
    # GitHub's signature header is not the generic hook's, and the other way round.
    assert (await deliver(http, "ci", body, headers)).status == 401
    assert await session_ids(http) == []


async def test_signature_is_checked_before_the_body_is_parsed(http: Http) -> None:
    """An unsigned body that is not even JSON is 401, not 400; signed, it is 400."""
    answer = await deliver(http, "ci", b"{not json", {"Content-Type": "application/json"})
    assert answer.status == 401
    answer = await deliver(http, "ci", *signed(b"{not json"))
    assert answer.status == 400 and answer.code == PARSE_ERROR
    answer = await deliver(http, "ci", *signed(b"[1, 2]"))
    assert answer.status == 400 and answer.code == INVALID_PARAMS
    assert await session_ids(http) == []


async def test_form_encoded_delivery_is_415(http: Http) -> None:
    """GitHub's other content type (application/x-www-form-urlencoded), signed: 415."""
    body, headers = delivery("ping")
    form = b"payload=" + body
    digest = hmac.new(GITHUB_SECRET.encode(), form, hashlib.sha256).hexdigest()
    sent = {**headers, "Content-Type": "application/x-www-form-urlencoded",
            "X-Hub-Signature-256": f"sha256={digest}"}
    answer = await deliver(http, "repo", form, sent)
    assert answer.status == 415, answer.body
    assert await session_ids(http) == []


async def test_missing_template_field_is_422(http: Http) -> None:
    """A ping to a hook whose session needs json.pull_request.number: 422 naming it."""
    body, headers = delivery("ping")
    answer = await deliver(http, "github", body, headers)
    assert answer.status == 422, answer.body
    assert answer.code == INVALID_PARAMS
    assert answer.data["param"] == "json.pull_request.number"
    no_header = {k: v for k, v in headers.items() if k != "X-GitHub-Event"}
    answer = await deliver(http, "repo", body, no_header)
    assert answer.status == 422 and answer.data["param"] == "header.X-GitHub-Event"
    answer = await deliver(http, "ci", *signed({"session": "x"}))
    assert answer.status == 422 and answer.data["param"] == "json.status"
    assert await session_ids(http) == []


async def test_templates_are_made_into_ids_and_types(http: Http) -> None:
    """Upper case and characters a session id or type may not hold are replaced."""
    answer = await deliver(http, "ci", *signed({"session": "Build/7 #main",
                                                "status": "Passed-Now"}))
    assert answer.status == 202, answer.body
    assert answer.body["sessionId"] == "build-7--main"
    (event,) = [e for e in await http.events("build-7--main") if e["seq"] == 2]
    assert event["type"] == "ci.passed_now"


async def test_a_hook_cannot_publish_a_reserved_type(http: Http) -> None:
    """A type template that renders turn.completed: 403, nothing created."""
    answer = await deliver(http, "anything", b'{"session": "r", "kind": "turn.completed"}',
                           {"Content-Type": "application/json"})
    assert answer.status == 403 and answer.code == FORBIDDEN
    answer = await deliver(http, "anything", b'{"session": "r", "kind": "session.deleted"}',
                           {"Content-Type": "application/json"})
    assert answer.status == 403
    assert await session_ids(http) == []


async def test_unsigned_hook_in_local_mode(http: Http) -> None:
    """signature: none takes any delivery in local mode."""
    answer = await deliver(http, "anything", b'{"session": "n", "kind": "note.added"}',
                           {"Content-Type": "application/json"})
    assert answer.status == 202 and answer.body["sessionId"] == "n"


async def test_unknown_hook_is_404(http: Http) -> None:
    """POST /v1/hooks/<not configured>: 404 -32004, whatever the signature."""
    body, headers = delivery("ping")
    answer = await deliver(http, "gitlab", body, headers)
    assert answer.status == 404 and answer.code == NOT_FOUND
    assert await session_ids(http) == []


async def test_body_over_max_event_bytes_is_413(hub_factory: HubFactory, tmp_path: Path) -> None:
    """A signed delivery bigger than hub.max_event_bytes (the pull_request, 23 KB, against
    16 KiB): 413, nothing created; the ping (7 KB) still goes."""
    hub = await hook_hub(hub_factory, tmp_path, max_event_bytes=16 * 1024)
    async with http_client(hub) as http:
        answer = await deliver(http, "github", *delivery("pull_request"))
        assert answer.status == 413 and answer.code == TOO_LARGE
        assert await session_ids(http) == []
        assert (await deliver(http, "repo", *delivery("ping"))).status == 202


async def test_hooks_need_no_token_when_tokens_are_configured(
    hub_factory: HubFactory, tmp_path: Path,
) -> None:
    """With auth.tokens, a signed delivery needs no Bearer token; an unsigned one is 401."""
    hub = await hook_hub(hub_factory, tmp_path, tokens=True)
    async with http_client(hub, "viewer-token") as http:
        body, headers = delivery("ping")
        assert (await deliver(http, "repo", body, headers)).status == 202
        assert (await http.history("gh-hello-world"))["headSeq"] == 2
        unsigned = {k: v for k, v in headers.items() if k != "X-Hub-Signature-256"}
        assert (await deliver(http, "repo", body, unsigned)).status == 401
        assert (await http.history("gh-hello-world"))["headSeq"] == 2


async def test_hook_publishes_to_an_existing_session(http: Http) -> None:
    """A session that exists is published to as it is (its agent unchanged)."""
    await http.create("gh-hello-world-42")
    answer = await deliver(http, "github", *delivery("pull_request"))
    assert answer.body == {"sessionId": "gh-hello-world-42", "seq": 2, "duplicate": False,
                           "ts": answer.body["ts"]}
    session = (await http.ok("GET", "/v1/sessions/gh-hello-world-42"))["session"]
    assert session.get("agent") is None


async def test_hooks_from_a_yaml_config(hub_factory: HubFactory, tmp_path: Path) -> None:
    """A webhooks: section in the config file, its secret from the environment."""
    path = tmp_path / "axtui.yaml"
    path.write_text(
        "webhooks:\n"
        "  ci:\n"
        '    secret: "${CI_WEBHOOK_SECRET}"\n'
        "    signature: hmac-sha256\n"
        '    session: "{json.session}"\n'
        '    type: "ci.{json.status}"\n', encoding="utf-8")
    config = load_config(path, {"CI_WEBHOOK_SECRET": "from-env"}).with_overrides(
        port=0, http_port=0, data_dir=tmp_path / "hub")
    hub = await hub_factory(config=config)
    async with http_client(hub) as http:
        answer = await deliver(http, "ci", *signed({"session": "b1", "status": "failed"},
                                                   "from-env"))
        assert answer.status == 202, answer.body
        wrong = await deliver(http, "ci", *signed({"session": "b2", "status": "failed"}))
        assert wrong.status == 401
        assert await session_ids(http) == ["b1"]


async def turn_of(http: Http, sid: str) -> list[dict[str, Any]]:
    """The session's events from the start until its first turn.completed (over SSE)."""
    out: list[dict[str, Any]] = []
    async with sse(http, sid) as reader:
        async with asyncio.timeout(15):
            while not out or out[-1]["type"] != "turn.completed":
                message = await reader.next(15)
                assert message is not None, "the stream ended"
                out.append(message.event)
    return out


async def test_webhook_wakes_echo_as_a_user_message(
    hub_factory: HubFactory, tmp_path: Path, sandbox_problem: str | None,
) -> None:
    """A hook whose type is user.message wakes the echo agent (default wake_on): the turn
    ends in turn.completed with echo's answer."""
    if sandbox_problem:
        pytest.skip(sandbox_problem)
    hub = await hook_hub(hub_factory, tmp_path)
    async with http_client(hub) as http:
        answer = await deliver(http, "chat", *signed({"session": "c1", "id": "m1",
                                                      "text": "hello from a webhook"}))
        assert answer.status == 202, answer.body
        events = await turn_of(http, "c1")
    types = [e["type"] for e in events]
    assert types[:2] == ["session.created", "user.message"]
    replies = [e["data"]["text"] for e in events if e["type"] == "agent.message"]
    assert replies and replies[0].startswith("echo: hello from a webhook")
    assert events[-1]["type"] == "turn.completed"


async def test_pull_request_wakes_an_agent_whose_wake_on_has_it(
    hub_factory: HubFactory, tmp_path: Path, sandbox_problem: str | None,
) -> None:
    """GitHub's pull_request to a hook of an agent with github.pull_request in wake_on:
    the agent is prompted with the event and the turn completes; a ping to the same
    session (not in wake_on) starts no turn."""
    if sandbox_problem:
        pytest.skip(sandbox_problem)
    hub = await hook_hub(hub_factory, tmp_path)
    async with http_client(hub) as http:
        answer = await deliver(http, "pr-review", *delivery("pull_request"))
        assert answer.status == 202, answer.body
        assert answer.body["sessionId"] == "review-42"
        events = await turn_of(http, "review-42")
    replies = [e["data"]["text"] for e in events if e["type"] == "agent.message"]
    assert replies and replies[0].startswith("echo: Event github.pull_request: ")
    assert '"number":42' in replies[0]
