"""The axtui hub: durable per-session event logs, live fan-out, structured state, agents."""

__version__ = "0.1.0"
