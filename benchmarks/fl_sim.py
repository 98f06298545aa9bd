"""Federated simulation: privet's ``simulate`` on Ray beside Flower 1.41's simulation, the same workload, same run.

Workload (both frameworks): MNIST (``../shared/data/mnist``, IDX), 1,000 clients with an IID partition of the
60,000 training images (60 each; the same shares for both, from privet's ``partition(labels, clients, "iid",
seed=0)``), 100 clients sampled per round, an MLP 784-200-10 (Linear, ReLU, Linear; inputs flattened to 784,
pixels in [0, 1]) initialised from ``torch.manual_seed(0)``, each client one local epoch of plain SGD (lr 0.1,
batch 10) from the global model, FedAvg weighted by example counts, 10 rounds. Every client runs with 1 CPU and
torch at 1 thread, so each framework runs as many clients at once as the machine has cores. Neither evaluates
during the run (Flower: ``fraction_evaluate=0``, no ``evaluate_fn``; privet: ``test=None``); the final models'
test accuracy is computed afterwards by this script, outside every timing, as a check that both trained.

- privet: ``privet.federated.simulation.simulate(ModelSpec("mlp", 784, 10, 200), x, y, make_strategy("fedavg"),
  clients=, per_round=, rounds=, scheme="iid", settings=LocalSettings(1, 10, 0.1), seed=0, executor="ray")`` in
  a child process of this script (``--worker``), with privet's own MNIST loader (8-bit pixels, which each client
  scales to the same floats); a round is timed from the ``progress`` callback (its end, minus the round's
  ``seconds``: sampling, training, aggregation). privet runs a round as one Ray task per CPU, each training its
  share of the sampled clients in turn and, FedAvg only averaging, returning their example-weighted sum: the
  same model as summing on the driver (to float rounding), one vector per task instead of one per client.
- Flower 1.41: ``benchmarks/fl_sim_flower.py`` (see its docstring) in a child process run by the Flower virtual
  environment's python: a ClientApp of legacy ``NumPyClient``s training the same MLP with the same loop, a
  ServerApp with ``flwr.server.strategy.FedAvg(fraction_fit=0.1, fraction_evaluate=0)``,
  ``flwr.simulation.run_simulation(num_supernodes=1000)`` on its Ray backend, each client 1 CPU; a round runs
  from ``configure_fit`` to the end of ``aggregate_fit``. Flower's simulation starts its server thread before
  its Ray backend, so its first round also waits for Ray and its actors: compare launch-to-results, not the
  start-up alone.

Figures, per framework (medians over repeats):

- ``round_s``: wall time per round, the median over the rounds after the first; ``first_round_s`` the first;
- ``startup_s``: from launching the child process to the first round starting (imports, data, Ray);
- ``launch_to_results_s``: from launch to the simulation call returning the model after all rounds;
  ``launch_to_exit_s``: to the child process exiting (Ray torn down);
- ``peak_pss_mib``: peak memory of everything the run started, as the highest sum of the proportional set size
  (``Pss`` of ``/proc/<pid>/smaps_rollup``) over the child and all its descendants (Ray's GCS server, raylet,
  workers, actors, agents; shared pages, the Ray object store's included, count once in the sum), sampled every
  0.2 s by a thread of this script. The child runs in a session of its own; a process stays counted while it
  lives once it has been seen in the tree or the session (Ray processes that outlive their parent), and any
  left after the child exits are ended. ``details`` lists the processes at the peak.

Ratios privet / Flower (round time, memory, launch-to-results) are computed pair by pair (repeat by repeat) and
their median reported. Bars: privet round time <= 0.5 x Flower's; privet peak memory <= Flower's.

Procedure: a warm-up run of each (100 clients, 10 per round, 1 round; discarded), then 2 repeats, each running
privet and Flower one after the other, the order alternating (privet first, then Flower first);
``RAY_USAGE_STATS_ENABLED=0`` and ``FLWR_TELEMETRY_ENABLED=0`` for both (no network here). ``--quick``: 100
clients, 10 per round, 3 rounds, one repeat, no warm-up (a smoke run, about 80 s here). The machine's load
average is recorded in ``details``.

Setup: Flower ``flwr[simulation]`` pins its own Ray (2.55 for flwr 1.41.0), which conflicts with privet's
``ray==2.60.0``, so Flower lives in its own virtual environment under ``build/`` (git-ignored)::

    python3 -m venv build/flower-venv
    build/flower-venv/bin/python -m pip install torch==2.13.0 'flwr[simulation]==1.41.0'

(or ``.venv/bin/python benchmarks/fl_sim.py --setup-flower``, which runs exactly these). ``FLOWER_PYTHON`` may
name another interpreter that has Flower. Then::

    .venv/bin/python -m pip install -e '.[sim]'
    .venv/bin/python benchmarks/fl_sim.py [--quick] --json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from common import emit, log, log_bars  # benchmarks/ is on sys.path when a benchmark runs

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
DATA = Path(os.environ.get("PRIVET_SHARED_DATA", str(SHARED_DATA)))
FLOWER_VENV = ROOT / "build" / "flower-venv"
FLOWER_PYTHON = Path(os.environ.get("FLOWER_PYTHON", str(FLOWER_VENV / "bin" / "python")))
FLOWER_SCRIPT = Path(__file__).resolve().parent / "fl_sim_flower.py"
FLOWER_VERSION = "1.41.0"
SETUP_COMMANDS = (
    "python3 -m venv build/flower-venv && "
    f"build/flower-venv/bin/python -m pip install torch==2.13.0 'flwr[simulation]=={FLOWER_VERSION}'"
)
FRAMEWORKS = ("privet", "flower")
HIDDEN = 200
LR = 0.1
BATCH_SIZE = 10
EPOCHS = 1
SEED = 0
SAMPLE_INTERVAL = 0.2  # seconds between memory samples
TIME_LIMIT = 0.5  # privet round time / Flower's
MEMORY_LIMIT = 1.0  # privet peak PSS / Flower's
FULL = {"clients": 1000, "per_round": 100, "rounds": 10, "repeats": 2, "warmup": True}
QUICK = {"clients": 100, "per_round": 10, "rounds": 3, "repeats": 1, "warmup": False}
WARMUP = {"clients": 100, "per_round": 10, "rounds": 1}
CHILD_TIMEOUT = 1800.0  # seconds: a child still running then is ended and the run counted as failed
MIB = 1024 * 1024

# -- memory of a process tree ------------------------------------------------------------------------------------


def processes() -> dict[int, tuple[int, int, int, str]]:
    """Every process now: pid -> (parent pid, session id, start time in clock ticks, command name)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.find("(") + 1 : stat.rfind(")")]
        fields = stat[stat.rfind(")") + 2 :].split()  # fields[0] is field 3 (state)
        table[int(entry.name)] = (int(fields[1]), int(fields[3]), int(fields[19]), name)
    return table


