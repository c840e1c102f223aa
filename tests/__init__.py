"""The test suite, a package: test modules are ``tests.<folder>.test_...``.

Every folder here has an ``__init__.py``, so pytest (default "prepend" import mode)
puts the repository root on ``sys.path``, never a test folder: ``import relay`` is the
product's package everywhere, and a folder's helper module is imported by its full name
(``from tests.relay.relay_harness import ...``). Helpers that several folders use live
in ``tests/support/``; fixtures in the conftest.py files.
"""
