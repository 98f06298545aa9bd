"""SecAgg+ (and full SecAgg) for one round, as two state machines that exchange plain values.

The transport (the federated runtime, a benchmark, a test) carries what one side returns to the other; nothing
here does I/O. A round, for clients ``0..n-1`` of a :class:`Round`:

1. *Advertise*: each client makes two X25519 key pairs, one to encrypt shares to its neighbours, one to agree
   pairwise masks, and sends the public halves (:meth:`Client.advertise`); the server forwards to each client its
   neighbours' keys (:meth:`Server.collect_keys`).
2. *Share*: each client draws a 32-byte self-mask seed and Shamir-shares it and its masking private key among
   its neighbours with threshold ``t``, each neighbour's two shares sealed with AES-256-GCM under a key derived
   (HKDF) from their X25519 agreement, bound to the round and both indices; the server relays the sealed shares
   (:meth:`Client.share`, :meth:`Server.collect_shares`).
3. *Mask*: each client that got this far adds to its quantized input (integers mod ``2^bits``) the expansion of its
   self-mask seed and, for each neighbour that also shared, plus or minus the expansion of their pairwise seed
   (plus when its index is the smaller), and sends the result (:meth:`Client.mask`, :meth:`Server.collect_masked`).
4. *Unmask*: the server names who sent a masked input (survivors) and who did not (dropped); each survivor opens
   the shares it holds and returns the self-mask share of each surviving neighbour and the masking-key share of
   each dropped one, never both for the same client (:meth:`Client.unmask`). The server reconstructs, from exactly
   ``t`` shares each, the survivors' self-mask seeds and the dropped clients' masking keys, regenerates those
   masks and removes them (:meth:`Server.finish`): what remains is the sum of the survivors' inputs mod ``2^bits``.

Keys, seeds and masks are fresh each round (new key pairs, new seeds, seeds derived with the round id and both
indices), so no mask is ever reused. Masks are AES-256-CTR expansions of full 32-byte seeds.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from privet.crypto import masks, shamir
from privet.crypto.keyed import Aead, derive_key
from privet.errors import IntegrityError, UsageError
from privet.federated.secagg.plan import SecAggPlan, neighbours

__all__ = ["Client", "PublicKeys", "Round", "Server", "Unmasking"]

_SEED = 32


@dataclass(frozen=True)
class Round:
    """What the server announces before a round: the plan, a fresh random id, the vector length and modulus."""

    plan: SecAggPlan
    length: int
    bits: int
    round_id: bytes = field(default_factory=lambda: os.urandom(16))

    def __post_init__(self) -> None:
        if not 1 <= self.bits <= 32:
            raise UsageError(f"the modulus must be 2^1 .. 2^32, got 2^{self.bits}")
        if len(self.round_id) != 16:
            raise UsageError("a round id is 16 random bytes")

    def graph(self) -> list[list[int]]:
        return neighbours(self.plan, self.round_id)


@dataclass(frozen=True)
class PublicKeys:
    sharing: bytes  # X25519 public key that share ciphertexts are agreed with
    masking: bytes  # X25519 public key that pairwise masks are agreed with


@dataclass(frozen=True)
class Unmasking:
    """The server's request in stage 4: who sent a masked input and who did not."""

    survivors: frozenset[int]
    dropped: frozenset[int]


def _share_key(secret: bytes, round_: Round, sender: int, receiver: int) -> tuple[Aead, bytes]:
    label = round_.round_id + sender.to_bytes(4, "big") + receiver.to_bytes(4, "big")
    return Aead(derive_key(secret, b"privet secagg share key" + label)), label


def _commit(seed: bytes, round_: Round, client: int) -> bytes:
    return hashlib.sha256(b"privet secagg seed" + round_.round_id + client.to_bytes(4, "big") + seed).digest()


def _expand(seed: bytes, round_: Round) -> np.ndarray:
    return masks.expand(seed, round_.length, round_.bits)


def _pair_mask(secret: bytes, round_: Round, a: int, b: int) -> np.ndarray:
    return _expand(masks.pair_seed(secret, round_.round_id, a, b), round_)


