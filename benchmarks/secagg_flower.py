"""Flower 1.41's SecAgg+ as its own code does it: one round of N clients in one process, timed stage by stage.

Run by the Flower virtual environment's python (it imports no privet code)::

    build/flower-venv/bin/python benchmarks/secagg_flower.py [--quick] --json
    build/flower-venv/bin/python benchmarks/secagg_flower.py --clients 100 --params 100000 --dropout 0.1 [--full]

No network, no Ray, no ``Grid``: the server side reproduces, call for call and in the same order, what
``flwr/server/workflow/secure_aggregation/secaggplus_workflow.py`` (``SecAggPlusWorkflow``, whose stages are
methods over a ``Grid``) computes between its ``grid.send_and_receive`` calls, on Flower's own ``WorkflowState``
and with Flower's own ``_check_threshold``; each client is driven through the very functions of
``flwr/client/mod/secure_aggregation/secaggplus_mod.py`` (``_setup``, ``_share_keys``, ``_collect_masked_vectors``,
``_unmask``, ``check_stage``, ``check_configs``, ``SecAggPlusState``) the way ``secaggplus_mod`` calls them, its
state saved to and restored from a ``ConfigRecord`` between stages as the mod does. Messages are handed over in
memory: the ``ConfigRecord`` a workflow ``make()`` builds is what the client step receives (a copy per client,
as each real client deserialises its own), and the ``ConfigRecord`` the mod returns is what the server reads.
Nothing of Flower's is optimised or replaced; no crypto of our own. Line numbers below are those of the installed
flwr 1.41.0 (``build/flower-venv/lib/python3.11/site-packages/flwr``).

Stages and the Flower code each one mirrors:

- Parameters: ``SecAggPlusWorkflow(num_shares, reconstruction_threshold)`` (SecAgg+) or
  ``SecAggWorkflow(reconstruction_threshold)`` (``--full``: ``num_shares=1.0``, secagg_workflow.py 93-111) are
  constructed for real, so ``_check_init_params`` (workflow 204-265) vets them; ``setup_stage``'s derivation
  (workflow 307-325: an int is taken as is; a float ``num_shares`` becomes ``round(p * N)``, bumped to odd when
  below N, set to N when <= 2; a float threshold becomes ``max(round(q * num_shares), 2)``; 343-346: an even
  ``num_shares`` below N is bumped to odd) is reproduced line for line.
- Setup, server (workflow 305-357, 382-400): sampled ids, ``random.shuffle``, the ring of neighbours
  (``half_share = num_shares >> 1``, offsets ``-half_share .. half_share``, each node its own neighbour), the
  setup ``ConfigRecord``; then the public keys collected and ``_check_threshold`` (267-273).
  Client (mod 141-185 with ``_setup``, mod 310-342): ``generate_key_pairs`` twice (SECP384R1,
  supercore/primitives/asymmetric.py 25-31), ``private_key_to_bytes`` / ``public_key_to_bytes`` (PEM).
- Share keys, server (workflow 408-470): one ``ConfigRecord`` of the neighbours' public keys per client; the
  forward lists built from the replies; ``_check_threshold``.
  Client (``_share_keys``, mod 346-404): ``os.urandom(32)`` mask seed, ``create_shares`` (shamir.py 25-53:
  PyCryptodome ``Shamir.split`` over GF(2^128), 16-byte chunks of the PKCS#7-padded secret) of the seed and of
  the PEM of private key 1, then per neighbour ``generate_shared_key`` (ECDH + HKDF-SHA256,
  symmetric_encryption.py 26-43) with private key 2, ``share_keys_plaintext_concat`` and Fernet ``encrypt``.
- Dropout: a fraction ``--dropout`` of the clients (seeded) answer the share-keys stage and then never answer
  the collect stage (the case where their pairwise masks must be rebuilt; Flower needs a ``timeout`` for this,
  with ``timeout=None`` it would wait for them forever).
- Collect masked vectors, server (workflow 479-541): forwarded ciphertexts per client; ``bytes_to_ndarray``,
  ``parameters_addition`` of the masked vectors in reply order, ``parameters_mod``; ``_check_threshold``.
  Client (``_collect_masked_vectors``, mod 408-492): ``decrypt`` + ``share_keys_plaintext_separate`` of each
  forwarded share, ``q_ratio = round(num_examples / max_weight * quantization_range)``, ``parameters_multiply``,
  ``quantize`` (stochastic rounding), ``factor_combine``, ``pseudo_rand_gen`` self mask, per neighbour
  ``generate_shared_key`` with private key 1 + ``pseudo_rand_gen`` pairwise mask (+ or - by node id order),
  ``parameters_mod``, ``ndarray_to_bytes``. (The mod's ``call_next``, i.e. training, is skipped: the client's
  update is given.)
- Unmask, server (workflow 551-650): per client the active / dead neighbour lists; the shares collected per
  owner; for every sampled node ``combine_shares`` (shamir.py 64-92: ``Shamir.combine`` of every share
  received, not just ``threshold`` of them) then, for a survivor, ``pseudo_rand_gen`` of its seed and
  ``parameters_subtraction``; for a dropped client, per neighbour (dead ones included)
  ``generate_shared_key(bytes_to_private_key(sk1), bytes_to_public_key(pk1))`` + ``pseudo_rand_gen`` and
  ``parameters_addition`` / ``parameters_subtraction``; then ``parameters_mod``, ``factor_extract``,
  ``dequantize`` and the offset / ratio correction. Client (``_unmask``, mod 495-513): its seed shares of active
  neighbours and key shares of dead ones. Left out: the strategy's ``configure_fit`` / ``aggregate_fit`` and
  the legacy ``FitRes`` conversions around the protocol, and message transport.

Figures per configuration (one row each): ``server_unmask_s`` (the unmask stage's server computation:
reconstruction + mask regeneration + removal + dequantisation; split in ``server_unmask_breakdown_s``),
``server_total_s`` (the server's computation over the four stages), ``client_median_s`` (median over the
clients that finished the round of the time of their own four stage steps; medians per stage in
``client_stage_median_s``), the ``num_shares`` / ``threshold`` Flower derives, ``completed`` (Flower's workflow
would not halt) with ``reason`` where it would, and ``correct``: the unmasked sum (before dequantisation, factor
included) equals, mod ``modulus_range``, the plain sum of the survivors' quantised inputs (recomputed outside
the timings with the same NumPy seed as the client's stochastic rounding). ``average_max_abs_error`` compares
the dequantised weighted average with the float one (bound: one quantisation step per survivor).

Flower has no default ``num_shares`` / ``reconstruction_threshold`` (both are required arguments; its example app
uses 3 and 2, with which any two dropped clients adjacent in the ring halt the round: N=100 at 10 % does).
Defaults here:
SecAgg+ ``num_shares = 2 * ceil(log2 N) + 1`` (odd, logarithmic as in SecAgg+), ``threshold = num_shares // 2 + 1``
(a majority of the neighbourhood); ``--full`` ``SecAggWorkflow(reconstruction_threshold = N // 2 + 1)``.
``--num-shares`` / ``--threshold`` take an int or a float with Flower's meaning of each.

What Flower's code does that shapes the figures (flwr 1.41.0): the unmask stage is almost all
``combine_shares``, whose Lagrange interpolation is O(m^2) in the m shares handed to it (all those received);
private key 1 is shared as its PKCS#8 PEM (306 bytes, 20 chunks) rather than as a 48-byte scalar, so a dropped
client's key costs 6 to 10 times a survivor's 32-byte seed (3 chunks) to rebuild; ``pseudo_rand_gen`` XORs the
32-byte seed (or the 44-byte base64 shared key) down to 32 bits to seed NumPy's ``RandomState`` (MT19937), so
every mask has 32 bits of seed entropy; the sum of the surviving clients' quantised vectors (each entry up to
``quantization_range`` = 2^22, the weight factor too) is taken mod ``modulus_range`` = 2^32 with no check of
the number of clients summed, so above 1,024 full-weight clients (about 2,048 for updates near zero) the
unmasked sum wraps and the average is wrong without a warning (Flower warns only for an int ``num_shares``
above 1,024; ``average_ok`` and ``wraps_modulus`` show it); one node whose active neighbours fall below the
threshold at any ``_check_threshold`` halts the whole round.

Default suite (no size flags): N=100, d=100,000: full SecAgg at 10 % dropout, SecAgg+ at 0, 10, 30 %; N=1,000,
d=100,000 SecAgg+ at 10 %. ``--quick``: N=20, d=10,000, the four N=100 modes. With ``--json`` the only stdout
line is ``{"benchmark": "secagg_flower", "flwr_version", "machine", "rows": [...], ...}``; progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any, cast

import numpy as np
from flwr.app import ConfigRecord
from flwr.client.mod.secure_aggregation.secaggplus_mod import (
    SecAggPlusState,
    _collect_masked_vectors,
    _setup,
    _share_keys,
    _unmask,
    check_configs,
    check_stage,
)
from flwr.common import bytes_to_ndarray, ndarrays_to_parameters
from flwr.common.secure_aggregation.crypto.shamir import combine_shares
from flwr.common.secure_aggregation.crypto.symmetric_encryption import generate_shared_key
from flwr.common.secure_aggregation.ndarrays_arithmetic import (
    factor_combine,
    factor_extract,
    get_parameters_shape,
    parameters_addition,
    parameters_mod,
    parameters_multiply,
    parameters_subtraction,
)
from flwr.common.secure_aggregation.quantization import dequantize, quantize
from flwr.common.secure_aggregation.secaggplus_constants import Key, Stage
from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
from flwr.server.workflow.secure_aggregation.secagg_workflow import SecAggWorkflow
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import SecAggPlusWorkflow, WorkflowState
from flwr.supercore.primitives.asymmetric import bytes_to_private_key, bytes_to_public_key

from common import log, machine  # benchmarks/ is on sys.path when a benchmark runs

BENCHMARK = "secagg_flower"
PARAM_SCALE = 0.05  # clients' updates: N(0, 0.05) float32, far inside Flower's clipping range of 8
EXAMPLES_RANGE = (100, 1000)  # clients' num_examples, uniform; max_weight is Flower's default 1000


@dataclass
class RowConfig:
    full: bool
    clients: int
    params: int
    dropout: float
    num_shares: int | float
    threshold: int | float
    seed: int


@dataclass
class Client:
    """One client: its node id, the mod's saved state (a ConfigRecord, as ``ctxt.state`` holds it), its times."""

    nid: int
    record: ConfigRecord = field(default_factory=ConfigRecord)
    times: dict[str, float] = field(default_factory=dict)


