"""Secure aggregation inside the federated runtime: the four exchanges of :mod:`.protocol` as stages of a round.

Server side (:class:`SecureAggregation`), for the clients sampled in a round (indexed in id order):

1. ``keys``: each is sent the round's setup (its index, the plan, a fresh round id, the modulus) and answers with
   its two public keys;
2. ``share``: each is sent its neighbours' keys and answers with sealed shares and its seed commitment;
3. ``mask``: each is sent the training task (the model) with the shares relayed to it; it trains, clips its
   update to ``clip`` in L2 norm, encodes it in fixed point (:class:`~privet.federated.quantize.Quantizer`,
   stochastic rounding), masks it and answers with the masked vector, bit-packed;
4. ``unmask``: the survivors are told who survived and who dropped and answer with the shares that remove the
   masks. The server decodes the sum and hands the *unweighted* mean of the survivors' clipped updates to the
   strategy's apply step (the server cannot weight updates it never sees).

A client that misses a stage's deadline is out of the round; the round completes if the plan's threshold of
clients survive, else it is void and runs again from stage 1 with new keys (nothing is reused). Only strategies
that average (FedAvg, FedProx, FedAvgM, FedAdagrad, FedAdam, FedYogi) combine with secure aggregation: robust
rules need the individual updates it hides (bound norms client-side with ``clip`` instead).

Client side (:class:`ClientSession`): keeps the round's protocol state between the server's messages; a
restarted client has none, so it is simply a client that dropped.
"""

from __future__ import annotations

import base64
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch import Tensor

from privet.crypto import masks
from privet.errors import FormatError, IntegrityError, PrivetError, UsageError
from privet.federated.provision import open_he_keys
from privet.federated.quantize import Quantizer
from privet.federated.secagg.attest import Signer, Verifier, consistency_statement, keys_statement
from privet.federated.secagg.noise import DistributedNoise, calibrate
from privet.federated.secagg.plan import SecAggPlan, plan
from privet.federated.secagg.protocol import Client, PublicKeys, Round, Server, Unmasking
from privet.federated.strategies import Strategy
from privet.files import atomic_file
from privet.he import ckks
from privet.net.frames import Message, Spooled

if TYPE_CHECKING:
    from privet.federated.config import FederationConfig, SecureAggregationConfig
    from privet.federated.server import Coordinator
    from privet.net.rpc import Identity

__all__ = ["ClientSession", "Journal", "SecureAggregation", "SecureOutcome"]

_RETIRED_KEPT = 10_000  # round ids remembered: far more rounds than any run has

log = logging.getLogger(__name__)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: object) -> bytes:
    try:
        return base64.b64decode(str(text), validate=True)
    except ValueError:
        raise FormatError("a secure-aggregation message holds malformed base64") from None


