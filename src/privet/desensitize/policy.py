"""Desensitization policies: which entities to find, and what to do with each, in a small YAML file.

A policy is read with :meth:`Policy.load` (a file), :meth:`Policy.from_yaml` (a string) or
:meth:`Policy.default` (the policy shipped with privet, ``policies/default.yaml``). Loading validates the
whole file, operators included (each rule's operator is built with its parameters), so a policy that loads
runs; every problem becomes one :class:`PolicyError` line naming the field and what to do.

Format::

    name: default
    language: auto            # auto | en | zh: the documents' language (auto: detected per document)
    threshold: 0.4            # minimum score of a finding, overridable per entity
    entities:                 # entity -> rule; only listed entities are transformed unless `default` is set
      PERSON: {operator: pseudonym}
      EMAIL: pseudonym        # shorthand for {operator: pseudonym}
      DATE_TIME: {operator: generalize, params: {granularity: year}, threshold: 0.5}
    default: {operator: replace}   # rule for detected entities not listed (omit to leave them untouched)
    allow: ["Acme Hospital"]       # values never reported (exact match after trimming, case-insensitive)
    deny: [{term: "Project Falcon", entity: ORGANIZATION}]   # literals always reported as that entity
    key: desensitize               # keyring key the keyed operators derive their keys from
    vault: {tenant: default, ttl_days: 30}   # used by the operator `vault` (ttl_days: null = no expiry)

Every field is optional. A rule is ``operator`` (one of :data:`~privet.desensitize.operators.OPERATORS` or
``vault``), ``params`` (that operator's parameters) and ``threshold`` (this entity's minimum score). Entity names
are the upper-case names of :mod:`privet.desensitize.types`; an unknown name is an error (a typo would leave
data untouched). Without ``default`` only the listed entities are looked for, so a listed value is never lost
to an overlapping unlisted one.
"""

from __future__ import annotations

import difflib
import types as pytypes
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from privet.crypto.keyring import validate_key_name
from privet.desensitize import types as t
from privet.desensitize.engine import DenyTerm
from privet.desensitize.evaluate import GOLD_TYPES
from privet.desensitize.operators import DEFAULT_KEY_NAME, OPERATORS, Generalize, Operator, build_operator
from privet.desensitize.vault import _check_tenant
from privet.errors import NotFoundError, PrivetError, UsageError

__all__ = ["KEYED_OPERATORS", "VAULT_OPERATOR", "DenyRule", "Policy", "PolicyError", "Rule", "VaultSettings"]

VAULT_OPERATOR = "vault"
KEYED_OPERATORS = frozenset({"hash", "pseudonym", "encrypt", "fpe", "dateshift"})
"""Operators that derive their key from the keyring key ``Policy.key``."""

_DOCS = "See docs/desensitize.md for the policy format"
_MAX_POLICY_BYTES = 1 << 20


@cache
def known_entities() -> frozenset[str]:
    """Every entity type privet's recognizers report (the upper-case names in :mod:`types`)."""
    return frozenset(v for k, v in vars(t).items() if k.isupper() and isinstance(v, str) and k == v)


class PolicyError(UsageError):
    """A policy file or value is not valid; nothing was desensitized."""

    default_hint = f"Fix the policy. {_DOCS}."


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Rule(_Strict):
    """What happens to one entity: ``operator`` with ``params``, for findings scoring at least ``threshold``."""

    operator: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)


class DenyRule(_Strict):
    """A literal always reported as ``entity``."""

    term: str = Field(min_length=1)
    entity: str = Field(min_length=1)


class VaultSettings(_Strict):
    """The vault tenant the operator ``vault`` writes to, and how long its tokens live (None: no expiry)."""

    tenant: str = "default"
    ttl_days: float | None = Field(default=None, gt=0)


def _rule_or_shorthand(value: object) -> object:
    """``pseudonym`` is short for ``{operator: pseudonym}``."""
    return {"operator": value} if isinstance(value, str) else value


