"""Streaming AEAD benchmark: privet's streaming encryption of a file against one-shot AES-GCM in memory.

What it measures, on one file of random bytes (1 GiB; 64 MiB with ``--quick``):

- privet, streaming (the bar): ``encrypt_stream`` / ``decrypt_stream`` with a real keyring (SQLite store in a
  temporary directory, fresh master key), reading one file and writing another (on tmpfs when it has room,
  else the temp dir), timed in this process, alternating with the one-shot ceiling.
- privet, durable: ``encrypt_file`` / ``decrypt_file``, which add fsync and the atomic rename, each run in a
  child process that times itself and reports its peak resident memory (``VmHWM``; see the notes for why
  not ``ru_maxrss``): the memory bar. Throughput reported, not barred: on a slow virtual disk the fsync
  dominates and the figure measures the disk, not the cipher.
- the ceiling: one-shot ``AESGCM(key).encrypt(nonce, data, None)`` and ``.decrypt`` over the same bytes held in
  memory, timed in this process.

- with ``--copy-reference``, also a reference without crypto: the same file copied in 1 MiB blocks through
  ``privet.files.atomic_file`` (same fsync and rename), in a child process, to show what this machine's file
  I/O alone costs. Off by default: on machines whose disk bursts and then throttles, its extra 1 GiB of
  writes per repeat slows the privet runs that follow it.

After two warm-up rounds the two alternate, ``--repeats`` times (the order of the file runs rotates, and
``os.sync()`` runs untimed before each timed run); figures are medians, and the ratios are computed pair by
pair (privet / one-shot for each repeat) and then their median is taken. Throughput is in MB/s of plaintext
(1 MB = 1e6 bytes). Every decrypted output is checked against the input by SHA-256.

Bars (from the issue): encrypt and decrypt ratios >= 0.8; peak RSS of the streaming process < 64 MiB.

Run::

    .venv/bin/python benchmarks/aead.py [--quick] --json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import emit, log, log_bars  # benchmarks/ is on sys.path when a benchmark runs

BLOCK = 64 * 1024 * 1024
HASH_BLOCK = 1 << 20
FULL_MIB = 1024
QUICK_MIB = 64
MASTER_ENV = "PRIVET_BENCH_AEAD_MASTER_KEY"
RATIO_LIMIT = 0.8
RSS_LIMIT_MIB = 64.0


def proc_status_kib(field: str) -> int:
    """A ``kB`` field of /proc/self/status (VmHWM, VmRSS)."""
    with Path("/proc/self/status").open() as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    buffer = bytearray(HASH_BLOCK)
    view = memoryview(buffer)
    with path.open("rb", buffering=0) as handle:
        while got := handle.readinto(buffer):
            digest.update(view[:got])
    return digest.hexdigest()


def mbps(size: int, seconds: float) -> float:
    return size / 1e6 / seconds


# -- child: one privet streaming run, in its own process -----------------------------------------------------


def child(mode: str, db: Path, src: Path, dst: Path) -> None:
    """Encrypt or decrypt ``src`` to ``dst`` with privet; print one JSON line with timing and memory."""
    import resource

    from privet.crypto import Keyring, decrypt_file, encrypt_file, from_env_value
    from privet.store import Store

    baseline_kib = proc_status_kib("VmHWM")
    torch_imported = "torch" in sys.modules
    store = Store.open(f"sqlite:///{db}")
    keys = Keyring.unlock(store, from_env_value(os.environ[MASTER_ENV]))
    ready_kib = proc_status_kib("VmHWM")
    start = time.perf_counter()
    stats = encrypt_file(src, dst, keys) if mode == "encrypt" else decrypt_file(src, dst, keys)
    seconds = time.perf_counter() - start
    store.close()
    result = {
        "mode": mode,
        "seconds": seconds,
        "plaintext_bytes": stats.plaintext_bytes,
        "ciphertext_bytes": stats.ciphertext_bytes,
        "chunks": stats.chunks,
        "baseline_hwm_kib": baseline_kib,
        "ready_hwm_kib": ready_kib,
        "peak_hwm_kib": proc_status_kib("VmHWM"),
        "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "torch_imported": torch_imported or "torch" in sys.modules,
    }
    print(json.dumps(result), flush=True)


def copy_child(src: Path, dst: Path) -> None:
    """Reference, no crypto: copy ``src`` to ``dst`` in 1 MiB blocks through privet's atomic_file (same fsync
    and rename as encrypt_file), so readers see what this machine's file I/O alone costs."""
    from privet.files import atomic_file

    buffer = bytearray(1 << 20)
    view = memoryview(buffer)
    start = time.perf_counter()
    with src.open("rb") as reader, atomic_file(dst) as writer:
        while got := reader.readinto(buffer):
            writer.write(view[:got])
    print(json.dumps({"mode": "copy", "seconds": time.perf_counter() - start}), flush=True)