def pss_bytes(pid: int) -> int | None:
    """The process's proportional set size from ``smaps_rollup``, or None if it is gone."""
    try:
        with Path(f"/proc/{pid}/smaps_rollup").open() as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class TreeMemory(threading.Thread):
    """Samples the summed PSS of a process, its descendants and its session every ``interval``; keeps the peak."""

    def __init__(self, root: int, interval: float = SAMPLE_INTERVAL) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.interval = interval
        self.done = threading.Event()
        self.seen: dict[int, tuple[int, str]] = {}  # pid -> (start time, name): every process counted so far
        self.peak = 0
        self.peak_at = 0.0
        self.peak_parts: dict[str, float] = {}
        self.samples = 0

    def members(self) -> dict[int, tuple[int, int, int, str]]:
        table = processes()
        children: dict[int, list[int]] = {}
        for pid, (parent, _, _, _) in table.items():
            children.setdefault(parent, []).append(pid)
        found: set[int] = set()
        stack = [self.root]
        while stack:
            pid = stack.pop()
            if pid in table and pid not in found:
                found.add(pid)
                stack.extend(children.get(pid, []))
        found.update(pid for pid, info in table.items() if info[1] == self.root)
        found.update(pid for pid, (start, _) in self.seen.items() if pid in table and table[pid][2] == start)
        return {pid: table[pid] for pid in found}

    def sample(self) -> None:
        members = self.members()
        total = 0
        parts: dict[str, float] = {}
        for pid, (_, _, start, name) in members.items():
            self.seen[pid] = (start, name)
            size = pss_bytes(pid)
            if size is None:
                continue
            total += size
            parts[name] = parts.get(name, 0.0) + size / MIB
        self.samples += 1
        if total > self.peak:
            self.peak, self.peak_at = total, time.time()
            self.peak_parts = {k: round(v, 1) for k, v in sorted(parts.items(), key=lambda kv: -kv[1])}

    def run(self) -> None:
        while not self.done.is_set():
            self.sample()
            self.done.wait(self.interval)

    def leftovers(self) -> list[int]:
        """Processes counted here that still live (the same pid and start time)."""
        table = processes()
        return [pid for pid, (start, _) in self.seen.items() if pid in table and table[pid][2] == start]

    def end_leftovers(self, grace: float = 10.0) -> int:
        """Wait up to ``grace`` seconds for the run's processes to exit, then end those left; return how many."""
        deadline = time.monotonic() + grace
        while (left := self.leftovers()) and time.monotonic() < deadline:
            time.sleep(0.2)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.leftovers():
                with contextlib.suppress(OSError):
                    os.kill(pid, sig)
            time.sleep(1.0)
        return len(left)


