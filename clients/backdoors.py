"""Mandated client builds, device side: what a back-doored build adds to each envelope.

A blanket tap at the relay captures every envelope and reads none of them, because the
keys live only in the devices. To make it read, the state must change *every client*
(or the directory every client trusts). Each back door is that change, here, in the
client code path that builds an envelope - not a flag the tap checks:

* ``escrow`` (LEAF-style, after Clipper): each message key, with the session's
  associated data, is wrapped to the government's escrow public key with HPKE (RFC 9180,
  X25519 / HKDF-SHA256 / ChaCha20-Poly1305) and carried in ``ext.escrow``. Whoever holds
  the escrow private key opens every message - the government, or whoever steals it.
* ``global-key``: the client build contains one symmetric key shared by every device;
  the padded plaintext is also sealed under it (ChaCha20-Poly1305) in ``ext.global``.
  Anyone with one device image (or the app binary) has it.
* ``ghost``: no change to the envelope at all. The directory lists a government device
  for every user and unmodified clients fan out to it as to any device (relay side and
  key transparency catch it; see relay/kt.py and clients/kt.py).

``ClientBuild`` (the build as data: which back door, which baked-in key) is
``wire.li.builds``'s; the cryptography is the E2EE library's recipes
(``clients.crypto.escrow_wrap``, ``global_seal``); what a key holder does with a
captured envelope is ``interceptor.readers``.
"""

from __future__ import annotations

from typing import Any

from clients.crypto import Sealed, escrow_wrap, global_seal
from wire.b64 import b64encode
from wire.li.builds import ESCROW_FIELD, GLOBAL_FIELD, ClientBuild, binding


def extensions(
    build: ClientBuild,
    envelope_id: str,
    sender: str,
    recipient: str,
    plaintext: bytes,
    sealed: Sealed,
) -> dict[str, Any]:
    """The ``ext`` fields ``build`` adds to the envelope for ``sealed`` (none for the
    standard build)."""
    ext: dict[str, Any] = {}
    bound = binding(envelope_id, sender, recipient)
    if build.escrow_public_key is not None:
        ext[ESCROW_FIELD] = b64encode(escrow_wrap(build.escrow_public_key, sealed, binding=bound))
    if build.global_key is not None:
        ext[GLOBAL_FIELD] = b64encode(global_seal(build.global_key, plaintext, binding=bound))
    return ext
