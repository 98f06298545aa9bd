"""Desensitization: find personal data in English and Chinese text and transform it.

The safe high-level entry points are :func:`default_analyzer` (find), the policy-driven text engine
(find and transform) and the :class:`~privet.desensitize.vault.Vault` (reversible tokens). Operators,
FF1 and surrogates are the lower layer they are built from.
"""

from privet.crypto.fpe import FF1

from .analyzers import default_analyzer
from .engine import Analyzer, DenyTerm
from .evaluate import evaluate, load_labelled
from .language import detect_language
from .operators import TOKEN_PATTERN, OperatorContext, build_operator, decrypt_tokens
from .surrogates import surrogate
from .types import Finding, Pattern, Recognizer
from .vault import RestoreGrant, Vault, VaultOperator

__all__ = [
    "FF1",
    "TOKEN_PATTERN",
    "Analyzer",
    "DenyTerm",
    "Finding",
    "OperatorContext",
    "Pattern",
    "Recognizer",
    "RestoreGrant",
    "Vault",
    "VaultOperator",
    "build_operator",
    "decrypt_tokens",
    "default_analyzer",
    "detect_language",
    "evaluate",
    "load_labelled",
    "surrogate",
]
