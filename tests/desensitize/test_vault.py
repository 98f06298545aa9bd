"""The pseudonym vault: exact round-trips, consistency, tenants, expiry, crypto-shredding, grants and audit.

Every test runs on SQLite and on PostgreSQL (``store`` is parametrised over both; PostgreSQL is skipped, with the
reason shown by ``-ra``, when it is not reachable).
"""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import event, inspect, select, text, update

import privet.desensitize.vault as vault_module
from privet.crypto import Keyring, LocalMasterKey
from privet.desensitize.vault import (
    TOKEN_PATTERN,
    RestoreDeniedError,
    RestoreGrant,
    UnknownTokenError,
    Vault,
    VaultOperator,
)
from privet.errors import IntegrityError, KeyDestroyedError, PrivetError, UsageError
from privet.store import HEAD_REVISION, KeyRecord, Store, VaultAccessRecord, VaultEntry
from privet.store.schema import utcnow

GRANT = RestoreGrant(principal="svc:gateway", purpose="answer a support ticket", allowed=True)

TRICKY = [
    "Alice Zhang",
    "$1",
    r"\g<0>",
    ".*",
    "\\",
    r"C:\Users\alice\new\t\1",
    "a$0b\\g<name>c(?P<x>)",
    "张伟",
    "北京市朝阳区建国路88号",
    "emoji 🧑‍⚕️ and ümlaut",
    "line one\nline two\r\n\ttab",
    "<<PERSON_0000ZZZZ>>",  # a value that looks like a token is inserted verbatim, not restored again
    ">>",
    "<<",
    " leading and trailing ",
    "x" * 2000,
    "lone surrogate \ud800 kept",
]


@pytest.fixture
def keyring(store: Store, master_key: LocalMasterKey) -> Keyring:
    """A keyring on the parametrised store (conftest's ``keyring`` is SQLite only)."""
    return Keyring.initialize(store, master_key)


@pytest.fixture
def vault(store: Store, keyring: Keyring) -> Vault:
    return Vault(store, keyring, "acme")


def _entries(store: Store) -> list[VaultEntry]:
    with store.transaction() as session:
        return list(session.scalars(select(VaultEntry).order_by(VaultEntry.id)))


def _access(store: Store) -> list[VaultAccessRecord]:
    with store.transaction() as session:
        return list(session.scalars(select(VaultAccessRecord).order_by(VaultAccessRecord.id)))


def _dump(store: Store) -> bytes:
    """Every column of every row of the vault tables and the keys table, as bytes."""
    parts: list[bytes] = []
    with store.engine.connect() as conn:
        for table in ("vault_entries", "vault_access", "keys"):
            for row in conn.execute(text(f"SELECT * FROM {table}")):  # noqa: S608 - fixed table names
                for value in row:
                    parts.append(bytes(value) if isinstance(value, bytes | memoryview) else str(value).encode())
    return b"\x00".join(parts)


def _later(monkeypatch: pytest.MonkeyPatch, delta: timedelta) -> None:
    """Make the vault's clock run ``delta`` ahead."""
    monkeypatch.setattr(vault_module, "utcnow", lambda: utcnow() + delta)


def _clean(exc: PrivetError, *secrets: str) -> None:
    line = " ".join([str(exc), exc.message, exc.hint, exc.one_line(), repr(exc)])
    for secret in secrets:
        assert secret not in line
    assert "\n" not in exc.one_line()


# -- schema ---------------------------------------------------------------------------------------------------


def test_migration_creates_vault_tables(store: Store) -> None:
    assert store.revision() == HEAD_REVISION == "0005"
    names = set(inspect(store.engine).get_table_names())
    assert {"vault_entries", "vault_access"} <= names
    uniques = {u["name"] for u in inspect(store.engine).get_unique_constraints("vault_entries")}
    assert {"uq_vault_entries_tenant_token", "uq_vault_entries_tenant_lookup"} <= uniques


# -- tokens ---------------------------------------------------------------------------------------------------


