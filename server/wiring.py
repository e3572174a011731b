"""All the wiring in one place: the hub's parts, made from the config and put together."""

from __future__ import annotations

from server.auth import Authenticator
from server.catalog import Catalog
from server.config import Config
from server.dispatch import Dispatcher
from server.hub import Hub
from server.methods import HubContext
from server.metrics import Metrics
from server.registry import SessionRegistry
from server.supervisor import Supervisor
from server.watch import WatchBroadcaster


def build_hub(config: Config) -> Hub:
    """A hub for ``config``, ready to :meth:`~Hub.start`.

    The registry tells the watch broadcaster of changed and deleted sessions, and the
    supervisor of committed events (its agents wake on them) and deleted sessions.
    """
    metrics = Metrics()
    catalog = Catalog(config.hub.data_dir, metrics)
    sessions = SessionRegistry(config.hub, catalog, config.agents, metrics)
    auth = Authenticator(config.tokens)
    supervisor = Supervisor(sessions, config.hub.data_dir, config.agents, auth.agent_credentials)
    watch = WatchBroadcaster()
    sessions.on_changed.append(watch.session_changed)
    sessions.on_deleted.append(watch.session_deleted)
    sessions.on_committed.append(supervisor.events_committed)
    sessions.on_deleted.append(supervisor.session_deleted)
    context = HubContext(sessions, config.agents, supervisor, watch, config.hub.max_event_bytes)
    dispatcher = Dispatcher(context, auth, metrics, config.hub.max_inflight, config.hub.data_dir)
    cluster = None
    if config.cluster is not None:
        from server.cluster import build_cluster  # redis: imported only in cluster mode

        cluster = build_cluster(config.cluster, config.hub.durability, config.hub.query_timeout,
                                metrics, sessions, supervisor, auth, dispatcher, watch)
    http = None
    if config.hub.http_port is not None:
        from server.httpapi import HttpApi  # aiohttp: imported only when it serves

        http = HttpApi(config, auth, dispatcher, metrics)
    return Hub(config, metrics=metrics, catalog=catalog, sessions=sessions,
               supervisor=supervisor, auth=auth, watch=watch, dispatcher=dispatcher,
               http=http, cluster=cluster)
