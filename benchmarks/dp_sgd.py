"""DP-SGD step time and peak memory: privet's engine beside non-private training and Opacus 1.6, in the same run.

Engines, each on the same model, batch and plain SGD optimizer (lr 0.05, no momentum):

- ``non_private``: the model as built, ``loss.backward()``, ``optimizer.step()``.
- ``privet``: privet's DP-SGD engine (``privet.dp.sgd``): its clipping wrapper around the model and its
  DP optimizer (see :func:`build_privet`), flat clipping to norm 1.0, noise multiplier 1.0.
- ``opacus_hooks``: Opacus's ``PrivacyEngine.make_private(grad_sample_mode="hooks")`` (``GradSampleModule``:
  per-sample gradients materialised by hooks, clipped and noised by ``DPOptimizer``), after
  ``ModuleValidator.fix`` (which swaps ``nn.MultiheadAttention`` for Opacus's ``DPMultiheadAttention``),
  flat clipping to 1.0, noise multiplier 1.0.
- ``opacus_ghost``: the same with ``grad_sample_mode="ghost"`` (ghost clipping: per-sample norms without
  per-sample gradients, two backward passes packaged in the ``DPLossFastGradientClipping`` criterion that
  ``make_private`` returns, as Opacus documents).

Both Opacus engines get a fixed-batch data loader (``poisson_sampling=False``): the step is timed, not the
sampling; each step consumes one physical batch of the workload's fixed size.

Workloads:

- ``mnist_cnn``: Opacus's MNIST example CNN (Conv2d(1,16,8,2,padding=3), ReLU, MaxPool2d(2,1),
  Conv2d(16,32,4,2), ReLU, MaxPool2d(2,1), Flatten, Linear(512,32), ReLU, Linear(32,10)), batch 256, real
  MNIST training images (``../shared/data/mnist``, IDX gzip parsed here), normalised.
- ``adult_mlp``: UCI Adult (``../shared/data/adult/adult.data``), categorical columns one-hot ("?" its own
  category), numeric columns standardised; MLP hidden 256-256, ReLU, 2 classes; batch 512.
- ``transformer``: 4 ``nn.TransformerEncoderLayer(256, 4 heads, ff 1024, dropout 0, batch_first=True)``
  over token Embedding(10,000, 256) + positional Embedding(128, 256) (position ids passed per sample, as
  Opacus's per-sample hooks need), mean pool, Linear(256, 2); random token ids, seq 128, batch 64.

Measurement: every (workload, engine) runs in a fresh process (this script with ``--worker``), so that peak
memory is its own; rounds (3; 2 for the transformer) rotate the engines' order, so the engines are interleaved
in time. In the child: ``torch.set_num_threads(2)``, the engine's libraries imported, the batches loaded, then
the RSS high-water mark reset (``/proc/self/clear_refs`` 5) and the RSS read (the baseline), then model and
engine built, 5 warm-up steps, then 20 timed steps (forward + backward + optimizer step + zero_grad, one
physical batch each, the batches cycled). Figures: the median step over all timed steps of all rounds; peak
memory = the child's ``VmHWM`` at the end minus the baseline (median over rounds), which is the
``ru_maxrss`` the child would report if it did not inherit its parent's: Linux carries the parent's peak RSS
over ``exec`` into the child's ``ru_maxrss`` (about 350 MiB here), so the raw ``ru_maxrss`` is kept in the
rows for the record only. On CUDA: ``torch.cuda.max_memory_allocated`` minus what was allocated before the
model was built, the device synchronised around every timed step. The RSS figure includes the library code
and kernel workspaces that the first steps page in (about 80-110 MiB on CPU, whatever the model), so for the
small models it is mostly a constant; torch's CPU allocator keeps no peak statistic, so on CPU one extra step
after the timed ones runs under ``torch.profiler`` with ``profile_memory=True``, and the highest running sum
of its allocation events (tensor bytes the step allocated above what was live at its start: activations,
gradients, per-sample state) is reported as ``alloc_peak`` (VmHWM is read before that step). Ratios are
computed round by round and their median reported.

Bars, per workload: privet step time <= 1.3 x non-private, privet peak memory <= 1.2 x non-private, privet step
time <= 0.6 x Opacus hooks.

``--quick``: one round, 1 warm-up and 3 timed steps, the transformer at seq 32 and batch 8 (a smoke run).

Run (Opacus comes with the ``bench`` extra)::

    .venv/bin/python -m pip install -e '.[bench]'
    .venv/bin/python benchmarks/dp_sgd.py [--quick] [--device cpu|cuda] --json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common import emit, log, log_bars  # benchmarks/ is on sys.path when a benchmark runs

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DATA = Path(os.environ.get("PRIVET_SHARED_DATA", str(SHARED_DATA)))
ENGINES = ("non_private", "privet", "opacus_hooks", "opacus_ghost")
WORKLOADS = ("mnist_cnn", "adult_mlp", "transformer")
NOISE_MULTIPLIER = 1.0
MAX_GRAD_NORM = 1.0
LEARNING_RATE = 0.05
THREADS = 2
BATCHES = 8  # distinct physical batches per workload, cycled through by the steps
TIME_LIMIT = 1.3  # privet step time / non-private
MEMORY_LIMIT = 1.2  # privet peak memory / non-private
OPACUS_LIMIT = 0.6  # privet step time / Opacus hooks
FULL = {
    "rounds": {"mnist_cnn": 3, "adult_mlp": 3, "transformer": 2},  # the transformer's Opacus hooks step: ~9 s
    "warmup": 5,
    "steps": 20,
    "sizes": {
        "mnist_cnn": {"batch": 256},
        "adult_mlp": {"batch": 512},
        "transformer": {"batch": 64, "seq": 128, "vocab": 10_000, "layers": 4, "d_model": 256, "heads": 4, "ff": 1024},
    },
}
QUICK = {
    "rounds": {"mnist_cnn": 1, "adult_mlp": 1, "transformer": 1},
    "warmup": 1,
    "steps": 3,
    "sizes": {
        "mnist_cnn": {"batch": 256},
        "adult_mlp": {"batch": 512},
        "transformer": {"batch": 8, "seq": 32, "vocab": 10_000, "layers": 4, "d_model": 256, "heads": 4, "ff": 1024},
    },
}
MIB = 1024 * 1024

# -- data (parent process) -------------------------------------------------------------------------------------


def mnist_batches(batch: int, count: int) -> tuple[Any, Any]:
    """MNIST training images through privet's IDX loader, with the usual MNIST normalisation."""
    from privet.data.images import load_mnist_like

    split = load_mnist_like(DATA / "mnist")
    rows = torch.randperm(len(split.x_train), generator=torch.Generator().manual_seed(0))[: batch * count]
    return (split.x_train[rows] - 0.1307) / 0.3081, split.y_train[rows]