def settle() -> None:
    """Start each timed run with no write-back or discard still pending from the previous one (untimed)."""
    os.sync()


def run_child(mode: str, db: Path, src: Path, dst: Path, master: str) -> dict[str, Any]:
    settle()
    env = dict(os.environ, **{MASTER_ENV: master})
    command = [sys.executable, str(Path(__file__).resolve()), "--child", mode, str(db), str(src), str(dst)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"privet {mode} child failed (exit {done.returncode}):\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- parent ----------------------------------------------------------------------------------------------------


def stream_here(mode: str, keys: Any, src: Path, dst: Path) -> dict[str, Any]:
    """Time privet's streaming engine in this process, like the one-shot it is compared with.

    The destination is overwritten in place when it exists (same size every round): on virtual machines
    that hand freed memory back to the host, faulting in a fresh GiB of tmpfs or page cache costs up to
    4 s at random, which measures the host, not the cipher pipeline.
    """
    from privet.crypto import decrypt_stream, encrypt_stream

    settle()
    stream = encrypt_stream if mode == "encrypt-stream" else decrypt_stream
    start = time.perf_counter()
    with src.open("rb") as reader, dst.open("r+b" if dst.exists() else "wb") as writer:
        stats = stream(reader, writer, keys)
        writer.truncate()
    seconds = time.perf_counter() - start
    return {"mode": mode, "seconds": seconds, "plaintext_bytes": stats.plaintext_bytes, "chunks": stats.chunks}


def write_input(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as handle:
        remaining = size
        while remaining:
            block = os.urandom(min(BLOCK, remaining))
            handle.write(block)
            digest.update(block)
            remaining -= len(block)
    return digest.hexdigest()


def oneshot_round(data: bytes) -> tuple[float, float]:
    """Seconds for one-shot AES-256-GCM encrypt and decrypt of ``data`` (fresh key and nonce)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead = AESGCM(AESGCM.generate_key(bit_length=256))
    nonce = os.urandom(12)
    settle()
    start = time.perf_counter()
    sealed = aead.encrypt(nonce, data, None)
    encrypt_seconds = time.perf_counter() - start
    start = time.perf_counter()
    opened = aead.decrypt(nonce, sealed, None)
    decrypt_seconds = time.perf_counter() - start
    if opened != data:
        raise RuntimeError("one-shot AES-GCM round trip does not match its input")
    return encrypt_seconds, decrypt_seconds


def default_directory(size: int) -> str | None:
    """tmpfs when it has room for the run's files: the bar is about the cipher pipeline, and a small virtual
    disk's write-back throttling (after a few GiB of writes) would measure the disk instead."""
    shm = Path("/dev/shm")  # noqa: S108 (a private TemporaryDirectory is created inside it)
    if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 6 * size:
        return str(shm)
    return None


def benchmark(size_mib: int, repeats: int, copy_reference: bool, directory: str | None) -> dict[str, Any]:
    from privet.crypto import Keyring, from_env_value, new_env_value
    from privet.store import Store

    size = size_mib * 1024 * 1024
    directory = directory or default_directory(size)
    with tempfile.TemporaryDirectory(prefix="privet-bench-aead-", dir=directory) as tmp:
        root = Path(tmp)
        db, src, out, copy = root / "bench.db", root / "input.bin", root / "output.bin", root / "copy.bin"
        master = new_env_value()
        store = Store.open(f"sqlite:///{db}")
        keys = Keyring.initialize(store, from_env_value(master))
        log(f"aead: writing {size_mib} MiB of random bytes to {src}")
        expected = write_input(src, size)
        data = src.read_bytes()

        def privet_round(index: int, ciphertext: Path) -> tuple[dict[str, dict[str, Any]], Path]:
            """Encrypt ``src`` to a new ciphertext, decrypt the previous round's ciphertext (copy ``src``).

            The order rotates from round to round: on this kind of machine a run that follows another large
            write is slower (write-back, discards, a throttled virtual disk), and no operation should always
            be the one that follows. Every run writes to a fresh name (replacing an existing 1 GiB file would
            put its unlink inside the timing).
            """
            fresh = root / f"input.{index}.enc"
            streamed = root / "input.stream.enc"
            out_stream = root / "output.stream.bin"
            runs = {
                "encrypt": lambda: run_child("encrypt", db, src, fresh, master),
                "decrypt": lambda: run_child("decrypt", db, ciphertext, out, master),
                "encrypt-stream": lambda: stream_here("encrypt-stream", keys, src, streamed),
                "decrypt-stream": lambda: stream_here("decrypt-stream", keys, ciphertext, out_stream),
            }
            if copy_reference:
                runs["copy"] = lambda: run_child("copy", db, src, copy, master)
            order = list(runs)
            order = order[index % len(order) :] + order[: index % len(order)]
            results = {name: runs[name]() for name in order}
            if results["encrypt"]["plaintext_bytes"] != size or results["decrypt"]["plaintext_bytes"] != size:
                raise RuntimeError("privet streamed the wrong number of bytes")
            if sha256_file(out) != expected or sha256_file(out_stream) != expected:
                raise RuntimeError("privet's decrypted output does not match the input (SHA-256)")
            for path in (out, copy, ciphertext):
                path.unlink(missing_ok=True)
            return results, fresh

        # Two warm-up rounds: on virtual machines the first touches of fresh memory (tmpfs pages, large
        # buffers) are several times slower than later ones, and that is the host, not the code under test.
        log("aead: warm-up (two privet rounds, two one-shot rounds; not counted)")
        ciphertext = root / "warm-up.enc"
        run_child("encrypt", db, src, ciphertext, master)
        for warm in (-2, -1):
            _, ciphertext = privet_round(warm, ciphertext)
            oneshot_round(data)

        rows: list[dict[str, Any]] = []
        children: list[dict[str, Any]] = []
        for index in range(repeats):
            # Alternate which side goes first, so slow drift (page cache, thermal) does not favour one.
            if index % 2 == 0:
                results, ciphertext = privet_round(index, ciphertext)
                one_enc, one_dec = oneshot_round(data)
            else:
                one_enc, one_dec = oneshot_round(data)
                results, ciphertext = privet_round(index, ciphertext)
            encrypted, decrypted = results["encrypt-stream"], results["decrypt-stream"]
            durable_enc, durable_dec = results["encrypt"], results["decrypt"]
            children += [durable_enc, durable_dec]  # the processes whose memory is measured
            row = {
                "privet_encrypt_mbps": mbps(size, encrypted["seconds"]),
                "privet_decrypt_mbps": mbps(size, decrypted["seconds"]),
                "durable_encrypt_mbps": mbps(size, durable_enc["seconds"]),
                "durable_decrypt_mbps": mbps(size, durable_dec["seconds"]),
                "oneshot_encrypt_mbps": mbps(size, one_enc),
                "oneshot_decrypt_mbps": mbps(size, one_dec),
            }
            row["encrypt_ratio"] = row["privet_encrypt_mbps"] / row["oneshot_encrypt_mbps"]
            row["decrypt_ratio"] = row["privet_decrypt_mbps"] / row["oneshot_decrypt_mbps"]
            row["durable_encrypt_ratio"] = row["durable_encrypt_mbps"] / row["oneshot_encrypt_mbps"]
            row["durable_decrypt_ratio"] = row["durable_decrypt_mbps"] / row["oneshot_decrypt_mbps"]
            copy_line = ""
            if copy_reference:
                row["copy_mbps"] = mbps(size, results["copy"]["seconds"])
                row["encrypt_vs_copy_ratio"] = row["privet_encrypt_mbps"] / row["copy_mbps"]
                row["decrypt_vs_copy_ratio"] = row["privet_decrypt_mbps"] / row["copy_mbps"]
                copy_line = f"plain copy {row['copy_mbps']:.0f} MB/s ({results['copy']['seconds']:.3f} s); "
            rows.append(row)
            log(
                f"aead: repeat {index + 1}/{repeats} ({', '.join(results)}): "
                f"privet enc {row['privet_encrypt_mbps']:.0f} MB/s ({encrypted['seconds']:.3f} s), "
                f"dec {row['privet_decrypt_mbps']:.0f} MB/s ({decrypted['seconds']:.3f} s); "
                f"one-shot enc {row['oneshot_encrypt_mbps']:.0f} MB/s ({one_enc:.3f} s), "
                f"dec {row['oneshot_decrypt_mbps']:.0f} MB/s ({one_dec:.3f} s); "
                f"ratios {row['encrypt_ratio']:.3f} / {row['decrypt_ratio']:.3f}; "
                f"{copy_line}"
                f"child peak {durable_enc['peak_hwm_kib'] / 1024:.1f} / {durable_dec['peak_hwm_kib'] / 1024:.1f} MiB"
            )
        ciphertext.unlink()
        del data

    figures: dict[str, Any] = {"size_mib": size_mib}
    for name in rows[0]:
        figures[name] = round(statistics.median(row[name] for row in rows), 4 if "ratio" in name else 1)
    encrypt_children = [c for c in children if c["mode"].startswith("encrypt")]
    decrypt_children = [c for c in children if c["mode"].startswith("decrypt")]
    figures["peak_rss_mib"] = round(max(c["peak_hwm_kib"] for c in children) / 1024, 1)
    figures["peak_rss_encrypt_mib"] = round(max(c["peak_hwm_kib"] for c in encrypt_children) / 1024, 1)
    figures["peak_rss_decrypt_mib"] = round(max(c["peak_hwm_kib"] for c in decrypt_children) / 1024, 1)
    figures["baseline_rss_mib"] = round(max(c["baseline_hwm_kib"] for c in children) / 1024, 1)
    figures["ready_rss_mib"] = round(max(c["ready_hwm_kib"] for c in children) / 1024, 1)
    figures["streaming_added_rss_mib"] = round(figures["peak_rss_mib"] - figures["baseline_rss_mib"], 1)
    figures["repeats"] = repeats
    torch_imported = any(c["torch_imported"] for c in children)
    where = directory or tempfile.gettempdir()
    return {"figures": figures, "torch_imported": torch_imported, "chunks": children[0]["chunks"], "where": where}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_MIB} MiB instead of {FULL_MIB} MiB")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats after the warm-up (default 5)")
    parser.add_argument(
        "--copy-reference",
        action="store_true",
        help="also time a plain file copy (no crypto) through the same atomic_file, as a disk reference",
    )
    parser.add_argument(
        "--dir", default=None, help="where the files go (default: /dev/shm when it has room, else the temp dir)"
    )
    parser.add_argument("--size-mib", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child", nargs=4, metavar=("MODE", "DB", "SRC", "DST"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        mode, db, src, dst = args.child
        if mode == "copy":
            copy_child(Path(src), Path(dst))
        elif mode in ("encrypt", "decrypt"):
            child(mode, Path(db), Path(src), Path(dst))
        else:
            parser.error(f"unknown child mode {mode!r}")
        return 0

    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    size_mib = args.size_mib or (QUICK_MIB if args.quick else FULL_MIB)
    result = benchmark(size_mib, args.repeats, args.copy_reference, args.dir)
    figures = result["figures"]
    bars = {
        "encrypt_ratio": {
            "value": figures["encrypt_ratio"],
            "limit": RATIO_LIMIT,
            "ok": figures["encrypt_ratio"] >= RATIO_LIMIT,
        },
        "decrypt_ratio": {
            "value": figures["decrypt_ratio"],
            "limit": RATIO_LIMIT,
            "ok": figures["decrypt_ratio"] >= RATIO_LIMIT,
        },
        "peak_rss_mib": {
            "value": figures["peak_rss_mib"],
            "limit": RSS_LIMIT_MIB,
            "ok": figures["peak_rss_mib"] < RSS_LIMIT_MIB,
        },
    }
    copy_note = [
        "copy_mbps is a reference without crypto: the same file copied in 1 MiB blocks through",
        "privet.files.atomic_file (same fsync and rename) in a child process; the *_vs_copy_ratio figures",
        "compare privet to it pair by pair.",
    ]
    notes = " ".join(
        [
            f"Files live under {result['where']}.",
            "privet_* figures (the bars) are encrypt_stream/decrypt_stream between files, timed in this process"
            " alternating with one-shot; durable_* are encrypt_file/decrypt_file, which add fsync and the atomic"
            " rename, each in a child process whose peak memory is the memory figure (includes reading,",
            f"writing, fsync and the atomic rename; {result['chunks']} chunks of 1 MiB); one-shot AES-256-GCM runs",
            "over the same bytes in memory in the parent (allocating its output is inside its timing).",
            *(copy_note if args.copy_reference else []),
            "The input and ciphertext files are hot in the page cache (dropping it is not possible here).",
            "os.sync() runs (untimed) before every timed run, and the order of the file runs rotates from repeat",
            "to repeat, so no run always inherits the previous one's write-back. Peak RSS is the child's VmHWM",
            "from /proc/self/status: ru_maxrss of a child started by a large parent reports the parent's",
            "high-water mark (inherited across vfork+exec). baseline_rss_mib is the child's VmHWM after importing",
            "privet.crypto and privet.store; ready_rss_mib after opening the store and unlocking the keyring.",
            "torch imported by the child:",
            "yes." if result["torch_imported"] else "no.",
        ]
    )
    log_bars("aead", bars)
    log("aead: " + ", ".join(f"{name}={value}" for name, value in figures.items()))
    if args.json:
        emit("aead", figures, bars, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
