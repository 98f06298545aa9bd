"""One exception hierarchy for privet.

Every error carries a user-facing ``message`` (what is wrong) and a ``hint`` (what to do). Neither may
contain secrets or personal data: callers pass names, paths, ids and counts, never values.
The CLI prints ``error: <message>. <hint>`` and exits with ``exit_code``.
"""

from __future__ import annotations


class PrivetError(Exception):
    """Base class of every error privet raises on purpose."""

    exit_code = 1  # operation refused or failed
    default_hint = "Run with --debug for details."

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message.rstrip(". ")
        self.hint = hint or self.default_hint
        super().__init__(self.message)

    def one_line(self) -> str:
        """The single line the CLI prints on stderr."""
        text = f"error: {self.message}. {self.hint}"
        return " ".join(text.split())


class UsageError(PrivetError):
    """The input or the options are wrong; nothing was attempted."""

    exit_code = 2
    default_hint = "See --help for usage."


class ConfigError(UsageError):
    """A setting in privet.toml or the environment is missing or invalid."""

    default_hint = "Fix the setting in privet.toml or the PRIVET_* environment variable."


class StoreError(PrivetError):
    """The database could not be opened, migrated or written."""

    default_hint = "Check PRIVET_DATABASE_URL and that the database is reachable."


class KeyringError(PrivetError):
    """A keyring operation was refused."""

    default_hint = "Run 'privet keys list' to see the keys and their versions."


class MasterKeyError(KeyringError):
    """The master key is missing, wrong, or its source is unavailable."""

    default_hint = "Set PRIVET_PASSPHRASE or PRIVET_MASTER_KEY to the master key the keyring was created with."


class KeyNotFoundError(KeyringError):
    """A key name or version does not exist in this keyring."""


class KeyDestroyedError(KeyringError):
    """A key version was deleted (crypto-shredded); data under it is unreadable by design."""

    default_hint = "Data encrypted under a deleted key version cannot be recovered."


class IntegrityError(PrivetError):
    """Ciphertext, artifact or signature failed verification: refused, nothing was released."""

    default_hint = "The file was modified, truncated or corrupted; obtain an intact copy from its source."


class FormatError(IntegrityError):
    """Bytes do not parse as the expected privet format."""

    default_hint = "Check that the file is a privet file of this kind and was not truncated."


class UnsafeFormatError(UsageError):
    """A file format that can execute code when loaded (pickle) was refused."""

    default_hint = (
        "Convert it to safetensors first, e.g. "
        "safetensors.torch.save_file(torch.load(path, weights_only=True), 'model.safetensors')"
    )


class NotFoundError(UsageError):
    """A named object (file, model, record) does not exist."""


class BudgetExceededError(PrivetError):
    """A release was refused because it would exceed its privacy budget; nothing was released."""

    default_hint = "Nothing was released. Ask for less, or use a data set with budget left."
