"""The federated runtime over real gRPC with mutual TLS on localhost: rounds, dropped clients, resume."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from privet.data.bundled import breast_cancer
from privet.dp.accounting import GaussianEvent, ZCDPEvent, compose_epsilon
from privet.dp.ledger import Ledger
from privet.errors import BudgetExceededError, ConfigError, FormatError, NotFoundError, UsageError
from privet.federated.budget import RoundCharges
from privet.federated.client import run_client
from privet.federated.config import FederationConfig, load_config
from privet.federated.provision import Provisioned, provision
from privet.federated.secagg.runtime import ClientSession
from privet.federated.server import Coordinator, serve
from privet.net.frames import Message
from privet.net.rpc import Client, Identity

CLIENTS = ["north", "south", "east"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Provisioned:
    return provision(tmp_path_factory.mktemp("fl") / "fed", "hospitals", CLIENTS)


@pytest.fixture(scope="module")
def shares() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    data = breast_cancer(seed=0)
    parts = torch.arange(len(data.x_train)).tensor_split(len(CLIENTS))
    return {c: (data.x_train[p], data.y_train[p]) for c, p in zip(CLIENTS, parts, strict=True)}


def _config(fed: Provisioned, state: Path, **changes: object) -> FederationConfig:
    settings: dict[str, object] = {
        "name": "hospitals", "listen": "127.0.0.1:0", "party": fed.directory / "server", "state": state,
        "rounds": 4, "clients_per_round": 3, "min_clients": 2, "round_deadline": 20, "wait_for_clients": 30,
        "model": {"kind": "logreg", "in_features": 30, "classes": 2}, "local": {"epochs": 2, "lr": 0.1},
    }  # fmt: skip
    return FederationConfig.model_validate({**settings, **changes})


def _identity(fed: Provisioned, party: str) -> Identity:
    return Identity.load(fed.directory / "clients" / party, fed.passphrases[party].encode())


def _run(
    fed: Provisioned,
    config: FederationConfig,
    shares: dict,
    parties: list[str],
    extra: Callable[[str], None] | None = None,
    ledger: Ledger | None = None,
) -> tuple[Coordinator, list]:
    """Serve ``config`` on a free port with ``parties`` as client threads; return the coordinator and rounds."""
    ports: list[int] = []
    listening = threading.Event()
    box: dict[str, object] = {}

    def on_listen(port: int) -> None:
        ports.append(port)
        listening.set()

    def server() -> None:
        box["result"] = serve(config, fed.passphrases["server"].encode(), ledger=ledger, on_listen=on_listen)

    thread = threading.Thread(target=server, daemon=True)
    thread.start()
    assert listening.wait(20)
    clients = [
        threading.Thread(target=run_client, args=(f"localhost:{ports[0]}", _identity(fed, p), *shares[p]), daemon=True)
        for p in parties
    ]
    if extra is not None:
        clients.append(threading.Thread(target=extra, args=(f"localhost:{ports[0]}",), daemon=True))
    for c in clients:
        c.start()
    thread.join(120)
    assert not thread.is_alive() and "result" in box
    for c in clients:
        c.join(30)
    return box["result"]  # type: ignore[return-value]


def test_rounds_complete_and_the_model_learns(federation: Provisioned, shares: dict, tmp_path: Path) -> None:
    data = breast_cancer(seed=0)
    eval_file = tmp_path / "test.csv"
    frame = {f"f{i}": data.x_test[:, i].numpy() for i in range(30)}
    import pandas as pd

    pd.DataFrame({**frame, "label": data.y_test.numpy()}).to_csv(eval_file, index=False)
    config = _config(federation, tmp_path / "state", eval_data=eval_file, min_available=3)
    _, records = _run(federation, config, shares, CLIENTS)
    assert [r.round for r in records] == [1, 2, 3, 4] and all(r.answered == sorted(CLIENTS) for r in records)
    assert records[-1].accuracy is not None and records[-1].accuracy > 0.9
    lines = (tmp_path / "state" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4 and (tmp_path / "state" / "checkpoint.pt").exists()


def test_a_client_that_drops_is_left_out_and_rounds_still_complete(
    federation: Provisioned, shares: dict, tmp_path: Path
) -> None:
    def takes_a_task_and_vanishes(address: str) -> None:
        with Client(address, _identity(federation, "east")) as client:
            while client.call("Task", Message("poll"), timeout=30).kind != "task":
                pass

    config = _config(federation, tmp_path / "state", rounds=2, round_deadline=3, min_available=3)
    _, records = _run(federation, config, shares, CLIENTS[:2], extra=takes_a_task_and_vanishes)
    # Round 1 waited for all three, sampled them, and closed at its deadline without east's update.
    assert records[0].sampled == sorted(CLIENTS) and records[0].answered == ["north", "south"]
    assert records[0].seconds >= 3


def test_resume_continues_to_the_same_model(federation: Provisioned, shares: dict, tmp_path: Path) -> None:
    def config(state: str, rounds: int) -> FederationConfig:
        return _config(federation, tmp_path / state, rounds=rounds, min_available=3)

    straight, _ = _run(federation, config("a", 4), shares, CLIENTS)
    first, _ = _run(federation, config("b", 2), shares, CLIENTS)
    assert first.round == 2
    resumed, more = _run(federation, config("b", 4), shares, CLIENTS)
    assert [r.round for r in more] == [3, 4]
    assert torch.equal(resumed.flat, straight.flat)


def test_a_damaged_checkpoint_and_a_bad_address_are_clear_errors(federation: Provisioned, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(FormatError, match="not a privet checkpoint"):
        Coordinator(_config(federation, state))
    config = tmp_path / "fl.yaml"
    config.write_text(yaml.safe_dump({**_config(federation, state).model_dump(mode="json"), "listen": "localhost"}))
    with pytest.raises(ConfigError, match="HOST:PORT"):
        load_config(config)


PRIVACY = {"epsilon": 3.0, "delta": 1e-5, "clip": 1.0, "population": 3, "ledger": "hospitals/patients"}


def test_private_rounds_are_charged_to_the_ledger_and_resume_without_charging_twice(
    federation: Provisioned, shares: dict, tmp_path: Path, sqlite_store: object
) -> None:
    ledger = Ledger(sqlite_store)  # type: ignore[arg-type]
    ledger.create("hospitals", "patients", 4.0, 1e-5)
    config = _config(federation, tmp_path / "state", rounds=2, clients_per_round=2, min_available=3,
                     privacy=PRIVACY)  # fmt: skip
    first, records = _run(federation, config, shares, CLIENTS, ledger=ledger)
    assert [r.round for r in records] == [1, 2]
    # Poisson sampling at q = 2/3 among the 3 connected clients; every round released and charged.
    assert all(set(r.answered) <= set(r.sampled) <= set(CLIENTS) for r in records)
    charges = ledger.history("hospitals", "patients")
    assert len(charges) == 2 and all(f"round {i + 1}: DP-FedAvg" in c.description for i, c in enumerate(charges))
    assert 0 < records[0].epsilon < records[1].epsilon < 3.0  # type: ignore[operator]
    assert records[1].budget_epsilon == pytest.approx(charges[-1].epsilon_after)
    metrics = (tmp_path / "state" / "metrics.jsonl").read_text().splitlines()
    assert '"epsilon"' in metrics[-1]

    # Resumed to all four rounds: the plan for the remaining two was checked; each round charged exactly once.
    resumed, more = _run(federation, config.model_copy(update={"rounds": 4}), shares, CLIENTS, ledger=ledger)
    assert [r.round for r in more] == [3, 4]
    charges = ledger.history("hospitals", "patients")
    assert [c.description.split(":")[0][-7:] for c in charges] == [f"round {i}" for i in (1, 2, 3, 4)]
    # The longer run is calibrated anew for its 4 rounds (more noise); the run's epsilon composes what each round had.
    summary, before = resumed.privacy_summary(), first.privacy_summary()
    assert summary is not None and before is not None and summary["rounds"] == 4
    assert summary["noise_multiplier"] > before["noise_multiplier"]  # type: ignore[operator]
    events = [e for c in charges for e in c.events]
    assert summary["epsilon"] == pytest.approx(compose_epsilon(events, 1e-5).epsilon)
    assert summary["budget_epsilon"] == pytest.approx(summary["epsilon"]) and summary["epsilon"] <= 4.0


def test_a_round_charged_before_a_crash_is_not_charged_again(tmp_path: Path, sqlite_store: object) -> None:
    ledger = Ledger(sqlite_store)  # type: ignore[arg-type]
    ledger.create("t", "d", 2.0, 1e-5)
    charges = RoundCharges(ledger, "t", "d", "run (abc)")
    event = GaussianEvent(2.0, 0.5, 1)
    first = charges.charge(1, event, "detail")
    assert charges.charge(1, event, "detail") == pytest.approx(first)  # the restarted attempt of round 1
    assert len(ledger.history("t", "d")) == 1
    assert RoundCharges(ledger, "t", "d", "another run (def)").charge(1, event, "detail") > first


def test_a_private_run_the_budget_cannot_afford_never_starts(
    federation: Provisioned, tmp_path: Path, sqlite_store: object
) -> None:
    ledger = Ledger(sqlite_store)  # type: ignore[arg-type]
    config = _config(federation, tmp_path / "state", clients_per_round=2, privacy=PRIVACY)
    with pytest.raises(NotFoundError, match="no budget hospitals/patients"):
        Coordinator(config, ledger)
    ledger.create("hospitals", "patients", 1.0, 1e-5)
    with pytest.raises(BudgetExceededError, match="over its budget"):
        Coordinator(config, ledger)
    assert ledger.history("hospitals", "patients") == []
    with pytest.raises(UsageError, match="needs the ledger"):
        Coordinator(config)
    with pytest.raises(UsageError, match="replaces the average, which client-level DP needs"):
        Coordinator(_config(federation, tmp_path / "s2", clients_per_round=2, privacy=PRIVACY,
                            strategy={"name": "median"}), ledger)  # fmt: skip


@pytest.mark.parametrize("strategy", [{"name": "fedavg"}, {"name": "median", "norm_bound": 0.5}], ids=str)
def test_updates_kept_on_disk_aggregate_to_the_same_model(
    federation: Provisioned, shares: dict, tmp_path: Path, strategy: dict
) -> None:
    def run(state: str, **changes: object) -> Coordinator:
        config = _config(federation, tmp_path / state, rounds=2, min_available=3, strategy=strategy, **changes)
        return _run(federation, config, shares, CLIENTS)[0]

    in_memory = run("memory")
    on_disk = run("disk", spool_over_mb=1e-4)  # every 248-byte update goes to a file and is aggregated by blocks
    assert torch.allclose(on_disk.flat, in_memory.flat, atol=1e-6)
    assert list((tmp_path / "disk" / "spool").iterdir()) == []
    with pytest.raises(UsageError, match="needs every whole update in memory"):
        Coordinator(_config(federation, tmp_path / "krum", strategy={"name": "krum"}, spool_over_mb=1e-4))


SECURE_CLIENTS = ["a", "b", "c", "d", "vanishes"]


def test_secure_rounds_learn_like_plain_ones_and_survive_a_client_lost_after_sharing(tmp_path: Path) -> None:
    fed = provision(tmp_path / "fed", "secure", SECURE_CLIENTS)
    data = breast_cancer(seed=0)
    parts = torch.arange(len(data.x_train)).tensor_split(4)
    shares = {c: (data.x_train[p], data.y_train[p]) for c, p in zip(SECURE_CLIENTS[:4], parts, strict=True)}
    eval_file = tmp_path / "test.csv"
    import pandas as pd

    frame = {f"f{i}": data.x_test[:, i].numpy() for i in range(30)}
    pd.DataFrame({**frame, "label": data.y_test.numpy()}).to_csv(eval_file, index=False)

    def keys_shares_then_gone(address: str) -> None:
        """Shares its keys in round 1, then never answers again (a client that hangs): it still polls, so it
        keeps being sampled and every later stage proceeds without it at its deadline."""
        session, shared = ClientSession(), False
        with Client(address, _identity(fed, "vanishes")) as client:
            while (reply := client.call("Task", Message("poll"), timeout=30)).kind != "done":
                if not shared and reply.kind in ("secagg-keys", "secagg-share"):
                    client.call("Submit", session.answer(reply), timeout=30)
                    shared = reply.kind == "secagg-share"

    def settings(state: str, **changes: object) -> FederationConfig:
        defaults = {"rounds": 3, "clients_per_round": 5, "min_clients": 3, "min_available": 5, "round_deadline": 8,
                    "eval_data": eval_file}  # fmt: skip
        return _config(fed, tmp_path / state, **{**defaults, **changes})

    secure = {"clip": 10.0, "colluding": 1, "dropout": 0.2, "stage_deadline": 3}
    _, records = _run(fed, settings("secure", secure_aggregation=secure), shares, SECURE_CLIENTS[:4],
                                extra=keys_shares_then_gone)  # fmt: skip
    assert [r.round for r in records] == [1, 2, 3]
    assert all(r.answered == ["a", "b", "c", "d"] for r in records)  # out after sharing; the rounds complete
    _, plain_records = _run(fed, settings("plain", min_available=4, clients_per_round=4), shares,
                                SECURE_CLIENTS[:4])  # fmt: skip
    assert records[-1].accuracy is not None and plain_records[-1].accuracy is not None
    assert records[-1].accuracy > 0.9 and abs(records[-1].accuracy - plain_records[-1].accuracy) <= 0.03
    with pytest.raises(UsageError, match="hides from the server"):
        Coordinator(settings("robust", secure_aggregation=secure, strategy={"name": "median"}))
    # Against a malicious server: signed keys and a consistency round (t > k/2), same sums.
    _, hardened_records = _run(fed, settings("malicious", rounds=2, clients_per_round=4, min_available=4,
                                                    secure_aggregation={**secure, "malicious": True}),
                                      shares, SECURE_CLIENTS[:4])  # fmt: skip
    assert [r.answered for r in hardened_records] == [["a", "b", "c", "d"]] * 2
    assert hardened_records[-1].accuracy is not None and hardened_records[-1].accuracy > 0.9
    # CKKS instead of masking: the server adds ciphertexts with the public parameters, one client decrypts.
    _, he_records = _run(fed, settings("ckks", rounds=2, clients_per_round=4, min_available=4,
                                       secure_aggregation={"clip": 10.0, "method": "ckks", "stage_deadline": 5}),
                         shares, SECURE_CLIENTS[:4])  # fmt: skip
    assert [r.answered for r in he_records] == [["a", "b", "c", "d"]] * 2
    assert he_records[-1].accuracy == pytest.approx(hardened_records[-1].accuracy, abs=0.03)
    assert b"secret" not in (fed.directory / "server" / "he.pub").read_bytes()
    assert not list((fed.directory / "server").glob("he.key"))


def test_secure_rounds_with_distributed_noise_are_charged_per_round_and_learn(
    tmp_path: Path, sqlite_store: object
) -> None:
    fed = provision(tmp_path / "fed", "secure", SECURE_CLIENTS[:4])
    data = breast_cancer(seed=0)
    parts = torch.arange(len(data.x_train)).tensor_split(4)
    shares = {c: (data.x_train[p], data.y_train[p]) for c, p in zip(SECURE_CLIENTS[:4], parts, strict=True)}
    ledger = Ledger(sqlite_store)  # type: ignore[arg-type]
    ledger.create("hospitals", "patients", 40.0, 1e-5)
    privacy = {"epsilon": 30.0, "delta": 1e-5, "clip": 1.0, "ledger": "hospitals/patients"}
    secure = {"clip": 1.0, "colluding": 1, "stage_deadline": 5}
    config = _config(fed, tmp_path / "state", rounds=3, clients_per_round=4, min_clients=3, min_available=4,
                     privacy=privacy, secure_aggregation=secure)  # fmt: skip
    coordinator, records = _run(fed, config, shares, SECURE_CLIENTS[:4], ledger=ledger)
    assert [r.round for r in records] == [1, 2, 3]
    charges = ledger.history("hospitals", "patients")
    assert len(charges) == 3 and all("distributed discrete Gaussian" in c.description for c in charges)
    assert all(isinstance(e, ZCDPEvent) for c in charges for e in c.events)
    summary = coordinator.privacy_summary()
    assert summary is not None and summary["noise"] == "distributed" and summary["min_clients"] == 3
    assert 0 < records[0].epsilon < records[2].epsilon <= 30.0  # type: ignore[operator]
    assert summary["epsilon"] == pytest.approx(compose_epsilon([e for c in charges for e in c.events], 1e-5).epsilon)
    x, y = data.x_test, data.y_test
    model = coordinator.spec.build()
    from privet.federated.local import load_flat

    load_flat(model, coordinator.flat)
    accuracy = float((model(x).argmax(1) == y).float().mean())
    assert accuracy > 0.8
    with pytest.raises(ValueError, match="no client sampling"):
        _config(fed, tmp_path / "s2", clients_per_round=4, min_clients=3, secure_aggregation=secure,
                privacy={**privacy, "population": 4})  # fmt: skip
    with pytest.raises(ValueError, match="must agree"):
        _config(fed, tmp_path / "s3", clients_per_round=4, min_clients=3, privacy=privacy,
                secure_aggregation={**secure, "clip": 2.0})  # fmt: skip
