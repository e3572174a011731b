"""axtui's benchmark suite: ``python -m bench [--quick] [--only W1,W2] [--peers floor,redis]``.

Each workload starts its own hub as a separate ``axtui serve`` process on a temp data dir
(durability ``full``) and drives it with ``HubClient``s from this process:

- W1 (:mod:`bench.w1_latency`): publish-to-delivery latency, 10 subscribers, 2,000 events/s.
- W2 (:mod:`bench.w2_throughput`): events/s to 10 subscribers with p99 under 50 ms.
- W3 (:mod:`bench.w3_catchup`): catch-up rate of one subscriber from seq 0, 100,000 events.
- W4 (:mod:`bench.w4_wake`): an agent's wake from suspended and from frozen.
- W5 (:mod:`bench.w5_idle`): hub memory with 1,000 suspended sessions, 2,000 connections.
- W6 (:mod:`bench.w6_start`): start time with 1,000 sessions on disk, clean and after SIGKILL.

W1 and W2 also measure two peers in the same run, with the same client harness
(:mod:`bench.harness`): the floor (:mod:`bench.floor`, a minimal Python hub) and Redis
Streams (:mod:`bench.redis_peer`).

See ``bench/README.md`` for what each measures, the targets, and the latest figures.
"""