class Clock:
    """Server computation time per stage: ``with clock(stage):`` around the server's own code only."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._stage = ""
        self._start = 0.0

    def __call__(self, stage: str) -> Clock:
        self._stage = stage
        return self

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.seconds[self._stage] = self.seconds.get(self._stage, 0.0) + time.perf_counter() - self._start


class Progress:
    """A stderr line every 10 s of a long loop, and one at its end."""

    def __init__(self, label: str, total: int) -> None:
        self.label, self.total, self.done = label, total, 0
        self.started = self.last = time.perf_counter()

    def step(self) -> None:
        self.done += 1
        now = time.perf_counter()
        if self.done == self.total or now - self.last >= 10.0:
            self.last = now
            log(f"{BENCHMARK}:   {self.label}: {self.done}/{self.total} ({now - self.started:.1f} s)")


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def default_shares(clients: int, full: bool) -> tuple[int | float, int | float]:
    """This benchmark's defaults (Flower has none): see the module docstring."""
    if full:
        return 1.0, clients // 2 + 1
    num_shares = 2 * math.ceil(math.log2(clients)) + 1
    return num_shares, num_shares // 2 + 1


def client_update(seed: int, nid_index: int, params: int) -> tuple[list[np.ndarray], int]:
    """The update a client hands to the mod after training (given here): float32 weights and its example count."""
    rng = np.random.default_rng([seed, nid_index])
    return [rng.normal(0.0, PARAM_SCALE, params).astype(np.float32)], int(rng.integers(*EXAMPLES_RANGE, endpoint=True))


