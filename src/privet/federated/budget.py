"""A federated run's privacy, charged round by round to the ledger (each round once, even across restarts).

Before the first round, the whole plan (the remaining rounds as one composed event) is checked against the budget
(:meth:`~privet.dp.ledger.Ledger.preview`), so a run the budget cannot afford never starts. Each round is then
charged before its model leaves the server. A charge names the run (its name and a random id kept in the state
folder) and the round; if the server dies after charging a round but before checkpointing it, the restarted
server finds that charge and does not charge the round again: the first attempt released nothing, and only one
attempt of the round is ever released.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from privet.dp.accounting import Event, compose_epsilon
from privet.dp.ledger import Ledger
from privet.errors import NotFoundError
from privet.files import atomic_file

__all__ = ["RoundCharges", "run_id"]


def run_id(state: Path) -> str:
    """The run's random id, created in ``state/run.json`` on first use (a new state folder is a new run)."""
    path = state / "run.json"
    if not path.exists():
        with atomic_file(path) as handle:
            handle.write(json.dumps({"id": secrets.token_hex(8)}).encode())
    return str(json.loads(path.read_text())["id"])


@dataclass(frozen=True)
class RoundCharges:
    """Charges of one run (``run``: a name unique to it) to ``tenant/dataset`` of ``ledger``."""

    ledger: Ledger
    tenant: str
    dataset: str
    run: str

    def _prefix(self, round_: int) -> str:
        return f"federated run {self.run}, round {round_}:"

    def check_plan(self, event: Event, rounds: int, first: int) -> None:
        """Refuse (before anything is released) unless the budget affords rounds ``first``..``rounds``."""
        try:
            remaining = rounds - first + 1 - int(self.charged(first))
            if remaining > 0:
                plan = dataclasses.replace(event, steps=remaining)
                self.ledger.preview(self.tenant, self.dataset, [plan], f"{self._prefix(first)} the rest of the run")
        except NotFoundError:
            raise NotFoundError(
                f"the ledger has no budget {self.tenant}/{self.dataset}",
                f"Create it: privet ledger create --tenant {self.tenant} --dataset {self.dataset} --epsilon E",
            ) from None

    def charged(self, round_: int) -> bool:
        prefix = self._prefix(round_)
        return any(c.description.startswith(prefix) for c in self.ledger.history(self.tenant, self.dataset))

    def run_epsilon(self, delta: float, accountant: str) -> float:
        """This run's own epsilon at ``delta``: its charged rounds composed (each with the noise it had)."""
        prefix = f"federated run {self.run}, round "
        events = [e for c in self.ledger.history(self.tenant, self.dataset) if c.description.startswith(prefix)
                  for e in c.events]  # fmt: skip
        return compose_epsilon(events, delta, "rdp" if accountant == "rdp" else "pld").epsilon if events else 0.0

    def charge(self, round_: int, event: Event, detail: str) -> float:
        """Charge round ``round_`` (unless an earlier attempt of it was); the budget's epsilon after it."""
        if self.charged(round_):
            status = self.ledger.status(self.tenant, self.dataset)
            return status.spent.epsilon if status.spent is not None else 0.0
        return self.ledger.charge(self.tenant, self.dataset, [event], f"{self._prefix(round_)} {detail}").epsilon
