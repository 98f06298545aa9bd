"""Secure aggregation end to end: ten client processes and a server over mutual TLS on localhost, two clients
SIGKILLed in the middle of a round; the run completes and learns as well as plain FedAvg."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from privet.data.bundled import digits
from tests.cli.test_cli_fl import _config, _finish, _free_port, processes, provisioned  # noqa: F401
from tests.cli.test_cli_fl_faults import _legit, _lines, _server

CLIENTS = [f"c{i}" for i in range(10)]
ROUNDS = 10


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """Ten clients with a tenth of the digits' training rows each; the test rows for the server's evaluation."""
    return provisioned(tmp_path_factory.mktemp("secagg"), CLIENTS, digits(seed=0))


def _settings(root: Path, state: str, port: int, **changes: object) -> Path:
    return _config(root, state, port, rounds=ROUNDS, clients_per_round=10, min_clients=6, min_available=8,
                   round_deadline=20, model={"kind": "logreg", "in_features": 64, "classes": 10},
                   local={"epochs": 3, "batch_size": 16, "lr": 0.1}, **changes)  # fmt: skip


def _run_with_two_killed(root: Path, secrets: dict[str, str], state: str, **changes: object) -> tuple[dict, list]:
    """A run of the ten clients in which c3 and c7 are SIGKILLed early in round 2; the result and metrics."""
    port = _free_port()
    server = _server(root, _settings(root, state, port, **changes), secrets["server"])
    clients = {c: _legit(root, port, c, secrets) for c in CLIENTS}
    metrics = root / state / "metrics.jsonl"
    end = time.monotonic() + 120
    while not _lines(metrics) and time.monotonic() < end:
        time.sleep(0.005)
    time.sleep(0.2)  # round 2 is under way
    for victim in ("c3", "c7"):
        clients[victim].send_signal(signal.SIGKILL)
    result = _finish(server, timeout=300)
    for name, proc in clients.items():
        if name not in ("c3", "c7"):
            _finish(proc)
    return result, _lines(metrics)


def test_secure_rounds_with_two_clients_killed_mid_round_learn_like_fedavg(
    federation: tuple[Path, dict[str, str]],
) -> None:
    root, secrets = federation
    secure = {"clip": 20.0, "bits": 16, "colluding": 2, "dropout": 0.2, "stage_deadline": 8}
    secured, lines = _run_with_two_killed(root, secrets, "secure", secure_aggregation=secure)
    assert [line["round"] for line in lines] == list(range(1, ROUNDS + 1))
    assert all(not {"c3", "c7"} & set(line["answered"]) for line in lines[2:])  # dropped, and the rounds completed
    assert all(len(line["answered"]) >= 6 for line in lines)
    plain, _ = _run_with_two_killed(root, secrets, "plain")  # the same run without secure aggregation
    print(f"secure {secured['accuracy']:.4f} plain {plain['accuracy']:.4f}")
    assert secured["accuracy"] > 0.9
    assert abs(secured["accuracy"] - plain["accuracy"]) <= 0.005 + 1e-9