def mod_step(client: Client, configs: ConfigRecord, fit: tuple[list[np.ndarray], int] | None = None) -> Any:
    """One message through ``secaggplus_mod`` (mod 141-185), less the Message plumbing and ``call_next``.

    Returns the reply ConfigRecord, or the exception (Flower replies with an error message, and the server
    drops the client from the active set).
    """
    start = time.perf_counter()
    stage = cast(str, configs[Key.STAGE])
    try:
        state = SecAggPlusState(**client.record)
        check_stage(state.current_stage, configs)
        state.current_stage = cast(str, configs.pop(Key.STAGE))
        check_configs(state.current_stage, configs)
        if state.current_stage == Stage.SETUP:
            state.nid = client.nid
            res = _setup(state, configs)
        elif state.current_stage == Stage.SHARE_KEYS:
            res = _share_keys(state, configs)
        elif state.current_stage == Stage.COLLECT_MASKED_VECTORS:
            assert fit is not None
            parameters = ndarrays_to_parameters(fit[0])  # what recorddict_to_fitres hands over (mod 169)
            res = _collect_masked_vectors(state, configs, fit[1], parameters)
        else:
            res = _unmask(state, configs)
        client.record = ConfigRecord(state.to_dict())
        reply: Any = ConfigRecord(res, False)
    except Exception as exc:  # a ClientApp exception: an error reply in Flower
        reply = exc
    client.times[stage] = time.perf_counter() - start
    return reply


