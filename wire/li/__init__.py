"""The lawful-intercept contracts every party to a warrant shares: data formats and the
checks over them, no keys and no decryption.

* ``errors``: every way these contracts refuse an input, one exception class each;
* ``warrant``: the warrant (TS 103 120-flavoured JSON), its strict parser and canonical
  bytes; ``checks``: the policy, the state and the fail-closed ``check_warrant``;
* ``trust``: the trust store (the court's approver keys) and the agency's public key;
* ``handover``: the HI-2 / HI-3 record format and its HPKE ``info`` label (the sealing
  itself is the E2EE library's recipe, ``clients.crypto.seal_to``);
* ``builds``: what a mandated client build is (the data a vendor ships and a government
  mandates; the cryptography is ``clients.crypto``'s).

The court (``interceptor.court``), the scoped interceptor, the agency and each
enterprise (``clients.enterprise``, which checks a warrant itself) all import these, so
none of them imports another actor for them.
"""
