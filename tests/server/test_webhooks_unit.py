"""Tests for server/webhooks.py: signatures, templates on real GitHub deliveries, the
sanitizing of session ids and types, and the ``webhooks:`` configuration."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from server.config import load_config
from server.protocol import MAX_IDEMPOTENCY_KEY_LEN, Forbidden, InvalidParams
from server.webhooks import (
    HookEvent,
    MissingField,
    WebhookConfig,
    parse_webhooks,
    render,
    verify,
)

DATA = Path(__file__).parent / "data" / "github"
EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.yaml"
GITHUB_SECRET = "It's a Secret to Everybody"  # what the fixtures are signed with
AGENTS = ("echo", "demo", "llm")
# http.md §6, as written there.
HTTP_MD = """
webhooks:
  github:
    secret: "${GITHUB_WEBHOOK_SECRET}"
    signature: github
    session: "gh-{json.repository.name}-{json.pull_request.number}"
    type: "github.{header.X-GitHub-Event}"
    idempotency: "{header.X-GitHub-Delivery}"
    agent: demo
  ci:
    secret: "${CI_WEBHOOK_SECRET}"
    signature: hmac-sha256
    session: "{json.session}"
    type: "ci.{json.status}"
"""


def delivery(event: str) -> tuple[bytes, CIMultiDictProxy[str]]:
    """The raw body of a GitHub delivery and its headers, as aiohttp hands them over."""
    body = (DATA / f"{event}.json").read_bytes()
    headers = json.loads((DATA / f"{event}.headers.json").read_text(encoding="utf-8"))
    return body, CIMultiDictProxy(CIMultiDict(headers))


def hook(session: str = "{json.session}", type_: str = "ci.{json.status}",
         idempotency: str | None = None, signature: str = "hmac-sha256",
         secret: str | None = "ci-secret") -> WebhookConfig:
    """A hook made through the config parser, as the hub would make it."""
    entry: dict[str, Any] = {"signature": signature, "session": session, "type": type_}
    if secret is not None:
        entry["secret"] = secret
    if idempotency is not None:
        entry["idempotency"] = idempotency
    return parse_webhooks({"ci": entry}, local_mode=True, agents=AGENTS)["ci"]


def github_hook(tmp_path: Path) -> WebhookConfig:
    """The github hook of http.md §6, loaded from a file, with the fixtures' secret."""
    path = tmp_path / "config.yaml"
    path.write_text(HTTP_MD, encoding="utf-8")
    environ = {"GITHUB_WEBHOOK_SECRET": GITHUB_SECRET, "CI_WEBHOOK_SECRET": "x"}
    return load_config(path, environ).webhooks["github"]


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# --- signatures -------------------------------------------------------------------------------

def test_github_docs_test_vector() -> None:
    """The example of GitHub's "Validating webhook deliveries" page verifies."""
    headers = {"X-Hub-Signature-256":
               "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"}
    assert verify(hook(signature="github", secret=GITHUB_SECRET), b"Hello, World!", headers)


@pytest.mark.parametrize("event", ["ping", "pull_request"])
def test_github_deliveries_verify_over_the_raw_body(event: str, tmp_path: Path) -> None:
    """GitHub's own deliveries verify; one byte changed, or another secret, does not."""
    body, headers = delivery(event)
    assert verify(github_hook(tmp_path), body, headers)
    assert not verify(github_hook(tmp_path), body.replace(b'"', b"'", 1), headers)
    assert not verify(hook(signature="github", secret="another secret"), body, headers)


@pytest.mark.parametrize(("name", "value"), [
    ("missing", None),
    ("empty", ""),
    ("sha1 prefix", "sha1={sha1}"),
    ("no prefix", "{hex}"),
    ("other scheme", "sha512={hex}"),
    ("truncated", "sha256={short}"),
    ("not hex", "sha256=" + "z" * 64),
    ("non-ascii", "sha256=é" + "0" * 63),
])
def test_bad_or_missing_signature_headers_fail(name: str, value: str | None) -> None:
    """A missing header, another prefix or a wrong digest is refused (never an error)."""
    body = b'{"session":"s1","status":"ok"}'
    digest = hmac.new(b"ci-secret", body, hashlib.sha256).hexdigest()
    headers = {} if value is None else {"X-Axtui-Signature": value.format(
        hex=digest, short=digest[:-2],
        sha1=hmac.new(b"ci-secret", body, hashlib.sha1).hexdigest())}
    assert not verify(hook(), body, headers), name


def test_each_scheme_reads_its_own_header() -> None:
    """hmac-sha256 reads X-Axtui-Signature (any case) and github X-Hub-Signature-256."""
    body = b'{"session":"s1","status":"ok"}'
    good = sign("ci-secret", body)
    assert verify(hook(), body, {"x-axtui-signature": good})
    assert not verify(hook(), body, {"X-Hub-Signature-256": good})
    assert verify(hook(signature="github"), body, {"X-HUB-SIGNATURE-256": good})
    assert not verify(hook(signature="github"), body, {"X-Axtui-Signature": good})