def deliver(
    clients: dict[int, Client],
    messages: dict[int, ConfigRecord],
    label: str,
    absent: set[int] | None = None,
    before: Callable[[int], tuple[list[np.ndarray], int]] | None = None,
    after: Callable[[int, Any], None] | None = None,
) -> dict[int, Any]:
    """The grid's ``send_and_receive``: each addressed client handles its message; ``absent`` ones never reply.

    ``before`` gives a client's update (what training hands the mod), ``after`` sees its reply; both untimed.
    """
    replies: dict[int, Any] = {}
    todo = [nid for nid in messages if not absent or nid not in absent]
    progress = Progress(f"{label}", len(todo))
    for nid in todo:
        fit = before(nid) if before is not None else None
        replies[nid] = mod_step(clients[nid], ConfigRecord(dict(messages[nid])), fit)
        if after is not None:
            after(nid, replies[nid])
        progress.step()
    return replies


def neighbour_stats(state: WorkflowState) -> tuple[int, int]:
    """The smallest number of active neighbours a sampled node has, and how many are below the threshold."""
    counts = [len(state.nid_to_neighbours[nid] & state.active_node_ids) for nid in state.sampled_node_ids]
    return min(counts), sum(1 for c in counts if c < state.threshold)


def run_round(cfg: RowConfig) -> dict[str, Any]:
    """One SecAgg+ round as Flower's workflow and mod run it (see the module docstring for the line map)."""
    wall = time.perf_counter()
    row: dict[str, Any] = {
        "mode": "secagg" if cfg.full else "secagg+",
        "clients": cfg.clients,
        "params": cfg.params,
        "dropout": cfg.dropout,
        "seed": cfg.seed,
        "num_shares_arg": cfg.num_shares,
        "threshold_arg": cfg.threshold,
        "load_average_before": load_average(),
    }
    random.seed(cfg.seed)  # setup_stage shuffles with the global `random`
    ids_rng = random.Random(cfg.seed)
    node_ids: list[int] = []
    while len(node_ids) < cfg.clients:  # Flower's node ids: 8 random bytes, unsigned (NODE_ID_NUM_BYTES = 8)
        nid = ids_rng.getrandbits(64)
        if nid and nid not in node_ids:
            node_ids.append(nid)
    index_of = {nid: i for i, nid in enumerate(node_ids)}
    clients = {nid: Client(nid) for nid in node_ids}
    # Constructed for real: _check_init_params vets the arguments (workflow 204-265)
    workflow = (
        SecAggWorkflow(reconstruction_threshold=cfg.threshold)
        if cfg.full
        else SecAggPlusWorkflow(num_shares=cfg.num_shares, reconstruction_threshold=cfg.threshold)
    )
    state = WorkflowState()
    clock = Clock()

    def halt(stage: str, reason: str) -> dict[str, Any]:
        row.update(completed=False, aborted_at=stage, reason=reason, correct=None)
        return finish(row, clients, clock, wall, state)

    # ---- Stage 0: setup (workflow 305-400; mod _setup 310-342) ----
    log(f"{BENCHMARK}: [{row['mode']} N={cfg.clients} d={cfg.params} dropout={cfg.dropout}] setup")
    with clock("setup"):
        sampled_node_ids = list(node_ids)
        num_samples = len(sampled_node_ids)
        if num_samples < 2:
            return halt("setup", "The number of samples should be greater than 1.")
        if isinstance(workflow.num_shares, float):
            state.num_shares = round(workflow.num_shares * num_samples)
            if state.num_shares < num_samples and state.num_shares & 1 == 0:
                state.num_shares += 1
            if state.num_shares <= 2:
                state.num_shares = num_samples
        else:
            state.num_shares = workflow.num_shares
        if isinstance(workflow.reconstruction_threshold, float):
            state.threshold = round(workflow.reconstruction_threshold * state.num_shares)
            state.threshold = max(state.threshold, 2)
        else:
            state.threshold = workflow.reconstruction_threshold
        state.active_node_ids = set(sampled_node_ids)
        state.clipping_range = workflow.clipping_range
        state.quantization_range = workflow.quantization_range
        state.mod_range = workflow.modulus_range
        state.max_weight = workflow.max_weight
        sa_params_dict = {
            Key.STAGE: Stage.SETUP,
            Key.SAMPLE_NUMBER: num_samples,
            Key.SHARE_NUMBER: state.num_shares,
            Key.THRESHOLD: state.threshold,
            Key.CLIPPING_RANGE: state.clipping_range,
            Key.TARGET_RANGE: state.quantization_range,
            Key.MOD_RANGE: state.mod_range,
            Key.MAX_WEIGHT: state.max_weight,
        }
        if num_samples != state.num_shares and state.num_shares & 1 == 0:
            state.num_shares += 1
        random.shuffle(sampled_node_ids)
        half_share = state.num_shares >> 1
        state.nid_to_neighbours = {
            nid: {sampled_node_ids[(idx + offset) % num_samples] for offset in range(-half_share, half_share + 1)}
            for idx, nid in enumerate(sampled_node_ids)
        }
        state.sampled_node_ids = state.active_node_ids
        cfg_record = ConfigRecord(sa_params_dict)  # type: ignore[arg-type]
        messages = dict.fromkeys(state.active_node_ids, cfg_record)
    row.update(
        num_shares=state.num_shares,
        threshold=state.threshold,
        neighbourhood=len(next(iter(state.nid_to_neighbours.values()))),
        quantization_range=state.quantization_range,
        modulus_range=state.mod_range,
        clipping_range=state.clipping_range,
        max_weight=state.max_weight,
    )
    log(
        f"{BENCHMARK}:   num_shares={state.num_shares} threshold={state.threshold} "
        f"neighbourhood={row['neighbourhood']} (self included)"
    )
    replies = deliver(clients, messages, "clients: setup (key pairs)")
    with clock("setup"):
        state.active_node_ids = {nid for nid, msg in replies.items() if not isinstance(msg, Exception)}
        for nid, msg in replies.items():
            if isinstance(msg, Exception):
                state.failures.append(msg)
                continue
            pk1, pk2 = msg[Key.PUBLIC_KEY_1], msg[Key.PUBLIC_KEY_2]
            state.nid_to_publickeys[nid] = [cast(bytes, pk1), cast(bytes, pk2)]
        ok = workflow._check_threshold(state)
    if not ok:
        return halt("setup", "Insufficient available nodes.")

    # ---- Stage 1: share keys (workflow 408-470; mod _share_keys 346-404) ----
    with clock("share_keys"):

        def make_share_keys(nid: int) -> ConfigRecord:
            neighbours = state.nid_to_neighbours[nid] & state.active_node_ids
            cfg_record = ConfigRecord({str(nid): state.nid_to_publickeys[nid] for nid in neighbours})
            cfg_record[Key.STAGE] = Stage.SHARE_KEYS
            return cfg_record

        messages = {nid: make_share_keys(nid) for nid in state.active_node_ids}
    replies = deliver(clients, messages, "clients: share keys (Shamir shares, encryption)")
    with clock("share_keys"):
        state.active_node_ids = {nid for nid, msg in replies.items() if not isinstance(msg, Exception)}
        srcs: list[int] = []
        dsts: list[int] = []
        ciphertexts: list[bytes] = []
        fwd_ciphertexts: dict[int, list[bytes]] = {nid: [] for nid in state.active_node_ids}
        fwd_srcs: dict[int, list[int]] = {nid: [] for nid in state.active_node_ids}
        for nid, msg in replies.items():
            if isinstance(msg, Exception):
                state.failures.append(msg)
                continue
            dst_lst = cast(list[int], msg[Key.DESTINATION_LIST])
            ctxt_lst = cast(list[bytes], msg[Key.CIPHERTEXT_LIST])
            srcs += [nid] * len(dst_lst)
            dsts += dst_lst
            ciphertexts += ctxt_lst
        for src, dst, ciphertext in zip(srcs, dsts, ciphertexts, strict=True):
            if dst in fwd_ciphertexts:
                fwd_ciphertexts[dst].append(ciphertext)
                fwd_srcs[dst].append(src)
        state.forward_srcs = fwd_srcs
        state.forward_ciphertexts = fwd_ciphertexts
        ok = workflow._check_threshold(state)
    row["client_errors"] = [f"{type(e).__name__}: {e}" for e in state.failures][:5]
    if not ok:
        return halt("share_keys", "Insufficient available nodes.")

    # ---- Dropout: these clients sent their shares and never answer the collect stage ----
    drop_rng = random.Random(cfg.seed + 1)
    dropped = set(drop_rng.sample(sorted(state.active_node_ids), round(cfg.dropout * len(state.active_node_ids))))
    row["dropped"] = len(dropped)

    # ---- Stage 2: collect masked vectors (workflow 479-541; mod _collect_masked_vectors 408-492) ----
    with clock("collect_masked_vectors"):

        def make_collect(nid: int) -> ConfigRecord:
            cfg_dict = {
                Key.STAGE: Stage.COLLECT_MASKED_VECTORS,
                Key.CIPHERTEXT_LIST: state.forward_ciphertexts[nid],
                Key.SOURCE_LIST: state.forward_srcs[nid],
            }
            return ConfigRecord(cfg_dict)  # type: ignore[arg-type]

        messages = {nid: make_collect(nid) for nid in state.active_node_ids}
    # Outside every timing: each survivor's update, and the plain sum of the quantised inputs it masks
    # (Flower's own calls of mod 443-463 again, the NumPy global generator reseeded as before the client's step)
    updates: dict[int, tuple[list[np.ndarray], int]] = {}
    expected: dict[str, Any] = {"sum": None, "weighted": np.zeros(cfg.params), "dq_total": 0.0}

    def numpy_seed(nid: int) -> None:
        np.random.seed((cfg.seed * 1_000_003 + index_of[nid]) % 2**32)  # quantize draws from it

    def before(nid: int) -> tuple[list[np.ndarray], int]:
        updates[nid] = client_update(cfg.seed, index_of[nid], cfg.params)
        numpy_seed(nid)
        return updates[nid]

    def after(nid: int, reply: Any) -> None:
        weights, num_examples = updates.pop(nid)
        if isinstance(reply, Exception):
            return
        numpy_seed(nid)
        q_ratio = round(num_examples / state.max_weight * state.quantization_range)
        dq_ratio = q_ratio / state.quantization_range
        quantized = factor_combine(
            q_ratio, quantize(parameters_multiply(weights, dq_ratio), state.clipping_range, state.quantization_range)
        )
        quantized = [np.asarray(a, dtype=np.int64) for a in quantized]
        expected["sum"] = quantized if expected["sum"] is None else parameters_addition(expected["sum"], quantized)
        clipped = np.clip(weights[0].astype(np.float64) * dq_ratio, -state.clipping_range, state.clipping_range)
        expected["weighted"] += clipped
        expected["dq_total"] += dq_ratio

    replies = deliver(clients, messages, "clients: masked input", dropped, before, after)
    with clock("collect_masked_vectors"):
        state.active_node_ids = {nid for nid, msg in replies.items() if not isinstance(msg, Exception)}
        del state.forward_ciphertexts, state.forward_srcs, state.nid_to_fitins
        masked_vector = None
        for msg in replies.values():
            if isinstance(msg, Exception):
                state.failures.append(msg)
                continue
            bytes_list = cast(list[bytes], msg[Key.MASKED_PARAMETERS])
            client_masked_vec = [bytes_to_ndarray(b) for b in bytes_list]
            if masked_vector is None:
                masked_vector = client_masked_vec
            else:
                masked_vector = parameters_addition(masked_vector, client_masked_vec)
        if masked_vector is not None:
            masked_vector = parameters_mod(masked_vector, state.mod_range)
            state.aggregate_ndarrays = masked_vector
        ok = workflow._check_threshold(state)
    del replies
    row["min_active_neighbours"], row["nodes_below_threshold"] = neighbour_stats(state)
    row["client_errors"] = [f"{type(e).__name__}: {e}" for e in state.failures][:5]
    if not ok:
        return halt("collect_masked_vectors", "Insufficient available nodes.")

    # ---- Stage 3: unmask (workflow 551-650; mod _unmask 495-513) ----
    with clock("unmask"):
        active_nids = state.active_node_ids
        dead_nids = state.sampled_node_ids - active_nids

        def make_unmask(nid: int) -> ConfigRecord:
            neighbours = state.nid_to_neighbours[nid]
            cfg_dict = {
                Key.STAGE: Stage.UNMASK,
                Key.ACTIVE_NODE_ID_LIST: list(neighbours & active_nids),
                Key.DEAD_NODE_ID_LIST: list(neighbours & dead_nids),
            }
            return ConfigRecord(cfg_dict)  # type: ignore[arg-type]

        messages = {nid: make_unmask(nid) for nid in state.active_node_ids}
    replies = deliver(clients, messages, "clients: unmask (shares out)")
    log(f"{BENCHMARK}:   server unmask: {len(active_nids)} seeds, {len(dead_nids)} private keys to reconstruct")
    parts = {"reconstruct_s": 0.0, "mask_regen_s": 0.0, "mask_removal_s": 0.0}
    split = {"reconstruct_seeds_s": 0.0, "reconstruct_private_keys_s": 0.0}
    calls = {"combine_shares": 0, "pseudo_rand_gen": 0, "generate_shared_key": 0, "shares_combined": 0}
    progress = Progress("server unmask (combine_shares, masks)", len(state.sampled_node_ids))
    with clock("unmask"):
        state.active_node_ids = {nid for nid, msg in replies.items() if not isinstance(msg, Exception)}
        collected_shares_dict: dict[int, list[bytes]] = {}
        for nid in state.sampled_node_ids:
            collected_shares_dict[nid] = []
        for msg in replies.values():
            if isinstance(msg, Exception):
                state.failures.append(msg)
                continue
            nids = cast(list[int], msg[Key.NODE_ID_LIST])
            shares = cast(list[bytes], msg[Key.SHARE_LIST])
            for owner_nid, share in zip(nids, shares, strict=True):
                collected_shares_dict[owner_nid].append(share)
        masked_vector = state.aggregate_ndarrays
        del state.aggregate_ndarrays
        failed = False
        for nid, share_list in collected_shares_dict.items():
            if len(share_list) < state.threshold:
                failed = True
                break
            t0 = time.perf_counter()
            secret = combine_shares(share_list)
            t1 = time.perf_counter()
            parts["reconstruct_s"] += t1 - t0
            split["reconstruct_seeds_s" if nid in active_nids else "reconstruct_private_keys_s"] += t1 - t0
            calls["combine_shares"] += 1
            calls["shares_combined"] += len(share_list)
            if nid in active_nids:
                private_mask = pseudo_rand_gen(secret, state.mod_range, get_parameters_shape(masked_vector))
                t2 = time.perf_counter()
                masked_vector = parameters_subtraction(masked_vector, private_mask)
                t3 = time.perf_counter()
                parts["mask_regen_s"] += t2 - t1
                parts["mask_removal_s"] += t3 - t2
                calls["pseudo_rand_gen"] += 1
            else:
                neighbours = state.nid_to_neighbours[nid]
                neighbours.remove(nid)
                for neighbor_nid in neighbours:
                    t1 = time.perf_counter()
                    shared_key = generate_shared_key(
                        bytes_to_private_key(secret),
                        bytes_to_public_key(state.nid_to_publickeys[neighbor_nid][0]),
                    )
                    pairwise_mask = pseudo_rand_gen(shared_key, state.mod_range, get_parameters_shape(masked_vector))
                    t2 = time.perf_counter()
                    if nid > neighbor_nid:
                        masked_vector = parameters_addition(masked_vector, pairwise_mask)
                    else:
                        masked_vector = parameters_subtraction(masked_vector, pairwise_mask)
                    t3 = time.perf_counter()
                    parts["mask_regen_s"] += t2 - t1
                    parts["mask_removal_s"] += t3 - t2
                    calls["pseudo_rand_gen"] += 1
                    calls["generate_shared_key"] += 1
            progress.step()
        if not failed:
            recon_parameters = parameters_mod(masked_vector, state.mod_range)
            unmasked_sum = recon_parameters
            q_total_ratio, recon_parameters = factor_extract(recon_parameters)
            inv_dq_total_ratio = state.quantization_range / q_total_ratio
            aggregated_vector = dequantize(recon_parameters, state.clipping_range, state.quantization_range)
            offset = -(len(active_nids) - 1) * state.clipping_range
            for vec in aggregated_vector:
                vec += offset
                vec *= inv_dq_total_ratio
    unmask_total = clock.seconds["unmask"]
    row["server_unmask_breakdown_s"] = {k: round(v, 4) for k, v in parts.items()}
    row["server_unmask_breakdown_s"]["other_s"] = round(unmask_total - sum(parts.values()), 4)
    row["server_unmask_breakdown_s"].update({k: round(v, 4) for k, v in split.items()})
    row["server_unmask_calls"] = calls
    if failed:
        return halt("unmask", "Not enough shares to recover secret in unmask vectors stage")

    # ---- Checks (outside every timing) ----
    want = parameters_mod(expected["sum"], state.mod_range)
    row["correct"] = bool(
        len(want) == len(unmasked_sum)
        and all(np.array_equal(np.asarray(a, dtype=np.int64), b) for a, b in zip(unmasked_sum, want, strict=True))
    )
    average = expected["weighted"] / expected["dq_total"]
    error = float(np.max(np.abs(aggregated_vector[0] - average)))
    step = 2 * state.clipping_range / state.quantization_range
    bound = len(active_nids) * step / expected["dq_total"] * 1.001 + 1e-9
    row.update(
        completed=True,
        reason=None,
        average_max_abs_error=error,
        average_error_bound=bound,
        average_ok=error <= bound,
        sum_of_quantized_max=int(max(int(np.max(a)) for a in expected["sum"])),
        wraps_modulus=bool(any(int(np.max(a)) >= state.mod_range for a in expected["sum"])),
    )
    return finish(row, clients, clock, wall, state)


