"""Master keys: env values, passphrases, KMS plug-ins, and keeping the key out of messages and reprs."""

from __future__ import annotations

import base64
import sys
import uuid
from pathlib import Path

import pytest

from privet.crypto import (
    KmsMasterKey,
    LocalMasterKey,
    from_env_value,
    from_passphrase,
    load_kms_plugin,
    new_env_value,
    new_kdf_params,
)
from privet.errors import ConfigError, MasterKeyError

# 32 bytes whose base64 uses both '+' and '/' (so the URL-safe form differs from the standard one).
KEY = bytes([0xFB, 0xFF, 0xBF]) * 10 + b"\x01\x02"


def _text(exc: Exception) -> str:
    parts = [str(exc), repr(exc)]
    if isinstance(exc, MasterKeyError | ConfigError):
        parts += [exc.message, exc.hint, exc.one_line()]
    return " ".join(parts)


# -- env values ------------------------------------------------------------------------------------


def test_env_value_standard_and_url_safe() -> None:
    standard = base64.b64encode(KEY).decode()
    url_safe = base64.urlsafe_b64encode(KEY).decode()
    assert "+" in standard
    assert "/" in standard
    assert standard != url_safe
    for value in (standard, url_safe, f"  {standard}\n"):
        master = from_env_value(value)
        assert master.key == KEY
        assert master.source == "env"


def test_new_env_value_is_fresh_and_valid() -> None:
    first, second = new_env_value(), new_env_value()
    assert first != second
    assert len(from_env_value(first).key) == 32


@pytest.mark.parametrize("size", [0, 1, 16, 31, 33, 64])
def test_env_value_wrong_length(size: int) -> None:
    value = base64.b64encode(bytes(range(size))).decode()
    with pytest.raises(MasterKeyError, match=f"decodes to {size} bytes, not 32") as info:
        from_env_value(value)
    if value:
        assert value not in _text(info.value)


@pytest.mark.parametrize(
    "value",
    [
        "this is not base64 at all!!",
        base64.b64encode(KEY).decode()[:-2],  # padding missing
        base64.b64encode(KEY).decode().replace("A", "*", 1) + "x",
        "s3cr3t~value~" * 4,
    ],
)
def test_env_value_bad_base64(value: str) -> None:
    with pytest.raises(MasterKeyError, match="not valid base64") as info:
        from_env_value(value)
    assert value.strip() not in _text(info.value)
    assert "s3cr3t" not in _text(info.value)
    assert info.value.__cause__ is None


# -- passphrases -----------------------------------------------------------------------------------


def test_passphrase_is_deterministic_per_salt(fast_kdf: dict) -> None:
    first = from_passphrase("correct horse", fast_kdf)
    assert from_passphrase("correct horse", dict(fast_kdf)).key == first.key
    assert from_passphrase("correct horse!", fast_kdf).key != first.key
    other_salt = new_kdf_params(n=fast_kdf["n"])
    assert other_salt["salt"] != fast_kdf["salt"]
    assert from_passphrase("correct horse", other_salt).key != first.key
    assert first.source == "passphrase"


def test_new_kdf_params() -> None:
    params = new_kdf_params()
    assert (params["alg"], params["n"], params["r"], params["p"]) == ("scrypt", 2**17, 8, 1)
    assert len(base64.b64decode(params["salt"])) == 16
    assert new_kdf_params(n=2**14)["n"] == 2**14


def test_empty_passphrase(fast_kdf: dict) -> None:
    with pytest.raises(MasterKeyError, match="empty"):
        from_passphrase("", fast_kdf)


@pytest.mark.parametrize(
    "damage",
    [
        {"salt": None},
        {"salt": "abc"},  # bad padding
        {"n": 1000},  # not a power of two
        {"n": "many"},
        {"r": 0},
        {"p": 0},
        {"n": None},
    ],
)
def test_damaged_kdf_params(fast_kdf: dict, damage: dict) -> None:
    kdf = {**fast_kdf, **damage}
    with pytest.raises(MasterKeyError, match="scrypt parameters are damaged"):
        from_passphrase("correct horse", kdf)