class Client:
    """One client's side of a round (``index`` in ``0..n-1``)."""

    def __init__(self, index: int, round_: Round, graph: Sequence[Sequence[int]] | None = None) -> None:
        if not 0 <= index < round_.plan.clients:
            raise UsageError(f"client index {index} is outside the round's {round_.plan.clients} clients")
        self.index, self.round = index, round_
        self.neighbours = frozenset((graph or round_.graph())[index])
        self._sharing, self._masking = X25519PrivateKey.generate(), X25519PrivateKey.generate()
        self._peers: dict[int, PublicKeys] = {}
        self._sealed: dict[int, bytes] = {}
        self._shared_with: frozenset[int] = frozenset()
        self._seed = b""
        self.commitment = b""
        self._stage = "advertise"

    def _advance(self, expected: str, following: str) -> None:
        if self._stage != expected:
            raise UsageError(f"client {self.index} is at stage {self._stage!r}, not {expected!r}")
        self._stage = following

    def advertise(self) -> PublicKeys:
        self._advance("advertise", "share")
        return PublicKeys(self._sharing.public_key().public_bytes_raw(), self._masking.public_key().public_bytes_raw())

    def share(self, peers: Mapping[int, PublicKeys]) -> dict[int, bytes]:
        """Sealed shares for each neighbour in ``peers`` (those that advertised); refuses fewer than ``t``.

        The server is also given :attr:`commitment`, a hash of the self-mask seed, to check its reconstruction.
        """
        self._advance("share", "mask")
        if not set(peers) <= self.neighbours:
            raise IntegrityError(f"client {self.index} was sent keys of clients that are not its neighbours")
        if len(peers) < self.round.plan.threshold:
            raise UsageError(f"client {self.index} has {len(peers)} neighbours left, fewer than t")
        self._peers = dict(peers)
        self._seed = os.urandom(_SEED)
        self.commitment = _commit(self._seed, self.round, self.index)
        holders = sorted(peers)
        shares = shamir.split([self._masking.private_bytes_raw(), self._seed], self.round.plan.threshold,
                              [h + 1 for h in holders])  # fmt: skip
        sealed = {}
        for row, holder in enumerate(holders):
            secret = self._sharing.exchange(X25519PublicKey.from_public_bytes(peers[holder].sharing))
            aead, label = _share_key(secret, self.round, self.index, holder)
            sealed[holder] = aead.seal(shamir.shares_to_bytes(shares[row]), label)
        return sealed

    def mask(self, vector: np.ndarray, sealed: Mapping[int, bytes], shared: frozenset[int]) -> np.ndarray:
        """The masked input: ``vector`` (integers < 2^bits) plus this client's masks, mod 2^bits.

        ``sealed`` are the shares neighbours sent this client, ``shared`` every client that completed stage 2.
        """
        self._advance("mask", "unmask")
        values = np.asarray(vector)
        if values.shape != (self.round.length,) or values.dtype != np.uint32:
            raise UsageError(f"the input must be {self.round.length} uint32 values, got {values.dtype} {values.shape}")
        if int(values.max(initial=0)) >> self.round.bits:
            raise UsageError(f"the input has values of more than {self.round.bits} bits")
        if not set(sealed) <= set(self._peers):
            raise IntegrityError(f"client {self.index} was sent shares by clients it did not send keys to")
        self._sealed = dict(sealed)
        self._shared_with = frozenset(shared) & frozenset(self._peers)
        masked = values + _expand(self._seed, self.round)
        for peer in sorted(self._shared_with):
            secret = self._masking.exchange(X25519PublicKey.from_public_bytes(self._peers[peer].masking))
            pair = _pair_mask(secret, self.round, self.index, peer)
            masked = masked + pair if self.index < peer else masked - pair
        return masked & np.uint32((1 << self.round.bits) - 1)

    def unmask(self, request: Unmasking) -> dict[int, tuple[str, bytes]]:
        """For each neighbour whose shares this client holds: its self-mask share if it survived, its masking-key
        share if it dropped; refuses a request that names a client as both, or one it never masked with."""
        self._advance("unmask", "done")
        if request.survivors & request.dropped:
            raise IntegrityError("the server named clients as both survivors and dropped")
        if self.index not in request.survivors:
            raise IntegrityError(f"client {self.index} is asked to unmask a round it is not counted in")
        if not request.dropped & self.neighbours <= self._shared_with:
            raise IntegrityError("the server named as dropped a client that never shared its keys")
        answers = {}
        for peer, sealed in sorted(self._sealed.items()):
            if peer not in request.survivors and peer not in request.dropped:
                continue
            secret = self._sharing.exchange(X25519PublicKey.from_public_bytes(self._peers[peer].sharing))
            aead, label = _share_key(secret, self.round, peer, self.index)
            share = shamir.shares_from_bytes(aead.open(sealed, label))
            kind = "seed" if peer in request.survivors else "key"
            answers[peer] = (kind, shamir.shares_to_bytes(share[1:2] if kind == "seed" else share[0:1]))
        return answers


