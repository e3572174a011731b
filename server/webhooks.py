"""Webhooks (http.md §6), with no I/O: their configuration, signatures and templates.

A sender (GitHub, a CI system) POSTs its own JSON to ``/v1/hooks/<name>``. The HTTP
route calls, in this order:

1. :func:`verify` on the raw body, before anything is parsed: the HMAC-SHA256 of the
   body under the hook's secret, compared in constant time with ``X-Hub-Signature-256``
   (``signature: github``) or ``X-Axtui-Signature`` (``signature: hmac-sha256``).
2. :func:`render` on the decoded body: the :class:`HookEvent` to publish, its session id,
   type and idempotency key made from the hook's :class:`Template`\\ s.

Templates hold literal text and placeholders: ``{json.a.b}`` is a field of the JSON body
(a number indexes an array: ``{json.commits.0.id}``), ``{header.Name}`` a request header
(any case). Strings are used as they are, numbers and booleans as their JSON text; a
field that is absent, null, an object or an array is missing, and raises
:class:`MissingField` (the route answers 422). A session id or type made from a
template is lowercased, then every character a session id may not hold becomes ``-``
and every character a type may not hold becomes ``_`` (``-`` is not allowed in a type).
A result that is still not a session id or type (empty, too long, a wrong first
character) raises :class:`~server.protocol.InvalidParams` as ``session/publish`` would.
An idempotency key longer than :data:`~server.protocol.MAX_IDEMPOTENCY_KEY_LEN` is
replaced by ``sha256:<hex of its SHA-256>``, so long keys still deduplicate.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from server import protocol
from server.configvalues import AGENT_ID, choice, fields, nonempty, opt_str, section
from server.protocol import InvalidParams

Signature = Literal["github", "hmac-sha256", "none"]
SIGNATURE_HEADERS: Mapping[str, str] = {"github": "X-Hub-Signature-256",
                                        "hmac-sha256": "X-Axtui-Signature"}
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_JSON_FIELD = re.compile(r"json((?:\.[A-Za-z0-9_-]+)+)")
_HEADER_FIELD = re.compile(r"header\.([A-Za-z0-9_-]+)")
_NOT_IN_SESSION_ID = re.compile(r"[^a-z0-9._-]")
_NOT_IN_TYPE = re.compile(r"[^a-z0-9_.]")
_SHOWN = 60  # characters of a bad value quoted back in an error message


class MissingField(InvalidParams):
    """A template's field is not in the request; ``placeholder`` names it (``json.a.b``).

    Its ``data`` is ``{"param": placeholder}``; the route answers it with 422 (an
    :class:`~server.protocol.InvalidParams` that is not a missing field is a 400)."""

    def __init__(self, hook: str, placeholder: str, template: str) -> None:
        super().__init__(f"webhook {hook}: the request has no {placeholder}, which the"
                         f" {template} template needs", {"param": placeholder})
        self.placeholder = placeholder


@dataclass(frozen=True)
class Field:
    """One placeholder: where its value comes from (``json`` or ``header``) and the path."""

    placeholder: str
    source: Literal["json", "header"]
    path: tuple[str, ...]


@dataclass(frozen=True)
class Template:
    """A parsed template: literal strings and :class:`Field`\\ s, in order."""

    text: str
    parts: tuple[str | Field, ...]

    @classmethod
    def parse(cls, text: str, key: str) -> Template:
        """Parse ``text``; a bad placeholder or a stray brace raises ``ValueError("key: ...")``."""
        parts: list[str | Field] = []
        end = 0
        for match in _PLACEHOLDER.finditer(text):
            parts.append(_literal(text[end:match.start()], key))
            parts.append(_field(match[1], key))
            end = match.end()
        parts.append(_literal(text[end:], key))
        return cls(text, tuple(part for part in parts if part != ""))

    @property
    def fields(self) -> tuple[Field, ...]:
        """The placeholders, in order."""
        return tuple(part for part in self.parts if isinstance(part, Field))

    @property
    def prefix(self) -> str:
        """The literal text before the first placeholder."""
        first = self.parts[0] if self.parts else ""
        return first if isinstance(first, str) else ""

    def render(self, body: object, headers: Mapping[str, str], hook: str, name: str) -> str:
        """The text with each placeholder replaced; :class:`MissingField` for one absent
        (``hook`` and ``name``, the hook and which of its templates this is, say where)."""
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value = (_json_value(body, part.path) if part.source == "json"
                     else header(headers, part.path[0]))
            if value is None:
                raise MissingField(hook, part.placeholder, name)
            out.append(value)
        return "".join(out)


def _literal(text: str, key: str) -> str:
    for brace in "{}":
        if brace in text:
            raise ValueError(f"{key}: unbalanced {brace!r} in the template (placeholders are"
                             " {json.field} or {header.Name}; braces cannot be literal)")
    return text


def _field(inner: str, key: str) -> Field:
    if match := _JSON_FIELD.fullmatch(inner):
        return Field(inner, "json", tuple(match[1][1:].split(".")))
    if match := _HEADER_FIELD.fullmatch(inner):
        return Field(inner, "header", (match[1],))
    raise ValueError(f"{key}: unknown placeholder {{{inner}}}; use {{json.<field>[.<field>...]}}"
                     " (letters, digits, '_', '-') or {header.<Name>}")


def _json_value(body: object, path: tuple[str, ...]) -> str | None:
    """The field at ``path`` as text: strings as they are, numbers and booleans as JSON."""
    node = body
    for step in path:
        if isinstance(node, dict):
            node = node.get(step)
        elif isinstance(node, list) and step.isdigit() and int(step) < len(node):
            node = node[int(step)]
        else:
            return None
    if isinstance(node, bool):
        return "true" if node else "false"
    if isinstance(node, int | float):
        return str(node)
    return node if isinstance(node, str) else None


def header(headers: Mapping[str, str], name: str) -> str | None:
    """The value of header ``name`` in any case (``headers.get`` may already ignore case,
    as aiohttp's ``CIMultiDictProxy`` does; a plain mapping is searched)."""
    value = headers.get(name)
    if value is not None:
        return value
    folded = name.casefold()
    return next((v for k, v in headers.items() if k.casefold() == folded), None)


# --- the configuration ------------------------------------------------------------------

@dataclass(frozen=True)
class WebhookConfig:
    """One sender under ``webhooks:``: its secret and signature scheme, and the templates
    of the session, type and idempotency key of the events it publishes."""

    name: str
    secret: str | None = field(repr=False)
    signature: Signature
    session: Template
    type: Template
    idempotency: Template | None = None
    agent: str | None = None  # the agent of a session this hook creates


@dataclass(frozen=True)
class HookEvent:
    """What a webhook delivery publishes: the body as ``data``, to ``session_id``."""

    session_id: str
    type: str
    idempotency_key: str | None
    data: dict[str, Any]


def _template(value: object, key: str) -> Template:
    return Template.parse(nonempty(value, key), key)


_WEBHOOK: dict[str, Callable[[object, str], Any]] = {
    "secret": nonempty, "signature": choice("github", "hmac-sha256", "none"),
    "session": _template, "type": _template,
    "idempotency": lambda v, k: None if v is None else _template(v, k), "agent": opt_str,
}


def parse_webhooks(raw: object, *, local_mode: bool,
                   agents: Collection[str]) -> dict[str, WebhookConfig]:
    """The ``webhooks:`` section (a mapping of hook name to entry), checked.

    ``local_mode``: no ``auth.tokens`` (only then is ``signature: none`` allowed);
    ``agents``: the configured agent ids, which ``agent`` must be one of. Raises
    ``ValueError("webhooks.<name>.<key>: ...")`` for the first problem.
    """
    return {name: _webhook(name, entry, local_mode, agents)
            for name, entry in section(raw, "webhooks", None).items()}


def _webhook(name: str, raw: object, local_mode: bool, agents: Collection[str]) -> WebhookConfig:
    key = f"webhooks.{name}"
    if not AGENT_ID.fullmatch(name):
        raise ValueError(f"{key}: bad webhook name; use up to 64 letters, digits, '.', '_' or"
                         " '-', starting with a letter or digit")
    values = fields(raw, key, _WEBHOOK)
    for required in ("signature", "session", "type"):
        if values.get(required) is None:
            what = " (github, hmac-sha256 or none)" if required == "signature" else ""
            raise ValueError(f"{key}.{required}: required{what}")
    if values["signature"] == "none":
        if not local_mode:
            raise ValueError(f"{key}.signature: none is only allowed in local mode (no"
                             " auth.tokens); use github or hmac-sha256 with a secret")
        if values.get("secret") is not None:
            raise ValueError(f"{key}.secret: not used with signature: none; remove it or"
                             " choose github or hmac-sha256")
    elif values.get("secret") is None:
        raise ValueError(f"{key}.secret: required with signature: {values['signature']}"
                         ' (for example "${GITHUB_WEBHOOK_SECRET}")')
    agent = values.get("agent")
    if agent is not None and agent not in agents:
        raise ValueError(f"{key}.agent: no agent {agent!r} is configured (agents: "
                         + ", ".join(agents) + ")")
    _check_fixed(values["session"], f"{key}.session", _session_id)
    _check_fixed(values["type"], f"{key}.type", _event_type)
    prefix = _NOT_IN_TYPE.sub("_", values["type"].prefix.lower())
    if prefix.startswith(protocol.RESERVED_PREFIXES):
        raise ValueError(f"{key}.type: types starting with {prefix!r} are reserved for the hub"
                         " and agents; start it with your own prefix, such as github.")
    return WebhookConfig(name=name, secret=values.pop("secret", None), **values)


def _check_fixed(template: Template, key: str, make: Callable[[str], str]) -> None:
    """A template without placeholders is checked now rather than at each delivery."""
    if not template.fields:
        try:
            make(template.text)
        except protocol.ProtocolError as exc:
            raise ValueError(f"{key}: {template.text!r} gives {exc.message}") from None


# --- deliveries ---------------------------------------------------------------------------

def verify(hook: WebhookConfig, body: bytes, headers: Mapping[str, str]) -> bool:
    """Whether the request is signed with the hook's secret (always, for ``signature: none``).

    The signature header holds ``sha256=<hex HMAC-SHA256 of body>``; it is compared in
    constant time. A missing header, another prefix or a wrong digest is False.
    """
    if hook.signature == "none":
        return True
    given = header(headers, SIGNATURE_HEADERS[hook.signature])
    if hook.secret is None or given is None:
        return False
    scheme, _, digest = given.strip().partition("=")
    if scheme != "sha256":
        return False
    expected = hmac.new(hook.secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), digest.lower().encode("utf-8", "replace"))


