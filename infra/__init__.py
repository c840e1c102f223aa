"""The I/O helpers every service uses, each written once: the MQTT transport
(``infra.transport``, with its publish queue in ``infra.outbox``), an account's session
with the relay over it (``infra.link``), SQLite stores (``infra.sqlite``), atomic and
private files (``infra.files``), back-off (``infra.retry``), SIGINT/SIGTERM into a stop
event (``infra.signals``).

Imports ``wire`` only (and the MQTT client library, in ``infra.transport`` alone): the
relay may import it, and it imports no actor.
"""
