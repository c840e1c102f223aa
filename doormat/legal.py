"""The lab's legal world: a court with an executive and a judicial approver, an agency
with its delivery key, and the policy the interceptor (and each enterprise) applies.

Everything is generated fresh per system, like the rest of the cast's keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from interceptor.court import AgencyKeyPair, ApproverKey, approve, issue, trust_store_of
from wire.li.checks import Policy
from wire.li.trust import TrustStore
from wire.li.warrant import Warrant

JURISDICTION = "GB"
CSP_ID = "doormat"


@dataclass
class LegalWorld:
    executive: ApproverKey = field(
        default_factory=lambda: ApproverKey.generate("home-secretary", "executive")
    )
    judicial: ApproverKey = field(
        default_factory=lambda: ApproverKey.generate("judicial-commissioner", "judicial")
    )
    agency: AgencyKeyPair = field(default_factory=AgencyKeyPair.generate)

    @property
    def trust(self) -> TrustStore:
        return trust_store_of([self.executive, self.judicial])

    @property
    def policy(self) -> Policy:
        return Policy(
            jurisdiction=JURISDICTION,
            csp_id=CSP_ID,
            agency_key_fingerprint=self.agency.public.fingerprint,
        )

    def warrant(
        self,
        *,
        case: str,
        targets: list[str],
        categories: list[str],
        not_before: int,
        not_after: int,
        approvers: tuple[ApproverKey, ...] | None = None,
    ) -> Warrant:
        """A warrant drafted by the court and signed by both approvers (or those given)."""
        w = issue(
            case_reference=case,
            targets=targets,
            categories=categories,
            not_before=not_before,
            not_after=not_after,
            jurisdiction=JURISDICTION,
            csp_id=CSP_ID,
            agency=self.agency.public,
        )
        for key in approvers if approvers is not None else (self.executive, self.judicial):
            w = approve(w, key)
        return w
