"""The I/O helpers every service uses: the MQTT transport (``infra.transport``, with its
publish queue in ``infra.outbox``), an account's session with the relay over it
(``infra.link``), back-off (``infra.retry``).

Imports ``wire`` only (and the MQTT client library, in ``infra.transport`` alone): the
relay may import it, and it imports no actor.
"""
