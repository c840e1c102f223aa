"""The interceptor's (and each enterprise's) policy: what warrants it accepts.

Sans-I/O. ``Policy`` is plain data with its JSON form; ``wire.li.checks`` applies it.
docs/warrants.md ("Policy and trust", "Time") gives every field and its reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wire.li.errors import TrustError
from wire.li.trust import FINGERPRINT_RE, TOKEN_RE, exact_fields, load_json
from wire.li.warrant import JURISDICTION_RE

_REQUIRED_POLICY_FIELDS = (
    "jurisdiction",
    "csp_id",
    "agency_key_fingerprint",
    "max_window_seconds",
    "max_targets",
)
# Fields a policy file may omit (older files): their defaults apply.
_OPTIONAL_POLICY_FIELDS = (
    "clock_skew_seconds",
    "max_approval_age_seconds",
    "max_retrospective_cc_seconds",
    "max_retrospective_iri_seconds",
)
MAX_CLOCK_SKEW_SECONDS = 3600


@dataclass(frozen=True)
class Policy:
    """What this interceptor is configured to accept.

    Time, all in seconds (docs/warrants.md, "Time"):

    * ``clock_skew_seconds`` (30): how far the approvers' and the court's clocks may run
      ahead of ours - a window may start, and an approval be dated, that far in our
      future. Expiry has no tolerance: stopping early is safe, running late is not.
    * ``max_approval_age_seconds`` (7 days): an approval older than this is refused; a
      warrant is served when it is signed, not kept for later.
    * ``max_retrospective_cc_seconds`` (10 minutes): how far before the check a window
      that collects content (CC) may start. A back-dated window makes an enterprise
      archive export stored content from before the warrant was served: that is a search
      of stored communications, a different power, not interception. The allowance only
      covers the time from drafting a warrant "from now" to serving it.
    * ``max_retrospective_iri_seconds`` (7 days): the same for a metadata-only window.
      The relay's tasks are prospective (it never searches what it stored), so this caps
      what a back-dated IRI window could ever be asked to yield from retained data.
    """

    jurisdiction: str
    csp_id: str
    agency_key_fingerprint: str  # the pinned agency key (hex SHA-256 of its raw X25519 key)
    max_window_seconds: int = 30 * 24 * 3600
    max_targets: int = 10
    clock_skew_seconds: int = 30
    max_approval_age_seconds: int = 7 * 24 * 3600
    max_retrospective_cc_seconds: int = 10 * 60
    max_retrospective_iri_seconds: int = 7 * 24 * 3600

    def __post_init__(self) -> None:
        if not isinstance(self.jurisdiction, str) or not JURISDICTION_RE.fullmatch(
            self.jurisdiction
        ):
            raise TrustError(
                f"policy: jurisdiction {self.jurisdiction!r} is not a "
                "two-letter upper-case country code"
            )
        if not isinstance(self.csp_id, str) or not TOKEN_RE.fullmatch(self.csp_id):
            raise TrustError(f"policy: CSP id {self.csp_id!r} is not a valid id")
        if not isinstance(self.agency_key_fingerprint, str) or not FINGERPRINT_RE.fullmatch(
            self.agency_key_fingerprint
        ):
            raise TrustError("policy: agency key fingerprint must be 64 lower-case hex digits")
        for name in ("max_window_seconds", "max_targets", "max_approval_age_seconds"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise TrustError(f"policy: {name} must be a positive integer")
        for name in (
            "clock_skew_seconds",
            "max_retrospective_cc_seconds",
            "max_retrospective_iri_seconds",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise TrustError(f"policy: {name} must be a non-negative integer")
        if self.clock_skew_seconds > MAX_CLOCK_SKEW_SECONDS:
            raise TrustError(
                f"policy: clock_skew_seconds is a small tolerance, at most "
                f"{MAX_CLOCK_SKEW_SECONDS}; fix the clocks instead"
            )

    def to_json(self) -> dict[str, Any]:
        return {
            name: getattr(self, name) for name in _REQUIRED_POLICY_FIELDS + _OPTIONAL_POLICY_FIELDS
        }

    @classmethod
    def from_json(cls, obj: object) -> Policy:
        if not isinstance(obj, dict):
            raise TrustError("policy must be a JSON object")
        present = tuple(k for k in _OPTIONAL_POLICY_FIELDS if k in obj)
        fields = exact_fields(obj, "policy", _REQUIRED_POLICY_FIELDS + present, TrustError)
        return cls(**fields)

    @classmethod
    def parse(cls, data: bytes) -> Policy:
        return cls.from_json(load_json(data, "policy", TrustError, 4096))


__all__ = ["MAX_CLOCK_SKEW_SECONDS", "Policy"]