def test_token_format(vault: Vault) -> None:
    token = vault.tokenize("Alice Zhang", "PERSON")
    match = TOKEN_PATTERN.fullmatch(token)
    assert match is not None and match["entity"] == "PERSON"
    assert token.isascii() and token.startswith("<<PERSON_") and token.endswith(">>")
    assert len(match["id"]) == 8 and not set(match["id"]) & set("ILOU")
    underscore = vault.tokenize("110101199003074514", "CN_RESIDENT_ID")
    assert TOKEN_PATTERN.fullmatch(underscore)["entity"] == "CN_RESIDENT_ID"
    found = [m.group(0) for m in TOKEN_PATTERN.finditer(f"x{token}{underscore}y <<not a token>>")]
    assert found == [token, underscore]


def test_tricky_values_round_trip_exactly(vault: Vault) -> None:
    tokens = [vault.tokenize(value, "PERSON") for value in TRICKY]
    assert len(set(tokens)) == len(TRICKY)
    # adjacent tokens, repeated tokens, tokens at both ends, and text with regex syntax around them
    template = "".join(f"{t}{t}" if i % 3 == 0 else f"{t} $1 \\g<0> " for i, t in enumerate(tokens))
    expected = "".join(f"{v}{v}" if i % 3 == 0 else f"{v} $1 \\g<0> " for i, v in enumerate(TRICKY))
    result = vault.restore_detailed(template, grant=GRANT)
    assert result.text == expected
    assert result.restored == len(TOKEN_PATTERN.findall(template)) and result.unresolved == 0
    assert vault.restore(tokens[0] + tokens[1], grant=GRANT) == TRICKY[0] + TRICKY[1]
    assert vault.restore("no tokens here $1", grant=GRANT) == "no tokens here $1"


def test_same_value_same_token_across_instances(store: Store, keyring: Keyring, master_key: LocalMasterKey) -> None:
    first = Vault(store, keyring, "acme")
    token = first.tokenize("王芳", "PERSON")
    assert first.tokenize("王芳", "PERSON") == token
    again = Vault(store, Keyring.unlock(store, master_key), "acme")  # a new run: fresh objects, same database
    assert again.tokenize("王芳", "PERSON") == token
    assert again.tokenize("王芳", "LOCATION") != token  # the entity is part of the identity
    assert again.tokenize("王芳 ", "PERSON") != token
    assert len(_entries(store)) == 3


def test_values_are_never_stored_in_clear(store: Store, vault: Vault) -> None:
    secrets_ = ["Zelda Quartermaine-Oyelaran", "深圳市南山区科技园路1号", "zelda.q@example.org"]
    tokens = [vault.tokenize(value, "PERSON") for value in secrets_]
    vault.restore(" ".join(tokens), grant=GRANT)
    with pytest.raises(UnknownTokenError):
        vault.restore("<<PERSON_00000000>>", grant=GRANT, strict=True)
    dump = _dump(store)
    for value in secrets_:
        assert value.encode() not in dump
    for token in tokens:  # tokens are pseudonyms, not secrets, but the access log holds counts only
        assert token.encode() not in dump
    if store.dialect == "sqlite":  # nor anywhere in the database file or its write-ahead log
        database = Path(store.engine.url.database)
        raw = b"".join(p.read_bytes() for p in database.parent.glob(database.name + "*") if p.is_file())
        for value in secrets_:
            assert value.encode() not in raw


# -- tenants --------------------------------------------------------------------------------------------------


def test_tenant_isolation(store: Store, keyring: Keyring) -> None:
    acme, globex = Vault(store, keyring, "acme"), Vault(store, keyring, "globex")
    token = acme.tokenize("Alice Zhang", "PERSON")
    other = globex.tokenize("Alice Zhang", "PERSON")
    assert other != token
    assert {k.name for k in keyring.versions()} >= {"vault-acme", "vault-globex"}
    result = globex.restore_detailed(f"hi {token}", grant=GRANT)
    assert (result.text, result.restored, result.unresolved) == (f"hi {token}", 0, 1)
    with pytest.raises(UnknownTokenError) as info:
        globex.restore(f"hi {token}", grant=GRANT, strict=True)
    _clean(info.value, "Alice Zhang", token)
    assert globex.restore_values([token, other], grant=GRANT) == {other: "Alice Zhang"}
    # an entry copied into another tenant does not decrypt there: the associated data binds the tenant
    with store.transaction() as session:
        row = session.scalars(select(VaultEntry).where(VaultEntry.tenant == "globex")).one()
        row.ciphertext = session.scalars(select(VaultEntry.ciphertext).where(VaultEntry.tenant == "acme")).one()
    with pytest.raises(IntegrityError):
        globex.restore(other, grant=GRANT)


