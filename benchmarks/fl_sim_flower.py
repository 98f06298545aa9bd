"""The Flower side of ``benchmarks/fl_sim.py``: one Flower simulation run, in the Flower virtual environment.

Not a benchmark of its own: ``fl_sim.py`` runs it as ``build/flower-venv/bin/python benchmarks/fl_sim_flower.py
SPEC_JSON`` (Flower pins its own Ray, so it cannot share privet's environment) and reads the last stdout line.
It imports no privet code: the MNIST IDX files are parsed here, and the clients' shares (the same IID partition
privet's simulation uses, computed by ``fl_sim.py`` with privet's partitioner) come from a ``.npz`` file.

- ClientApp: a legacy ``NumPyClient`` per client (``client_fn``), holding its share of MNIST as float32 in
  [0, 1], flattened to 784; ``fit`` loads the global weights into the MLP 784-200-10 (Linear, ReLU, Linear),
  trains ``epochs`` passes of minibatch SGD (no momentum) over its records, shuffled with ``torch.randperm``
  (the same loop as privet's ``train_locally``, no DataLoader) and returns the weights, the record count and
  the mean loss. Each Ray actor process parses the training IDX files once (uint8) and caches them.
- ServerApp: ``flwr.server.strategy.FedAvg`` (``fraction_fit = per_round / clients``, ``min_fit_clients =
  per_round``, ``fraction_evaluate = 0``: no federated evaluation, as in privet's run; no centralised
  evaluation), initial weights from ``torch.manual_seed(seed)`` and the same model (the weights privet starts
  from), ``num_rounds`` rounds.
- ``flwr.simulation.run_simulation`` with ``num_supernodes = clients`` on the Ray backend, each client 1 CPU (as
  privet's Ray tasks), ``log_to_driver`` off (as privet), torch at 1 thread in every actor (as privet's tasks).

Round timing: a round starts when ``configure_fit`` is called and ends when ``aggregate_fit`` returns (wall
clock, ``time.time()``, so that the parent can relate it to its launch time). The last line on stdout is a JSON
object: the imports' end, the rounds' starts and ends, the time ``run_simulation`` returned, failures, the flwr
and Ray versions; the final weights go to ``SPEC["model_out"]`` (``.npz``, in ``model.parameters()`` order).
"""

from __future__ import annotations

import gzip
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

IMPORTED = time.time()  # numpy and torch are imported; flwr comes in main()
SPEC_VARIABLE = "FL_SIM_FLOWER_SPEC"  # the spec reaches the Ray actors through their inherited environment
_CACHE: dict[str, Any] = {}


def read_idx(path: Path, magic: int) -> np.ndarray:
    """An IDX file (gzip or raw) of unsigned bytes, shaped by its header."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    found, dims = int.from_bytes(data[:4], "big"), data[3]
    if found != magic:
        raise ValueError(f"{path} is not an IDX file of magic {magic:#x}")
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def idx_path(folder: Path, stem: str) -> Path:
    return folder / f"{stem}.gz" if (folder / f"{stem}.gz").is_file() else folder / stem


def build_model(spec: dict[str, Any]) -> nn.Module:
    """The same MLP as privet's ``ModelSpec("mlp", 784, 10, hidden).build()``."""
    return nn.Sequential(nn.Linear(784, spec["hidden"]), nn.ReLU(), nn.Linear(spec["hidden"], 10))


def actor_data() -> tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """This process's spec, training images (uint8, N x 784), labels and the shares, loaded once per process."""
    if not _CACHE:
        torch.set_num_threads(1)
        spec = json.loads(os.environ[SPEC_VARIABLE])
        folder = Path(spec["mnist"])
        images = read_idx(idx_path(folder, "train-images-idx3-ubyte"), 0x803)
        _CACHE["spec"] = spec
        _CACHE["images"] = images.reshape(len(images), -1)
        _CACHE["labels"] = read_idx(idx_path(folder, "train-labels-idx1-ubyte"), 0x801).astype(np.int64)
        with np.load(spec["shares"]) as shares:
            _CACHE["rows"], _CACHE["offsets"] = shares["rows"], shares["offsets"]
    return _CACHE["spec"], _CACHE["images"], _CACHE["labels"], _CACHE["rows"], _CACHE["offsets"]


def get_weights(model: nn.Module) -> list[np.ndarray]:
    return [p.detach().numpy().copy() for p in model.parameters()]


def set_weights(model: nn.Module, weights: list[np.ndarray]) -> None:
    with torch.no_grad():
        for p, w in zip(model.parameters(), weights, strict=True):
            p.copy_(torch.from_numpy(w))


