"""The long-running services of the compose demo, one module each, over one runner.

``runner``: the lifecycle they share (start with retries until connected, heartbeat,
SIGTERM -> clean stop, ``service.*`` events on stdout). ``enterprise``, ``device``,
``tap``: what each runs. ``policy``: the IT policy file an enterprise pushes to its
devices. The command lines are doormat/commands/serve.py (and ``doormat health``,
doormat/commands/health.py); the relay has its own command (relay/main.py).
"""
