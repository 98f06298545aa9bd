"""The privacy ledger: one budget per tenant and data set, charged before anything is released.

Every consumer of privacy (a DP query, a DP-SGD run, a federated round, a serving budget) calls
:meth:`Ledger.charge` with its accounting events *before* it releases a result. The ledger composes the
new events with every earlier charge under the budget's accountant (not a naive sum of epsilons) and
refuses the charge if the composed epsilon at the budget's delta would exceed the budget's epsilon.

A charge is one transaction holding the budget's row lock (``SELECT ... FOR UPDATE`` on PostgreSQL, an
immediate write transaction on SQLite), so concurrent charges from threads or processes are serialised:
exactly the admissible ones succeed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError as DbIntegrityError
from sqlalchemy.orm import Session

from privet.dp.accounting import Accountant, Event, Guarantee, compose_epsilon, event_from_json, event_to_json
from privet.errors import BudgetExceededError, NotFoundError, UsageError
from privet.store import BudgetRecord, ChargeRecord, Store

ACCOUNTANTS: tuple[str, ...] = ("pld", "rdp")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}")
Charger = Callable[[Sequence[Event], str], Guarantee]


@dataclass(frozen=True)
class Budget:
    tenant: str
    dataset: str
    epsilon: float
    delta: float
    accountant: str
    created_at: datetime


@dataclass(frozen=True)
class Charge:
    """One recorded release: what it was (a description with no data values), its events, the total after."""

    id: int
    description: str
    events: tuple[Event, ...]
    epsilon_after: float
    accountant: str
    created_at: datetime


@dataclass(frozen=True)
class Status:
    budget: Budget
    spent: Guarantee | None  # None before the first charge
    charges: int

    @property
    def remaining_epsilon(self) -> float:
        return self.budget.epsilon - (self.spent.epsilon if self.spent else 0.0)


def _check_name(kind: str, value: str) -> str:
    if not _NAME.fullmatch(value):
        raise UsageError(f"{kind} name {value!r} is not valid", "Use 1-128 letters, digits and . _ : / @ -")
    return value


def _budget(row: BudgetRecord) -> Budget:
    return Budget(row.tenant, row.dataset, row.epsilon, row.delta, row.accountant, row.created_at)


class Ledger:
    """Budgets and charges in the store."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def create(self, tenant: str, dataset: str, epsilon: float, delta: float, accountant: str = "pld") -> Budget:
        """Open a budget; one per (tenant, data set), never silently replaced."""
        _check_name("tenant", tenant)
        _check_name("data set", dataset)
        if not (math.isfinite(epsilon) and epsilon > 0):
            raise UsageError(f"budget epsilon {epsilon} must be a positive number")
        if not 0 <= delta < 1:
            raise UsageError(f"budget delta {delta} must be in [0, 1)", "A common choice is below 1/rows.")
        if accountant not in ACCOUNTANTS:
            raise UsageError(f"accountant {accountant!r} is not one of {', '.join(ACCOUNTANTS)}")
        row = BudgetRecord(tenant=tenant, dataset=dataset, epsilon=epsilon, delta=delta, accountant=accountant)
        try:
            with self._store.transaction() as session:
                session.add(row)
        except DbIntegrityError:
            raise UsageError(
                f"a budget for {tenant}/{dataset} already exists",
                "Budgets are never replaced; see 'privet ledger show'.",
            ) from None
        return _budget(row)

    def budgets(self) -> list[Budget]:
        with self._store.transaction() as session:
            rows = session.scalars(select(BudgetRecord).order_by(BudgetRecord.tenant, BudgetRecord.dataset)).all()
            return [_budget(r) for r in rows]

    def status(self, tenant: str, dataset: str) -> Status:
        """The budget, what its charges compose to, and how many there are."""
        with self._store.transaction() as session:
            row = self._row(session, tenant, dataset, lock=False)
            charges = self._charges(session, row)
            budget = _budget(row)
        if not charges:
            return Status(budget, None, 0)
        events = [event for charge in charges for event in charge.events]
        return Status(budget, compose_epsilon(events, budget.delta, _accountant(budget)), len(charges))

    def history(self, tenant: str, dataset: str) -> list[Charge]:
        with self._store.transaction() as session:
            return self._charges(session, self._row(session, tenant, dataset, lock=False))

    def charge(self, tenant: str, dataset: str, events: Sequence[Event], description: str) -> Guarantee:
        """Record ``events`` against the budget, or refuse if the composed epsilon would exceed it.

        Call this before releasing anything; a refusal raises :class:`BudgetExceededError` and records nothing.
        """
        description = " ".join(description.split())[:512] or "unnamed release"
        with self._store.transaction() as session:
            row = self._row(session, tenant, dataset, lock=True)
            after = self._admit(session, row, events, description)
            session.add(
                ChargeRecord(
                    budget_id=row.id,
                    description=description,
                    events=[event_to_json(e) for e in events],
                    epsilon_after=after.epsilon,
                    accountant=after.accountant,
                )
            )
        return after

    def preview(self, tenant: str, dataset: str, events: Sequence[Event], description: str) -> Guarantee:
        """What charging ``events`` would bring the budget to; refuses as :meth:`charge` would, records nothing.

        For plans that charge in parts (a federated run, round by round): check the whole before the first part.
        """
        with self._store.transaction() as session:
            return self._admit(session, self._row(session, tenant, dataset, lock=False), events, description)

    def _admit(self, session: Session, row: BudgetRecord, events: Sequence[Event], description: str) -> Guarantee:
        if not events:
            raise UsageError("a charge needs at least one accounting event")
        tenant, dataset = row.tenant, row.dataset
        earlier = [event for charge in self._charges(session, row) for event in charge.events]
        try:
            after = compose_epsilon([*earlier, *events], row.delta, _accountant(_budget(row)))
        except UsageError as exc:  # the events' own deltas already exceed the budget's delta
            raise BudgetExceededError(
                f"charging {description!r} would exceed the delta of {tenant}/{dataset} ({exc.message})",
                "Nothing was released. Declare the group keys (no partition selection) or use a new data set.",
            ) from None
        if after.epsilon > row.epsilon:
            raise BudgetExceededError(
                f"charging {description!r} would bring {tenant}/{dataset} to epsilon {after.epsilon:.4g} "
                f"({after.accountant}), over its budget of {row.epsilon:.4g} at delta {row.delta:.3g}",
                "Nothing was released. Ask for less (a larger noise scale, fewer statistics) or a new data set.",
            )
        return after

    def charger(self, tenant: str, dataset: str) -> Charger:
        """A function that charges this budget: what releasing code takes as its ``charge`` hook."""

        def charge(events: Sequence[Event], description: str) -> Guarantee:
            return self.charge(tenant, dataset, events, description)

        return charge

    @staticmethod
    def _row(session: Session, tenant: str, dataset: str, *, lock: bool) -> BudgetRecord:
        query = select(BudgetRecord).where(BudgetRecord.tenant == tenant, BudgetRecord.dataset == dataset)
        if lock:
            query = query.with_for_update()  # PostgreSQL row lock; SQLite holds the database write lock already
        row = session.scalars(query).one_or_none()
        if row is None:
            raise NotFoundError(
                f"no privacy budget exists for {tenant}/{dataset}",
                "Create one with 'privet ledger create'; nothing is released without a budget.",
            )
        return row

    @staticmethod
    def _charges(session: Session, row: BudgetRecord) -> list[Charge]:
        rows = session.scalars(
            select(ChargeRecord).where(ChargeRecord.budget_id == row.id).order_by(ChargeRecord.id)
        ).all()
        return [
            Charge(
                r.id,
                r.description,
                tuple(event_from_json(e) for e in r.events),
                r.epsilon_after,
                r.accountant,
                r.created_at,
            )
            for r in rows
        ]


def _accountant(budget: Budget) -> Accountant:
    return "rdp" if budget.accountant == "rdp" else "pld"