def make_client(partition: int) -> Any:
    """The NumPyClient of client ``partition`` (its share of MNIST as float32 in [0, 1])."""
    from flwr.client import NumPyClient

    spec, images, labels, rows, offsets = actor_data()
    index = rows[offsets[partition] : offsets[partition + 1]]
    x = torch.from_numpy(images[index].astype(np.float32) / np.float32(255.0))
    y = torch.from_numpy(labels[index])

    class MnistClient(NumPyClient):
        def get_parameters(self, config: dict[str, Any]) -> list[np.ndarray]:
            return get_weights(build_model(spec))

        def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[list[np.ndarray], int, dict]:
            model = build_model(spec)
            set_weights(model, parameters)
            optimizer = torch.optim.SGD(model.parameters(), lr=spec["lr"])
            loss_fn = nn.CrossEntropyLoss()
            generator = torch.Generator().manual_seed(spec["seed"] * 1_000_003 + partition)
            model.train()
            total, batches = 0.0, 0
            for _ in range(spec["epochs"]):
                order = torch.randperm(len(x), generator=generator)
                for begin in range(0, len(x), spec["batch_size"]):
                    batch = order[begin : begin + spec["batch_size"]]
                    optimizer.zero_grad(set_to_none=True)
                    loss = loss_fn(model(x[batch]), y[batch])
                    loss.backward()
                    optimizer.step()
                    total += float(loss.detach())
                    batches += 1
            return get_weights(model), len(x), {"loss": total / max(batches, 1)}

    return MnistClient().to_client()


def client_fn(context: Any) -> Any:
    """The ClientApp's ``client_fn``: the client of this supernode's partition id."""
    return make_client(int(context.node_config["partition-id"]))


def weighted_loss(metrics: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
    examples = sum(n for n, _ in metrics)
    return {"loss": sum(n * float(m["loss"]) for n, m in metrics) / max(examples, 1)}


def main() -> int:
    spec = json.loads(sys.argv[1])
    os.environ[SPEC_VARIABLE] = json.dumps(spec)
    from importlib.metadata import version

    import ray
    from flwr.client import ClientApp
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.simulation import run_simulation

    # By its module name (not __main__), so that Ray's actors import it rather than unpickle copies of it.
    from fl_sim_flower import client_fn as importable_client_fn

    imported = time.time()
    torch.manual_seed(spec["seed"])
    initial = get_weights(build_model(spec))
    starts: dict[int, float] = {}
    ends: dict[int, float] = {}
    state: dict[str, Any] = {"failures": 0, "results": 0, "weights": None}

    class TimedFedAvg(FedAvg):
        def configure_fit(self, server_round: int, parameters: Any, client_manager: Any) -> Any:
            starts[server_round] = time.time()
            return super().configure_fit(server_round, parameters, client_manager)

        def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
            out = super().aggregate_fit(server_round, results, failures)
            ends[server_round] = time.time()
            state["failures"] += len(failures)
            state["results"] += len(results)
            if out[0] is not None:
                state["weights"] = out[0]
            return out

    strategy = TimedFedAvg(
        fraction_fit=spec["per_round"] / spec["clients"],
        fraction_evaluate=0.0,
        min_fit_clients=spec["per_round"],
        min_available_clients=spec["clients"],
        initial_parameters=ndarrays_to_parameters(initial),
        fit_metrics_aggregation_fn=weighted_loss,
    )

    def server_fn(context: Any) -> Any:
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=spec["rounds"]))

    run_simulation(
        server_app=ServerApp(server_fn=server_fn),
        client_app=ClientApp(client_fn=importable_client_fn),
        num_supernodes=spec["clients"],
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"log_to_driver": False, "logging_level": "WARNING"},
        },
    )
    returned = time.time()
    if state["weights"] is None or len(ends) != spec["rounds"]:
        print(f"fl_sim_flower: {len(ends)} of {spec['rounds']} rounds finished", file=sys.stderr)
        return 1
    weights = parameters_to_ndarrays(state["weights"])
    np.savez(spec["model_out"], *weights)
    rounds = [[starts[r], ends[r]] for r in range(1, spec["rounds"] + 1)]
    report = {
        "imported": imported,
        "torch_imported": IMPORTED,
        "rounds": rounds,
        "returned": returned,
        "failures": state["failures"],
        "results": state["results"],
        "flwr_version": version("flwr"),
        "ray_version": ray.__version__,
        "torch_version": torch.__version__,
    }
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
