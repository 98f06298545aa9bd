"""Secure aggregation: privet's SecAgg+ and full SecAgg beside Flower 1.41's SecAgg+, the same rounds, same run.

A round (N clients, d parameters, inputs of 16 bits, modulus 2^(16 + ceil(log2 N))) runs in one process with no
network, each side's client and server code called in protocol order; a fraction of the clients drops after
sharing its keys and before sending its masked input (the case that makes the server rebuild their masking keys
and regenerate their pairwise masks). Timed:

- ``server_unmask_s``: the server's last stage (rebuild secrets from exactly t shares, regenerate and remove
  masks); ``server_total_s``: all of the server's stages;
- ``client_median_s``: the median over clients of the time each spends in its own stages;
- ``correct``: the unmasked result equals the plain sum of the survivors' inputs.

privet: :mod:`privet.federated.secagg` (plan from N and the dropout rate; ``--full``: every client a neighbour of
every other). Flower: ``benchmarks/secagg_flower.py`` run by the Flower virtual environment's python
(``build/flower-venv``, see ``benchmarks/fl_sim.py`` for its setup), which drives Flower's own SecAgg+
primitives the way its workflow does; see that script's docstring.

Configurations (the issue's): N=100, d=100,000 full SecAgg at 10 % dropout; SecAgg+ at 0, 10 and 30 %; N=1,000
SecAgg+ at 10 %. ``--quick``: N=20, d=10,000 (smoke run). privet's figures are medians of ``--repeats`` rounds;
Flower's one round each (its full-SecAgg round alone takes minutes).

Communication expansion (Bonawitz et al.'s measure): bytes a client sends in a round over the bytes of its plain
16-bit input, for N=2^10 and d=2^20: the keys, sealed shares, seed commitment and unmasking answers are measured
from a real round of 2^10 clients (with a short vector), the masked vector is d values bit-packed at the modulus
width. Bars: full SecAgg N=100 at 10 %: server <= 2 s; SecAgg+ N=100 at 10 %: <= 0.5 s; N=1,000 at 10 %: <= 5 s;
the 30 % round completes; expansion <= 1.8.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from common import emit, log, log_bars  # benchmarks/ is on sys.path when a benchmark runs
from privet.crypto import masks
from privet.federated.quantize import Quantizer
from privet.federated.secagg.noise import calibrate
from privet.federated.secagg.plan import plan
from privet.federated.secagg.protocol import Client, Round, Server

ROOT = Path(__file__).resolve().parents[1]
FLOWER_PYTHON = Path(os.environ.get("FLOWER_PYTHON", str(ROOT / "build" / "flower-venv" / "bin" / "python")))
FLOWER_SCRIPT = Path(__file__).resolve().parent / "secagg_flower.py"
INPUT_BITS = 16
SUITE = [(100, 100_000, 0.1, True), (100, 100_000, 0.0, False), (100, 100_000, 0.1, False),
         (100, 100_000, 0.3, False), (1000, 100_000, 0.1, False)]  # fmt: skip
QUICK = [(20, 10_000, 0.1, True), (20, 10_000, 0.0, False), (20, 10_000, 0.1, False), (20, 10_000, 0.3, False)]
BARS = {(100, 0.1, True): 2.0, (100, 0.1, False): 0.5, (1000, 0.1, False): 5.0}
EXPANSION_LIMIT = 1.8


def privet_round(clients: int, length: int, dropout: float, full: bool, seed: int) -> dict[str, Any]:
    """One privet round in memory; times per party and stage."""
    bits = Quantizer(1.0, INPUT_BITS, clients).modulus_bits
    # Planned for at least 10 % dropout; small smoke-run federations bound colluders by count instead of fraction.
    small = {} if clients >= 100 else {"colluding": clients // 4, "correctness": 5}
    secagg = plan(clients, dropout=max(dropout, 0.1), full=full, **small)
    round_ = Round(secagg, length, bits)
    graph = round_.graph()
    rng = np.random.default_rng(seed)
    inputs = {i: rng.integers(0, 1 << INPUT_BITS, length, dtype=np.uint32) for i in range(clients)}
    gone = frozenset(rng.choice(clients, round(dropout * clients), replace=False).tolist())
    spent = dict.fromkeys(range(clients), 0.0)
    parties = {i: Client(i, round_, graph) for i in range(clients)}
    server = Server(round_, graph)
    server_s = 0.0

    def client(i: int, call: Any) -> Any:
        began = time.perf_counter()
        result = call()
        spent[i] += time.perf_counter() - began
        return result

    def serve(call: Any) -> Any:
        nonlocal server_s
        began = time.perf_counter()
        result = call()
        server_s += time.perf_counter() - began
        return result

    keys = {i: client(i, parties[i].advertise) for i in range(clients)}
    routed = serve(lambda: server.collect_keys(keys))
    sealed = {i: client(i, lambda i=i: parties[i].share(routed[i])) for i in routed}
    relayed = serve(lambda: server.collect_shares(sealed, {i: parties[i].commitment for i in sealed}))
    masked = {i: client(i, lambda i=i: parties[i].mask(inputs[i], relayed[i], server.shared))
              for i in relayed if i not in gone}  # fmt: skip
    request = serve(lambda: server.collect_masked(masked))
    answers = {i: client(i, lambda i=i: parties[i].unmask(request)) for i in sorted(request.survivors)}
    began = time.perf_counter()
    total = server.finish(answers)
    unmask_s = time.perf_counter() - began
    expected = sum((inputs[i].astype(np.uint64) for i in request.survivors), np.zeros(length, dtype=np.uint64))
    return {
        "server_unmask_s": unmask_s,
        "server_total_s": server_s + unmask_s,
        "client_median_s": statistics.median(spent[i] for i in request.survivors),
        "num_shares": secagg.degree,
        "threshold": secagg.threshold,
        "completed": True,
        "correct": bool(np.array_equal(total, (expected % (1 << bits)).astype(np.uint32))),
    }


def expansion(clients: int = 1 << 10, length: int = 1 << 20) -> dict[str, float]:
    """Bytes one client sends per round over its plain 16-bit input (see the module docstring)."""
    bits = Quantizer(1.0, INPUT_BITS, clients).modulus_bits
    round_ = Round(plan(clients, dropout=0.1), 8, bits)
    graph = round_.graph()
    parties = [Client(i, round_, graph) for i in range(clients)]
    server = Server(round_, graph)
    keys = {i: c.advertise() for i, c in enumerate(parties)}
    routed = server.collect_keys(keys)
    sealed = {i: parties[i].share(routed[i]) for i in routed}
    relayed = server.collect_shares(sealed, {i: parties[i].commitment for i in sealed})
    zeros = np.zeros(8, dtype=np.uint32)
    request = server.collect_masked({i: parties[i].mask(zeros, relayed[i], server.shared) for i in relayed})
    answers = {i: parties[i].unmask(request) for i in sorted(request.survivors)}
    overhead = statistics.median(
        len(keys[i].sharing) + len(keys[i].masking) + sum(map(len, sealed[i].values())) + len(parties[i].commitment)
        + sum(len(share) + 1 for _, share in answers[i].values())
        for i in range(clients)
    )  # fmt: skip
    vector = masks.packed_size(length, bits)
    plain = length * INPUT_BITS // 8
    return {"expansion": (vector + overhead) / plain, "vector_bytes": vector, "overhead_bytes": overhead,
            "plain_bytes": plain, "modulus_bits": bits}  # fmt: skip


def encoding_cost(clients: int, length: int, repeats: int) -> dict[str, float]:
    """Per-client seconds to encode an update: plain fixed point, and with its distributed discrete Gaussian noise
    (clip, conditional rounding, exact noise), at a noise level of epsilon 8 over 100 rounds."""
    update = np.random.default_rng(0).normal(size=length) / np.sqrt(length)
    quantizer = Quantizer(1.0, INPUT_BITS, clients)
    noise = calibrate(8.0, 1e-5, rounds=100, clip=1.0, bits=INPUT_BITS, clients=clients,
                      minimum=int(clients * 0.7), dimension=length)  # fmt: skip

    def timed(encode: Any) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            encode(update)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    return {"plain_s": timed(quantizer.encode), "noisy_s": timed(noise.encode), "modulus_bits": noise.modulus_bits}


def flower_rows(quick: bool) -> tuple[list[dict[str, Any]], str | None]:
    if not FLOWER_PYTHON.exists():
        return [], f"no Flower environment at {FLOWER_PYTHON} (see benchmarks/fl_sim.py --setup-flower)"
    command = [str(FLOWER_PYTHON), str(FLOWER_SCRIPT), "--json", *(["--quick"] if quick else [])]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=3600, env={**os.environ,
                          "FLWR_TELEMETRY_ENABLED": "0"})  # fmt: skip
    if proc.returncode != 0:
        return [], f"Flower's run failed: {proc.stderr.strip().splitlines()[-1:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])["rows"], None


def _key(row: dict[str, Any]) -> tuple[int, float, bool]:
    full = row["full"] if "full" in row else row.get("mode") == "secagg"  # Flower's rows name the mode
    return int(row["clients"]), round(float(row["dropout"]), 3), bool(full)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="N=20, d=10,000 (a smoke run)")
    parser.add_argument("--repeats", type=int, default=3, help="privet rounds per configuration (median)")
    parser.add_argument("--no-flower", action="store_true", help="privet only")
    parser.add_argument("--json", action="store_true", help="one JSON line on stdout")
    args = parser.parse_args()
    started = time.perf_counter()
    rows = []
    for clients, length, dropout, full in QUICK if args.quick else SUITE:
        runs = [privet_round(clients, length, dropout, full, seed) for seed in range(args.repeats)]
        row = {"framework": "privet", "clients": clients, "params": length, "dropout": dropout, "full": full,
               **{k: statistics.median(r[k] for r in runs) for k in ("server_unmask_s", "server_total_s",
                                                                    "client_median_s")},
               **{k: runs[0][k] for k in ("num_shares", "threshold")},
               "completed": all(r["completed"] for r in runs), "correct": all(r["correct"] for r in runs)}  # fmt: skip
        log(f"secagg: privet N={clients} d={length} {'full' if full else 'plus'} dropout {dropout}: unmask "
            f"{row['server_unmask_s']:.3f} s, server {row['server_total_s']:.3f} s, client {row['client_median_s']:.3f}"
            f" s, k={row['num_shares']} t={row['threshold']}, correct {row['correct']}")  # fmt: skip
        rows.append(row)
    flower, flower_note = ([], "skipped (--no-flower)") if args.no_flower else flower_rows(args.quick)
    for row in flower:
        log(f"secagg: flower {row}")
    cost = encoding_cost(*((20, 10_000) if args.quick else (100, 100_000)), max(args.repeats, 5))
    log(f"secagg: client encoding {cost['plain_s']:.4f} s plain, {cost['noisy_s']:.4f} s with distributed DP noise")
    comm = expansion()
    log(f"secagg: expansion {comm['expansion']:.3f} for 16-bit inputs, 2^10 clients, 2^20 parameters")
    figures: dict[str, Any] = {"expansion_16bit_1024_clients_2e20": round(comm["expansion"], 4),
                               "client_encode_plain_s": round(cost["plain_s"], 4),
                               "client_encode_distributed_dp_s": round(cost["noisy_s"], 4)}  # fmt: skip
    by_key = {_key(r): r for r in flower}
    for row in rows:
        name = f"n{row['clients']}_{'full' if row['full'] else 'plus'}_drop{int(row['dropout'] * 100)}"
        figures[f"privet_{name}_server_unmask_s"] = round(row["server_unmask_s"], 4)
        figures[f"privet_{name}_client_s"] = round(row["client_median_s"], 4)
        peer = by_key.get(_key(row))
        if peer is not None:
            figures[f"flower_{name}_server_unmask_s"] = peer.get("server_unmask_s")
            figures[f"flower_{name}_completed"] = peer.get("completed")
            if peer.get("server_unmask_s"):
                figures[f"privet_vs_flower_{name}_unmask"] = round(row["server_unmask_s"] / peer["server_unmask_s"], 4)
    bars = {}
    if not args.quick:
        for (clients, dropout, full), limit in BARS.items():
            row = next(r for r in rows if _key(r) == (clients, dropout, full))
            name = f"n{clients}_{'full' if full else 'plus'}_drop{int(dropout * 100)}_server_unmask_s"
            bars[name] = {"value": round(row["server_unmask_s"], 4), "limit": limit,
                          "ok": row["server_unmask_s"] <= limit and row["correct"]}  # fmt: skip
        thirty = next(r for r in rows if _key(r) == (100, 0.3, False))
        bars["n100_plus_drop30_completes"] = {"value": thirty["completed"] and thirty["correct"], "limit": True,
                                              "ok": thirty["completed"] and thirty["correct"]}  # fmt: skip
        bars["expansion"] = {"value": round(comm["expansion"], 4), "limit": EXPANSION_LIMIT,
                             "ok": comm["expansion"] <= EXPANSION_LIMIT}  # fmt: skip
        log_bars("secagg", bars)
    figures["seconds"] = round(time.perf_counter() - started, 1)
    notes = (
        "one process, no network; dropouts leave after sharing keys, before masking; privet medians of "
        f"{args.repeats} rounds, Flower one round; Flower: {flower_note or 'ok'}"
    )
    details = {"rows": rows, "flower_rows": flower, "expansion": comm, "encoding": cost,
               "load_average": os.getloadavg()}  # fmt: skip
    if args.json:
        emit("secagg", figures, bars, notes, details)
    return 0 if all(b["ok"] for b in bars.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