@pytest.mark.parametrize("tenant", ["", "Acme", "a b", "x" * 59, "-acme", "acme/eu"])
def test_invalid_tenant_is_refused(store: Store, keyring: Keyring, tenant: str) -> None:
    with pytest.raises(UsageError):
        Vault(store, keyring, tenant)


@pytest.mark.parametrize("entity", ["", "person", "PER SON", "_PERSON", "PERSON_", "A__B", "X" * 33])
def test_invalid_entity_and_value_are_refused(vault: Vault, entity: str) -> None:
    with pytest.raises(UsageError) as info:
        vault.tokenize("Alice Zhang", entity)
    _clean(info.value, "Alice Zhang")
    with pytest.raises(UsageError):
        vault.tokenize("", "PERSON")
    with pytest.raises(UsageError):
        vault.tokenize("Alice", "PERSON", ttl=timedelta(0))


def test_altered_entity_prefix_is_not_restored(vault: Vault) -> None:
    token = vault.tokenize("Alice Zhang", "PERSON")
    forged = token.replace("<<PERSON_", "<<EMAIL_")
    assert vault.restore(forged, grant=GRANT) == forged


# -- expiry ---------------------------------------------------------------------------------------------------


def test_expired_tokens_are_not_restored(store: Store, vault: Vault, monkeypatch: pytest.MonkeyPatch) -> None:
    short = vault.tokenize("short-lived value", "PERSON", ttl=timedelta(minutes=5))
    forever = vault.tokenize("permanent value", "PERSON")
    text_ = f"{short} and {forever}"
    assert vault.restore(text_, grant=GRANT) == "short-lived value and permanent value"

    _later(monkeypatch, timedelta(minutes=6))
    result = vault.restore_detailed(text_, grant=GRANT)
    assert (result.text, result.restored, result.unresolved) == (f"{short} and permanent value", 1, 1)
    with pytest.raises(UnknownTokenError):
        vault.restore(text_, grant=GRANT, strict=True)
    assert vault.restore_values([short, forever], grant=GRANT) == {forever: "permanent value"}

    renewed = vault.tokenize("short-lived value", "PERSON", ttl=timedelta(minutes=5))
    assert renewed != short  # an expired token is never revived
    assert vault.restore(renewed, grant=GRANT) == "short-lived value"
    assert len(_entries(store)) == 2  # the expired entry was replaced

    _later(monkeypatch, timedelta(minutes=12))
    assert vault.purge_expired() == 1
    assert [e.expires_at for e in _entries(store)] == [None]
    assert vault.purge_expired() == 0


def test_retokenizing_keeps_the_longest_lifetime(store: Store, vault: Vault, monkeypatch: pytest.MonkeyPatch) -> None:
    token = vault.tokenize("Alice Zhang", "PERSON", ttl=timedelta(minutes=5))
    assert vault.tokenize("Alice Zhang", "PERSON", ttl=timedelta(hours=1)) == token
    assert vault.tokenize("Alice Zhang", "PERSON", ttl=timedelta(minutes=1)) == token  # does not shorten
    _later(monkeypatch, timedelta(minutes=30))
    assert vault.restore(token, grant=GRANT) == "Alice Zhang"
    assert vault.tokenize("Alice Zhang", "PERSON") == token  # no ttl: never expires from now on
    _later(monkeypatch, timedelta(days=365))
    assert vault.restore(token, grant=GRANT) == "Alice Zhang"
    assert vault.purge_expired() == 0
    assert [e.expires_at for e in _entries(store)] == [None]


# -- keys: rotation and crypto-shredding ------------------------------------------------------------------------