def render(hook: WebhookConfig, body: object, headers: Mapping[str, str]) -> HookEvent:
    """The event a delivery publishes: ``body`` (the decoded JSON, an object) as its data.

    Raises :class:`MissingField` for a placeholder with no value, and
    :class:`~server.protocol.InvalidParams` (or :class:`~server.protocol.Forbidden`, for a
    reserved type) when the body is not an object or a result is not usable.
    """
    if not isinstance(body, dict):
        raise InvalidParams(f"webhook {hook.name}: the body must be a JSON object",
                            {"param": "body"})

    def made(template: Template, name: str, make: Callable[[str], str]) -> str:
        rendered = template.render(body, headers, hook.name, name)
        try:
            return make(rendered)
        except protocol.ProtocolError as exc:
            raise type(exc)(f"webhook {hook.name}: the {name} template {template.text!r}"
                            f" gives {exc.message}", exc.data) from None

    session_id = made(hook.session, "session", _session_id)
    event_type = made(hook.type, "type", _event_type)
    key = None if hook.idempotency is None else made(hook.idempotency, "idempotency",
                                                     _idempotency_key)
    return HookEvent(session_id, event_type, key, body)


def _shown(value: str) -> str:
    return repr(value if len(value) <= _SHOWN else value[:_SHOWN] + "...")