class Journal:
    """Where a secure round stands, written atomically as each stage opens (``state/secagg.json``).

    A server restarted mid-round finds the interrupted round here and runs it again from the keys stage: the
    round's keys, seeds and masks lived only in the processes of that attempt (the clients' die with the
    round, the server never had them), so completing it is impossible and restarting it costs nothing but time.
    Its round id is *retired*: every later round id is checked against the retired ones, so no round's keys or
    masks are used twice, even if the random generator failed.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.retired: list[str] = []
        if path.exists():
            try:
                state = json.loads(path.read_text())
                self.retired = [*map(str, state["retired"]), str(state["round_id"])]
                if state["stage"] != "done":
                    log.warning("secure round %d was interrupted at its %s stage; it runs again with fresh keys",
                                state["round"], state["stage"])  # fmt: skip
            except (ValueError, KeyError, TypeError):
                raise FormatError(f"{path} is damaged", "Restore it from a backup or remove the run's state.") from None
        self._round_id = ""

    def enter(self, round_: int, round_id: bytes, stage: str, peers: list[str]) -> None:
        if round_id.hex() != self._round_id:
            if self._round_id:
                self.retired.append(self._round_id)
            self._round_id = round_id.hex()
        record = {"round": round_, "round_id": self._round_id, "stage": stage, "peers": sorted(peers),
                  "retired": self.retired[-_RETIRED_KEPT:]}  # fmt: skip
        with atomic_file(self.path, mode=0o644) as handle:
            handle.write(json.dumps(record).encode())


class Encoding(Protocol):
    """Fixed-point encoding of updates for secure sums: :class:`Quantizer` or :class:`DistributedNoise`."""

    @property
    def modulus_bits(self) -> int: ...

    def encode(self, update: np.ndarray) -> np.ndarray: ...

    def decode_sum(self, total: np.ndarray, count: int) -> np.ndarray: ...


@dataclass(frozen=True)
class SecureOutcome:
    mean: Tensor  # the unweighted mean of the survivors' clipped updates
    answered: list[str]
    loss: float


class SecureAggregation:
    """The server's side of secure rounds for a run configured with ``secure_aggregation``."""

    def __init__(
        self, settings: SecureAggregationConfig, strategy: Strategy, config: FederationConfig, dimension: int
    ) -> None:
        if type(strategy).combine is not Strategy.combine:
            raise UsageError(
                f"{strategy.name} needs the individual updates, which secure aggregation hides from the server",
                "Use fedavg, fedprox, fedavgm, fedadagrad, fedadam or fedyogi; clip (secure_aggregation.clip) "
                "bounds each update's norm on the client.",
            )
        if strategy.norm_bound is not None:
            raise UsageError("with secure aggregation norms are bounded on the clients", "Use secure_aggregation.clip.")
        self.settings, self.config = settings, config
        self._verifier = Verifier((config.party / "ca.crt").read_bytes()) if settings.malicious else None
        self._he_public = None
        if settings.method == "ckks":
            try:
                self._he_public = ckks.HEKeys.from_public_bytes((config.party / "he.pub").read_bytes())
            except FileNotFoundError:
                hint = "Provision the federation again with this privet (it writes the CKKS keys)."
                raise UsageError(f"{config.party / 'he.pub'} is missing", hint) from None
        self.noise: DistributedNoise | None = None
        self.journal = Journal(config.state / "secagg.json")
        if settings.method == "ckks":
            return
        # A round of the configured size must be plannable and its sums must fit the modulus: refuse now, not later.
        planned = self._plan(config.clients_per_round)
        if config.privacy is not None:
            privacy = config.privacy
            self.noise = calibrate(privacy.epsilon, privacy.delta, rounds=config.rounds, clip=settings.clip,
                                   bits=settings.bits, clients=config.clients_per_round,
                                   minimum=max(config.min_clients, planned.threshold), dimension=dimension)  # fmt: skip
        else:
            Quantizer(settings.clip, settings.bits, config.clients_per_round)

    def _plan(self, clients: int) -> SecAggPlan:
        s = self.settings
        return plan(clients, dropout=s.dropout, corrupt=s.corrupt, security=s.security, full=s.full,
                    colluding=s.colluding, malicious=s.malicious)  # fmt: skip

    def run(self, coordinator: Coordinator, round_: int, sampled: list[str]) -> SecureOutcome | None:
        """The round's stages for ``sampled``; ``None`` when too few survive (the round is void)."""
        if self.settings.method == "ckks":
            return self._run_ckks(coordinator, round_, sampled)
        s, length = self.settings, coordinator.flat.numel()
        index = {peer: i for i, peer in enumerate(sampled)}
        try:
            encoding = self._encoding(len(sampled), length)
            secure = Round(self._plan(len(sampled)), length, encoding.modulus_bits)
        except UsageError as exc:
            raise UsageError(f"round {round_}: {exc.message}", exc.hint) from None
        if secure.round_id.hex() in self.journal.retired:  # 2^-128 by chance; a broken generator otherwise
            raise IntegrityError("a round id repeats an earlier round's: refusing to reuse keys or masks")
        server = Server(secure)
        setup = {"round": round_, "round_id": secure.round_id.hex(), "clients": len(sampled),
                 "degree": secure.plan.degree, "threshold": secure.plan.threshold, "bits": s.bits, "clip": s.clip,
                 "modulus_bits": secure.bits, "length": length}  # fmt: skip
        if self.noise is not None:
            setup["noise"] = {"sigma": self.noise.sigma, "minimum": self.noise.minimum, "clients": self.noise.clients}
        if s.malicious:
            setup["roster"] = sampled  # who sits at each index: what certificates must name

        def stage(name: str, peers: list[str], offer: Any, accept: Any, deadline: float) -> dict[int, Any]:
            self.journal.enter(round_, secure.round_id, name, peers)
            answers = coordinator.run_stage(round_, name, peers, offer, accept, deadline)
            return {index[peer]: value for peer, value in answers.items()}

        def by_index(indices: Any) -> list[str]:
            return [sampled[i] for i in sorted(indices)]

        adverts = stage("keys", sampled,
                        lambda p: Message("secagg-keys", {**setup, "stage": "keys", "index": index[p]}),
                        lambda m, p: self._accept_keys(m, p, secure.round_id, index[p]), s.stage_deadline)  # fmt: skip
        routed = server.collect_keys({i: advert[0] for i, advert in adverts.items()})

        def peers_of(p: str) -> dict[str, list[str]]:
            return {str(j): [k.sharing.hex(), k.masking.hex(), *(_b64(x) for x in adverts[j][1:])]
                    for j, k in routed[index[p]].items()}  # fmt: skip

        shares = stage(
            "share", by_index(routed),
            lambda p: Message("secagg-share", {"round": round_, "stage": "share", "peers": peers_of(p)}),
            _accept_shares, s.stage_deadline,
        )  # fmt: skip
        relayed = server.collect_shares({i: v[0] for i, v in shares.items()}, {i: v[1] for i, v in shares.items()})
        shared = sorted(server.shared)
        masked = stage(
            "mask", by_index(relayed),
            lambda p: coordinator.task_message(round_, "mask", {"secagg": {
                "sealed": {str(j): _b64(box) for j, box in relayed[index[p]].items()}, "shared": shared}}),
            lambda m, p: _accept_masked(m, p, secure), self.config.round_deadline,
        )  # fmt: skip
        try:
            request = server.collect_masked({i: v[0] for i, v in masked.items()})
            if self.noise is not None and len(request.survivors) < self.noise.minimum:
                raise UsageError(f"{len(request.survivors)} clients survived, fewer than the {self.noise.minimum} "
                                 "whose noise the release needs: the round is void")  # fmt: skip
            unmasking = {"round": round_, "stage": "unmask", "survivors": sorted(request.survivors),
                         "dropped": sorted(request.dropped)}  # fmt: skip
            answering = request.survivors
            if s.malicious:  # the consistency round: every survivor signs the survivors' set
                statement = consistency_statement(secure.round_id, request.survivors)
                signatures = stage(
                    "confirm", by_index(request.survivors),
                    lambda p: Message("secagg-confirm", {"round": round_, "stage": "confirm",
                                                         "survivors": sorted(request.survivors)}),
                    lambda m, p: self._accept_confirmation(m, p, adverts[index[p]][1], statement), s.stage_deadline,
                )  # fmt: skip
                if len(signatures) < secure.plan.threshold:
                    raise UsageError(f"only {len(signatures)} survivors confirmed the round, fewer than t")
                unmasking["signatures"] = {str(i): _b64(sig) for i, sig in signatures.items()}
                answering = frozenset(signatures)
            answers = stage("unmask", by_index(answering), lambda p: Message("secagg-unmask", unmasking),
                            _accept_unmasking, s.stage_deadline)  # fmt: skip
            total = server.finish(answers)
        except UsageError as exc:
            log.warning("round %d: %s", round_, exc.message)
            return None
        count = len(request.survivors)
        self.journal.enter(round_, secure.round_id, "done", by_index(request.survivors))
        mean = torch.from_numpy(encoding.decode_sum(total, count) / count).float()
        losses = [masked[i][1] for i in sorted(request.survivors)]
        return SecureOutcome(mean, by_index(request.survivors), float(np.mean(losses)))

    def _run_ckks(self, coordinator: Coordinator, round_: int, sampled: list[str]) -> SecureOutcome | None:
        """Clients train and send CKKS ciphertexts; the server adds them; one survivor decrypts the sum."""
        assert self._he_public is not None
        public = self._he_public
        task = {"secagg": {"method": "ckks", "clip": self.settings.clip}}
        encrypted = coordinator.run_stage(round_, "encrypt", sampled,
                                          lambda _p: coordinator.task_message(round_, "encrypt", task),
                                          _accept_ciphertext, self.config.round_deadline)  # fmt: skip
        answered = sorted(encrypted)
        if len(answered) < max(2, self.config.min_clients):
            log.warning("round %d: %d clients answered, too few for a sum", round_, len(answered))
            return None
        try:
            total = ckks.add([encrypted[p][0] for p in answered], public)
        except PrivetError as exc:
            log.warning("round %d: %s", round_, exc.message)
            return None
        for decryptor in answered[:3]:  # one survivor decrypts; if it has gone, the next one
            result = coordinator.run_stage(
                round_, "decrypt", [decryptor],
                lambda _p: Message("secagg-decrypt", {"round": round_, "stage": "decrypt", "count": len(answered)},
                                   total),
                lambda m, p: _accept_plain_sum(m, p, coordinator.flat.numel()), self.settings.stage_deadline,
            )  # fmt: skip
            if decryptor in result:
                mean = torch.from_numpy(result[decryptor] / len(answered)).float()
                return SecureOutcome(mean, answered, float(np.mean([encrypted[p][1] for p in answered])))
        log.warning("round %d: no client decrypted the sum in time", round_)
        return None

    def _accept_keys(self, message: Message, peer: str, round_id: bytes, index: int) -> tuple[Any, ...]:
        """A client's public keys; against a malicious server also its certificate and signature, checked here
        (so a bad one is out before honest clients would abort on it) and again by every neighbour."""
        try:
            header = message.header
            keys = _public_keys(header["sharing"], header["masking"], peer)
            if not self.settings.malicious:
                return (keys,)
            certificate, signature = _unb64(header["certificate"]), _unb64(header["signature"])
        except (KeyError, TypeError):
            raise FormatError(f"the keys of {peer} are malformed") from None
        assert self._verifier is not None
        key = self._verifier.peer(certificate, peer)
        if not Verifier.valid(key, signature, keys_statement(round_id, index, peer, keys)):
            raise IntegrityError(f"the key signature of {peer} does not verify")
        return keys, certificate, signature

    def _accept_confirmation(self, message: Message, peer: str, certificate: bytes, statement: bytes) -> bytes:
        assert self._verifier is not None
        try:
            signature = _unb64(message.header["signature"])
        except (KeyError, TypeError):
            raise FormatError(f"the confirmation of {peer} is malformed") from None
        if not Verifier.valid(self._verifier.peer(certificate, peer), signature, statement):
            raise IntegrityError(f"the confirmation signature of {peer} does not verify")
        return signature

    def _encoding(self, clients: int, length: int) -> Encoding:
        """How the round's updates become integers: with privacy, the planned noise (sized for the configured
        clients per round, which a round never exceeds); without, a quantizer sized for this round."""
        if self.noise is not None:
            return self.noise
        return Quantizer(self.settings.clip, self.settings.bits, clients)