def test_signature_none_accepts_anything() -> None:
    """signature: none (local mode only) verifies every request."""
    assert verify(hook(signature="none", secret=None), b"anything", {})


def test_digests_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """verify compares with hmac.compare_digest, for a right and a wrong signature."""
    calls: list[tuple[bytes, bytes]] = []
    original = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return original(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    body = b'{"session":"s1","status":"ok"}'
    assert verify(hook(), body, {"X-Axtui-Signature": sign("ci-secret", body)})
    assert not verify(hook(), body, {"X-Axtui-Signature": sign("wrong", body)})
    assert len(calls) == 2


# --- templates on GitHub's deliveries ----------------------------------------------------------

def test_pull_request_delivery_renders_the_http_md_templates(tmp_path: Path) -> None:
    """A pull_request delivery gives session gh-hello-world-42, type github.pull_request,
    the delivery id as key, and the whole body as data."""
    body, headers = delivery("pull_request")
    event = render(github_hook(tmp_path), json.loads(body), headers)
    assert event == HookEvent("gh-hello-world-42", "github.pull_request",
                              "b2e7f4a0-0870-11ef-9a63-2a8c4d61e0b5", json.loads(body))
    assert event.data["pull_request"]["title"].startswith("Fix the “smart quotes”")


def test_ping_delivery_misses_the_pull_request_number(tmp_path: Path) -> None:
    """GitHub's ping has no pull_request: the session template's field is missing, and the
    error names it (the route answers 422)."""
    body, headers = delivery("ping")
    with pytest.raises(MissingField) as caught:
        render(github_hook(tmp_path), json.loads(body), headers)
    assert caught.value.placeholder == "json.pull_request.number"
    assert caught.value.to_json()["code"] == -32602
    assert caught.value.to_json()["data"] == {"param": "json.pull_request.number"}
    assert "session template" in caught.value.message
    assert isinstance(caught.value, InvalidParams)


def test_ping_delivery_with_a_repository_template() -> None:
    """A session per repository takes the ping: type github.ping, keyed by its delivery."""
    body, headers = delivery("ping")
    ping = hook("gh-{json.repository.full_name}", "github.{header.x-github-event}",
                "{header.X-GitHub-Delivery}", signature="github", secret=GITHUB_SECRET)
    event = render(ping, json.loads(body), headers)
    assert (event.session_id, event.type) == ("gh-octo-org-hello-world", "github.ping")
    assert event.idempotency_key == "9a5c0e6e-0870-11ef-8c1e-7d3b1f0a8f2c"
    assert event.data["zen"] == "Keep it logically awesome."


def test_headers_are_found_in_any_case_in_a_plain_mapping(tmp_path: Path) -> None:
    """A plain dict with lowercase names serves {header.X-GitHub-Event}."""
    body, headers = delivery("pull_request")
    lower = {name.lower(): value for name, value in headers.items()}
    assert render(github_hook(tmp_path), json.loads(body), lower).type == "github.pull_request"


@pytest.mark.parametrize(("value", "text"), [
    (7, "7"), (-1.5, "-1.5"), (True, "true"), (False, "false"), ("Ab", "ab"), ("", ""),
])
def test_scalars_render_as_text(value: object, text: str) -> None:
    """Strings as they are, numbers and booleans as their JSON text."""
    event = render(hook("s-{json.v}x"), {"v": value, "status": "ok"}, {})
    assert event.session_id == f"s-{text}x"


def test_array_items_are_reached_by_index() -> None:
    """{json.commits.1.id} is the id of the second commit."""
    body = {"commits": [{"id": "a1"}, {"id": "b2"}], "status": "ok"}
    assert render(hook("c-{json.commits.1.id}"), body, {}).session_id == "c-b2"


@pytest.mark.parametrize(("session", "body", "placeholder"), [
    ("{json.session}", {}, "json.session"),
    ("{json.session}", {"session": None}, "json.session"),
    ("{json.session}", {"session": {"id": 1}}, "json.session"),
    ("{json.session}", {"session": [1]}, "json.session"),
    ("{json.a.b}", {"a": "text"}, "json.a.b"),
    ("c-{json.commits.0}", {"commits": []}, "json.commits.0"),
    ("c-{json.commits.x}", {"commits": [1]}, "json.commits.x"),
    ("r-{header.X-Run}", {}, "header.X-Run"),
])
def test_absent_null_object_and_array_fields_are_missing(
        session: str, body: dict[str, Any], placeholder: str) -> None:
    """A field that is absent, null, an object or an array raises MissingField naming it."""
    with pytest.raises(MissingField) as caught:
        render(hook(session), {**body, "status": "ok"}, {"X-Other": "1"})
    assert caught.value.data == {"param": placeholder}


def test_a_missing_type_field_names_the_type_template() -> None:
    """The message says which template needed the field."""
    with pytest.raises(MissingField, match="the type template needs"):
        render(hook(), {"session": "s1"}, {})


# --- sanitizing --------------------------------------------------------------------------------

@pytest.mark.parametrize(("session", "expected"), [
    ("Octo-Org/Hello World#42", "octo-org-hello-world-42"),
    ("Release ÉTÉ 2024.1_rc", "release--t--2024.1_rc"),
    ("A" * 128, "a" * 128),
])
def test_session_ids_are_lowercased_and_sanitized(session: str, expected: str) -> None:
    """Uppercase is lowered and every character a session id may not hold becomes '-'."""
    assert render(hook(), {"session": session, "status": "ok"}, {}).session_id == expected


def test_types_are_lowercased_and_sanitized() -> None:
    """Uppercase is lowered and every character a type may not hold becomes '_' ('-' is
    not allowed in a type)."""
    event = render(hook(), {"session": "s1", "status": "Build-Done/OK"}, {})
    assert event.type == "ci.build_done_ok"


@pytest.mark.parametrize(("session", "why"), [
    ("", "empty"), ("-x", "starts with -"), ("_x", "starts with _"), ("a" * 129, "too long"),
])
def test_unusable_session_ids_are_invalid_params(session: str, why: str) -> None:
    """A session id that sanitizing cannot make valid is the error session/publish gives."""
    with pytest.raises(InvalidParams) as caught:
        render(hook(), {"session": session, "status": "ok"}, {})
    assert caught.value.data == {"param": "sessionId"}, why
    assert "webhook ci: the session template '{json.session}' gives" in caught.value.message
    assert len(caught.value.message) < 300  # a huge value is not echoed whole


@pytest.mark.parametrize(("template", "status"), [
    ("ci.{json.status}", ""), ("ci.{json.status}", "."), ("{json.status}", "9lives"),
    ("ci.{json.status}", "a" * 62),
])
def test_unusable_types_are_invalid_params(template: str, status: str) -> None:
    """An empty segment, a digit first or over 64 characters is not a type."""
    with pytest.raises(InvalidParams) as caught:
        render(hook(type_=template), {"session": "s1", "status": status}, {})
    assert caught.value.data == {"param": "type"}
    assert "not an event type" in caught.value.message


def test_a_reserved_type_from_the_body_is_forbidden() -> None:
    """A template that yields turn.completed is refused as a client's publish would be."""
    with pytest.raises(Forbidden, match="reserved"):
        render(hook(type_="{json.status}"), {"session": "s1", "status": "Turn.Completed"}, {})


def test_the_body_must_be_an_object() -> None:
    """A JSON array or string cannot become an event's data."""
    for body in ([1, 2], "text", 3, None):
        with pytest.raises(InvalidParams) as caught:
            render(hook(), body, {})
        assert caught.value.data == {"param": "body"}


# --- idempotency keys --------------------------------------------------------------------------

def test_idempotency_keys_up_to_the_limit_are_kept_as_they_are() -> None:
    """A key of 128 characters is used verbatim, case included."""
    key = "Ab" * (MAX_IDEMPOTENCY_KEY_LEN // 2)
    event = render(hook(idempotency="{header.X-Key}"), {"session": "s", "status": "ok"},
                   {"X-Key": key})
    assert event.idempotency_key == key


def test_long_idempotency_keys_are_hashed() -> None:
    """A longer key becomes sha256:<hex>: the same for a redelivery, different otherwise."""
    body = {"session": "s", "status": "ok", "id": "k" * 200}
    first = render(hook(idempotency="{json.id}"), body, {}).idempotency_key
    again = render(hook(idempotency="{json.id}"), dict(body), {}).idempotency_key
    other = render(hook(idempotency="{json.id}"), {**body, "id": "k" * 201}, {}).idempotency_key
    assert first == again == "sha256:" + hashlib.sha256(b"k" * 200).hexdigest()
    assert other != first and other is not None and len(other) <= MAX_IDEMPOTENCY_KEY_LEN


def test_an_empty_idempotency_key_is_invalid() -> None:
    """An empty key would silently turn deduplication off: it is refused."""
    with pytest.raises(InvalidParams) as caught:
        render(hook(idempotency="{header.X-Key}"), {"session": "s", "status": "ok"},
               {"X-Key": ""})
    assert caught.value.data == {"param": "idempotencyKey"}


def test_no_idempotency_template_means_no_key() -> None:
    """Without idempotency: every delivery is a new event."""
    assert render(hook(), {"session": "s", "status": "ok"}, {}).idempotency_key is None
