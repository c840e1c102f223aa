"""DeviceCrypto: one device's keys and its sessions with other devices.

Sesame-lite: a session is kept per peer *device* id, and a user-level message is sent by
encrypting it once per recipient device (and once per the sender's own other devices);
choosing those devices is the caller's job (it knows the directory). This class only
keeps the sessions straight.

Per peer device it holds the active session first, then up to
``MAX_SESSIONS_PER_PEER - 1`` older ones. Older ones matter when two devices start
sessions with each other at the same time, or a peer restarts a session while
messages of the old one are in flight: a message that fails in the active session is
tried in the older ones, and the one that decrypts it becomes active (as in Sesame).

Every public method either completes or raises a CryptoError with nothing changed:
new sessions are built and tried on the side and installed only after their first
message decrypted; a one-time prekey is consumed only then.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from wire.b64 import b64encode

from . import state
from .errors import (
    CryptoError,
    MalformedInput,
    ReplayError,
    StateError,
    UnknownSession,
)
from .identity import KEY_BYTES, IdentityKeyPair, PublicIdentity, x25519_public_bytes
from .prekeys import PrekeyStore
from .ratchet import RatchetState
from .safety import safety_number
from .sealed import Sealed
from .sessions import Session
from .x3dh import Bundle, PrekeyMessage, initiate, respond

MAX_SESSIONS_PER_PEER = 4
# Base keys of prekey messages that started a session here: a replayed prekey message
# is refused even when it used no one-time prekey and its session has since been dropped.
MAX_SEEN_BASE_KEYS = 256


class DeviceCrypto:
    __slots__ = ("_identity", "_prekeys", "_seen_base_keys", "_sessions", "device_id")

    def __init__(
        self,
        device_id: str,
        identity: IdentityKeyPair,
        prekeys: PrekeyStore,
        sessions: dict[str, list[Session]] | None = None,
        seen_base_keys: Sequence[bytes] = (),
    ) -> None:
        self.device_id = device_id
        self._identity = identity
        self._prekeys = prekeys
        self._sessions: dict[str, list[Session]] = sessions if sessions is not None else {}
        self._seen_base_keys: list[bytes] = list(seen_base_keys)

    @classmethod
    def create(cls, device_id: str, *, one_time_prekeys: int = 100) -> DeviceCrypto:
        identity = IdentityKeyPair.generate()
        prekeys = PrekeyStore()
        prekeys.rotate_signed(identity)
        prekeys.new_one_time(one_time_prekeys)
        return cls(device_id, identity, prekeys)

    # -- keys ---------------------------------------------------------------------

    @property
    def identity(self) -> PublicIdentity:
        return self._identity.public

    def publish_material(self) -> dict[str, Any]:
        """The fields of the directory ``publish`` request (docs/protocol.md).

        Lists every one-time prekey this device still holds unused; after the first
        publish, add more with ``new_one_time_prekeys`` rather than publishing again.
        """
        return {
            "identity": b64encode(self.identity.encode()),
            "signed_prekey": self.signed_prekey(),
            "one_time_prekeys": [
                {"id": i, "key": b64encode(x25519_public_bytes(k))}
                for i, k in self._prekeys.one_time.items()
            ],
        }

    def signed_prekey(self) -> dict[str, Any]:
        """The current signed prekey as ``{"id", "key", "sig"}``."""
        spk = self._prekeys.current_signed
        return {"id": spk.id, "key": b64encode(spk.public), "sig": b64encode(spk.signature)}

    def rotate_signed_prekey(self) -> dict[str, Any]:
        """Make a new current signed prekey (the older ones stay usable for a while)."""
        self._prekeys.rotate_signed(self._identity)
        return self.signed_prekey()

    def new_one_time_prekeys(self, n: int) -> list[dict[str, Any]]:
        """``n`` fresh one-time prekeys to publish; their private halves stay here."""
        return [{"id": i, "key": b64encode(k)} for i, k in self._prekeys.new_one_time(n)]

    @property
    def one_time_prekeys_left(self) -> int:
        return len(self._prekeys.one_time)

    # -- sessions -----------------------------------------------------------------

    def has_session(self, peer_device: str) -> bool:
        return bool(self._sessions.get(peer_device))

    def peer_identity(self, peer_device: str) -> PublicIdentity | None:
        """The identity the active session with ``peer_device`` was made with."""
        sessions = self._sessions.get(peer_device)
        return sessions[0].peer_identity if sessions else None

    def start_session(self, peer_device: str, bundle: dict[str, Any]) -> None:
        """X3DH as initiator, from one entry of the directory's ``bundles`` answer.

        MalformedInput if the bundle is malformed or names another device; BadSignature
        if its signed prekey is not signed by its identity. The new session becomes the
        active one (an older one is kept as a fallback).
        """
        parsed = Bundle.from_json(bundle)
        if parsed.device is not None and parsed.device != peer_device:
            raise MalformedInput(f"bundle is for {parsed.device!r}, not {peer_device!r}")
        started = initiate(self._identity, parsed)
        prekey_message = started.prekey_message.encode()
        session = Session(
            RatchetState.initiator(started.shared_secret, parsed.signed_prekey),
            started.associated_data,
            parsed.identity,
            started.prekey_message.base_key,
            initiator=True,
            prekey_message=prekey_message,
            pending_prekey=True,
        )
        self._install(peer_device, session)

    def encrypt(self, peer_device: str, plaintext: bytes) -> Sealed:
        """One message to one peer device. UnknownSession, PlaintextTooLong."""
        sessions = self._sessions.get(peer_device)
        if not sessions:
            raise UnknownSession(f"no session with {peer_device!r}; start one from its bundle")
        return sessions[0].encrypt(plaintext)

    def decrypt(self, peer_device: str, sealed: Sealed) -> bytes:
        """One message from one peer device; a CryptoError, and no change, on failure."""
        sessions = self._sessions.get(peer_device)
        if sealed.prekey is not None:
            return self._decrypt_prekey(peer_device, sessions or [], sealed)
        if not sessions:
            raise UnknownSession(
                f"no session with {peer_device!r} and the message carries no prekey message"
            )
        try:
            return sessions[0].decrypt(sealed.header, sealed.body)
        except CryptoError as exc:
            # Report what the active session said: it is the one the peer most likely
            # used. But first give the older sessions their chance.
            error = exc
        for i in range(1, len(sessions)):
            try:
                plaintext = sessions[i].decrypt(sealed.header, sealed.body)
            except CryptoError:
                continue
            sessions.insert(0, sessions.pop(i))
            return plaintext
        raise error

    def _decrypt_prekey(self, peer: str, sessions: list[Session], sealed: Sealed) -> bytes:
        assert sealed.prekey is not None
        message = PrekeyMessage.decode(sealed.prekey)
        # A repeat of the prekey message of a session we already hold (the initiator
        # attaches it until we answer): decrypt in that session.
        for i, session in enumerate(sessions):
            if not session.initiator and session.base_key == message.base_key:
                if session.prekey_message != sealed.prekey:
                    raise MalformedInput(
                        "prekey message differs from the one that started this session"
                    )
                plaintext = session.decrypt(sealed.header, sealed.body)
                if i:
                    sessions.insert(0, sessions.pop(i))
                return plaintext
        if message.base_key in self._seen_base_keys:
            raise ReplayError("this prekey message already started a session (a replay)")
        # A new session, as X3DH responder. Errors: UnknownPrekey, ReusedPrekey.
        spk = self._prekeys.find_signed(message.signed_prekey_id)
        opk_id = message.one_time_prekey_id
        opk = None if opk_id is None else self._prekeys.find_one_time(opk_id)
        shared_secret, ad = respond(self._identity, spk.private, opk, message)
        session = Session(
            RatchetState.responder(shared_secret, spk.private),
            ad,
            message.identity,
            message.base_key,
            initiator=False,
            prekey_message=sealed.prekey,
            pending_prekey=False,
        )
        plaintext = session.decrypt(sealed.header, sealed.body)
        # The first message authenticated: only now spend the one-time prekey.
        if opk_id is not None:
            self._prekeys.consume_one_time(opk_id)
        self._seen_base_keys.append(message.base_key)
        del self._seen_base_keys[:-MAX_SEEN_BASE_KEYS]
        self._install(peer, session)
        return plaintext

    def _install(self, peer: str, session: Session) -> None:
        sessions = self._sessions.setdefault(peer, [])
        sessions.insert(0, session)
        del sessions[MAX_SESSIONS_PER_PEER:]

    def safety_number(self, peer: PublicIdentity) -> str:
        return safety_number(self.identity, peer)

    # -- state --------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Everything this device holds, private keys included, as versioned JSON."""
        return state.dump(
            {
                "device_id": self.device_id,
                "identity": self._identity.to_json(),
                "prekeys": self._prekeys.to_json(),
                "seen_base_keys": [b64encode(k) for k in self._seen_base_keys],
                "sessions": {
                    peer: [s.to_json() for s in sessions]
                    for peer, sessions in self._sessions.items()
                    if sessions
                },
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> DeviceCrypto:
        """StateVersionError for an unknown version, StateError for anything damaged."""
        obj = state.load(data)
        try:
            sessions = {}
            for peer, items in state.get_dict(obj, "sessions").items():
                if not isinstance(items, list) or not items:
                    raise StateError(f"crypto state: sessions of {peer!r} must be a list")
                sessions[peer] = [Session.from_json(item) for item in items]
            return cls(
                state.get_str(obj, "device_id"),
                IdentityKeyPair.from_json(state.get_dict(obj, "identity")),
                PrekeyStore.from_json(state.get_dict(obj, "prekeys")),
                sessions,
                [
                    state.as_bytes(k, "seen_base_keys", KEY_BYTES)
                    for k in state.get_list(obj, "seen_base_keys")
                ],
            )
        except StateError:
            raise
        except (CryptoError, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise StateError(f"crypto state is damaged: {exc}") from None
