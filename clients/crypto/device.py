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
    def create(
        cls, device_id: str, *, one_time_prekeys: int = 100, now_ms: int | None = None
    ) -> DeviceCrypto:
        """A new identity, a signed prekey (made at ``now_ms``, if given: the rotation
        schedule counts from it) and ``one_time_prekeys`` one-time prekeys."""
        identity = IdentityKeyPair.generate()
        prekeys = PrekeyStore()
        prekeys.rotate_signed(identity, now_ms)
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

    def rotate_signed_prekey(self, now_ms: int | None = None) -> dict[str, Any]:
        """Make a new current signed prekey (the older ones stay usable for a while:
        until ``expire_signed_prekeys`` deletes them, and at most two of them)."""
        self._prekeys.rotate_signed(self._identity, now_ms)
        return self.signed_prekey()

    @property
    def signed_prekey_ids(self) -> list[int]:
        """The ids of the signed prekeys held, oldest first (the last is current)."""
        return list(self._prekeys.signed)

    def expire_signed_prekeys(self, now_ms: int, grace_ms: int) -> list[int]:
        """Delete the replaced signed prekeys whose grace period for late messages is
        over (retired ``grace_ms`` or more before ``now_ms``); the ids deleted."""
        return self._prekeys.expire_signed(now_ms, grace_ms)

    def maintain_signed_prekeys(
        self, now_ms: int, *, rotate_after_ms: int, grace_ms: int
    ) -> tuple[dict[str, Any] | None, list[int]]:
        """The rotation schedule, as one step: if the current signed prekey is
        ``rotate_after_ms`` old, a new one replaces it; then the replaced ones past their
        grace period are deleted. Returns (the new signed prekey to publish, or None;
        the ids deleted). A current prekey without a time (made without a clock) is
        dated ``now_ms`` and its period starts then."""
        current = self._prekeys.current_signed
        rotated = None
        if current.created_ms is None:
            current.created_ms = now_ms
        elif now_ms - current.created_ms >= rotate_after_ms:
            rotated = self.rotate_signed_prekey(now_ms)
        return rotated, self.expire_signed_prekeys(now_ms, grace_ms)

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

    def new_session_identity(self, peer_device: str, sealed: Sealed) -> PublicIdentity | None:
        """The identity ``sealed`` would bind to ``peer_device`` by starting a new session.

        None if it would start none (no prekey message, or a repeat of the one that
        started a session held). Otherwise the identity its prekey message presents,
        once X3DH and the first message's AEAD have checked out on the side: nothing
        changes, no one-time prekey is spent. A CryptoError, as ``decrypt`` would raise
        it, when the message would not open. A caller that must check the identity
        first (against the key directory, a safety number its user verified) does so
        between this call and ``decrypt``."""
        if sealed.prekey is None:
            return None
        message = PrekeyMessage.decode(sealed.prekey)
        if self._existing(self._sessions.get(peer_device) or [], message, sealed) is not None:
            return None
        self._respond(message, sealed)
        return message.identity

    def _existing(
        self, sessions: list[Session], message: PrekeyMessage, sealed: Sealed
    ) -> int | None:
        """The index of the session this prekey message started, if we hold it; a
        MalformedInput if it is held but the message differs from the one that started it."""
        for i, session in enumerate(sessions):
            if not session.initiator and session.base_key == message.base_key:
                if session.prekey_message != sealed.prekey:
                    raise MalformedInput(
                        "prekey message differs from the one that started this session"
                    )
                return i
        return None

    def _respond(self, message: PrekeyMessage, sealed: Sealed) -> tuple[Session, bytes]:
        """A new session as X3DH responder, and its first message's plaintext, built on
        the side (nothing installed, nothing spent). Errors: ReplayError, UnknownPrekey,
        ReusedPrekey, and whatever the first message's decryption raises."""
        assert sealed.prekey is not None
        if message.base_key in self._seen_base_keys:
            raise ReplayError("this prekey message already started a session (a replay)")
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
        return session, session.decrypt(sealed.header, sealed.body)

    def _decrypt_prekey(self, peer: str, sessions: list[Session], sealed: Sealed) -> bytes:
        assert sealed.prekey is not None
        message = PrekeyMessage.decode(sealed.prekey)
        # A repeat of the prekey message of a session we already hold (the initiator
        # attaches it until we answer): decrypt in that session.
        i = self._existing(sessions, message, sealed)
        if i is not None:
            plaintext = sessions[i].decrypt(sealed.header, sealed.body)
            if i:
                sessions.insert(0, sessions.pop(i))
            return plaintext
        # A new session, as X3DH responder.
        session, plaintext = self._respond(message, sealed)
        # The first message authenticated: only now spend the one-time prekey.
        if message.one_time_prekey_id is not None:
            self._prekeys.consume_one_time(message.one_time_prekey_id)
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
