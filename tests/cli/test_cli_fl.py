"""``privet fl`` as real processes on localhost: a server SIGKILLed mid-run resumes to the same model, clients
that die are left out, and a revoked client is refused."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from privet.data.bundled import Split, breast_cancer
from tests.cli.test_cli import PRIVET, one_error_line, run

CLIENTS = ["north", "south", "east"]
CLIENTS_SORTED = sorted(CLIENTS)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def provisioned(root: Path, clients: list[str], data: Split) -> tuple[Path, dict[str, str]]:
    """A federation of ``clients`` under ``root``, each with an equal slice of ``data``'s training rows as
    ``<client>.csv``, the test rows as ``test.csv``; returns ``root`` and the passphrases."""
    proc = run(root / "home", "fl", "provision", "--out", str(root / "fed"), "--clients", ",".join(clients),
               "--name", "hospitals", "--json")  # fmt: skip
    columns = [f"f{i}" for i in range(data.x_train.shape[1])]
    for client, rows in zip(clients, torch.arange(len(data.x_train)).tensor_split(len(clients)), strict=True):
        frame = pd.DataFrame(data.x_train[rows].numpy(), columns=columns)
        frame["label"] = data.y_train[rows].numpy()
        frame.to_csv(root / f"{client}.csv", index=False)
    test = pd.DataFrame(data.x_test.numpy(), columns=columns)
    test["label"] = data.y_test.numpy()
    test.to_csv(root / "test.csv", index=False)
    return root, json.loads(proc.stdout)["passphrases"]


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    return provisioned(tmp_path_factory.mktemp("flcli"), CLIENTS, breast_cancer(seed=0))


@pytest.fixture(autouse=True)
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Every process a test starts; killed at the end whatever happened."""
    started: list[subprocess.Popen[str]] = []
    _STARTED.append(started)
    yield started
    _STARTED.pop()
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


_STARTED: list[list[subprocess.Popen[str]]] = []


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _STARTED[-1].append(proc)
    return proc


def _env(home: Path, passphrase: str) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PRIVET_")}
    environment.update(PRIVET_HOME=str(home), PRIVET_FL_PASSPHRASE=passphrase)
    return environment


def _config(root: Path, state: str, port: int, **changes: object) -> Path:
    settings = {
        "name": "hospitals", "listen": f"127.0.0.1:{port}", "party": str(root / "fed" / "server"),
        "state": str(root / state), "rounds": 12, "clients_per_round": 3, "min_clients": 2, "min_available": 3,
        "round_deadline": 30, "wait_for_clients": 60, "seed": 3, "eval_data": str(root / "test.csv"),
        "model": {"kind": "mlp", "in_features": 30, "classes": 2, "hidden": 64},
        "local": {"epochs": 5, "batch_size": 16, "lr": 0.02},
    }  # fmt: skip
    path = root / f"{state}.yaml"
    path.write_text(yaml.safe_dump({**settings, **changes}))
    return path


def _server(root: Path, config: Path, secrets: dict[str, str]) -> subprocess.Popen[str]:
    return _spawn([PRIVET, "--quiet", "fl", "server", "--config", str(config), "--json"],
                  _env(root / "home", secrets["server"]))  # fmt: skip


def _client(root: Path, port: int, party: str, secrets: dict[str, str]) -> subprocess.Popen[str]:
    return _spawn(
        [PRIVET, "--quiet", "fl", "client", "--server", f"127.0.0.1:{port}",
         "--party", str(root / "fed/clients" / party), "--data", str(root / f"{party}.csv"),
         "--give-up", "60", "--json"],
        _env(root / "home", secrets[party]),
    )  # fmt: skip


def _finish(proc: subprocess.Popen[str], timeout: float = 240) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    return json.loads(out)


def _wait_for_rounds(metrics: Path, count: int, timeout: float = 180) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"fewer than {count} rounds in {timeout} s")


def _model(root: Path, state: str) -> torch.Tensor:
    return torch.load(root / state / "checkpoint.pt", weights_only=True)["model"]


def test_server_killed_mid_run_resumes_to_the_same_model(federation: tuple[Path, dict[str, str]]) -> None:
    root, secrets = federation
    port = _free_port()
    config = _config(root, "killed", port)
    server = _server(root, config, secrets)
    clients = [_client(root, port, c, secrets) for c in CLIENTS]
    _wait_for_rounds(root / "killed" / "metrics.jsonl", 3)
    server.send_signal(signal.SIGKILL)
    server.wait()
    completed = json.loads((root / "killed" / "metrics.jsonl").read_text().splitlines()[-1])["round"]
    assert completed < 12
    restarted = _finish(_server(root, config, secrets))  # same port: the clients reconnect with backoff
    assert restarted["rounds"] == 12 and restarted["ran"][0] > 1 and restarted["accuracy"] > 0.9
    reports = [_finish(c) for c in clients]
    assert all(r["rounds"][-1] == 12 for r in reports)

    port = _free_port()
    straight = _server(root, _config(root, "straight", port), secrets)
    clients = [_client(root, port, c, secrets) for c in CLIENTS]
    assert _finish(straight)["ran"] == list(range(1, 13))
    for c in clients:
        _finish(c)
    assert torch.allclose(_model(root, "killed"), _model(root, "straight"), rtol=0, atol=1e-6)