class Policy(_Strict):
    """A validated desensitization policy; its operators are built once, at load time."""

    name: str = "custom"
    language: Literal["auto", "en", "zh"] = "auto"
    threshold: float = Field(default=0.4, ge=0.0, le=1.0)
    entities: dict[str, Rule] = Field(default_factory=dict)
    default_rule: Rule | None = Field(default=None, alias="default")
    allow: list[str] = Field(default_factory=list)
    deny: list[DenyRule] = Field(default_factory=list)
    key: str = DEFAULT_KEY_NAME
    vault: VaultSettings = Field(default_factory=VaultSettings)

    _operators: dict[str, Operator | None] = PrivateAttr(default_factory=dict)
    _default_operator: Operator | None = PrivateAttr(default=None)

    @field_validator("entities", mode="before")
    @classmethod
    def _entity_shorthand(cls, value: object) -> object:
        if isinstance(value, dict):
            return {k: _rule_or_shorthand(v) for k, v in value.items()}
        return value

    @field_validator("default_rule", mode="before")
    @classmethod
    def _default_shorthand(cls, value: object) -> object:
        return _rule_or_shorthand(value)

    def model_post_init(self, context: Any) -> None:
        source = context.get("source", "policy") if isinstance(context, dict) else "policy"
        problems = list(self._problems())
        if problems:
            field, message, hint = problems[0]
            raise PolicyError(f"{source}: {field}: {message}{_more(len(problems) - 1)}", hint)

    # -- semantic checks (after the structure is valid) ------------------------------------------------
    def _problems(self) -> list[tuple[str, str, str]]:
        problems: list[tuple[str, str, str]] = []
        known = known_entities()
        try:
            validate_key_name(self.key)
        except UsageError as exc:
            problems.append(("key", "is not a valid keyring key name", exc.hint))
        try:
            _check_tenant(self.vault.tenant)
        except UsageError as exc:
            problems.append(("vault.tenant", "is not a valid tenant name", exc.hint))
        for entity, rule in self.entities.items():
            if entity not in known:
                problems.append((f"entities.{entity}", "unknown entity type", _entity_hint(entity)))
                continue
            operator = self._build(f"entities.{entity}", entity, rule, problems)
            self._operators[entity] = operator
        if self.default_rule is not None:
            if self.default_rule.threshold is not None:
                problems.append(
                    ("default.threshold", "is not used here", "Set the top-level threshold for unlisted entities.")
                )
            self._default_operator = self._build("default", None, self.default_rule, problems)
        for i, deny in enumerate(self.deny):
            if deny.entity not in known:
                problems.append((f"deny.{i}.entity", "unknown entity type", _entity_hint(deny.entity)))
            if not deny.term.strip():
                problems.append((f"deny.{i}.term", "is blank", "Give the literal to always report."))
        for i, term in enumerate(self.allow):
            if not term.strip():
                problems.append((f"allow.{i}", "is blank", "Remove the empty entry."))
        return problems

    def _build(
        self, field: str, entity: str | None, rule: Rule, problems: list[tuple[str, str, str]]
    ) -> Operator | None:
        if rule.operator == VAULT_OPERATOR:
            if rule.params:
                problems.append(
                    (f"{field}.params", "the vault operator takes no parameters", "Set vault.ttl_days instead.")
                )
            return None  # needs a Vault at run time: see Desensitizer
        if rule.operator not in OPERATORS:
            choices = ", ".join(sorted((*OPERATORS, VAULT_OPERATOR)))
            problems.append((f"{field}.operator", f"unknown operator {rule.operator!r}", f"Use one of: {choices}."))
            return None
        try:
            operator = build_operator(rule.operator, rule.params)
        except PrivetError as exc:
            where = f"{field}.params" if rule.params else f"{field}.operator"
            problems.append((where, exc.message, exc.hint))
            return None
        auto = (t.DATE_TIME, t.AGE, t.ZIP_CODE)
        if isinstance(operator, Generalize) and operator.kind == "auto" and entity not in auto:
            problems.append(
                (
                    f"{field}.params.kind",
                    f"generalize cannot pick a kind for {entity or 'unlisted entities'}",
                    "Set params.kind to date, age or zip, or use another operator.",
                )
            )
        return operator

    # -- loading ---------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: object, *, source: str = "policy") -> Policy:
        """Validate ``data`` (parsed YAML); ``source`` names it in error messages."""
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise PolicyError(f"{source} is not a YAML mapping", f"Start from the default policy. {_DOCS}.")
        try:
            return cls.model_validate(data, context={"source": source})
        except ValidationError as exc:
            raise _policy_error(exc, source) from None

    @classmethod
    def from_yaml(cls, text: str, *, source: str = "policy") -> Policy:
        """Parse and validate a policy written in YAML."""
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or "it does not parse"
            raise PolicyError(f"{source} is not valid YAML{where}: {problem}", "Fix the YAML syntax.") from None
        return cls.from_dict(data, source=source)

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        """Read and validate the policy file ``path``."""
        path = Path(path)
        if not path.exists() or path.is_dir():  # a pipe (<(...)) is fine, a directory is not
            raise NotFoundError(f"policy {path} does not exist", "Pass the path of a policy YAML file.")
        with path.open("rb") as handle:
            data = handle.read(_MAX_POLICY_BYTES + 1)
        if len(data) > _MAX_POLICY_BYTES:
            raise PolicyError(f"policy {path} is larger than 1 MiB", "A policy is a short YAML file.")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise PolicyError(f"policy {path} is not UTF-8 text", "Save it as UTF-8.") from None
        return cls.from_yaml(text, source=str(path))

    @classmethod
    def default(cls) -> Policy:
        """The policy shipped with privet (``privet/desensitize/policies/default.yaml``)."""
        text = resources.files("privet.desensitize").joinpath("policies/default.yaml").read_text(encoding="utf-8")
        return cls.from_yaml(text, source="default policy")

    # -- use -------------------------------------------------------------------------------------------
    def rule_for(self, entity: str) -> Rule | None:
        """The rule for ``entity``: its own, else ``default``, else None (left untouched)."""
        return self.entities.get(entity, self.default_rule)

    def operator_for(self, entity: str) -> Operator | None:
        """The built operator for ``entity`` (None for the vault operator, or when the entity is untouched)."""
        if entity in self.entities:
            return self._operators.get(entity)
        return self._default_operator

    def operator_names(self) -> frozenset[str]:
        """Every operator name the policy uses."""
        rules = [*self.entities.values(), *([self.default_rule] if self.default_rule is not None else [])]
        return frozenset(r.operator for r in rules)

    @property
    def needs_keyring(self) -> bool:
        """Whether a rule uses a keyed operator (or the vault, whose key is in the keyring too)."""
        return bool(self.operator_names() & (KEYED_OPERATORS | {VAULT_OPERATOR}))

    @property
    def needs_vault(self) -> bool:
        return VAULT_OPERATOR in self.operator_names()

    @property
    def target_entities(self) -> frozenset[str] | None:
        """The entities to look for: the listed ones, or None (all) when ``default`` is set."""
        return None if self.default_rule is not None else frozenset(self.entities)

    def thresholds(self) -> dict[str, float]:
        """Per-entity minimum scores for the analyzer (``"*"``: the policy threshold)."""
        out = {"*": self.threshold}
        out.update({e: r.threshold for e, r in self.entities.items() if r.threshold is not None})
        return out

    def deny_terms(self) -> list[DenyTerm]:
        return [DenyTerm(d.term, d.entity) for d in self.deny]

    def __repr__(self) -> str:  # allow/deny lists may hold names: keep them out of reprs and logs
        return f"Policy(name={self.name!r}, entities={len(self.entities)}, default={self.default_rule is not None})"

    __str__ = __repr__