class Server:
    """The server's side of a round: it relays, learns who is still there, and recovers the sum."""

    def __init__(self, round_: Round, graph: Sequence[Sequence[int]] | None = None) -> None:
        self.round = round_
        self.graph = [frozenset(g) for g in (graph or round_.graph())]
        self.keys: dict[int, PublicKeys] = {}
        self.shared: frozenset[int] = frozenset()
        self.commitments: dict[int, bytes] = {}
        self.total: np.ndarray | None = None
        self.survivors: frozenset[int] = frozenset()

    def collect_keys(self, keys: Mapping[int, PublicKeys]) -> dict[int, dict[int, PublicKeys]]:
        """Stage 1: what to send each client that advertised (its neighbours' keys)."""
        self.keys = dict(keys)
        return {i: {j: keys[j] for j in sorted(self.graph[i]) if j in keys} for i in sorted(keys)}

    def collect_shares(
        self, sealed: Mapping[int, Mapping[int, bytes]], commitments: Mapping[int, bytes]
    ) -> dict[int, dict[int, bytes]]:
        """Stage 2: each sender's sealed shares, relayed to their receivers (who also learn who shared), and the
        senders' seed commitments, kept to check reconstructed seeds."""
        self.shared = frozenset(sealed) & frozenset(commitments)
        self.commitments = {c: commitments[c] for c in self.shared}
        relayed: dict[int, dict[int, bytes]] = {i: {} for i in sorted(self.shared)}
        for sender in sorted(self.shared):
            for receiver, box in sealed[sender].items():
                if receiver in relayed and receiver in self.graph[sender]:
                    relayed[receiver][sender] = box
        return relayed

    def collect_masked(self, masked: Mapping[int, np.ndarray]) -> Unmasking:
        """Stage 3: add up the masked inputs; the request for stage 4."""
        survivors = frozenset(masked) & self.shared
        if len(survivors) < self.round.plan.threshold:
            raise UsageError(f"only {len(survivors)} clients sent masked inputs, fewer than t: the round is void")
        total = np.zeros(self.round.length, dtype=np.uint32)
        for client in sorted(survivors):
            total += masked[client]
        self.total, self.survivors = total, survivors
        return Unmasking(survivors, self.shared - survivors)

    def finish(self, answers: Mapping[int, Mapping[int, tuple[str, bytes]]]) -> np.ndarray:
        """Stage 4: the sum of the survivors' inputs mod 2^bits, from the survivors' shares."""
        if self.total is None:
            raise UsageError("finish comes after collect_masked")
        t = self.round.plan.threshold
        dropped = self.shared - self.survivors
        held: dict[int, list[tuple[int, bytes]]] = {c: [] for c in self.shared}
        for holder in sorted(set(answers) & self.survivors):
            for owner, (kind, share) in answers[holder].items():
                wanted = "seed" if owner in self.survivors else "key"
                if owner in held and kind == wanted and owner in self.graph[holder]:
                    held[owner].append((holder + 1, share))
        short = [c for c, got in held.items() if len(got) < t]
        if short:
            raise UsageError(f"{len(short)} clients have fewer than t shares back: the round cannot be unmasked")
        secrets = shamir.combine_many([
            (np.stack([shamir.shares_from_bytes(s)[0] for _, s in held[c][:t]]), [x for x, _ in held[c][:t]])
            for c in sorted(self.shared)
        ])  # fmt: skip
        recovered = dict(zip(sorted(self.shared), secrets, strict=True))
        for client, secret in recovered.items():  # a wrong share gives a wrong secret: caught here, not masked in
            if client in self.survivors and _commit(secret, self.round, client) != self.commitments[client]:
                raise IntegrityError(f"the self-mask seed of client {client} reconstructs wrongly: a share was bad")
            if client in dropped and X25519PrivateKey.from_private_bytes(secret).public_key().public_bytes_raw() != (
                self.keys[client].masking
            ):
                raise IntegrityError(f"the masking key of client {client} reconstructs wrongly: a share was bad")
        total = self.total.copy()
        for client in sorted(self.survivors):
            total -= _expand(recovered[client], self.round)
        for client in sorted(dropped):
            key = X25519PrivateKey.from_private_bytes(recovered[client])
            for peer in sorted(self.graph[client] & self.survivors):
                pair = _pair_mask(key.exchange(X25519PublicKey.from_public_bytes(self.keys[peer].masking)),
                                  self.round, peer, client)  # fmt: skip
                total = total - pair if peer < client else total + pair
        return total & np.uint32((1 << self.round.bits) - 1)
