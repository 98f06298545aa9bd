"""Policies: the shipped default, the documented format, and one clear line for every kind of mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from privet.desensitize import types as t
from privet.desensitize.operators import Generalize, Mask, Pseudonym, Replace
from privet.desensitize.policy import KEYED_OPERATORS, Policy, PolicyError, known_entities
from privet.errors import NotFoundError, UsageError

DOCUMENTED = """
name: clinic
language: auto
threshold: 0.4
entities:
  PERSON: {operator: pseudonym}
  EMAIL: mask
  DATE_TIME: {operator: generalize, params: {granularity: year}, threshold: 0.5}
default: {operator: replace}
allow: ["Acme Hospital"]
deny: [{term: "Project Falcon", entity: ORGANIZATION}]
key: desensitize
vault: {tenant: default, ttl_days: 30}
"""


def test_default_policy_loads_and_covers_every_entity() -> None:
    policy = Policy.default()
    assert policy.name == "default" and policy.language == "auto" and policy.threshold == 0.4
    assert set(policy.entities) == known_entities()  # every type privet reports has a deliberate rule
    for entity in (t.PERSON, t.LOCATION, t.ORGANIZATION, t.EMAIL, t.PHONE, t.CREDIT_CARD, t.CN_RESIDENT_ID):
        assert isinstance(policy.operator_for(entity), Pseudonym), entity
    date_rule = policy.operator_for(t.DATE_TIME)
    assert isinstance(date_rule, Generalize) and date_rule.granularity == "year"
    assert isinstance(policy.operator_for("SOME_PLUGIN_TYPE"), Replace)  # unlisted: replaced by its type
    assert policy.target_entities is None and policy.needs_keyring and not policy.needs_vault
    assert policy.key == "desensitize" and policy.thresholds() == {"*": 0.4}


def test_documented_example_loads(tmp_path: Path) -> None:
    path = tmp_path / "clinic.yaml"
    path.write_text(DOCUMENTED, encoding="utf-8")
    policy = Policy.load(path)
    assert policy.name == "clinic"
    assert isinstance(policy.operator_for(t.EMAIL), Mask)  # shorthand: an operator name alone
    assert policy.thresholds() == {"*": 0.4, t.DATE_TIME: 0.5}
    assert [(d.term, d.entity) for d in policy.deny_terms()] == [("Project Falcon", t.ORGANIZATION)]
    assert policy.vault.tenant == "default" and policy.vault.ttl_days == 30
    assert "Acme" not in repr(policy) and "Falcon" not in str(policy)  # lists of names stay out of reprs


def test_without_default_only_listed_entities_are_targets() -> None:
    policy = Policy.from_yaml("entities: {EMAIL: redact, PERSON: vault}")
    assert policy.target_entities == {t.EMAIL, t.PERSON}
    assert policy.operator_for(t.PHONE) is None and policy.rule_for(t.PHONE) is None
    assert policy.needs_vault and policy.needs_keyring
    assert not Policy.from_yaml("entities: {EMAIL: mask}").needs_keyring
    assert Policy.from_yaml("").entities == {}  # an empty file is a valid, empty policy
    assert {"pseudonym", "hash"} <= KEYED_OPERATORS


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("entities: {PERSON: {operator: shred}}", "entities.PERSON.operator: unknown operator 'shred'"),
        ("colour: red", "colour: unknown field"),
        ("entities: {PERSON: {operator: mask, colour: red}}", "entities.PERSON.colour: unknown field"),
        ("entities: {PERSON: {opertor: mask}}", "entities.PERSON.opertor: unknown field (and 1 more problem)"),
        ("vault: {ttl: 3}", "vault.ttl: unknown field"),
        ("entities: {EMAIL_ADDRESS: mask}", "entities.EMAIL_ADDRESS: unknown entity type"),
        ("entities: {PERSON: {operator: mask, params: {keep: 2}}}", "operator 'mask' has no parameter 'keep'"),
        ("entities: {DATE_TIME: {operator: generalize, params: {granularity: day}}}", "parameter 'granularity'"),
        ("entities: {PERSON: generalize}", "entities.PERSON.params.kind: generalize cannot pick a kind"),
        ("entities: {PERSON: {operator: vault, params: {ttl: 1}}}", "the vault operator takes no parameters"),
        ("default: {operator: replace, threshold: 0.9}", "default.threshold: is not used here"),
        ("threshold: 1.5", "threshold: input should be less than or equal to 1"),
        ("language: fr", "language: input should be 'auto', 'en' or 'zh'"),
        ("entities: {PERSON: 3}", "entities.PERSON: is not a rule"),
        ("deny: [{term: Falcon}]", "deny.0.entity: is required"),
        ("key: Not A Key", "key: is not a valid keyring key name"),
        ("vault: {tenant: Clinic One}", "vault.tenant: is not a valid tenant name"),
        ("- just\n- a list", "is not a YAML mapping"),
        ("entities: {PERSON: [pseudonym", "is not valid YAML at line 1"),
        ("entities:\n  PERSON: {operator: mask}\n   EMAIL: mask", "is not valid YAML at line 3"),
    ],
)
def test_each_mistake_is_one_line_naming_the_field(text: str, expected: str) -> None:
    with pytest.raises(PolicyError) as caught:
        Policy.from_yaml(text, source="p.yaml")
    error = caught.value
    assert isinstance(error, UsageError) and error.exit_code == 2
    line = error.one_line()
    assert line.startswith("error: p.yaml") and "\n" not in line
    assert expected in line, line
    assert error.hint and "Traceback" not in line


def test_hints_say_what_to_do() -> None:
    def line(text: str) -> str:
        with pytest.raises(PolicyError) as caught:
            Policy.from_yaml(text)
        return caught.value.one_line()

    assert "Did you mean EMAIL?" in line("entities: {EMAIL_ADDRESS: mask}")  # presidio's name for it
    assert "Did you mean PERSON?" in line("entities: {PERSN: mask}")
    assert "pseudonym" in line("entities: {PERSON: shred}") and "vault" in line("entities: {PERSON: shred}")
    assert "the fields here are: operator, params, threshold" in line("default: {operator: mask, x: 1}")
    assert "keep_first" in line("entities: {PERSON: {operator: mask, params: {keep: 2}}}")


def test_errors_never_echo_policy_values() -> None:
    text = 'allow: ["Alice Wong"]\ndeny: [{term: "Bob Stone 555-0100", entity: PERSONA}]\nthreshold: high'
    with pytest.raises(PolicyError) as caught:
        Policy.from_yaml(text)
    line = caught.value.one_line()
    assert "threshold" in line
    assert "Alice" not in line and "Bob" not in line and "high" not in line


def test_load_reports_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        Policy.load(tmp_path / "nope.yaml")
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(PolicyError, match="not UTF-8"):
        Policy.load(latin1)