@pytest.mark.parametrize("missing", ["salt", "n", "r", "p"])
def test_missing_kdf_params(fast_kdf: dict, missing: str) -> None:
    kdf = {k: v for k, v in fast_kdf.items() if k != missing}
    with pytest.raises(MasterKeyError, match="damaged"):
        from_passphrase("correct horse", kdf)


@pytest.mark.parametrize("kdf", [None, [], "scrypt"])
def test_kdf_params_not_a_mapping(kdf: object) -> None:
    with pytest.raises(MasterKeyError, match="damaged"):
        from_passphrase("correct horse", kdf)  # type: ignore[arg-type]


def test_kdf_cost_too_large_is_damage(fast_kdf: dict) -> None:
    with pytest.raises(MasterKeyError):
        from_passphrase("correct horse", {**fast_kdf, "n": 2**40})


# -- LocalMasterKey --------------------------------------------------------------------------------


def test_local_master_key_repr_hides_key() -> None:
    master = LocalMasterKey(KEY, "env")
    for text in (repr(master), str(master), f"{master!r}"):
        assert KEY.hex() not in text
        assert repr(KEY) not in text
        assert base64.b64encode(KEY).decode() not in text
        assert "<secret>" in text


def test_local_master_key_length() -> None:
    with pytest.raises(MasterKeyError, match="32 bytes"):
        LocalMasterKey(b"short", "env")


def test_local_wrap_is_bound_to_context() -> None:
    master = LocalMasterKey(KEY, "env")
    blob = master.wrap(b"data key", b"ctx-a")
    assert master.wrap(b"data key", b"ctx-a") != blob  # random nonce
    assert master.unwrap(blob, b"ctx-a") == b"data key"
    with pytest.raises(MasterKeyError):
        master.unwrap(blob, b"ctx-b")
    with pytest.raises(MasterKeyError):
        LocalMasterKey(bytes(32), "env").unwrap(blob, b"ctx-a")
    with pytest.raises(MasterKeyError):
        master.unwrap(b"", b"ctx-a")


# -- KMS plug-ins ----------------------------------------------------------------------------------


PLUGIN_SOURCE = """
class Plugin:
    def wrap(self, plaintext, context):
        return context + b"|" + plaintext[::-1]

    def unwrap(self, blob, context):
        prefix = context + b"|"
        if not blob.startswith(prefix):
            raise ValueError("context mismatch")
        return blob[len(prefix):][::-1]


instance = Plugin()


class NoUnwrap:
    def wrap(self, plaintext, context):
        return plaintext


not_callable = 42
"""


@pytest.fixture
def plugin_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"privet_test_kms_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(PLUGIN_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


@pytest.mark.parametrize("attribute", ["Plugin", "instance"])
def test_load_kms_plugin(plugin_module: str, attribute: str) -> None:
    master = load_kms_plugin(f"{plugin_module}:{attribute}")
    assert isinstance(master, KmsMasterKey)
    assert master.source == "kms"
    blob = master.wrap(b"key", b"ctx")
    assert master.unwrap(blob, b"ctx") == b"key"
    with pytest.raises(MasterKeyError, match=r"refused to unwrap \(ValueError\)") as info:
        master.unwrap(blob, b"other")
    assert "context mismatch" not in _text(info.value)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("", "not of the form"),
        ("no_colon_here", "not of the form"),
        (":Plugin", "not of the form"),
        ("module_only:", "not of the form"),
        ("privet_no_such_module_xyz:Plugin", "cannot be imported"),
        ("json:NoSuchAttribute", "cannot be imported"),
        ("json:dumps", "no wrap"),
    ],
)
def test_load_kms_plugin_bad_spec(spec: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_kms_plugin(spec)


@pytest.mark.parametrize(("attribute", "match"), [("NoUnwrap", "no wrap"), ("not_callable", "no wrap")])
def test_load_kms_plugin_without_methods(plugin_module: str, attribute: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_kms_plugin(f"{plugin_module}:{attribute}")
