"""``privet train``: a tiny DP-SGD run end to end (ledger charged, signed artifact with the plan), and its errors."""

from __future__ import annotations

import base64
import json
import os
import random
from pathlib import Path

import pytest
import torch

from privet.cli import main
from privet.config import load_settings
from privet.models import artifact
from privet.workspace import Workspace
from tests.cli.test_cli import run
from tests.data.test_images import write_mnist_like

PRIVACY_FIELDS = ("sampler", "sample_rate", "steps", "noise_multiplier", "max_grad_norm", "clipping")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def master() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@pytest.fixture
def table(tmp_path: Path) -> Path:
    rng = random.Random(0)
    rows = ["age,city,score,label"]
    for _ in range(600):
        score, city = rng.gauss(0, 1), rng.choice("abc")
        rows.append(f"{rng.randint(18, 80)},{city},{score:.3f},{'yes' if score + (city == 'a') > 0.3 else 'no'}")
    path = tmp_path / "visits.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture
def home(tmp_path: Path, master: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A privet home with a keyring, also set in this process's environment for in-process runs."""
    for key in [k for k in os.environ if k.startswith("PRIVET_")]:
        monkeypatch.delenv(key)
    home = tmp_path / "home"
    monkeypatch.setenv("PRIVET_HOME", str(home))
    monkeypatch.setenv("PRIVET_MASTER_KEY", master)
    assert main(["--quiet", "keys", "init", "--source", "env", "--json"]) == 0
    return home


def _train(capsys: pytest.CaptureFixture[str], *args: str, code: int = 0) -> dict | str:
    capsys.readouterr()
    assert main(["--quiet", "train", *args]) == code
    captured = capsys.readouterr()
    if code:
        lines = [line for line in captured.err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
        assert captured.out == ""
        return lines[0]
    return json.loads(captured.out)


def _open(path: Path) -> artifact.Verified:
    with Workspace(load_settings()) as ws:
        keyring = ws.keyring
        return artifact.read(path, keyring.verify_key, keyring)


def test_private_training_end_to_end_as_a_process(
    home: Path, tmp_path: Path, master: str, table: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "visits.pvm"
    args = ["train", "--data", str(table), "--tenant", "clinic", "--budget-epsilon", "3", "--epsilon", "1.5"]
    args += ["--delta", "1e-4", "--accountant", "rdp", "--epochs", "1", "--batch-size", "60", "--threads", "1"]
    proc = run(home, *args, "--out", str(out), "--json", PRIVET_MASTER_KEY=master)  # the real command, once
    result = json.loads(proc.stdout)
    assert result["private"] is True and result["model"] == "logreg"
    assert result["train_records"] == 480 and result["test_records"] == 120
    assert 0.5 < result["test_accuracy"] <= 1.0 and result["seconds"] > 0
    privacy = result["privacy"]
    assert privacy["epsilon"] <= 1.5 and privacy["accountant"] == "rdp" and privacy["sampler"] == "poisson"
    assert privacy["steps"] == result["steps"] == round(1 / privacy["sample_rate"]) == 8
    assert result["ledger"]["spent_epsilon"] == pytest.approx(privacy["epsilon"]) and result["ledger"]["charges"] == 1
    assert main(["--quiet", "ledger", "history", "--tenant", "clinic", "--dataset", "visits", "--json"]) == 0
    (charge,) = json.loads(capsys.readouterr().out)["charges"]
    assert charge["events"] == [
        {"kind": "gaussian", "noise_multiplier": privacy["noise_multiplier"], "sample_rate": privacy["sample_rate"],
         "steps": 8}
    ]  # fmt: skip
    verified = _open(out)  # signature, digests and decryption all checked
    assert verified.envelope.encrypted and verified.manifest.privacy is not None
    guarantee = verified.manifest.privacy
    assert (guarantee.epsilon, guarantee.delta, guarantee.accountant) == (privacy["epsilon"], 1e-4, "rdp")
    assert {k: guarantee.details[k] for k in PRIVACY_FIELDS} == {k: privacy[k] for k in PRIVACY_FIELDS}
    assert guarantee.details["ledger"] == "clinic/visits" and verified.manifest.metadata["training"] == "dp-sgd"


@pytest.mark.parametrize("kind", ["cnn", "scatternet"])
def test_image_model_on_idx_images_packs_a_loadable_signed_model(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    images = write_mnist_like(tmp_path / "digits", n_train=200, n_test=50)
    out = tmp_path / "digits.pvm"
    result = _train(
        capsys, "--data", str(images), "--model", kind, "--tenant", "lab", "--budget-epsilon", "2",
        "--epsilon", "2", "--accountant", "rdp", "--epochs", "1", "--batch-size", "50",
        "--physical-batch-size", "16", "--out", str(out), "--plain", "--json",
    )  # fmt: skip
    assert isinstance(result, dict) and result["model"] == kind and result["steps"] == 4
    verified = _open(out)
    assert not verified.envelope.encrypted and verified.manifest.privacy is not None
    assert verified.manifest.metadata["model.input"] == "1x28x28"
    from privet.models.reference import ModelSpec, load_weights

    model = load_weights(ModelSpec.from_metadata(verified.manifest.metadata), verified.files["model.safetensors"])
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    # The reported accuracy is the packed model's own on the test images (for scatternet: features included).
    from privet.data.images import load_mnist_like

    split = load_mnist_like(images)
    with torch.no_grad():
        accuracy = float((model(split.x_test).argmax(1) == split.y_test).float().mean())
    assert accuracy == pytest.approx(result["test_accuracy"])


def test_non_private_baseline_is_marked_and_charges_nothing(
    home: Path, tmp_path: Path, table: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "plain.pvm"
    result = _train(capsys, "--data", str(table), "--no-dp", "--epochs", "2", "--out", str(out), "--json")
    assert isinstance(result, dict)
    assert result["private"] is False and result["privacy"] is None and result["ledger"] is None
    assert "no differential-privacy guarantee" in result["note"]
    manifest = _open(out).manifest
    assert manifest.privacy is None and manifest.metadata["training"].startswith("non-private")
    assert main(["--quiet", "ledger", "show", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"budgets": []}


def test_a_budget_too_small_refuses_and_writes_nothing(
    home: Path, tmp_path: Path, table: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m.pvm"
    assert main(["--quiet", "ledger", "create", "--tenant", "clinic", "--dataset", "visits", "--epsilon", "0.5",
                 "--delta", "1e-4", "--accountant", "rdp"]) == 0  # fmt: skip
    line = _train(capsys, "--data", str(table), "--tenant", "clinic", "--epsilon", "1", "--delta", "1e-4",
                  "--accountant", "rdp", "--batch-size", "60", "--out", str(out), code=1)  # fmt: skip
    assert "over its budget" in line and "Nothing was released" in line
    assert not out.exists()
    assert main(["--quiet", "ledger", "history", "--tenant", "clinic", "--dataset", "visits", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["charges"] == []


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--data", "mnist", "--tenant", "t"], "needs --data-dir"),
        (["--data", "mnist", "--data-dir", "/nonexistent/dir", "--tenant", "t"], "does not exist"),
        (["--data", "/nonexistent/file.csv", "--tenant", "t"], "neither"),
        (["--data", "TABLE", "--tenant", "t", "--model", "resnet"], "--model"),
        (["--data", "TABLE"], "--tenant"),
        (["--data", "TABLE", "--no-dp", "--tenant", "t"], "--no-dp"),
        (["--data", "TABLE", "--tenant", "t", "--epsilon", "-1"], "--epsilon"),
        (["--data", "TABLE", "--tenant", "t", "--delta", "0.1", "--budget-epsilon", "5"], "not below 1/480"),
        (["--data", "TABLE", "--tenant", "nobody"], "no privacy budget exists"),
        (["--data", "TABLE", "--tenant", "t", "--label", "missing"], "no column 'missing'"),
        (["--data", "TABLE", "--tenant", "t", "--model", "cnn", "--budget-epsilon", "5"], "cnn takes"),
        (["--data", "TABLE", "--no-dp", "--out", "/nonexistent/dir/m.pvm"], "does not exist"),
        (["--data", "TABLE", "--no-dp", "--epochs", "abc"], "epochs"),
    ],
)
def test_bad_inputs_are_one_line_errors_with_exit_2(
    home: Path, table: Path, capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    line = _train(capsys, *[str(table) if a == "TABLE" else a for a in args], code=2)
    assert expected in line