# -- children ----------------------------------------------------------------------------------------------------


def child_environment() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"RAY_USAGE_STATS_ENABLED": "0", "FLWR_TELEMETRY_ENABLED": "0", "PYTHONUNBUFFERED": "1"})
    return env


def run_child(framework: str, spec: dict[str, Any], folder: Path) -> dict[str, Any]:
    """One simulation run in a fresh child process (its own session), its memory sampled; timings relative to
    the launch."""
    if framework == "privet":
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    else:
        command = [str(FLOWER_PYTHON), str(FLOWER_SCRIPT), json.dumps(spec)]
    stderr_path = folder / f"{framework}-stderr.txt"
    with stderr_path.open("w") as stderr:
        launched = time.time()
        child = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=child_environment(),
            start_new_session=True,
            cwd=str(ROOT),
        )
        monitor = TreeMemory(child.pid)
        monitor.start()
        try:
            out, _ = child.communicate(timeout=CHILD_TIMEOUT)
        except subprocess.TimeoutExpired:
            child.kill()
            out, _ = child.communicate()
        exited = time.time()
        monitor.done.set()
        monitor.join()
    left = monitor.end_leftovers()
    lines = out.strip().splitlines()
    if child.returncode != 0 or not lines:
        errors = [line for line in stderr_path.read_text(errors="replace").splitlines() if line.strip()]
        return {"error": errors[-1][:300] if errors else f"exit code {child.returncode}"}
    report = json.loads(lines[-1])
    rounds = report["rounds"]
    seconds = [end - start for start, end in rounds]
    return {
        "round_s": seconds,
        "first_round_s": seconds[0],
        "later_round_s": statistics.median(seconds[1:]) if len(seconds) > 1 else None,
        "startup_s": rounds[0][0] - launched,
        "imports_s": report["imported"] - launched,
        "launch_to_results_s": report["returned"] - launched,
        "launch_to_exit_s": exited - launched,
        "peak_pss_bytes": monitor.peak,
        "peak_at_s": monitor.peak_at - launched,
        "peak_processes": monitor.peak_parts,
        "processes_seen": len(monitor.seen),
        "leftover_processes": left,
        "memory_samples": monitor.samples,
        "failures": report.get("failures", 0),
        "versions": {k: v for k, v in report.items() if k.endswith("_version")},
    }


def privet_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """The privet side, in the child process: load MNIST, simulate on Ray, save the final model."""
    import torch

    from privet.data.images import load_mnist_like
    from privet.federated.local import LocalSettings
    from privet.federated.simulation import SimulationRound, simulate
    from privet.federated.strategies import make_strategy
    from privet.models.reference import ModelSpec

    imported = time.time()
    split = load_mnist_like(Path(spec["mnist"]), pixels=True)  # 8-bit: each client scales its rows
    x, y = split.x_train.reshape(len(split.x_train), -1), split.y_train
    del split
    rounds: list[list[float]] = []

    def progress(record: SimulationRound) -> None:
        now = time.time()
        rounds.append([now - record.seconds, now])

    result = simulate(
        ModelSpec("mlp", 784, 10, spec["hidden"]),
        x,
        y,
        make_strategy("fedavg"),
        clients=spec["clients"],
        per_round=spec["per_round"],
        rounds=spec["rounds"],
        scheme="iid",
        settings=LocalSettings(epochs=spec["epochs"], batch_size=spec["batch_size"], lr=spec["lr"]),
        seed=spec["seed"],
        executor="ray",
        progress=progress,
    )
    returned = time.time()
    torch.save(result.model, spec["model_out"])
    import ray

    return {
        "imported": imported,
        "rounds": rounds,
        "returned": returned,
        "ray_version": ray.__version__,
        "torch_version": torch.__version__,
    }


# -- run ---------------------------------------------------------------------------------------------------------


