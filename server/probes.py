"""``/healthz`` and ``/metrics``: the same answers on the websocket port and the HTTP port."""

from __future__ import annotations

from http import HTTPStatus

from server.auth import Authenticator
from server.metrics import Metrics
from server.protocol import Role

METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def health(metrics: Metrics) -> tuple[HTTPStatus, str]:
    """``503`` while the cluster's store cannot be reached (cluster mode), else ``ok``, and
    on a second line the session files set aside, if any: the hub serves every other
    session, so it is healthy, but an operator should look."""
    if not metrics.store_reachable:
        return (HTTPStatus.SERVICE_UNAVAILABLE,
                "unavailable: the cluster store (Redis) cannot be reached\n")
    quarantined = metrics.quarantined_files
    if not quarantined:
        return HTTPStatus.OK, "ok\n"
    return (HTTPStatus.OK, f"ok\n{quarantined} session file{'s' if quarantined != 1 else ''}"
            " set aside in the data dir's quarantine folder: see hub.log\n")


def metrics_answer(
    auth: Authenticator, metrics: Metrics, header: str | None
) -> tuple[HTTPStatus, str]:
    """The status and text of ``/metrics`` for a request with ``Authorization`` ``header``:
    open in local mode (loopback only); in token mode only for an admin token as ``Bearer``,
    since they tell anyone how busy the hub is and with what (401 is sent with
    ``WWW-Authenticate: Bearer``)."""
    if not auth.local_mode:
        principal = auth.principal_for_header(header) if header else None
        if principal is None:
            return (HTTPStatus.UNAUTHORIZED, "an admin token is needed for /metrics:"
                    " send it as Authorization: Bearer <token>\n")
        if principal.role < Role.ADMIN or principal.kind != "client":
            return (HTTPStatus.FORBIDDEN, f"/metrics needs an admin token; {principal.name} is"
                    f" {principal.role.label}\n")
    return HTTPStatus.OK, metrics.render()
