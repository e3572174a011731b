"""axtui's benchmark suite: ``python -m bench [--quick] [--only W1,W3,W6]``.

Each workload starts its own hub as a separate ``axtui serve`` process on a temp data dir
(durability ``full``) and drives it with ``HubClient``s from this process:

- W1 (:mod:`bench.w1_latency`): publish-to-delivery latency, 10 subscribers, 2,000 events/s.
- W3 (:mod:`bench.w3_catchup`): catch-up rate of one subscriber from seq 0, 100,000 events.
- W6 (:mod:`bench.w6_start`): start time with 1,000 sessions on disk, clean and after SIGKILL.

See ``bench/README.md`` for what each measures, the targets, and the latest figures.
"""