def write_shares(clients: int, path: Path) -> None:
    """privet's IID partition of the MNIST training labels, as rows + offsets, for the Flower side."""
    import numpy as np

    from privet.data.images import load_idx_labels
    from privet.data.partition import partition

    labels_path = DATA / "mnist" / "train-labels-idx1-ubyte.gz"
    if not labels_path.is_file():
        labels_path = labels_path.with_suffix("")
    shares = partition(load_idx_labels(labels_path).numpy(), clients, "iid", seed=SEED)
    offsets = np.cumsum([0] + [len(share) for share in shares])
    np.savez(path, rows=np.concatenate(shares), offsets=offsets)


def test_accuracy(framework: str, model_path: Path) -> float:
    """Test accuracy of a run's final model (privet: a flat vector; Flower: the parameter arrays)."""
    import numpy as np
    import torch

    from privet.data.images import load_mnist_like
    from privet.federated.local import load_flat
    from privet.models.reference import ModelSpec

    if framework == "privet":
        flat = torch.load(model_path)
    else:
        with np.load(model_path) as arrays:
            flat = torch.cat([torch.from_numpy(arrays[f"arr_{i}"]).reshape(-1) for i in range(len(arrays.files))])
    model = ModelSpec("mlp", 784, 10, HIDDEN).build()
    load_flat(model, flat)
    split = load_mnist_like(DATA / "mnist")
    with torch.no_grad():
        predicted = model(split.x_test.reshape(len(split.x_test), -1)).argmax(1)
    return float((predicted == split.y_test).float().mean())


def one_run(framework: str, size: dict[str, Any], folder: Path, label: str) -> dict[str, Any]:
    model_out = folder / f"{framework}-model.{'pt' if framework == 'privet' else 'npz'}"
    model_out.unlink(missing_ok=True)
    spec = {
        "clients": size["clients"],
        "per_round": size["per_round"],
        "rounds": size["rounds"],
        "hidden": HIDDEN,
        "lr": LR,
        "epochs": EPOCHS,
        "batch_size": BATCH_SIZE,
        "seed": SEED,
        "mnist": str(DATA / "mnist"),
        "shares": str(folder / f"shares-{size['clients']}.npz"),
        "model_out": str(model_out),
    }
    load = os.getloadavg()[0]
    result = run_child(framework, spec, folder)
    result["load_before"] = round(load, 2)
    if "error" in result:
        log(f"fl_sim: {label} {framework}: FAILED: {result['error']}")
        return result
    result["accuracy"] = round(test_accuracy(framework, model_out), 4)
    later = result["later_round_s"]
    log(
        f"fl_sim: {label} {framework}: round {later if later is None else round(later, 2)} s "
        f"(first {result['first_round_s']:.2f} s), startup {result['startup_s']:.1f} s, launch to results "
        f"{result['launch_to_results_s']:.1f} s, peak PSS {result['peak_pss_bytes'] / MIB:.0f} MiB "
        f"({result['processes_seen']} processes), test accuracy {result['accuracy']:.3f}, "
        f"load {load:.1f}"
    )
    return result


def run(settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    results: dict[str, list[dict[str, Any]]] = {f: [] for f in FRAMEWORKS}
    warmups: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="privet-fl-sim-") as name:
        folder = Path(name)
        for clients in {settings["clients"], WARMUP["clients"]}:
            write_shares(clients, folder / f"shares-{clients}.npz")
        if settings["warmup"]:
            for framework in FRAMEWORKS:
                warm = one_run(framework, WARMUP, folder, "warm-up")
                warmups[framework] = warm.get("error", "ok")
        for repeat in range(settings["repeats"]):
            order = FRAMEWORKS if repeat % 2 == 0 else FRAMEWORKS[::-1]
            for framework in order:
                label = f"repeat {repeat + 1}/{settings['repeats']}"
                results[framework].append(one_run(framework, settings, folder, label))
    return summarise(results, settings, warmups)


def paired_ratio(key: str, results: dict[str, list[dict[str, Any]]]) -> float | None:
    ratios = []
    for mine, theirs in zip(results["privet"], results["flower"], strict=True):
        if "error" in mine or "error" in theirs or mine[key] is None or theirs[key] is None:
            return None
        ratios.append(mine[key] / theirs[key])
    return round(statistics.median(ratios), 3)