def adult_batches(batch: int, count: int) -> tuple[Any, Any]:
    """``adult.data`` through privet's loader (public-knowledge encoding, "?" its own category)."""
    from privet.data.adult import load_adult

    split = load_adult(DATA / "adult")
    rows = torch.randperm(len(split.x_train), generator=torch.Generator().manual_seed(0))[: batch * count]
    return split.x_train[rows], split.y_train[rows]


def token_batches(batch: int, count: int, seq: int, vocab: int) -> tuple[Any, Any]:

    generator = torch.Generator().manual_seed(0)
    x = torch.randint(0, vocab, (batch * count, seq), generator=generator)
    return x, torch.randint(0, 2, (batch * count,), generator=generator)


def prepare(workload: str, size: dict[str, int], folder: Path) -> dict[str, Any]:
    """Write the workload's batches to ``folder`` (so the worker never holds the whole data set); return facts."""

    if workload == "mnist_cnn":
        x, y = mnist_batches(size["batch"], BATCHES)
    elif workload == "adult_mlp":
        x, y = adult_batches(size["batch"], BATCHES)
    else:
        x, y = token_batches(size["batch"], BATCHES, size["seq"], size["vocab"])
    path = folder / f"{workload}.pt"
    torch.save({"x": x, "y": y}, path)
    return {"path": str(path), "input_shape": list(x.shape[1:]), "features": int(x.shape[-1])}


# -- models ----------------------------------------------------------------------------------------------------


def build_model(workload: str, size: dict[str, int], features: int) -> nn.Module:
    if workload == "mnist_cnn":  # opacus/examples/mnist.py's SampleConvNet, as one Sequential
        return nn.Sequential(
            nn.Conv2d(1, 16, 8, 2, padding=3),
            nn.ReLU(),
            nn.MaxPool2d(2, 1),
            nn.Conv2d(16, 32, 4, 2),
            nn.ReLU(),
            nn.MaxPool2d(2, 1),
            nn.Flatten(),
            nn.Linear(32 * 4 * 4, 32),
            nn.ReLU(),
            nn.Linear(32, 10),
        )
    if workload == "adult_mlp":
        return nn.Sequential(nn.Linear(features, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 2))

    return Encoder(size)