def _public_keys(sharing: object, masking: object, peer: str) -> PublicKeys:
    try:
        keys = PublicKeys(bytes.fromhex(str(sharing)), bytes.fromhex(str(masking)))
    except ValueError:
        raise FormatError(f"the keys of {peer} are malformed") from None
    if len(keys.sharing) != 32 or len(keys.masking) != 32:
        raise FormatError(f"the keys of {peer} are not X25519 public keys")
    return keys


def _accept_ciphertext(message: Message, peer: str) -> tuple[bytes, float]:
    payload = message.payload
    if isinstance(payload, Spooled):
        spooled, payload = payload, payload.read(0, payload.nbytes)
        spooled.close()
    loss = float(message.header.get("loss", 0.0))
    if not math.isfinite(loss):
        raise UsageError(f"the loss reported by {peer} is not finite")
    return bytes(payload), loss


def _accept_plain_sum(message: Message, peer: str, length: int) -> np.ndarray:
    payload = message.payload
    if isinstance(payload, Spooled):
        spooled, payload = payload, payload.read(0, payload.nbytes)
        spooled.close()
    if len(payload) != 8 * length:
        raise FormatError(f"the decrypted sum from {peer} does not fit the model")
    values = np.frombuffer(bytes(payload), dtype=np.float64)
    if not np.isfinite(values).all():
        raise UsageError(f"the decrypted sum from {peer} is not finite")
    return values


