"""Helpers that test folders share (fixtures stay in the conftest.py files).

* ``polling``: ``until``, wait for a condition or fail with what was awaited.
* ``encoding``: ``b64`` / ``unb64`` / ``random_b64``, standard base64 as the tests
  write and read it.
* ``events``: ``EventsFile``, a JSON-lines event log read incrementally.
* ``mqtt``: reading an aiomqtt client for a while, up to a sentinel, or until enough.
* ``processes``: the ``python -m doormat relay`` command line; whether Mosquitto is
  installed.
* ``warrants``: the court's test keys, policy and directory, and warrant builders.
"""
