"""Stage 1: keys, a small classifier, and its signed, encrypted artifact: packed, verified, tamper-proof."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch

from privet.crypto.keyring import Keyring
from privet.crypto.master import from_env_value, new_env_value
from privet.data import breast_cancer
from privet.demo.stage import DemoContext, Stage, StageReport
from privet.errors import PrivetError
from privet.models import artifact
from privet.models.reference import ModelSpec, load_weights, save_weights
from privet.models.training import accuracy, fit
from privet.store import Store

EPOCHS = 30


def _refused(report: StageReport, name: str, path: Path, trust: artifact.Trust, keyring: Keyring) -> None:
    try:
        artifact.verify(path, trust, keyring)
    except PrivetError as exc:
        report.check(name, True, f"refused: {exc.message}")
    else:
        report.check(name, False, "was accepted")


def run(ctx: DemoContext, report: StageReport) -> None:
    ws = ctx.workspace
    with ctx.task("initialising the keyring"):
        keyring = ws.initialize_keyring("env")
    report.check("keyring initialised", True, ", ".join(f"{k.name} v{k.version}" for k in keyring.versions()))

    data = breast_cancer(seed=ctx.seed)
    spec = ModelSpec("mlp", data.x_train.shape[1], data.classes, hidden=32)
    torch.manual_seed(ctx.seed)
    model = spec.build()
    with ctx.task(f"training an MLP on {data.name} ({len(data.x_train)} rows)", total=EPOCHS) as advance:
        fitted = fit(model, data.x_train, data.y_train, epochs=EPOCHS, seed=ctx.seed, on_epoch=lambda *_: advance(1))
    test_accuracy = accuracy(model, data.x_test, data.y_test)
    report.figures.update(train_accuracy=round(fitted.train_accuracy, 4), test_accuracy=round(test_accuracy, 4))
    report.check("classifier trained", test_accuracy >= 0.9, f"test accuracy {test_accuracy:.3f}")

    model_dir = ctx.scratch / "breast-cancer-mlp"
    model_dir.mkdir()
    save_weights(model, model_dir / "model.safetensors")
    (model_dir / "README.txt").write_text("MLP on scikit-learn's breast-cancer data, trained by privet demo.\n")
    with ctx.task("packing: signed and encrypted into the registry"):
        started = time.perf_counter()
        entry = ws.registry.add(
            model_dir,
            name="breast-cancer-mlp",
            version="1",
            signer=keyring.signing_key(),
            keys=keyring,
            metadata={**spec.to_metadata(), "dataset": data.name, "test_accuracy": round(test_accuracy, 4)},
        )
        report.figures["pack_ms"] = round((time.perf_counter() - started) * 1000, 1)
    report.figures["artifact_bytes"] = entry.size
    report.check("artifact packed", entry.encrypted, f"{entry.name}:{entry.version}, key {entry.key_name} v1")

    with ctx.task("verifying and loading it back"):
        started = time.perf_counter()
        verified = artifact.read(entry.path, keyring.verify_key, keyring)
        report.figures["verify_ms"] = round((time.perf_counter() - started) * 1000, 1)
        loaded = load_weights(ModelSpec.from_metadata(verified.manifest.metadata), verified.files["model.safetensors"])
    with torch.no_grad():
        same = torch.equal(model(data.x_test), loaded(data.x_test))
    report.check("loaded model predicts identically", same, f"{len(data.x_test)} test rows, logits bit-identical")

    with ctx.task("tampering with copies"):
        original = entry.path.read_bytes()
        flipped = bytearray(original)
        flipped[len(flipped) // 2] ^= 0x01
        (ctx.scratch / "flipped.pvm").write_bytes(flipped)
        _refused(report, "one flipped bit refused", ctx.scratch / "flipped.pvm", keyring.verify_key, keyring)
        (ctx.scratch / "truncated.pvm").write_bytes(original[: len(original) - 100])
        _refused(report, "truncated copy refused", ctx.scratch / "truncated.pvm", keyring.verify_key, keyring)
        foreign_store = Store.open(f"sqlite:///{ctx.scratch / 'foreign.db'}")
        try:
            foreign = Keyring.initialize(foreign_store, from_env_value(new_env_value()))
            artifact.pack(
                model_dir,
                ctx.scratch / "foreign.pvm",
                name="breast-cancer-mlp",
                version="1",
                signer=foreign.signing_key(),
                keys=keyring,
            )
        finally:
            foreign_store.close()
        _refused(report, "untrusted signer refused", ctx.scratch / "foreign.pvm", keyring.verify_key, keyring)

    with ctx.task("rotating the key, re-wrapping, shredding the old version"):
        shutil.copyfile(entry.path, ctx.scratch / "before-rotation.pvm")
        keyring.rotate("default")
        rewrapped = ws.registry.rewrap(keyring, "default")
        keyring.delete("default", 1)
        artifact.verify(entry.path, keyring.verify_key, keyring)
        report.check("rotation + re-wrap keeps the artifact", len(rewrapped) == 1, "verifies under default v2")
        _refused(
            report,
            "copy under shredded v1 unreadable",
            ctx.scratch / "before-rotation.pvm",
            keyring.verify_key,
            keyring,
        )


STAGE = Stage("foundation", "keys, encrypted and signed model artifact", run)
