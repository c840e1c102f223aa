"""Helpers that test folders share (fixtures stay in the conftest.py files).

* ``warrants``: the court's test keys, policy and directory, and warrant builders.
"""