def _session_id(rendered: str) -> str:
    """``rendered`` made a session id; :class:`InvalidParams` when that is impossible."""
    value = _NOT_IN_SESSION_ID.sub("-", rendered.lower())
    if not protocol.SESSION_ID_RE.fullmatch(value):
        raise InvalidParams(
            f"{_shown(value)}, which is not a session id (1 to 128 letters, digits, '.', '_'"
            " or '-', starting with a letter or digit)", {"param": "sessionId"})
    return value


def _event_type(rendered: str) -> str:
    """``rendered`` made an event type; :class:`InvalidParams`, or
    :class:`~server.protocol.Forbidden` for a reserved type, when that is impossible."""
    value = _NOT_IN_TYPE.sub("_", rendered.lower())
    try:
        return protocol.check_event_type(value, client=True)
    except InvalidParams:
        raise InvalidParams(
            f"{_shown(value)}, which is not an event type (dot-separated words of a-z, 0-9"
            f" and '_', starting with a letter, at most {protocol.MAX_TYPE_LEN} characters)",
            {"param": "type"}) from None
    except protocol.Forbidden as exc:
        raise protocol.Forbidden(f"{_shown(value)}, a type reserved for the hub and agents",
                                 exc.data) from None


def _idempotency_key(rendered: str) -> str:
    """``rendered`` as a key, hashed when longer than the protocol allows."""
    if not rendered:
        raise InvalidParams("an empty key", {"param": "idempotencyKey"})
    if len(rendered) <= protocol.MAX_IDEMPOTENCY_KEY_LEN:
        return rendered
    digest = hashlib.sha256(rendered.encode("utf-8", "surrogatepass")).hexdigest()
    return f"sha256:{digest}"