def finish(
    row: dict[str, Any], clients: dict[int, Client], clock: Clock, wall: float, state: WorkflowState
) -> dict[str, Any]:
    """Times of the row: the server's per stage and total, the clients' medians."""
    row["server_stage_s"] = {k: round(v, 4) for k, v in clock.seconds.items()}
    row["server_total_s"] = round(sum(clock.seconds.values()), 4)
    row["server_unmask_s"] = round(clock.seconds["unmask"], 4) if "unmask" in clock.seconds else None
    stages = (Stage.SETUP, Stage.SHARE_KEYS, Stage.COLLECT_MASKED_VECTORS, Stage.UNMASK)
    finishers = [c for c in clients.values() if c.nid in state.active_node_ids] or list(clients.values())
    totals = [sum(c.times.values()) for c in finishers]
    row["client_median_s"] = round(statistics.median(totals), 4) if totals else None
    row["client_max_s"] = round(max(totals), 4) if totals else None
    row["client_stage_median_s"] = {
        stage: round(statistics.median(ts), 4)
        for stage in stages
        if (ts := [c.times[stage] for c in clients.values() if stage in c.times])
    }
    row.setdefault("completed", False)
    row["wall_s"] = round(time.perf_counter() - wall, 2)
    row["load_average_after"] = load_average()
    log(
        f"{BENCHMARK}: [{row['mode']} N={row['clients']} d={row['params']} dropout={row['dropout']}] "
        f"completed={row['completed']} correct={row.get('correct')} server_unmask_s={row['server_unmask_s']} "
        f"server_total_s={row['server_total_s']} client_median_s={row['client_median_s']} "
        f"(num_shares={row.get('num_shares')}, threshold={row.get('threshold')}; wall {row['wall_s']} s)"
        + (f" reason: {row['reason']} at {row['aborted_at']}" if not row["completed"] else "")
    )
    return row


