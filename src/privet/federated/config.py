"""``fl.yaml``: what a federated run does, validated before anything starts (pydantic, unknown keys refused).

Example::

    name: hospitals
    listen: 127.0.0.1:50051
    party: fed/server              # the server's folder from `privet fl provision`
    state: run                     # checkpoint and metrics.jsonl go here
    rounds: 20
    clients_per_round: 3
    min_clients: 2                 # answers a round needs to complete
    min_available: 3               # connected clients a round waits for before sampling (default: min_clients)
    round_deadline: 60             # seconds a round waits for updates
    wait_for_clients: 120          # seconds a round waits for min_clients to be connected
    seed: 0
    model: {kind: logreg, in_features: 30, classes: 2}
    local: {epochs: 1, batch_size: 32, lr: 0.1}
    strategy: {name: fedavg}       # or {name: fedadam, server_lr: 0.01}, {name: krum, byzantine: 1}, ...
    eval_data: data/test.csv       # optional: server-side test accuracy after each round
    spool_over_mb: 64              # updates larger than this wait on disk, not in server memory
    privacy:                       # optional: client-level DP (DP-FedAvg), every round charged to the ledger
      epsilon: 3.0                 # (epsilon, delta) of the whole run, over all rounds
      delta: 1.0e-5
      clip: 1.0                    # L2 bound of a client's update (the initial one with adaptive clipping)
      population: 100              # N: the federation's clients
      sample_rate: 0.1             # q: chance a client takes part in a round (default clients_per_round / N)
      ledger: hospitals/patients   # tenant/data set of an existing budget (`privet ledger create`)
      adaptive: {target_quantile: 0.5, learning_rate: 0.2, count_noise: 5.0}   # optional
                                   # with secure_aggregation: the clients add the noise (distributed discrete
                                   # Gaussian); no population, sample_rate or adaptive then, same clip
    secure_aggregation:            # optional: the server sees only the sum of the round's updates
      clip: 1.0                    # L2 bound of an update (clients clip), and the fixed-point range
      bits: 16                     # fixed-point bits per coordinate
      dropout: 0.1                 # planned fraction of clients lost mid-round (sizes neighbourhoods)
      full: false                  # true: every client a neighbour of every other (SecAgg, not SecAgg+)
      colluding: 1                 # or corrupt: 0.05, the fraction that may collude with the server
      malicious: false             # true: keys signed with client certificates, consistency round, t > k/2
      method: secagg               # or ckks: CKKS homomorphic sums; every client holds the key (docs/secagg.md)

Relative paths are taken from the file's folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from privet.errors import ConfigError, NotFoundError
from privet.federated.local import LocalSettings
from privet.models.reference import ModelSpec

__all__ = ["FederationConfig", "ModelConfig", "load_config"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(_Strict):
    kind: str
    in_features: int
    classes: int
    hidden: int = 0

    def spec(self) -> ModelSpec:
        return ModelSpec(self.kind, self.in_features, self.classes, self.hidden)


class LocalConfig(_Strict):
    epochs: int = Field(1, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)

    def settings(self) -> LocalSettings:
        return LocalSettings(self.epochs, self.batch_size, self.lr, self.momentum)


class AdaptiveConfig(_Strict):
    target_quantile: float = Field(0.5, gt=0, lt=1)
    learning_rate: float = Field(0.2, gt=0)
    count_noise: float = Field(gt=0)


class PrivacyConfig(_Strict):
    """Client-level DP of a run (see :mod:`privet.federated.privacy`)."""

    epsilon: float = Field(gt=0)
    delta: float = Field(gt=0, lt=1)
    clip: float = Field(gt=0)
    population: int | None = Field(None, ge=1)  # DP-FedAvg only: distributed noise samples nobody
    sample_rate: float | None = Field(None, gt=0, le=1)
    ledger: str
    accountant: Literal["pld", "rdp"] = "pld"
    adaptive: AdaptiveConfig | None = None

    @property
    def budget(self) -> tuple[str, str]:
        tenant, _, dataset = self.ledger.partition("/")
        return tenant, dataset


class SecureAggregationConfig(_Strict):
    """Secure aggregation of a run (see :mod:`privet.federated.secagg`)."""

    clip: float = Field(gt=0)  # L2 bound of an update, and the range of its fixed-point coordinates
    bits: int = Field(16, ge=2, le=24)  # fixed-point bits per coordinate
    dropout: float = Field(0.1, ge=0, lt=0.5)  # planned fraction of clients lost mid-round
    full: bool = False  # every client a neighbour of every other (SecAgg), not SecAgg+
    corrupt: float = Field(0.05, ge=0, lt=0.5)  # fraction of clients that may collude with the server
    colluding: int | None = Field(None, ge=0)  # or: at most this many (small federations)
    security: int = Field(40, ge=8)  # -log2 of the chance that colluders learn one client's input
    stage_deadline: float = Field(30.0, gt=0)  # seconds each key, share and unmask exchange waits
    malicious: bool = False  # signed keys and a consistency round, against a server that may lie
    method: Literal["secagg", "ckks"] = "secagg"  # masking (SecAgg+), or CKKS homomorphic sums (TenSEAL)


class FederationConfig(_Strict):
    """The settings of one federated run (see the module docstring)."""

    name: str
    listen: str = "127.0.0.1:50051"
    party: Path
    state: Path
    rounds: int = Field(ge=1)
    clients_per_round: int = Field(ge=1)
    min_clients: int = Field(1, ge=1)
    min_available: int | None = Field(None, ge=1)  # connected clients needed to start a round (min_clients)
    round_deadline: float = Field(60.0, gt=0)
    wait_for_clients: float = Field(120.0, gt=0)
    seed: int = 0
    model: ModelConfig
    local: LocalConfig = LocalConfig()
    strategy: dict[str, Any] = Field(default_factory=lambda: {"name": "fedavg"})
    eval_data: Path | None = None
    compress: bool = False
    spool_over_mb: float = Field(64.0, gt=0)  # updates larger than this wait on disk, not in server memory
    privacy: PrivacyConfig | None = None
    secure_aggregation: SecureAggregationConfig | None = None

    @model_validator(mode="after")
    def _enough(self) -> FederationConfig:
        if self.min_clients > self.clients_per_round:
            raise ValueError("min_clients cannot exceed clients_per_round")
        if self.min_available is not None and self.min_available < self.min_clients:
            raise ValueError("min_available cannot be below min_clients")
        if "name" not in self.strategy:
            raise ValueError("strategy needs a name")
        host, _, port = self.listen.rpartition(":")
        if not host or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"listen must be HOST:PORT (port 0-65535), got {self.listen!r}")
        if (
            self.secure_aggregation is not None
            and self.secure_aggregation.method == "ckks"
            and (self.secure_aggregation.malicious)
        ):
            raise ValueError("with method ckks every client holds the secret key: there is no malicious-server mode")
        if self.secure_aggregation is not None and min(self.available, self.clients_per_round) < 3:
            raise ValueError("secure aggregation needs rounds of at least 3 clients: set clients_per_round and "
                             "min_available (or min_clients) to 3 or more")  # fmt: skip
        if self.privacy is not None:
            if not all(self.privacy.budget):
                raise ValueError(f"privacy.ledger must be TENANT/DATASET, got {self.privacy.ledger!r}")
            if self.secure_aggregation is not None and self.secure_aggregation.method == "ckks":
                raise ValueError("distributed DP noise is built on the masked integer sums: with privacy use "
                                 "secure_aggregation.method secagg")  # fmt: skip
            if self.secure_aggregation is not None:
                self._distributed(self.privacy, self.secure_aggregation)
            elif self.privacy.population is None:
                raise ValueError("privacy.population (the federation's number of clients) is needed to sample them")
            elif self.privacy.population < self.clients_per_round and self.privacy.sample_rate is None:
                raise ValueError("privacy.population cannot be below clients_per_round")
        return self

    @staticmethod
    def _distributed(privacy: PrivacyConfig, secure: SecureAggregationConfig) -> None:
        """Privacy with secure aggregation is distributed noise (:mod:`privet.federated.secagg.noise`)."""
        if privacy.clip != secure.clip:
            raise ValueError("privacy.clip and secure_aggregation.clip must agree: the clients clip once")
        if privacy.adaptive is not None:
            raise ValueError("adaptive clipping needs the server to see each client's norm; with secure "
                             "aggregation set a fixed privacy.clip")  # fmt: skip
        if privacy.sample_rate is not None or privacy.population is not None:
            raise ValueError("with secure aggregation no client sampling is assumed (the server knows who took "
                             "part): drop privacy.population and privacy.sample_rate")  # fmt: skip

    @property
    def client_rate(self) -> float:
        """With privacy: the probability ``q`` that a client takes part in a round."""
        if self.privacy is None:
            raise ValueError("the run has no privacy settings")
        return self.privacy.sample_rate or self.clients_per_round / self.privacy.population

    @property
    def available(self) -> int:
        return self.min_available if self.min_available is not None else self.min_clients


def load_config(path: Path) -> FederationConfig:
    """Read and validate ``fl.yaml``; paths in it are relative to its folder."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise NotFoundError(f"{path} does not exist", "Pass the federation's fl.yaml with --config.") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path.name} is not valid YAML ({type(exc).__name__})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path.name} must be a mapping of settings")
    for key in ("party", "state", "eval_data"):
        if isinstance(raw.get(key), str):
            raw[key] = str((path.parent / raw[key]).resolve())
    try:
        config = FederationConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "file"
        raise ConfigError(
            f"{path.name}: {where}: {first['msg']}", "Fix that setting (see docs/federated.md)."
        ) from None
    config.model.spec()  # a model the reference builder refuses is a config error, before anything starts
    return config
