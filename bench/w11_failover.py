"""W11 failover: from SIGKILL of a session's owner until the session accepts a publish on
another replica.

3 replicas on one Redis (``appendfsync always``), ``cluster.lease`` 1 s. Each of 10 rounds
(``--quick``: 3): a fresh session created through the victim (so it owns it) and one event
published to it there; a client connected to another replica (the survivor) publishes one
event to it too (forwarded to the owner, so the survivor holds a live peer connection to
the victim, as it would under load). After a seeded random wait of up to a renewal
interval (``lease`` / 3, so the kill lands anywhere in the renewal cycle) the victim gets
SIGKILL, and the clock starts. The survivor's client then publishes one keyed event
(the same ``idempotencyKey`` every attempt), again :data:`RETRY_INTERVAL` after each
refusal (-32029 while the dead owner's lease runs, or any other error), until one is
acknowledged: that is the round's figure. A new replica then takes the victim's place, so
every round starts with 3. Checked: the acknowledged seq is the one after the events
published before the kill (nothing lost, nothing doubled), and the session's head says so
through a third replica.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import statistics
import time
from pathlib import Path
from typing import Any

from bench import common
from bench.cluster import TOKEN, ClusterUnderTest, client, unavailable
from bench.common import Figure, WorkloadResult, at_most

REPLICAS = 3
ROUNDS, QUICK_ROUNDS = 10, 3
LEASE = 1.0
RETRY_INTERVAL = 0.005  # seconds between a refused publish and the next attempt
GIVE_UP = 30.0  # seconds after the kill
SEED = 11


async def one_round(victim: str, survivor: str, witness: str, kill: Any, wait: float,
                    n: int) -> tuple[dict[str, Any], list[str]]:
    """Create on ``victim``, publish through ``survivor``, ``kill()`` after ``wait`` s,
    then time the first publish ``survivor`` acknowledges."""
    async with client(victim, TOKEN) as owner:
        sid = (await owner.create_session(title=f"W11 round {n}"))["sessionId"]
        await owner.publish(sid, common.EVENT_TYPE, {"i": 1})
    problems: list[str] = []
    errors: dict[str, int] = {}
    async with client(survivor, TOKEN) as hub:
        expected = (await hub.publish(sid, common.EVENT_TYPE, {"i": 2}))["seq"] + 1
        await asyncio.sleep(wait)
        killed = time.perf_counter()
        kill()
        attempts = 0
        while True:
            attempts += 1
            try:
                ack = await hub.publish(sid, common.EVENT_TYPE, {"i": 3},
                                        idempotency_key=f"w11-{n}")
                break
            except Exception as exc:
                kind = type(exc).__name__
                errors[kind] = errors.get(kind, 0) + 1
                if time.perf_counter() - killed > GIVE_UP:
                    raise RuntimeError(f"no publish accepted within {GIVE_UP:g} s of the kill"
                                       f" (round {n}: {errors})") from exc
                await asyncio.sleep(RETRY_INTERVAL)
        seconds = time.perf_counter() - killed
    if ack["seq"] != expected or ack.get("duplicate"):
        problems.append(f"round {n}: the publish after the kill got seq {ack['seq']}"
                        f" (duplicate {ack.get('duplicate')}), {expected} expected")
    async with client(witness, TOKEN) as other:
        head = (await other.get_session(sid))["headSeq"]
    if head != expected:
        problems.append(f"round {n}: the head is {head} after the take-over, {expected}"
                        " expected")
    return {"seconds": seconds, "attempts": attempts, "errors": errors,
            "wait_before_kill": wait}, problems


def run(workdir: Path, *, quick: bool) -> WorkloadResult:
    """Run W11 on fresh servers under ``workdir``."""
    skipped = unavailable()
    if skipped is not None:
        print(f"W11: skipped: {skipped}")
        return WorkloadResult("W11", "failover", [], {"skipped": skipped})
    rounds = QUICK_ROUNDS if quick else ROUNDS
    rng = random.Random(SEED)
    details: dict[str, Any] = {"replicas": REPLICAS, "rounds": rounds, "lease_seconds": LEASE,
                               "retry_interval_seconds": RETRY_INTERVAL}
    problems: list[str] = []
    results = []
    with ClusterUnderTest(workdir, LEASE) as cluster:
        live = [cluster.start_replica() for _ in range(REPLICAS)]
        for n in range(rounds):
            victim, survivor, witness = live[n % 3], live[(n + 1) % 3], live[(n + 2) % 3]

            def kill(pid: int = victim.pid) -> None:
                os.kill(pid, signal.SIGKILL)

            out, trouble = common.run(one_round(victim.url, survivor.url, witness.url, kill,
                                                rng.uniform(0, LEASE / 3), n))
            victim.kill()  # reap it
            results.append(out)
            problems += trouble
            live[n % 3] = cluster.start_replica()
    times = sorted(r["seconds"] for r in results)
    details["rounds_detail"] = results
    median = statistics.median(times)
    return WorkloadResult("W11", f"failover, SIGKILL of the owner, lease {LEASE:g} s", [
        at_most("median", median, "s", 2 * LEASE),
        at_most("max", times[-1], "s", 2 * LEASE),
        Figure("min", times[0], "s"),
    ], details, problems)
