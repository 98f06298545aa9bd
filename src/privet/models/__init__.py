"""Model artifacts (signed, optionally encrypted), the registry, and small reference models."""

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
