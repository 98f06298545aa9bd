"""Stage 3: desensitize generated English and Chinese patient notes; restore one through the vault."""

from __future__ import annotations

import random
from dataclasses import dataclass

from faker import Faker

from privet.demo.stage import DemoContext, Stage, StageReport
from privet.desensitize.policy import Policy
from privet.desensitize.text import Desensitizer
from privet.desensitize.validators import cn_resident_id_valid, luhn_valid
from privet.desensitize.vault import RestoreGrant, Vault
from privet.errors import KeyNotFoundError, PrivetError

NOTES = 24  # per language
TENANT = "demo-clinic"
# A reversible policy for the hand-over to a partner that may later need to reach the patient.
VAULT_POLICY = """
name: partner-handover
entities:
  PERSON: vault
  CN_MOBILE: vault
  PHONE: vault
  EMAIL: vault
default: vault
vault: {tenant: demo-clinic, ttl_days: 30}
"""


@dataclass(frozen=True)
class Note:
    text: str
    planted: tuple[str, ...]  # the personal values written into the note, to check none survives
    patient: str


def _english_notes(fake: Faker, rng: random.Random, count: int) -> list[Note]:
    notes = []
    patients = [fake.name() for _ in range(count // 2)]  # each patient seen twice
    for i in range(count):
        name = patients[i % len(patients)]
        phone, email, ssn = fake.phone_number(), fake.email(), fake.ssn()
        card = fake.credit_card_number(card_type=rng.choice(["visa16", "mastercard", "amex"]))
        text = (
            f"Patient {name} was seen on {fake.date_between('-2y', 'today').isoformat()} for chest pain. "
            f"Call back at {phone} or e-mail {email}. SSN {ssn}; co-pay charged to card {card}."
        )
        notes.append(Note(text, (name, phone, email, ssn, card), name))
    return notes


def _chinese_notes(fake: Faker, count: int) -> list[Note]:
    notes = []
    patients = [fake.name() for _ in range(count // 2)]
    for i in range(count):
        name = patients[i % len(patients)]
        resident_id, mobile = fake.ssn(), fake.phone_number()
        text = f"患者{name}，身份证号{resident_id}，手机{mobile}，因发热于{fake.date_this_year().isoformat()}就诊。"
        notes.append(Note(text, (name, resident_id, mobile), name))
    return notes


def _leaks(notes: list[Note], outputs: list[str]) -> int:
    return sum(value in out for note, out in zip(notes, outputs, strict=True) for value in note.planted)


def _show(ctx: DemoContext, title: str, before: str, after: str) -> None:
    """Print a before/after pair (generated data, never a real person's) above the progress display."""
    if ctx.progress is not None:
        console = ctx.progress.console
        console.print(f"  [bold]{title}[/bold]\n    before: {before}\n    after:  {after}", highlight=False)


def _ensure_key(ctx: DemoContext, name: str) -> None:
    keyring = ctx.workspace.keyring
    try:
        keyring.data_key(name)
    except KeyNotFoundError:
        keyring.create(name, "aead")


def run(ctx: DemoContext, report: StageReport) -> None:
    rng = random.Random(ctx.seed)  # noqa: S311 - picks card networks for generated demo data, not a secret
    english = _english_notes(Faker("en_US", seed=ctx.seed), rng, NOTES)
    chinese = _chinese_notes(Faker("zh_CN", seed=ctx.seed), NOTES)
    policy = Policy.default()
    _ensure_key(ctx, policy.key)
    desensitizer = Desensitizer(policy, keyring=ctx.workspace.keyring)

    with ctx.task(f"desensitizing {2 * NOTES} patient notes (English and Chinese)", total=2 * NOTES) as advance:
        results = []
        for note in (*english, *chinese):
            results.append(desensitizer.desensitize(note.text))
            advance(1)
    outputs = [r.text for r in results]
    leaks = _leaks([*english, *chinese], outputs)
    planted = sum(len(n.planted) for n in (*english, *chinese))
    report.check("no planted value survives", leaks == 0, f"{planted - leaks}/{planted} personal values replaced")
    _show(ctx, "English note", english[0].text, outputs[0])
    _show(ctx, "Chinese note", chinese[0].text, outputs[NOTES])

    # The same patient gets the same surrogate in every note: notes still link up.
    surrogate = {}
    consistent = True
    for note, result in zip((*english, *chinese), results, strict=True):
        person = next((r for r in result.replacements if r.entity == "PERSON"), None)
        if person is None:
            consistent = False
            continue
        value = result.text[person.new_start : person.new_end]
        consistent &= surrogate.setdefault(note.patient, value) == value
    report.check("consistent pseudonyms across notes", consistent, f"{len(surrogate)} patients, one surrogate each")

    # Surrogates stay valid: resident IDs keep a correct check digit, cards pass Luhn.
    ids = [r.text[x.new_start : x.new_end] for r in results for x in r.replacements if x.entity == "CN_RESIDENT_ID"]
    cards = [r.text[x.new_start : x.new_end] for r in results for x in r.replacements if x.entity == "CREDIT_CARD"]
    valid = all(cn_resident_id_valid(v) for v in ids) and all(luhn_valid(v.replace(" ", "")) for v in cards)
    report.check(
        "surrogates keep their format and check digits",
        valid and bool(ids) and bool(cards),
        f"{len(ids)} resident IDs, {len(cards)} cards checked",
    )

    # Reversible hand-over: tokens in the vault, restored exactly under an explicit grant.
    vault = Vault(ctx.workspace.store, ctx.workspace.keyring, TENANT)
    handover = Desensitizer(Policy.from_yaml(VAULT_POLICY), keyring=ctx.workspace.keyring, vault=vault)
    with ctx.task("tokenizing a note into the vault and restoring it"):
        note = chinese[1]
        tokenized = handover.desensitize(note.text).text
        restored = vault.restore(tokenized, grant=RestoreGrant("demo-operator", "call the patient back", True))
    _show(ctx, "vault hand-over", note.text, tokenized)
    tokens = tokenized.count("<<")
    report.check("vault restores exactly", restored == note.text, f"{tokens} tokens restored to the exact original")
    try:
        vault.restore(tokenized, grant=RestoreGrant("demo-operator", "curiosity", False))
    except PrivetError:
        report.check("restore without a grant refused", True, "refused and recorded in the vault access log")
    else:
        report.check("restore without a grant refused", False, "was restored")
    report.figures.update(
        notes_desensitized=len(results),
        personal_values_planted=planted,
        personal_values_leaked=leaks,
    )


STAGE = Stage("desensitize", "desensitize patient notes, restore through the vault", run)
