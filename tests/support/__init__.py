"""Helpers that test folders share (fixtures stay in the conftest.py files).

* ``polling``: ``until``, wait for a condition or fail with what was awaited.
* ``events``: ``EventsFile``, a JSON-lines event log read incrementally.
* ``warrants``: the court's test keys, policy and directory, and warrant builders.
"""