def test_a_killed_client_is_left_out_and_the_run_completes(federation: tuple[Path, dict[str, str]]) -> None:
    root, secrets = federation
    port = _free_port()
    server = _server(root, _config(root, "dropped", port, rounds=6, round_deadline=4, min_available=2), secrets)
    clients = {c: _client(root, port, c, secrets) for c in CLIENTS}
    _wait_for_rounds(root / "dropped" / "metrics.jsonl", 1)
    clients["east"].send_signal(signal.SIGKILL)
    result = _finish(server)
    assert result["rounds"] == 6 and result["accuracy"] > 0.9
    lines = [json.loads(line) for line in (root / "dropped" / "metrics.jsonl").read_text().splitlines()]
    assert any(line["answered"] == ["north", "south"] for line in lines)  # east left out once it was gone
    for party in ("north", "south"):
        _finish(clients[party])


def test_a_private_run_charges_the_workspace_ledger(federation: tuple[Path, dict[str, str]]) -> None:
    root, secrets = federation
    home = root / "dp-home"
    run(home, "ledger", "create", "--tenant", "hospitals", "--dataset", "patients", "--epsilon", "5", "--delta",
        "1e-5", "--json")  # fmt: skip
    port = _free_port()
    privacy = {"epsilon": 4.0, "delta": 1e-5, "clip": 1.0, "population": 3, "sample_rate": 0.9,
               "ledger": "hospitals/patients"}  # fmt: skip
    config = _config(root, "private", port, rounds=3, privacy=privacy)
    server = _spawn([PRIVET, "--quiet", "fl", "server", "--config", str(config), "--plot", str(root / "dp.html"),
                     "--json"], _env(home, secrets["server"]))  # fmt: skip
    clients = [_client(root, port, c, secrets) for c in CLIENTS]
    result = _finish(server)
    assert "<img src='data:image/png;base64," in (root / "dp.html").read_text()
    for c in clients:
        _finish(c)
    summary = result["privacy"]
    assert result["rounds"] == 3 and summary["rounds"] == 3 and 0 < summary["epsilon"] <= 4.0
    assert summary["budget_epsilon"] == pytest.approx(summary["epsilon"])
    history = json.loads(run(home, "ledger", "history", "--tenant", "hospitals", "--dataset", "patients",
                             "--json").stdout)  # fmt: skip
    assert len(history["charges"]) == 3
    lines = [json.loads(line) for line in (root / "private" / "metrics.jsonl").read_text().splitlines()]
    assert [line["round"] for line in lines] == [1, 2, 3] and lines[-1]["epsilon"] == pytest.approx(summary["epsilon"])


def test_a_secure_run_killed_mid_round_restarts_that_round_with_fresh_keys(
    federation: tuple[Path, dict[str, str]],
) -> None:
    """SIGKILL the server of a secure-aggregation run; restarted, it runs the interrupted round again from its
    key exchange (new keys, new masks: nothing of the lost attempt is reused) and the run completes."""
    root, secrets = federation
    port = _free_port()
    secure = {"clip": 10.0, "colluding": 1, "stage_deadline": 20}
    config = _config(root, "secure-killed", port, rounds=6, min_clients=3, secure_aggregation=secure)
    server = _server(root, config, secrets)
    clients = [_client(root, port, c, secrets) for c in CLIENTS]
    metrics = root / "secure-killed" / "metrics.jsonl"
    _wait_for_rounds(metrics, 2)
    server.send_signal(signal.SIGKILL)
    server.wait()
    completed = len(metrics.read_text().splitlines())
    journal = json.loads((root / "secure-killed" / "secagg.json").read_text())  # where the killed round stood
    restarted = _finish(_server(root, config, secrets))
    after = json.loads((root / "secure-killed" / "secagg.json").read_text())
    assert after["stage"] == "done" and after["round"] == 6 and journal["round_id"] in after["retired"]
    assert after["round_id"] not in after["retired"] and len(set(after["retired"])) == len(after["retired"])
    assert restarted["rounds"] == 6 and restarted["ran"][0] == completed + 1 and restarted["accuracy"] > 0.9
    lines = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [line["round"] for line in lines] == list(range(1, 7))
    assert all(line["answered"] == CLIENTS_SORTED for line in lines)
    for c in clients:
        assert _finish(c)["rounds"][-1] == 6


def test_a_client_with_a_wrong_passphrase_is_refused(federation: tuple[Path, dict[str, str]]) -> None:
    root, _ = federation
    wrong = subprocess.run(
        [PRIVET, "fl", "client", "--server", "127.0.0.1:1", "--party", str(root / "fed/clients/north"),
         "--data", str(root / "north.csv")],
        env=_env(root / "home", "not the passphrase at all"), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert wrong.returncode == 1 and "could not be decrypted" in one_error_line(wrong)


def test_simulate_writes_metrics_and_plots(tmp_path: Path) -> None:
    out = []
    for plot in ("curve.png", "curve.html"):
        proc = run(tmp_path / "home", "--quiet", "fl", "simulate", "--dataset", "digits", "--clients", "12",
                   "--per-round", "4", "--rounds", "3", "--partition", "dirichlet:1", "--executor", "serial",
                   "--metrics", str(tmp_path / "m.jsonl"), "--plot", str(tmp_path / plot), "--json")  # fmt: skip
        out.append(json.loads(proc.stdout))
    result = out[0]
    assert result["rounds"] == 3 and result["model"] == "mlp" and 0 < result["accuracy"] <= 1
    lines = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [line["round"] for line in lines] == [1, 2, 3] and all(len(line["clients"]) == 4 for line in lines)
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"data:image/png;base64," in (tmp_path / "curve.html").read_bytes()
    assert out[0]["accuracy"] == out[1]["accuracy"]  # same seed, same run
    bad = run(tmp_path / "home", "fl", "simulate", "--dataset", "mnist", "--executor", "serial", code=2)
    assert "needs --data-dir" in one_error_line(bad)
