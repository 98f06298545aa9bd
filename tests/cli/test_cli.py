"""The ``privet`` command, run as a real process: exit codes, one-line errors, JSON output, whole flows."""

from __future__ import annotations

import base64
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from privet.models.reference import ModelSpec, save_weights

PRIVET = str(Path(sys.executable).with_name("privet"))


def run(home: Path, *args: str, code: int = 0, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PRIVET_")}
    environment.update(PRIVET_HOME=str(home), **env)
    proc = subprocess.run([PRIVET, *args], capture_output=True, text=True, env=environment, timeout=timeout)
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    return proc


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture
def master() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@pytest.fixture
def home(tmp_path: Path, master: str) -> Path:
    home = tmp_path / "home"
    run(home, "keys", "init", "--source", "env", "--json", PRIVET_MASTER_KEY=master)
    return home


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    directory = tmp_path / "model"
    directory.mkdir()
    save_weights(ModelSpec("mlp", 30, 2, 8).build(), directory / "model.safetensors")
    (directory / "config.json").write_text('{"kind": "mlp"}')
    return directory


def test_version_and_help(tmp_path: Path) -> None:
    assert run(tmp_path, "--version").stdout.startswith("privet ")
    help_text = run(tmp_path, "--help").stdout
    for group in ("keys", "model", "encrypt", "decrypt", "demo"):
        assert group in help_text


def test_usage_errors_are_one_line_with_exit_2(tmp_path: Path) -> None:
    one_error_line(run(tmp_path, "no-such-command", code=2))
    one_error_line(run(tmp_path, "model", "verify", code=2))
    line = one_error_line(run(tmp_path, "keys", "init", "--scrypt-n", "1000", code=2))
    assert "power of two" in line


def test_commands_before_init_say_what_to_do(tmp_path: Path) -> None:
    line = one_error_line(run(tmp_path / "fresh", "keys", "list", code=1))
    assert "privet keys init" in line


def test_passphrase_keyring_refuses_wrong_passphrase_without_echoing_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    run(home, "keys", "init", "--scrypt-n", "16384", PRIVET_PASSPHRASE="correct horse battery")
    listed = json.loads(run(home, "keys", "list", "--json", PRIVET_PASSPHRASE="correct horse battery").stdout)
    assert {(k["name"], k["version"]) for k in listed["keys"]} == {("default", 1), ("signing", 1)}
    proc = run(home, "keys", "list", PRIVET_PASSPHRASE="wrong horse battery", code=1)
    assert "wrong horse" not in proc.stderr
    assert "master key" in one_error_line(proc)
    one_error_line(run(home, "keys", "list", code=1))  # no passphrase and no terminal: refused, not prompted


def test_encrypt_decrypt_round_trip_and_tamper(home: Path, master: str, tmp_path: Path) -> None:
    source = tmp_path / "records.csv"
    source.write_bytes(os.urandom(3 * 2**20 + 17))
    result = json.loads(
        run(home, "encrypt", str(source), "-o", str(tmp_path / "r.enc"), "--json", PRIVET_MASTER_KEY=master).stdout
    )
    assert result["plaintext_bytes"] == source.stat().st_size and result["key_version"] == 1
    run(home, "decrypt", str(tmp_path / "r.enc"), "-o", str(tmp_path / "r.out"), PRIVET_MASTER_KEY=master)
    assert (tmp_path / "r.out").read_bytes() == source.read_bytes()

    damaged = bytearray((tmp_path / "r.enc").read_bytes())
    damaged[len(damaged) // 2] ^= 0x04
    (tmp_path / "bad.enc").write_bytes(damaged)
    proc = run(
        home, "decrypt", str(tmp_path / "bad.enc"), "-o", str(tmp_path / "bad.out"), code=1, PRIVET_MASTER_KEY=master
    )
    assert "failed authentication" in one_error_line(proc)
    assert not (tmp_path / "bad.out").exists()
    assert not list(tmp_path.glob(".bad.out*"))

    missing = run(home, "encrypt", str(tmp_path / "nope"), "-o", str(tmp_path / "x"), code=2, PRIVET_MASTER_KEY=master)
    assert "is not a file" in one_error_line(missing)


def test_rotate_rewrap_then_shred_old_version(home: Path, master: str, tmp_path: Path, model_dir: Path) -> None:
    source = tmp_path / "notes.txt"
    source.write_bytes(b"x" * 5000)
    for name in ("a", "b"):
        run(home, "encrypt", str(source), "-o", str(tmp_path / f"{name}.enc"), PRIVET_MASTER_KEY=master)
    run(home, "model", "pack", str(model_dir), "--name", "m", "--version", "1", PRIVET_MASTER_KEY=master)

    rotated = json.loads(
        run(
            home,
            "keys",
            "rotate",
            "default",
            "--rewrap",
            "--file",
            str(tmp_path / "a.enc"),
            "--json",
            PRIVET_MASTER_KEY=master,
        ).stdout
    )
    assert rotated["key"]["version"] == 2 and set(rotated["rewrapped"]) == {"m:1", str(tmp_path / "a.enc")}
    one_error_line(run(home, "keys", "delete", "default", "--version", "2", "--yes", code=1, PRIVET_MASTER_KEY=master))
    run(home, "keys", "delete", "default", "--version", "1", "--yes", PRIVET_MASTER_KEY=master)

    run(home, "decrypt", str(tmp_path / "a.enc"), "-o", str(tmp_path / "a.out"), PRIVET_MASTER_KEY=master)
    assert (tmp_path / "a.out").read_bytes() == source.read_bytes()
    run(home, "model", "verify", "m", PRIVET_MASTER_KEY=master)
    shredded = run(
        home, "decrypt", str(tmp_path / "b.enc"), "-o", str(tmp_path / "b.out"), code=1, PRIVET_MASTER_KEY=master
    )
    assert "deleted" in one_error_line(shredded)


def test_model_pack_verify_unpack_list(home: Path, master: str, tmp_path: Path, model_dir: Path) -> None:
    packed = json.loads(
        run(
            home,
            "model",
            "pack",
            str(model_dir),
            "--name",
            "bc",
            "--version",
            "1",
            "--meta",
            "accuracy=0.96",
            "--epsilon",
            "3",
            "--delta",
            "1e-5",
            "--accountant",
            "prv",
            "--json",
            PRIVET_MASTER_KEY=master,
        ).stdout
    )
    assert packed["encrypted"] is True
    run(home, "model", "pack", str(model_dir), "--name", "bc", "--version", "2", "--plain", PRIVET_MASTER_KEY=master)
    duplicate = run(
        home, "model", "pack", str(model_dir), "--name", "bc", "--version", "1", code=2, PRIVET_MASTER_KEY=master
    )
    assert "already registered" in one_error_line(duplicate)

    listed = json.loads(run(home, "model", "list", "--json", PRIVET_MASTER_KEY=master).stdout)["models"]
    assert [(m["version"], m["encrypted"]) for m in listed] == [("1", True), ("2", False)]

    verified = json.loads(run(home, "model", "verify", "bc:1", "--json", PRIVET_MASTER_KEY=master).stdout)
    assert verified["privacy"]["epsilon"] == 3 and verified["metadata"]["accuracy"] == 0.96
    assert verified["files"] == 2 and verified["tensors"] == 4

    out = tmp_path / "unpacked"
    run(home, "model", "unpack", "bc:1", "-o", str(out), PRIVET_MASTER_KEY=master)
    assert (out / "model.safetensors").read_bytes() == (model_dir / "model.safetensors").read_bytes()
    again = run(home, "model", "unpack", "bc:1", "-o", str(out), code=2, PRIVET_MASTER_KEY=master)
    assert "already exists" in one_error_line(again)

    # A plain artifact verifies with an exported public key and no keyring at all.
    pem = tmp_path / "signer.pem"
    run(home, "keys", "public", "-o", str(pem), PRIVET_MASTER_KEY=master)
    plain_path = Path(listed[1]["path"])
    run(tmp_path / "elsewhere", "model", "verify", str(plain_path), "--trust", str(pem))

    damaged = bytearray(plain_path.read_bytes())
    damaged[200] ^= 0x01
    (tmp_path / "bad.pvm").write_bytes(damaged)
    proc = run(home, "model", "verify", str(tmp_path / "bad.pvm"), code=1, PRIVET_MASTER_KEY=master)
    assert "does not match" in one_error_line(proc)
    unknown = run(home, "model", "verify", "nope", code=2, PRIVET_MASTER_KEY=master)
    assert "not registered" in one_error_line(unknown)


def test_pickles_are_refused_with_a_conversion_hint(home: Path, master: str, tmp_path: Path, model_dir: Path) -> None:
    (model_dir / "extra.bin").write_bytes(pickle.dumps({"w": [1, 2]}))
    proc = run(home, "model", "pack", str(model_dir), "--name", "p", "--version", "1", code=2, PRIVET_MASTER_KEY=master)
    line = one_error_line(proc)
    assert "pickle" in line and "safetensors" in line
    torch.save({"w": torch.zeros(2)}, tmp_path / "weights.pt")
    line = one_error_line(
        run(
            home,
            "model",
            "pack",
            str(tmp_path / "weights.pt"),
            "--name",
            "p",
            "--version",
            "1",
            code=2,
            PRIVET_MASTER_KEY=master,
        )
    )
    assert "safetensors" in line
    assert json.loads(run(home, "model", "list", "--json", PRIVET_MASTER_KEY=master).stdout)["models"] == []


def test_bad_config_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "privet.toml").write_text("[privet]\nmaster_source = 'carrier-pigeon'\n")
    proc = run(tmp_path / "home", "keys", "list", code=2, PRIVET_CONFIG=str(tmp_path / "privet.toml"))
    assert "master_source" in one_error_line(proc)


def test_demo_runs_and_reports_every_check(tmp_path: Path) -> None:
    proc = run(tmp_path, "--quiet", "demo", "--json", "--workspace", str(tmp_path / "ws"), timeout=300)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["ok"] is True
    checks = {c["name"]: c["ok"] for stage in result["stages"] for c in stage["checks"]}
    assert checks["loaded model predicts identically"] and checks["one flipped bit refused"]
    assert checks["the run completed without the killed hospital"]
    assert checks["every round's distributed noise was charged to the ledger"]
    assert len(checks) >= 10 and all(checks.values())
    assert not (tmp_path / "ws").exists() or not any((tmp_path / "ws").iterdir())