# -- error formatting ------------------------------------------------------------------------------------
def _entity_hint(entity: str) -> str:
    known = sorted(known_entities())
    # presidio's names (EMAIL_ADDRESS, PHONE_NUMBER, ...) are common in policies written for other tools.
    other_names = {k: v for k, v in GOLD_TYPES.items() if k not in known_entities()}
    close = difflib.get_close_matches(entity.upper(), [*known, *other_names], n=1, cutoff=0.7)
    guess = f"Did you mean {other_names.get(close[0], close[0])}? " if close else ""
    return f"{guess}Known entity types: {', '.join(known)}."


def _strip_optional(node: Any) -> Any:
    if get_origin(node) in (Union, pytypes.UnionType):
        args = [a for a in get_args(node) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return node


def _fields(model: type[BaseModel]) -> dict[str, Any]:
    """A model's fields by the name they have in YAML (the alias where there is one)."""
    return {f.alias or name: f for name, f in model.model_fields.items()}


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model class whose field sits at ``loc`` (for naming the allowed fields), if any."""
    node: Any = Policy
    for part in loc:
        node = _strip_optional(node)
        if isinstance(node, type) and issubclass(node, BaseModel):
            field = _fields(node).get(part) if isinstance(part, str) else None
            if field is None:
                return None
            node = field.annotation
        elif get_origin(node) is dict:
            node = get_args(node)[1]
        elif get_origin(node) is list:
            node = get_args(node)[0]
        else:
            return None
    node = _strip_optional(node)
    return node if isinstance(node, type) and issubclass(node, BaseModel) else None


def _policy_error(exc: ValidationError, source: str) -> PolicyError:
    errors = exc.errors(include_url=False, include_input=False)
    # An unknown field explains the errors it causes ("opertor" also makes "operator" missing): report it first.
    errors.sort(key=lambda e: e["type"] != "extra_forbidden")
    first = errors[0]
    loc = tuple(first["loc"])
    field = ".".join(str(p) for p in loc) or "(top level)"
    kind = first["type"]
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1])
        names = ", ".join(_fields(model)) if model is not None else ""
        message = "unknown field"
        hint = f"Remove it or fix its spelling; the fields here are: {names}." if names else "Remove it."
    elif kind == "model_type" and _model_at(loc) is Rule:
        message = "is not a rule"
        hint = "Write an operator name (pseudonym) or a mapping {operator: ..., params: {...}, threshold: ...}."
    elif kind == "missing":
        message = "is required"
        hint = f"Add it. {_DOCS}."
    else:
        message = first["msg"][:1].lower() + first["msg"][1:]
        hint = f"Fix the value. {_DOCS}."
    return PolicyError(f"{source}: {field}: {message}{_more(len(errors) - 1)}", hint)


def _more(count: int) -> str:
    if count <= 0:
        return ""
    return f" (and {count} more problem{'s' if count > 1 else ''})"