def test_forget_tenant_crypto_shreds(store: Store, keyring: Keyring, master_key: LocalMasterKey) -> None:
    acme, globex = Vault(store, keyring, "acme"), Vault(store, keyring, "globex")
    token = acme.tokenize("Alice Zhang", "PERSON")
    kept = globex.tokenize("Bob Li", "PERSON")
    # another process that has the tenant key cached must not be able to restore either
    other = Vault(store, Keyring.unlock(store, master_key), "acme")
    assert other.restore(token, grant=GRANT) == "Alice Zhang"

    assert acme.forget_tenant() == 1
    for vault in (acme, other):
        with pytest.raises(KeyDestroyedError) as info:
            vault.restore(f"dear {token}", grant=GRANT)
        _clean(info.value, "Alice Zhang", token)
        with pytest.raises(KeyDestroyedError):
            vault.restore_values([token], grant=GRANT)
    with pytest.raises(KeyDestroyedError):
        acme.tokenize("Carol Wu", "PERSON")
    with store.transaction() as session:
        keys = session.scalars(select(KeyRecord).where(KeyRecord.name == "vault-acme")).all()
        assert keys and all(k.wrapped is None and k.destroyed_at is not None for k in keys)
    assert {e.tenant for e in _entries(store)} == {"globex"}
    assert globex.restore(kept, grant=GRANT) == "Bob Li"  # other tenants are untouched
    assert [a.outcome for a in _access(store) if a.tenant == "acme"][-4:] == ["failed"] * 4
    assert acme.forget_tenant() == 0  # idempotent
    assert Vault(store, keyring, "never-used").forget_tenant() == 0


def test_rotation_keeps_tokens_consistent_and_old_versions_can_be_shredded(vault: Vault, keyring: Keyring) -> None:
    old = vault.tokenize("Alice Zhang", "PERSON")
    keyring.rotate("vault-acme")
    assert vault.tokenize("Alice Zhang", "PERSON") == old  # found under the older live version
    new = vault.tokenize("Bob Li", "PERSON")
    assert vault.restore(f"{old},{new}", grant=GRANT) == "Alice Zhang,Bob Li"
    keyring.delete("vault-acme", 1)
    assert vault.restore(new, grant=GRANT) == "Bob Li"
    with pytest.raises(KeyDestroyedError):
        vault.restore(f"{old},{new}", grant=GRANT)


# -- grants and the access log ----------------------------------------------------------------------------------


def test_restore_needs_a_grant(store: Store, vault: Vault) -> None:
    token = vault.tokenize("Alice Zhang", "PERSON")
    denied = RestoreGrant(principal="user:mallory", purpose="curiosity", allowed=False)
    for call in (
        lambda: vault.restore(token, grant=denied),
        lambda: vault.restore_values([token], grant=denied),
        lambda: vault.restore(token, grant=True),  # a bare bool is not a grant
        lambda: vault.restore(token, grant=None),
    ):
        with pytest.raises(RestoreDeniedError) as info:
            call()
        _clean(info.value, "Alice Zhang", token)
    with pytest.raises(TypeError):
        vault.restore(token)  # the grant is a required keyword
    assert [(a.principal, a.outcome, a.tokens_restored) for a in _access(store)] == [
        ("user:mallory", "denied", 0),
        ("user:mallory", "denied", 0),
        ("-", "denied", 0),
        ("-", "denied", 0),
    ]
    for principal, purpose in [("", "x"), ("a b", "x"), ("svc", ""), ("svc", "x" * 257)]:
        with pytest.raises(UsageError):
            RestoreGrant(principal=principal, purpose=purpose, allowed=True)


def test_every_restore_is_recorded_without_values(store: Store, vault: Vault) -> None:
    a, b = vault.tokenize("Alice Zhang", "PERSON"), vault.tokenize("alice@example.org", "EMAIL")
    vault.restore(f"{a} wrote from {b}, cc {a} and <<PERSON_00000000>>", grant=GRANT)
    vault.restore_values([a, b], grant=RestoreGrant("svc:batch", "monthly  export", allowed=True))
    with pytest.raises(UnknownTokenError):
        vault.restore("<<PERSON_00000000>>", grant=GRANT, strict=True)
    rows = _access(store)
    assert [
        (r.tenant, r.principal, r.purpose, r.operation, r.outcome, r.tokens_found, r.tokens_restored) for r in rows
    ] == [
        ("acme", "svc:gateway", "answer a support ticket", "restore", "restored", 4, 3),
        ("acme", "svc:batch", "monthly export", "restore_values", "restored", 2, 2),
        ("acme", "svc:gateway", "answer a support ticket", "restore", "refused", 1, 0),
    ]
    assert all(r.created_at is not None for r in rows)
    dump = _dump(store)
    for secret in (b"Alice Zhang", b"alice@example.org", a.encode(), b.encode()):
        assert secret not in dump