def _accept_shares(message: Message, peer: str) -> tuple[dict[int, bytes], bytes]:
    try:
        sealed = {int(j): _unb64(box) for j, box in message.header["sealed"].items()}
        commitment = bytes.fromhex(message.header["commitment"])
    except (KeyError, ValueError, TypeError, AttributeError):
        raise FormatError(f"the shares of {peer} are malformed") from None
    return sealed, commitment


def _accept_masked(message: Message, peer: str, secure: Round) -> tuple[np.ndarray, float]:
    payload = message.payload
    if isinstance(payload, Spooled):  # a large model's masked input: unpacked into memory, as every masked input is
        spooled, payload = payload, payload.read(0, payload.nbytes)
        spooled.close()
    vector = masks.unpack(bytes(payload), secure.bits, secure.length)  # refuses a payload of the wrong size
    loss = float(message.header.get("loss", 0.0))
    if not math.isfinite(loss):
        raise UsageError(f"the loss reported by {peer} is not finite")
    return vector, loss


def _accept_unmasking(message: Message, peer: str) -> dict[int, tuple[str, bytes]]:
    try:
        return {int(j): (str(kind), _unb64(share)) for j, (kind, share) in message.header["answers"].items()}
    except (KeyError, ValueError, TypeError, AttributeError):
        raise FormatError(f"the unmasking answers of {peer} are malformed") from None