class Encoder(nn.Module):
    """Token + positional embeddings, ``layers`` TransformerEncoderLayers (batch first), mean pool, 2 classes."""

    def __init__(self, size: dict[str, int]) -> None:
        super().__init__()
        d = size["d_model"]
        self.tokens = nn.Embedding(size["vocab"], d)
        self.positions = nn.Embedding(size["seq"], d)
        layer = nn.TransformerEncoderLayer(d, size["heads"], size["ff"], dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, size["layers"], enable_nested_tensor=False)
        self.head = nn.Linear(d, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        # Position ids per sample (batch first, contiguous): Opacus's hooks need a batch dimension on every
        # layer's input, and its ghost embedding norm needs a contiguous index tensor.
        positions = torch.arange(ids.shape[1], device=ids.device).expand(ids.shape[0], -1).contiguous()
        hidden = self.encoder(self.tokens(ids) + self.positions(positions))
        return self.head(hidden.mean(dim=1))


# -- engines (worker process) ----------------------------------------------------------------------------------

Step = Callable[[Any, Any], None]


def build_non_private(model: Any, optimizer: Any, batches: Any) -> tuple[Step, dict[str, Any]]:

    criterion = nn.CrossEntropyLoss()

    def step(x: Any, y: Any) -> None:
        criterion(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step, {}


def opacus_loader(batches: Any, batch: int) -> Any:
    from torch.utils.data import DataLoader, TensorDataset

    return DataLoader(TensorDataset(*batches), batch_size=batch)


def build_opacus(model: Any, optimizer: Any, batches: Any, batch: int, mode: str) -> tuple[Step, dict[str, Any]]:
    from opacus import PrivacyEngine

    engine = PrivacyEngine()
    out = engine.make_private(
        module=model,
        optimizer=optimizer,
        criterion=nn.CrossEntropyLoss(),
        data_loader=opacus_loader(batches, batch),
        noise_multiplier=NOISE_MULTIPLIER,
        max_grad_norm=MAX_GRAD_NORM,
        poisson_sampling=False,
        grad_sample_mode=mode,
    )
    if mode == "ghost":
        private_model, private_optimizer, criterion, _ = out  # criterion: DPLossFastGradientClipping
    else:
        private_model, private_optimizer, _ = out
        criterion = nn.CrossEntropyLoss()

    def step(x: Any, y: Any) -> None:
        criterion(private_model(x), y).backward()
        private_optimizer.step()
        private_optimizer.zero_grad(set_to_none=True)

    return step, {"wrapper": type(private_model).__name__, "optimizer": type(private_optimizer).__name__}


def build_privet(model: nn.Module, optimizer: Any, batches: Any, batch: int) -> tuple[Step, dict[str, Any]]:
    """privet.dp.sgd: ``PerSampleClipper`` on the model as built (``nn.MultiheadAttention`` included, no
    replacement) and ``DPOptimizer`` around the SGD optimizer; flat clipping to MAX_GRAD_NORM, noise
    NOISE_MULTIPLIER, the mean loss over the batch (``loss_reduction="mean"``, the clipper's default), the
    expected batch size the fixed physical batch."""
    from privet.dp.sgd import DPOptimizer, PerSampleClipper

    clipper = PerSampleClipper(model, max_grad_norm=MAX_GRAD_NORM)
    private_optimizer = DPOptimizer(
        optimizer, noise_multiplier=NOISE_MULTIPLIER, max_grad_norm=MAX_GRAD_NORM, expected_batch_size=batch
    )
    criterion = nn.CrossEntropyLoss()

    def step(x: Any, y: Any) -> None:
        criterion(model(x), y).backward()
        private_optimizer.step()
        private_optimizer.zero_grad(set_to_none=True)

    units: dict[str, int] = {}
    for kind in clipper.units.values():
        units[kind] = units.get(kind, 0) + 1
    return step, {"wrapper": type(clipper).__name__, "optimizer": type(private_optimizer).__name__, "units": units}


def build_engine(engine: str, model: Any, optimizer: Any, batches: Any, batch: int) -> tuple[Step, dict[str, Any]]:
    if engine == "non_private":
        return build_non_private(model, optimizer, batches)
    if engine == "privet":
        return build_privet(model, optimizer, batches, batch)
    return build_opacus(model, optimizer, batches, batch, engine.removeprefix("opacus_"))


def status_bytes(field: str) -> int:
    """A size from /proc/self/status (``VmRSS``: resident now, ``VmHWM``: its high-water mark), in bytes."""
    with Path("/proc/self/status").open() as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak_rss() -> None:
    """Reset this process's RSS high-water mark (VmHWM) to its current RSS (Linux ``clear_refs`` 5)."""
    Path("/proc/self/clear_refs").write_text("5")


def profiled_peak(step: Callable[[], None]) -> int:
    """Bytes: the highest running sum of the allocator's events during one step (0 = what was live at its start)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: (e.start_ns(), e.nbytes() < 0))
    running = peak = 0
    for event in events:
        running += event.nbytes()
        peak = max(peak, running)
    return peak


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One (workload, engine) in this fresh process; returns its step times and memory."""
    import warnings

    warnings.filterwarnings("ignore")  # Opacus warns about secure RNG and the accountant on every run
    torch.set_num_threads(THREADS)
    device = torch.device(spec["device"])
    cuda = device.type == "cuda"
    engine, workload, size = spec["engine"], spec["workload"], spec["size"]
    if engine.startswith("opacus"):
        import opacus  # noqa: F401  (imported before the baseline: its import is not the engine's memory)
        from opacus.validators import ModuleValidator
    elif engine == "privet":
        import privet.dp.sgd  # noqa: F401
    data = torch.load(spec["path"])
    xs = data["x"].to(device).split(size["batch"])
    ys = data["y"].to(device).split(size["batch"])
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
    else:
        reset_peak_rss()
        baseline = status_bytes("VmRSS")
        maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    torch.manual_seed(0)
    model = build_model(workload, size, spec["features"])
    if engine.startswith("opacus"):
        model = ModuleValidator.fix(model)
    model = model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
    batch_step, details = build_engine(engine, model, optimizer, (data["x"], data["y"]), size["batch"])
    count = len(xs)
    index = 0

    def step() -> None:
        nonlocal index
        batch_step(xs[index % count], ys[index % count])
        index += 1

    for _ in range(spec["warmup"]):
        step()
    times = []
    for _ in range(spec["steps"]):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    result: dict[str, Any] = {"step_s": times, "details": details}
    if cuda:
        result["peak_bytes"] = torch.cuda.max_memory_allocated() - baseline
    else:
        result["peak_bytes"] = status_bytes("VmHWM") - baseline
        # ru_maxrss as well, for the record: a child of a large parent inherits the parent's RSS in it.
        result["ru_maxrss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        result["ru_maxrss_before_bytes"] = maxrss_before
        result["alloc_peak_bytes"] = profiled_peak(step)
    result["baseline_bytes"] = baseline
    result["parameters"] = sum(p.numel() for p in model.parameters())
    return result


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one worker process; its last stdout line is its result, or its error."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode == 0 and lines:
        return json.loads(lines[-1])
    errors = [line for line in done.stderr.strip().splitlines() if line.strip()]
    return {"error": errors[-1] if errors else f"exit code {done.returncode}"}


# -- run -------------------------------------------------------------------------------------------------------


def run(settings: dict[str, Any], device: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    rounds = max(settings["rounds"].values())
    results: dict[tuple[str, str], list[dict[str, Any]]] = {(w, e): [] for w in WORKLOADS for e in ENGINES}
    with tempfile.TemporaryDirectory(prefix="privet-dp-sgd-") as folder:
        facts = {}
        for workload in WORKLOADS:
            facts[workload] = prepare(workload, settings["sizes"][workload], Path(folder))
            log(f"dp_sgd: {workload}: {BATCHES} batches of {settings['sizes'][workload]['batch']}, ready")
        for round_ in range(rounds):
            for workload in WORKLOADS:
                if round_ >= settings["rounds"][workload]:
                    continue
                shift = (round_ + WORKLOADS.index(workload)) % len(ENGINES)
                for engine in ENGINES[shift:] + ENGINES[:shift]:
                    spec = {
                        "engine": engine,
                        "workload": workload,
                        "size": settings["sizes"][workload],
                        "device": device,
                        "warmup": settings["warmup"],
                        "steps": settings["steps"],
                        **facts[workload],
                    }
                    started = time.perf_counter()
                    label = f"dp_sgd: round {round_ + 1}/{settings['rounds'][workload]} {workload} {engine}"
                    result = run_worker(spec)
                    results[workload, engine].append(result)
                    if "error" in result:
                        log(f"{label}: FAILED: {result['error']}")
                    else:
                        log(
                            f"{label}: "
                            f"{statistics.median(result['step_s']) * 1e3:.1f} ms/step, "
                            f"peak {result['peak_bytes'] / MIB:.1f} MiB "
                            f"({time.perf_counter() - started:.0f} s)"
                        )
    return summarise(results, settings, device)


def ratio_per_round(runs: list[dict[str, Any]], peers: list[dict[str, Any]], key: str) -> float | None:
    """Median over rounds of this engine's figure over the peer's, pairing the rounds; None if either failed."""
    ratios = []
    for mine, theirs in zip(runs, peers, strict=True):
        if "error" in mine or "error" in theirs:
            return None
        if key == "step":
            ratios.append(statistics.median(mine["step_s"]) / statistics.median(theirs["step_s"]))
        else:
            ratios.append(mine["peak_bytes"] / theirs["peak_bytes"])
    return statistics.median(ratios)


def summarise(
    results: dict[tuple[str, str], list[dict[str, Any]]], settings: dict[str, Any], device: str
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    figures: dict[str, Any] = {f"{w}_rounds": settings["rounds"][w] for w in WORKLOADS}
    figures["warmup_steps"] = settings["warmup"]
    figures["timed_steps_per_round"] = settings["steps"]
    bars: dict[str, Any] = {}
    rows = []
    for (workload, engine), runs in results.items():
        row: dict[str, Any] = {"workload": workload, "engine": engine, "batch": settings["sizes"][workload]["batch"]}
        failed = [r["error"] for r in runs if "error" in r]
        if failed:
            row["error"] = failed[0]
        else:
            step_ms = statistics.median(t for r in runs for t in r["step_s"]) * 1e3
            peak = statistics.median(r["peak_bytes"] for r in runs) / MIB
            row.update({"step_ms": round(step_ms, 2), "peak_mib": round(peak, 1), "parameters": runs[0]["parameters"]})
            figures[f"{workload}_{engine}_step_ms"] = row["step_ms"]
            figures[f"{workload}_{engine}_peak_mib"] = row["peak_mib"]
            if "alloc_peak_bytes" in runs[0]:
                alloc = statistics.median(r["alloc_peak_bytes"] for r in runs) / MIB
                row["alloc_peak_mib"] = round(alloc, 1)
                figures[f"{workload}_{engine}_alloc_peak_mib"] = row["alloc_peak_mib"]
            row["baseline_mib"] = round(statistics.median(r["baseline_bytes"] for r in runs) / MIB, 1)
            if runs[0]["details"]:
                row.update(runs[0]["details"])
        rows.append(row)
    for workload in WORKLOADS:
        privet = results[workload, "privet"]
        checks = (
            ("step_time_vs_non_private", "non_private", "step", TIME_LIMIT),
            ("peak_memory_vs_non_private", "non_private", "peak", MEMORY_LIMIT),
            ("step_time_vs_opacus_hooks", "opacus_hooks", "step", OPACUS_LIMIT),
        )
        for name, peer, key, limit in checks:
            ratio = ratio_per_round(privet, results[workload, peer], key)
            value = None if ratio is None else round(ratio, 3)
            if value is not None:
                figures[f"{workload}_privet_{name}"] = value
            bars[f"{workload}_privet_{name}"] = {
                "value": value,
                "limit": limit,
                "ok": value is not None and value <= limit,
            }
        for peer in ("opacus_hooks", "opacus_ghost"):
            for key, label in (("step", "step_time"), ("peak", "peak_memory")):
                ratio = ratio_per_round(results[workload, peer], results[workload, "non_private"], key)
                if ratio is not None:
                    figures[f"{workload}_{peer}_{label}_vs_non_private"] = round(ratio, 3)
    details = {"rows": rows, "device": device, "threads": THREADS, "sizes": settings["sizes"]}
    return figures, bars, details


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="one round, 3 timed steps, a small transformer")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: one (workload, engine) run, JSON spec
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0

    from importlib.metadata import version

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    started = time.perf_counter()
    figures, bars, details = run(QUICK if args.quick else FULL, device)
    figures["seconds"] = round(time.perf_counter() - started, 1)
    details.update({"torch_version": torch.__version__, "opacus_version": version("opacus")})
    if device == "cuda":
        details["gpu"] = torch.cuda.get_device_name()
    log_bars("dp_sgd", bars)
    if args.json:
        notes = (
            "Median step (forward + backward + optimizer step, one fixed physical batch) and peak memory per "
            "(workload, engine), each in a fresh process, engines interleaved by rounds; ratios pair by pair. "
            "Peak memory: the child's VmHWM (reset before the model was built) minus its RSS then (CPU; raw "
            "ru_maxrss inherits the parent's peak across exec, so it is only recorded), or max_memory_allocated "
            "minus allocated before the model (CUDA); alloc_peak: torch profiler allocation events over one step "
            "(CPU). Failed engines are listed in details.rows with their error."
        )
        emit("dp_sgd", figures, bars, notes, details)
    return 0


if __name__ == "__main__":
    sys.exit(main())