def summarise(
    results: dict[str, list[dict[str, Any]]], settings: dict[str, Any], warmups: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    figures: dict[str, Any] = {k: settings[k] for k in ("clients", "per_round", "rounds", "repeats")}
    figures["batch_size"] = BATCH_SIZE
    keys = ("later_round_s", "first_round_s", "startup_s", "launch_to_results_s", "launch_to_exit_s")
    for framework, runs in results.items():
        if any("error" in r for r in runs):
            continue
        prefix = f"{framework}_"
        for key in keys:
            values = [r[key] for r in runs if r[key] is not None]
            if values:
                name = "round_s" if key == "later_round_s" else key
                figures[prefix + name] = round(statistics.median(values), 3)
        figures[prefix + "peak_pss_mib"] = round(statistics.median(r["peak_pss_bytes"] for r in runs) / MIB, 1)
        figures[prefix + "test_accuracy"] = statistics.median(r["accuracy"] for r in runs)
    ratios = {
        "round_time": paired_ratio("later_round_s", results),
        "peak_memory": paired_ratio("peak_pss_bytes", results),
        "launch_to_results": paired_ratio("launch_to_results_s", results),
        "first_round": paired_ratio("first_round_s", results),
    }
    for name, value in ratios.items():
        if value is not None:
            figures[f"privet_vs_flower_{name}"] = value
    bars = {
        "privet_round_time_vs_flower": {
            "value": ratios["round_time"],
            "limit": TIME_LIMIT,
            "ok": ratios["round_time"] is not None and ratios["round_time"] <= TIME_LIMIT,
        },
        "privet_peak_memory_vs_flower": {
            "value": ratios["peak_memory"],
            "limit": MEMORY_LIMIT,
            "ok": ratios["peak_memory"] is not None and ratios["peak_memory"] <= MEMORY_LIMIT,
        },
    }
    rows = []
    for framework, runs in results.items():
        for repeat, r in enumerate(runs):
            row = {"framework": framework, "repeat": repeat + 1}
            row.update({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()})
            if "peak_pss_bytes" in row:
                row["peak_pss_mib"] = round(row.pop("peak_pss_bytes") / MIB, 1)
            rows.append(row)
    details = {"rows": rows, "warmup": warmups or None, "sample_interval_s": SAMPLE_INTERVAL}
    return figures, bars, details


def flower_version() -> str | None:
    """The flwr version in the Flower interpreter, or None if there is no such interpreter or no Flower in it."""
    if not FLOWER_PYTHON.is_file():
        return None
    probe = "import importlib.metadata as m; print(m.version('flwr'))"
    done = subprocess.run([str(FLOWER_PYTHON), "-c", probe], capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def setup_flower() -> int:
    """Create the Flower virtual environment (SETUP_COMMANDS)."""
    subprocess.run([sys.executable, "-m", "venv", str(FLOWER_VENV)], check=True)
    python = str(FLOWER_VENV / "bin" / "python")
    install = [python, "-m", "pip", "install", "torch==2.13.0", f"flwr[simulation]=={FLOWER_VERSION}"]
    subprocess.run(install, check=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="100 clients, 10 per round, 3 rounds, one repeat")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    parser.add_argument("--setup-flower", action="store_true", help=f"create the Flower venv: {SETUP_COMMANDS}")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: the privet run, JSON spec
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(privet_worker(json.loads(args.worker))), flush=True)
        return 0
    if args.setup_flower:
        return setup_flower()
    version = flower_version()
    if version is None:
        hint = f"create it (from {ROOT}): {SETUP_COMMANDS} (or: .venv/bin/python benchmarks/fl_sim.py --setup-flower)"
        print(f"fl_sim: no Flower at {FLOWER_PYTHON}; {hint}", file=sys.stderr)
        return 2

    load_start = os.getloadavg()
    started = time.perf_counter()
    figures, bars, details = run(QUICK if args.quick else FULL)
    figures["seconds"] = round(time.perf_counter() - started, 1)
    details["flwr_version"] = version
    details["load_average_start"] = [round(v, 2) for v in load_start]
    details["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    log_bars("fl_sim", bars)
    if args.json:
        notes = (
            "privet simulate(executor='ray') vs Flower run_simulation (Ray backend), each in a fresh child process, "
            "alternating; round_s: median wall time of rounds after the first; startup_s: launch to the first "
            "round's start; peak_pss_mib: highest summed PSS over the child's process tree and session (Ray "
            "processes included), sampled every 0.2 s; ratios privet/Flower pair by pair. Flower's first round "
            "includes its Ray backend's start-up."
        )
        emit("fl_sim", figures, bars, notes, details)
    return 0


if __name__ == "__main__":
    sys.exit(main())
