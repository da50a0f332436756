"""The command line and the demo: the top floor, which composes streams, the core, the agents
and the lab (``limitstream --help``; ``python -m limitstream`` is the same)."""
