"""Settings: defaults, privet.toml, PRIVET_* environment variables, and the errors for bad ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from privet.config import Settings, load_settings
from privet.errors import ConfigError


@pytest.fixture(autouse=True)
def in_tmp_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run each test in an empty directory, so no privet.toml of the checkout is found."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_defaults(tmp_path: Path) -> None:
    settings = load_settings(env={})
    assert settings == Settings()
    assert settings.home == Path(".privet")
    assert settings.database_url is None
    assert settings.master_source == "passphrase"
    assert settings.kms_plugin is None
    assert settings.log_level == "WARNING"
    assert settings.resolved_database_url == f"sqlite:///{(tmp_path / '.privet' / 'privet.db').resolve()}"
    assert settings.registry_dir == Path(".privet") / "registry"


def test_load_settings_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRIVET_LOG_LEVEL", "debug")
    assert load_settings().log_level == "DEBUG"


def test_toml_top_level(tmp_path: Path) -> None:
    (tmp_path / "privet.toml").write_text('database_url = "sqlite:///elsewhere.db"\nlog_level = "info"\n')
    settings = load_settings(env={})
    assert settings.database_url == "sqlite:///elsewhere.db"
    assert settings.resolved_database_url == "sqlite:///elsewhere.db"
    assert settings.log_level == "INFO"  # normalised to upper case


def test_toml_privet_table(tmp_path: Path) -> None:
    (tmp_path / "privet.toml").write_text('[privet]\nhome = "state"\nmaster_source = "env"\n')
    settings = load_settings(env={})
    assert settings.home == Path("state")
    assert settings.master_source == "env"
    assert settings.resolved_database_url == f"sqlite:///{(tmp_path / 'state' / 'privet.db').resolve()}"


def test_toml_in_privet_home(tmp_path: Path) -> None:
    home = tmp_path / "somehome"
    home.mkdir()
    (home / "privet.toml").write_text('[privet]\nlog_level = "error"\n')
    assert load_settings(env={"PRIVET_HOME": str(home)}).log_level == "ERROR"
    # ./privet.toml comes before $PRIVET_HOME/privet.toml
    (tmp_path / "privet.toml").write_text('[privet]\nlog_level = "debug"\n')
    assert load_settings(env={"PRIVET_HOME": str(home)}).log_level == "DEBUG"


def test_privet_config_comes_first(tmp_path: Path) -> None:
    (tmp_path / "privet.toml").write_text('[privet]\nlog_level = "debug"\n')
    explicit = tmp_path / "conf" / "custom.toml"
    explicit.parent.mkdir()
    explicit.write_text('[privet]\nlog_level = "error"\n')
    assert load_settings(env={"PRIVET_CONFIG": str(explicit)}).log_level == "ERROR"


def test_env_overrides_toml(tmp_path: Path) -> None:
    (tmp_path / "privet.toml").write_text(
        '[privet]\ndatabase_url = "sqlite:///from-toml.db"\nlog_level = "debug"\nmaster_source = "env"\n'
    )
    settings = load_settings(
        env={
            "PRIVET_DATABASE_URL": "postgresql+psycopg://db/privet",
            "PRIVET_MASTER_SOURCE": "passphrase",
            "PRIVET_HOME": str(tmp_path / "h"),
        }
    )
    assert settings.database_url == "postgresql+psycopg://db/privet"
    assert settings.master_source == "passphrase"
    assert settings.log_level == "DEBUG"  # not overridden: kept from the file
    assert settings.home == tmp_path / "h"


def test_empty_env_values_are_ignored(tmp_path: Path) -> None:
    (tmp_path / "privet.toml").write_text('[privet]\nlog_level = "error"\n')
    assert load_settings(env={"PRIVET_LOG_LEVEL": "", "PRIVET_DATABASE_URL": ""}).log_level == "ERROR"


def test_home_expands_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert load_settings(env={"PRIVET_HOME": "~/data"}).home == tmp_path / "user" / "data"


def test_kms_settings() -> None:
    settings = load_settings(env={"PRIVET_MASTER_SOURCE": "kms", "PRIVET_KMS_PLUGIN": "acme_kms:Plugin"})
    assert (settings.master_source, settings.kms_plugin) == ("kms", "acme_kms:Plugin")


# -- errors ----------------------------------------------------------------------------------------


def test_privet_config_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"PRIVET_CONFIG points to .*not a file"):
        load_settings(env={"PRIVET_CONFIG": str(tmp_path / "missing.toml")})
    with pytest.raises(ConfigError, match="not a file"):
        load_settings(env={"PRIVET_CONFIG": str(tmp_path)})  # a directory


@pytest.mark.parametrize(
    ("toml", "match"),
    [
        ('[privet]\npassphrase = "hunter2"\n', "unknown setting 'passphrase'"),  # secrets never come from TOML
        ('colour = "blue"\n', "unknown setting 'colour'"),
        ("[privet]\nlog_level = 3\n", "must be a non-empty string"),
        ('[privet]\nhome = ""\n', "must be a non-empty string"),
        ('privet = "not a table"\n', r"\[privet\] must be a table"),
        ('[privet]\nmaster_source = "vault"\n', "master_source 'vault'.* is not one of passphrase, env, kms"),
        ('[privet]\nlog_level = "loud"\n', "log_level 'loud'"),
        ('[privet]\nmaster_source = "kms"\n', "no kms_plugin is set"),
    ],
)
def test_bad_toml_settings(tmp_path: Path, toml: str, match: str) -> None:
    (tmp_path / "privet.toml").write_text(toml)
    with pytest.raises(ConfigError, match=match) as info:
        load_settings(env={})
    assert "hunter2" not in info.value.one_line()
    assert info.value.exit_code == 2


def test_unknown_setting_hint_lists_known_ones(tmp_path: Path) -> None:
    (tmp_path / "privet.toml").write_text('[privet]\ndatabase = "x"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(env={})
    assert "database_url" in info.value.hint
    assert "privet.toml" in info.value.message


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"PRIVET_MASTER_SOURCE": "vault"}, "master_source 'vault' in the environment"),
        ({"PRIVET_MASTER_SOURCE": "kms"}, "no kms_plugin is set"),
        ({"PRIVET_LOG_LEVEL": "chatty"}, "log_level 'chatty'"),
    ],
)
def test_bad_env_settings(env: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_settings(env=env)


def test_kms_without_plugin_hint() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env={"PRIVET_MASTER_SOURCE": "kms"})
    assert "module:Class" in info.value.hint


@pytest.mark.parametrize(
    "content",
    [b'[privet\nlog_level = "x"\n', b'log_level = "unterminated\n', b'passphrase = "hunter2', b"\xff\xfe\x00garbage"],
)
def test_invalid_toml(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "privet.toml").write_bytes(content)
    with pytest.raises(ConfigError, match="is not valid TOML") as info:
        load_settings(env={})
    assert "hunter2" not in info.value.one_line()  # the file's contents are not echoed
    assert info.value.__cause__ is None
