"""A 3 GB model through the federated runtime: real server and client processes over mutual TLS, the model and
the update travelling in 1 MiB frames, the server's memory measured (slow: run with ``-m slow``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from privet.federated.provision import provision
from tests.cli.test_cli import PRIVET
from tests.cli.test_cli_fl import _free_port

pytestmark = pytest.mark.slow

IN_FEATURES, CLASSES = 75_000_000, 10  # logistic regression: 750,000,010 float32 parameters, 3.0 GB
MODEL_BYTES = 4 * (IN_FEATURES * CLASSES + CLASSES)
HEAD = 1 << 20  # values the client saves to compare with the server's result

CLIENT = """
import sys
import numpy as np
from privet.net.frames import Message
from privet.net.rpc import Client, Identity

address, party, passphrase, head = sys.argv[1:5]
import time
from privet.net.rpc import RemoteError

with Client(address, Identity.load(party, passphrase.encode())) as client:
    for _ in range(600):  # the server is still initialising its 3 GB model
        try:
            task = client.call("Task", Message("poll"), timeout=600)
        except RemoteError:
            time.sleep(0.5)
            continue
        if task.kind == "task":
            break
    model = np.frombuffer(task.payload, dtype=np.float32)
    np.save(head, model[: 1 << 20])
    # The update is the model itself, sent from the received buffer without a copy: FedAvg doubles the model.
    reply = client.call("Submit", Message("update", {"round": task.header["round"], "examples": 1, "loss": 0.0},
                                          task.payload), timeout=600)
    assert reply.kind == "ack", reply
    while client.call("Task", Message("poll"), timeout=600).kind != "done":
        pass
"""


def _peak_rss(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def test_a_3_gb_model_travels_in_chunks_within_twice_its_size_in_server_memory(tmp_path: Path) -> None:
    fed = provision(tmp_path / "fed", "big", ["lab"])
    port = _free_port()
    config = tmp_path / "fl.yaml"
    config.write_text(yaml.safe_dump({
        "name": "big", "listen": f"127.0.0.1:{port}", "party": str(fed.directory / "server"),
        "state": str(tmp_path / "run"),
        "rounds": 1, "clients_per_round": 1, "min_clients": 1, "round_deadline": 900, "wait_for_clients": 120,
        "model": {"kind": "logreg", "in_features": IN_FEATURES, "classes": CLASSES},
    }))  # fmt: skip
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PRIVET_")}
    environment.update(PRIVET_HOME=str(tmp_path / "home"), PRIVET_FL_PASSPHRASE=fed.passphrases["server"])
    server = subprocess.Popen([PRIVET, "--quiet", "fl", "server", "--config", str(config), "--json"],
                              env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    client = None
    try:
        party = str(fed.directory / "clients" / "lab")
        arguments = [f"127.0.0.1:{port}", party, fed.passphrases["lab"], str(tmp_path / "head.npy")]
        client = subprocess.Popen([sys.executable, "-c", CLIENT, *arguments], stderr=subprocess.PIPE, text=True)
        peak = 0
        while server.poll() is None:
            peak = max(peak, _peak_rss(server.pid) or 0)
            if client.poll() not in (None, 0):
                raise AssertionError(f"the client failed: {client.stderr.read() if client.stderr else ''}")
            time.sleep(0.2)
        out, err = server.communicate()
        assert server.returncode == 0, err
        assert client.wait(120) == 0, client.stderr.read() if client.stderr else ""
    finally:
        for proc in (server, client):
            if proc is not None and proc.poll() is None:
                proc.kill()
    result = json.loads(out)
    assert result["rounds"] == 1
    print(f"server peak RSS {peak / 2**30:.2f} GiB for a {MODEL_BYTES / 2**30:.2f} GiB model")
    assert peak <= 2 * MODEL_BYTES, peak
    sent = np.load(tmp_path / "head.npy")
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", mmap=True, weights_only=True)["model"]
    assert saved.numel() * 4 == MODEL_BYTES
    assert torch.equal(saved[:HEAD], 2 * torch.from_numpy(sent))
    assert list((tmp_path / "run" / "spool").iterdir()) == []
