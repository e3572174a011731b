"""The hub's counters and gauges, rendered in the Prometheus text format for ``/metrics``."""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass, field

# Publish-to-commit latency buckets, in seconds.
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass
class Metrics:
    """Plain counters updated in place on the hot paths (no locks: one event loop)."""

    connections: int = 0
    sse_streams: int = 0
    cluster_owned: int = 0
    cluster_forwarded: int = 0
    cluster_takeovers: int = 0
    cluster_store_errors: int = 0
    store_reachable: bool = True  # cluster mode: whether Redis answered the last call
    http_requests: int = 0
    sessions_open: int = 0
    events_appended: int = 0
    deliveries: int = 0
    slow_disconnects: int = 0
    requests: int = 0
    errors: int = 0
    overloaded: int = 0
    quarantined_files: int = 0  # session files set aside in data_dir/quarantine
    background_errors: int = 0  # failures a background loop survived (logged, carried on)
    commit_counts: list[int] = field(default_factory=lambda: [0] * (len(COMMIT_BUCKETS) + 1))
    commit_sum: float = 0.0
    _failed: set[str] = field(default_factory=set)  # background work already logged in full

    def background_failed(self, log: logging.Logger, what: str, exc: BaseException) -> None:
        """Count a failure of background work, which carries on, and log it: with its
        traceback the first time for ``what``, in one line after that (a full disk must
        not fill the log too)."""
        self.background_errors += 1
        first = what not in self._failed
        self._failed.add(what)
        log.error("%s failed: %s; carrying on", what, exc,
                  exc_info=(type(exc), exc, exc.__traceback__) if first else None)

    def observe_commit(self, seconds: float) -> None:
        """Record one publish's time from queued to committed."""
        self.commit_counts[bisect.bisect_left(COMMIT_BUCKETS, seconds)] += 1
        self.commit_sum += seconds

    def render(self) -> str:
        """The Prometheus text exposition."""
        lines: list[str] = []

        def metric(name: str, kind: str, help_: str, value: float) -> None:
            lines.extend((f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{name} {value}"))

        metric("axtui_connections", "gauge", "Open client connections.", self.connections)
        metric("axtui_sse_streams", "gauge", "Open Server-Sent Events streams.",
               self.sse_streams)
        metric("axtui_http_requests_total", "counter", "HTTP API requests received.",
               self.http_requests)
        metric("axtui_sessions_open", "gauge", "Sessions with their database open.",
               self.sessions_open)
        metric("axtui_events_appended_total", "counter", "Events committed to session logs.",
               self.events_appended)
        metric("axtui_deliveries_total", "counter", "Events queued to subscribers.",
               self.deliveries)
        metric("axtui_slow_subscriber_disconnects_total", "counter",
               "Connections closed with 4429 for falling behind.", self.slow_disconnects)
        metric("axtui_requests_total", "counter", "JSON-RPC requests received.", self.requests)
        metric("axtui_request_errors_total", "counter", "Requests answered with an error.",
               self.errors)
        metric("axtui_overloaded_total", "counter", "Requests refused with -32029.",
               self.overloaded)
        metric("axtui_quarantined_files", "gauge",
               "Session files set aside in data_dir/quarantine (they could not be used).",
               self.quarantined_files)
        metric("axtui_background_errors_total", "counter",
               "Failures of background work (idle close, catalog writes) that were logged"
               " and survived.", self.background_errors)
        metric("axtui_cluster_owned_sessions", "gauge",
               "Sessions this replica owns (cluster mode).", self.cluster_owned)
        metric("axtui_cluster_forwarded_total", "counter",
               "Requests forwarded to the owner of their session.", self.cluster_forwarded)
        metric("axtui_cluster_takeovers_total", "counter",
               "Sessions taken over from no owner or a lost one.", self.cluster_takeovers)
        metric("axtui_cluster_store_errors_total", "counter",
               "Calls to the cluster store (Redis) that failed.", self.cluster_store_errors)
        name = "axtui_publish_commit_seconds"
        lines += [f"# HELP {name} Time from a publish being queued to its commit.",
                  f"# TYPE {name} histogram"]
        cumulative = 0
        for bound, count in zip(COMMIT_BUCKETS, self.commit_counts, strict=False):
            cumulative += count
            lines.append(f'{name}_bucket{{le="{bound}"}} {cumulative}')
        cumulative += self.commit_counts[-1]
        lines += [f'{name}_bucket{{le="+Inf"}} {cumulative}',
                  f"{name}_sum {self.commit_sum:.6f}", f"{name}_count {cumulative}"]
        return "\n".join(lines) + "\n"