def share_value(text: str) -> int | float:
    """``--num-shares`` / ``--threshold``: an int or a float, with Flower's meaning of each type."""
    return float(text) if any(c in text for c in ".eE") else int(text)


def suite(args: argparse.Namespace) -> list[RowConfig]:
    if args.clients is not None or args.params is not None or args.dropout is not None or args.full:
        clients = args.clients or 100
        shares, threshold = default_shares(clients, args.full)
        return [
            RowConfig(
                full=args.full,
                clients=clients,
                params=args.params or 100_000,
                dropout=0.1 if args.dropout is None else args.dropout,
                num_shares=1.0 if args.full else (args.num_shares if args.num_shares is not None else shares),
                threshold=args.threshold if args.threshold is not None else threshold,
                seed=args.seed,
            )
        ]
    small, params = (20, 10_000) if args.quick else (100, 100_000)
    modes = [(True, 0.1), (False, 0.0), (False, 0.1), (False, 0.3)]
    rows = []
    for full, dropout in modes:
        shares, threshold = default_shares(small, full)
        rows.append(RowConfig(full, small, params, dropout, shares, threshold, args.seed))
    if not args.quick:
        shares, threshold = default_shares(1000, False)
        rows.append(RowConfig(False, 1000, 100_000, 0.1, shares, threshold, args.seed))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, help="N (one configuration instead of the suite)")
    parser.add_argument("--params", type=int, help="d, the model's parameter count")
    parser.add_argument("--dropout", type=float, help="fraction of clients dropping before the masked input")
    parser.add_argument("--full", action="store_true", help="full SecAgg: SecAggWorkflow, num_shares = N")
    parser.add_argument("--num-shares", type=share_value, help="SecAgg+ num_shares (int, or float = share of N)")
    parser.add_argument("--threshold", type=share_value, help="reconstruction_threshold (int, or float)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="N=20, d=10,000: the four N=100 modes")
    parser.add_argument("--json", action="store_true", help="one JSON line on stdout")
    args = parser.parse_args()
    logging.getLogger("flwr").setLevel(logging.WARNING)
    started_load = load_average()
    rows = []
    for cfg in suite(args):
        rows.append(run_round(cfg))
    report = {
        "benchmark": BENCHMARK,
        "flwr_version": version("flwr"),
        "pycryptodome_version": version("pycryptodome"),
        "cryptography_version": version("cryptography"),
        "numpy_version": np.__version__,
        "machine": machine(),
        "load_average_start": started_load,
        "load_average_end": load_average(),
        "rows": rows,
        "notes": (
            "One process, no transport; server times are the workflow's computation between send_and_receive "
            "calls, client times the mod's stage steps run one client after another. Defaults (Flower has "
            "none): SecAgg+ num_shares = 2*ceil(log2 N)+1, threshold = num_shares//2+1; full SecAgg "
            "threshold = N//2+1."
        ),
    }
    if args.json:
        print(json.dumps(report))
    else:
        for row in rows:
            print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
