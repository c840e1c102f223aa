"""Every way the lawful-intercept side refuses an input, one exception class each.

A *refused warrant* is not an exception: ``wire.li.checks.check_warrant`` returns a
:class:`~wire.li.checks.Decision` with a reason code, so that it can be logged.
These exceptions are for inputs that cannot even be read (a warrant file that is not a
warrant, a trust store with a duplicate key, a corrupt state file) and for misuse of
the court's tools. Each carries a one-line message that says what is wrong.
"""

from __future__ import annotations


class InterceptError(ValueError):
    """Base class of every error raised by the lawful-intercept contracts (``wire.li``)
    and the interceptor's own modules (the court, the ledger)."""


class WarrantError(InterceptError):
    """Bytes or JSON that are not a well-formed warrant.

    ``code`` is the stable reason code a refusal carries: ``malformed`` or ``too-large``.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class TrustError(InterceptError):
    """A trust store, an agency public key or a policy that cannot be loaded."""


class StateError(InterceptError):
    """Serialised warrant state that cannot be loaded, or a decision that does not fit
    the state it is applied to (it was not checked against this state)."""


class CourtError(InterceptError):
    """The court's tools refused: an unreadable key file, approving the same warrant
    twice with the same key, amending a warrant that cannot be amended."""


class HandoverError(InterceptError):
    """Bytes or a record that are not a valid HI-2 / HI-3 handover record."""


__all__ = [
    "CourtError",
    "HandoverError",
    "InterceptError",
    "StateError",
    "TrustError",
    "WarrantError",
]
