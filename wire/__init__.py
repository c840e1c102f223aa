"""The wire contract and the building blocks every actor shares.

This package imports no actor (``relay``, ``clients``, ``interceptor``, ``doormat``):
the actors import it, never the other way round. It does no network I/O.
"""