class ClientSession:
    """A client's protocol state for the current secure round (none between rounds or after a restart).

    With ``identity`` the client signs its round keys and checks its neighbours' whenever the server's round
    names a roster; with ``malicious`` it also refuses any round without one, or whose threshold does not exceed
    half the neighbourhood (what the consistency round needs), so a server cannot downgrade it.
    """

    def __init__(self, identity: Identity | None = None, *, malicious: bool = False) -> None:
        if malicious and identity is None:
            raise UsageError("a client that guards against a malicious server needs its identity to sign keys")
        self._signer = Signer(identity.certificate_pem, identity.key_pem) if identity is not None else None
        self._verifier = Verifier(identity.ca_pem) if identity is not None else None
        self.malicious = malicious
        self._identity = identity
        self._he_keys: ckks.HEKeys | None = None
        self._round: int | None = None
        self._client: Client | None = None
        self._setup: Mapping[str, Any] = {}
        self._peer_keys: dict[int, Any] = {}
        self._confirmed: frozenset[int] | None = None

    def _current(self, header: Mapping[str, Any]) -> Client:
        if self._client is None or header.get("round") != self._round:
            raise UsageError(f"no secure round {header.get('round')} in progress here (this client restarted?)")
        return self._client

    def answer(self, message: Message) -> Message:
        """The answer to one of the server's protocol messages (keys, shares, confirmation or unmasking)."""
        try:
            return self._answer(message)
        except (KeyError, ValueError, TypeError, AttributeError, IndexError):
            raise FormatError(f"the server's {message.kind!r} message is malformed") from None

    def _refuse(self, error: Exception) -> None:
        self._client = None  # refusing ends this client's part in the round
        raise error

    def _answer(self, message: Message) -> Message:
        header = message.header
        if message.kind == "secagg-keys":
            return self._advertise(header)
        if message.kind == "secagg-decrypt":
            return self._decrypt(message)
        client = self._current(header)
        roster = self._setup.get("roster")
        if message.kind == "secagg-share":
            peers = {int(j): PublicKeys(bytes.fromhex(v[0]), bytes.fromhex(v[1])) for j, v in header["peers"].items()}
            if roster is not None:
                self._check_peers(header["peers"], peers, roster)
            sealed = client.share(peers)
            return Message("shares", {"round": self._round, "stage": "share", "commitment": client.commitment.hex(),
                                      "sealed": {str(j): _b64(box) for j, box in sealed.items()}})  # fmt: skip
        if message.kind == "secagg-confirm":
            survivors = frozenset(int(i) for i in header["survivors"])
            if roster is None or self._signer is None or client.index not in survivors:
                self._refuse(IntegrityError("the server asks to confirm a round this client cannot confirm"))
            if len(survivors) < client.round.plan.threshold:
                self._refuse(IntegrityError("the server asks to confirm a set of survivors smaller than t"))
            self._confirmed = survivors
            signature = self._signer.sign(consistency_statement(client.round.round_id, survivors))
            return Message("confirmed", {"round": self._round, "stage": "confirm", "signature": _b64(signature)})
        if message.kind == "secagg-unmask":
            request = Unmasking(frozenset(header["survivors"]), frozenset(header["dropped"]))
            noise = self._setup.get("noise")
            if noise is not None and len(request.survivors) < int(noise["minimum"]):
                self._refuse(IntegrityError(f"the server asks to unmask a sum of {len(request.survivors)} clients, "
                                            f"fewer than the {noise['minimum']} whose noise it needs"))  # fmt: skip
            if roster is not None:
                self._check_consistency(client, request, header.get("signatures") or {})
            answers = client.unmask(request)
            self._client = None  # the round's secrets are no longer needed
            encoded = {str(j): [kind, _b64(share)] for j, (kind, share) in answers.items()}
            return Message("unmasked", {"round": self._round, "stage": "unmask", "answers": encoded})
        raise UsageError(f"unknown secure-aggregation message {message.kind!r}")

    def _he(self) -> ckks.HEKeys:
        if self._identity is None or self._identity.he_key is None:
            raise UsageError("this client has no he.key for homomorphic aggregation",
                             "Use a party folder from `privet fl provision` that holds he.key.")  # fmt: skip
        if self._he_keys is None:
            self._he_keys = open_he_keys(self._identity.he_key, self._identity.key_pem, self._identity.party)
        return self._he_keys

    def _decrypt(self, message: Message) -> Message:
        """Decrypt a round's homomorphic sum (of at least two updates: one alone would be that client's)."""
        header, payload = message.header, message.payload
        if int(header["count"]) < 2:
            raise IntegrityError("the server asks to decrypt a sum of fewer than two updates")
        total = ckks.decrypt(bytes(payload), self._he())
        return Message("decrypted", {"round": header["round"], "stage": "decrypt"},
                       memoryview(total.astype(np.float64)).cast("B"))  # fmt: skip

    def _advertise(self, header: Mapping[str, Any]) -> Message:
        secure_plan = SecAggPlan(int(header["clients"]), int(header["degree"]), int(header["threshold"]),
                                 0.0, 0.0, 0, 0)  # fmt: skip
        secure = Round(secure_plan, int(header["length"]), int(header["modulus_bits"]),
                       bytes.fromhex(header["round_id"]))  # fmt: skip
        self._round, self._setup, self._client = header["round"], dict(header), None
        self._peer_keys, self._confirmed = {}, None
        index, roster = int(header["index"]), header.get("roster")
        if self.malicious and (roster is None or 2 * secure_plan.threshold <= secure_plan.degree):
            raise IntegrityError(f"round {self._round} runs without signed keys or with t <= k/2, which this client "
                                 "refuses (it guards against a malicious server)")  # fmt: skip
        if roster is not None and (self._signer is None or roster[index] != self._signer.party
                                   or len(set(roster)) != len(roster)):  # fmt: skip
            raise IntegrityError(f"round {self._round}'s roster does not put this client at index {index}")
        self._client = Client(index, secure)
        keys = self._client.advertise()
        answer = {"round": self._round, "stage": "keys", "sharing": keys.sharing.hex(), "masking": keys.masking.hex()}
        if roster is not None:
            assert self._signer is not None
            statement = keys_statement(secure.round_id, index, self._signer.party, keys)
            answer.update(certificate=_b64(self._signer.certificate_pem), signature=_b64(self._signer.sign(statement)))
        return Message("keys", answer)

    def _check_peers(self, raw: Mapping[str, Any], peers: Mapping[int, PublicKeys], roster: list[str]) -> None:
        """Every neighbour's keys signed under a certificate the federation's CA issued to that party."""
        assert self._verifier is not None and self._client is not None
        for j, keys in peers.items():
            certificate, signature = _unb64(raw[str(j)][2]), _unb64(raw[str(j)][3])
            key = self._verifier.peer(certificate, roster[j])
            if not Verifier.valid(key, signature, keys_statement(self._client.round.round_id, j, roster[j], keys)):
                self._refuse(IntegrityError(f"the keys relayed for {roster[j]} are not signed by it"))
            self._peer_keys[j] = key

    def _check_consistency(self, client: Client, request: Unmasking, signatures: Mapping[str, Any]) -> None:
        """The survivors' set is the one this client signed, and at least t of its neighbours signed it too."""
        if self._confirmed != request.survivors:
            self._refuse(IntegrityError("the server's survivors differ from the set this client confirmed"))
        statement = consistency_statement(client.round.round_id, request.survivors)
        valid = sum(
            1 for j, signature in signatures.items()
            if int(j) in self._peer_keys and int(j) in request.survivors
            and Verifier.valid(self._peer_keys[int(j)], _unb64(signature), statement)
        )  # fmt: skip
        if valid < client.round.plan.threshold:
            self._refuse(IntegrityError(f"only {valid} neighbours confirmed the survivors, fewer than t"))

    def masked_update(self, header: Mapping[str, Any], update: Tensor, examples: int, loss: float) -> Message:
        """Clip, encode and mask a trained update for the ``mask`` stage."""
        try:
            return self._masked_update(header, update, examples, loss)
        except (KeyError, ValueError, TypeError, AttributeError):
            raise FormatError("the server's secure training task is malformed") from None

    def _masked_update(self, header: Mapping[str, Any], update: Tensor, examples: int, loss: float) -> Message:
        if header["secagg"].get("method") == "ckks":
            clip = float(header["secagg"]["clip"])
            clipped = update.double() * min(1.0, clip / max(float(update.norm()), 1e-12))
            sealed = ckks.encrypt(clipped.numpy(), self._he())
            return Message("update", {"round": header["round"], "stage": header["stage"], "examples": examples,
                                      "loss": loss}, sealed)  # fmt: skip
        client = self._current(header)
        setup = self._setup
        clip = float(setup["clip"])
        norm = float(update.norm())
        clipped = update.double() * min(1.0, clip / max(norm, 1e-12))
        encoding: Encoding = Quantizer(clip, int(setup["bits"]), int(setup["clients"]))
        if setup.get("noise") is not None:
            noise = setup["noise"]
            encoding = DistributedNoise(clip, int(setup["bits"]), int(noise["clients"]), int(noise["minimum"]),
                                        float(noise["sigma"]), int(setup["length"]))  # fmt: skip
        if encoding.modulus_bits != int(setup["modulus_bits"]):
            raise IntegrityError("the server's modulus does not match the round's encoding")
        encoded = encoding.encode(clipped.numpy())
        secagg = header["secagg"]
        sealed = {int(j): _unb64(box) for j, box in secagg["sealed"].items()}
        masked = client.mask(encoded, sealed, frozenset(int(i) for i in secagg["shared"]))
        payload = masks.pack(masked, int(setup["modulus_bits"]))
        return Message("update", {"round": self._round, "stage": "mask", "examples": examples, "loss": loss}, payload)
