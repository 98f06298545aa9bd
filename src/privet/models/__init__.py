"""Model artifacts (signed, optionally encrypted), the registry, and small reference models."""

from __future__ import annotations

from typing import TYPE_CHECKING

from privet.lazy import exports

if TYPE_CHECKING:
    from privet.models.artifact import Trust, Verified, inspect, pack, read, rewrap, trust_only, unpack, verify
    from privet.models.manifest import Envelope, Manifest, PrivacyGuarantee
    from privet.models.registry import Entry, Registry

__all__ = [
    "Entry",
    "Envelope",
    "Manifest",
    "PrivacyGuarantee",
    "Registry",
    "Trust",
    "Verified",
    "inspect",
    "pack",
    "read",
    "rewrap",
    "trust_only",
    "unpack",
    "verify",
]

# The artifact layer loads the keyring and its database; a client that only builds a reference model must not.
__getattr__ = exports(
    "privet.models",
    {
        **dict.fromkeys(
            ["Trust", "Verified", "inspect", "pack", "read", "rewrap", "trust_only", "unpack", "verify"],
            "privet.models.artifact",
        ),
        **dict.fromkeys(["Envelope", "Manifest", "PrivacyGuarantee"], "privet.models.manifest"),
        **dict.fromkeys(["Entry", "Registry"], "privet.models.registry"),
    },
)