def test_restore_fetches_all_tokens_in_one_query(store: Store, vault: Vault) -> None:
    values = [f"person number {i}" for i in range(60)]
    tokens = [vault.tokenize(v, "PERSON") for v in values]
    statements: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if "vault_entries" in statement:
            statements.append(statement)

    event.listen(store.engine, "before_cursor_execute", count)
    try:
        assert vault.restore(" | ".join(tokens), grant=GRANT) == " | ".join(values)
        assert len(statements) == 1
        statements.clear()
        assert vault.restore_values(tokens, grant=GRANT) == dict(zip(tokens, values, strict=True))
        assert len(statements) == 1
    finally:
        event.remove(store.engine, "before_cursor_execute", count)
    with pytest.raises(UsageError):
        vault.restore_values(["not a token"], grant=GRANT)


def test_tampered_entry_fails_closed(store: Store, vault: Vault) -> None:
    a, b = vault.tokenize("Alice Zhang", "PERSON"), vault.tokenize("Bob Li", "PERSON")
    with store.transaction() as session:  # swap the two ciphertexts: each decrypts only in its own row
        rows = session.scalars(select(VaultEntry).order_by(VaultEntry.id)).all()
        first, second = rows[0].ciphertext, rows[1].ciphertext
        session.execute(update(VaultEntry).where(VaultEntry.id == rows[0].id).values(ciphertext=second))
        session.execute(update(VaultEntry).where(VaultEntry.id == rows[1].id).values(ciphertext=first))
    with pytest.raises(IntegrityError) as info:
        vault.restore(f"{a} {b}", grant=GRANT)
    _clean(info.value, "Alice Zhang", "Bob Li", a, b)
    assert _access(store)[-1].outcome == "failed"


# -- concurrency ----------------------------------------------------------------------------------------------


def _run_threads(count: int, work: object) -> list[object]:
    results: list[object] = [None] * count
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = work(i)
        except BaseException as exc:  # collected and re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    return results


def test_concurrent_tokenize_of_one_value_yields_one_token(store: Store, keyring: Keyring) -> None:
    # the tenant key does not exist yet either: its creation races too
    vaults = [Vault(store, keyring, "acme") for _ in range(8)]
    tokens = _run_threads(8, lambda i: vaults[i].tokenize("Alice Zhang", "PERSON"))
    assert len(set(tokens)) == 1
    assert len(_entries(store)) == 1
    assert [k.version for k in keyring.versions() if k.name == "vault-acme"] == [1]
    assert vaults[0].restore(tokens[0], grant=GRANT) == "Alice Zhang"


def test_concurrent_tokenize_of_many_values(store: Store, vault: Vault) -> None:
    values = [f"value {i % 5}" for i in range(40)]
    tokens = _run_threads(8, lambda i: [vault.tokenize(v, "PERSON") for v in values[i::8]])
    by_value: dict[str, set[str]] = {}
    for i, batch in enumerate(tokens):
        for value, token in zip(values[i::8], batch, strict=True):
            by_value.setdefault(value, set()).add(token)
    assert all(len(ts) == 1 for ts in by_value.values()) and len(by_value) == 5
    assert len(_entries(store)) == 5


def test_token_id_collision_is_retried(store: Store, vault: Vault, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = iter(["AAAAAAAA", "AAAAAAAA", "AAAAAAAA", "BBBBBBBB"])
    monkeypatch.setattr(vault_module, "_new_token_id", lambda: next(ids))
    first = vault.tokenize("Alice Zhang", "PERSON")
    second = vault.tokenize("Bob Li", "EMAIL")  # AAAAAAAA is taken in this tenant (whatever the entity)
    assert (first, second) == ("<<PERSON_AAAAAAAA>>", "<<EMAIL_BBBBBBBB>>")
    assert vault.restore(first + second, grant=GRANT) == "Alice ZhangBob Li"


# -- operator -------------------------------------------------------------------------------------------------


def test_vault_operator(vault: Vault) -> None:
    operator = VaultOperator(vault, ttl=timedelta(hours=1))
    assert operator.name == "vault"
    token = operator.apply("Alice Zhang", "PERSON", None)
    assert token == vault.tokenize("Alice Zhang", "PERSON", ttl=timedelta(hours=1))
    assert vault.restore(token, grant=GRANT) == "Alice Zhang"
    assert "Alice" not in repr(operator) and "Alice" not in repr(vault)
