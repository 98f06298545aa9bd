"""CKKS aggregation (TenSEAL): a round of N clients' float updates summed under homomorphic encryption.

A round (N clients, d coordinates uniform in [-1, 1], degree 8192) runs in one process with no network, through
:mod:`privet.he.ckks`: every client encrypts with the secret context, the server adds all N
ciphertexts with the public context loaded from its bytes, one client decrypts the sum (with the default noise
flood). Timed:

- ``encrypt_s``: the median over clients of one client's :func:`encrypt`;
- ``server_add_s``: the server's :func:`add` of the N ciphertexts (parsing, loading and adding, serializing the sum);
- ``decrypt_s``: one client's :func:`decrypt` of the sum, flood included.

Also: bytes one client sends and their ratio to d 4-byte floats, and the largest absolute error of the decrypted
sum against the float64 plain sum, as delivered (flooded) and without the flood (CKKS's own error). Figures are
medians over ``--repeats`` rounds after a warm-up round; each round uses fresh updates under one key made at the
start (timed as ``keygen_s``).

Peer: privet's SecAgg+ (:mod:`privet.federated.secagg.protocol`, benchmarks/secagg.py's round with no dropout, on
16-bit integer inputs already quantized), alternating with the CKKS rounds, for the same N and d.

Configuration: N=100, d=100,000. ``--quick``: N=20, d=10,000 (smoke run). Bars: client encryption <= 0.3 s; the
delivered sum within 1e-4 of the plain sum.

Run::

    .venv/bin/python benchmarks/secagg_ckks.py [--quick] --json
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

import numpy as np

from common import emit, log, log_bars  # benchmarks/ is on sys.path when a benchmark runs
from privet.he.ckks import HEKeys, add, decrypt, encrypt
from secagg import privet_round

FULL = (100, 100_000)
QUICK = (20, 10_000)
DEGREE = 8192
ENCRYPT_LIMIT_S = 0.3
ERROR_LIMIT = 1e-4


def ckks_round(keys: HEKeys, server: HEKeys, clients: int, length: int, seed: int) -> dict[str, Any]:
    """One CKKS round in memory: times per party, sizes and errors."""
    updates = np.random.default_rng(seed).uniform(-1.0, 1.0, (clients, length))
    ciphertexts, spent = [], []
    for update in updates:
        began = time.perf_counter()
        ciphertexts.append(encrypt(update, keys))
        spent.append(time.perf_counter() - began)
    began = time.perf_counter()
    total = add(ciphertexts, server)
    add_s = time.perf_counter() - began
    began = time.perf_counter()
    result = decrypt(total, keys)
    decrypt_s = time.perf_counter() - began
    expected = updates.sum(axis=0)
    return {
        "encrypt_s": statistics.median(spent),
        "server_add_s": add_s,
        "decrypt_s": decrypt_s,
        "bytes_per_client": statistics.median(map(len, ciphertexts)),
        "sum_bytes": len(total),
        "max_abs_error": float(np.abs(result - expected).max()),
        "max_abs_error_raw": float(np.abs(decrypt(total, keys, flood=0.0) - expected).max()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help=f"N={QUICK[0]}, d={QUICK[1]:,} (a smoke run)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per side (median)")
    parser.add_argument("--json", action="store_true", help="one JSON line on stdout")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    started = time.perf_counter()
    clients, length = QUICK if args.quick else FULL
    began = time.perf_counter()
    keys = HEKeys.generate(DEGREE)
    keygen_s = time.perf_counter() - began
    secret, public = keys.secret_bytes(), keys.public_bytes()
    keys, server = HEKeys.from_secret_bytes(secret), HEKeys.from_public_bytes(public)  # as deployed
    ckks_round(keys, server, 4, length, seed=2**31)  # warm-up
    privet_round(clients, length, 0.0, False, seed=2**31)
    runs, peers = [], []
    for repeat in range(args.repeats):
        runs.append(ckks_round(keys, server, clients, length, seed=repeat))
        peers.append(privet_round(clients, length, 0.0, False, seed=repeat))
        log(f"secagg_ckks: round {repeat}: encrypt {runs[-1]['encrypt_s']:.4f} s, add {runs[-1]['server_add_s']:.3f} s,"
            f" decrypt {runs[-1]['decrypt_s']:.4f} s, error {runs[-1]['max_abs_error']:.2e}; SecAgg+ client "
            f"{peers[-1]['client_median_s']:.4f} s, server {peers[-1]['server_total_s']:.3f} s")  # fmt: skip
    row = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    row["max_abs_error"] = max(r["max_abs_error"] for r in runs)  # the worst round, not the median
    row["max_abs_error_raw"] = max(r["max_abs_error_raw"] for r in runs)
    expansion = row["bytes_per_client"] / (4 * length)
    figures: dict[str, Any] = {
        "clients": clients,
        "params": length,
        "degree": DEGREE,
        "encrypt_s": round(row["encrypt_s"], 4),
        "server_add_s": round(row["server_add_s"], 4),
        "decrypt_s": round(row["decrypt_s"], 4),
        "bytes_per_client": int(row["bytes_per_client"]),
        "expansion_vs_float32": round(expansion, 3),
        "max_abs_error": float(f"{row['max_abs_error']:.3g}"),
        "max_abs_error_raw": float(f"{row['max_abs_error_raw']:.3g}"),
        "keygen_s": round(keygen_s, 4),
        "secret_bytes": len(secret),
        "public_bytes": len(public),
        "secagg_plus_client_s": round(statistics.median(p["client_median_s"] for p in peers), 4),
        "secagg_plus_server_s": round(statistics.median(p["server_total_s"] for p in peers), 4),
        "ckks_vs_secagg_plus_server": round(
            statistics.median(r["server_add_s"] / p["server_total_s"] for r, p in zip(runs, peers, strict=True)), 3
        ),
    }
    log(f"secagg_ckks: N={clients} d={length}: encrypt {figures['encrypt_s']} s per client, server add "
        f"{figures['server_add_s']} s, decrypt {figures['decrypt_s']} s, {figures['bytes_per_client']:,} bytes per "
        f"client ({figures['expansion_vs_float32']} x float32), max error {figures['max_abs_error']:.2e} "
        f"(without the flood {figures['max_abs_error_raw']:.2e})")  # fmt: skip
    bars = {}
    if not args.quick:
        bars["encrypt_s"] = {"value": figures["encrypt_s"], "limit": ENCRYPT_LIMIT_S,
                             "ok": row["encrypt_s"] <= ENCRYPT_LIMIT_S}  # fmt: skip
        bars["max_abs_error"] = {"value": figures["max_abs_error"], "limit": ERROR_LIMIT,
                                 "ok": row["max_abs_error"] < ERROR_LIMIT}  # fmt: skip
        log_bars("secagg_ckks", bars)
    figures["seconds"] = round(time.perf_counter() - started, 1)
    notes = (
        f"one process, no network, degree {DEGREE}, scale 2^40, 60-bit ciphertext modulus; medians of "
        f"{args.repeats} rounds (errors: the worst round); decrypt adds the default flood (sd 2^-20); SecAgg+ peer "
        "on pre-quantized 16-bit inputs with no dropout"
    )
    if args.json:
        emit("secagg_ckks", figures, bars, notes, {"runs": runs, "load_average": os.getloadavg()})
    return 0 if all(b["ok"] for b in bars.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
