"""FF1 format-preserving encryption (NIST SP 800-38G Rev. 1), over AES from ``cryptography``.

FF1 is a 10-round Feistel network on numeral strings of any radix from 2 to 65536. Its round function is
AES-CBC-MAC (zero IV) of a fixed block ``P`` and a per-round block ``Q``, extended by AES-ECB of the MAC
xor a block counter when more than 16 bytes are needed. :class:`FF1` works on strings over an alphabet
(one character per numeral) and, for any radix, on lists of numerals.

Domain rules of Rev. 1 are enforced: ``radix ** len >= 1_000_000`` (so radix 10 needs 6 numerals) and
``len <= 2**32 - 1``. Errors never contain the input.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from privet.errors import UsageError

__all__ = [
    "ALNUM",
    "DIGITS",
    "FF1",
    "LOWER_ALNUM",
    "MAX_LENGTH",
    "MAX_RADIX",
    "MIN_DOMAIN",
    "UPPER_ALNUM",
    "min_length",
]

DIGITS = "0123456789"
LOWER_ALNUM = DIGITS + "abcdefghijklmnopqrstuvwxyz"
UPPER_ALNUM = DIGITS + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
ALNUM = LOWER_ALNUM + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

MIN_RADIX = 2
MAX_RADIX = 2**16
MIN_DOMAIN = 1_000_000  # SP 800-38G Rev. 1, section 5.2: radix**minlen >= 10**6
MAX_LENGTH = 2**32 - 1  # n is encoded in 4 bytes of P
MAX_TWEAK_LENGTH = 2**32 - 1  # t is encoded in 4 bytes of P
_ROUNDS = 10
_BLOCK = 16


def min_length(radix: int) -> int:
    """The smallest input length FF1 accepts for ``radix``: the least n >= 2 with radix**n >= 10**6."""
    n = 2
    while radix**n < MIN_DOMAIN:
        n += 1
    return n


class FF1:
    """FF1-AES with a fixed key and radix; the tweak is given per call.

    ``alphabet`` maps numerals to characters for :meth:`encrypt` / :meth:`decrypt`; it defaults to the
    first ``radix`` characters of ``0-9a-zA-Z`` when ``radix <= 62``. Larger radixes need an alphabet or
    the numeral methods.
    """

    __slots__ = ("_alphabet", "_ecb", "_index", "_key", "_min_len", "radix")

    def __init__(self, key: bytes, radix: int = 10, alphabet: str | None = None) -> None:
        if not isinstance(key, bytes | bytearray) or len(key) not in (16, 24, 32):
            raise UsageError("an FF1 key must be 16, 24 or 32 bytes (AES-128, -192 or -256)")
        if alphabet is not None:
            radix = len(alphabet)
            if len(set(alphabet)) != radix:
                raise UsageError("the FF1 alphabet has a repeated character", "Give each character once.")
        if not isinstance(radix, int) or not MIN_RADIX <= radix <= MAX_RADIX:
            raise UsageError(f"FF1 radix must be between {MIN_RADIX} and {MAX_RADIX}")
        if alphabet is None and radix <= len(ALNUM):
            alphabet = ALNUM[:radix]
        self._key = bytes(key)
        self._ecb = Cipher(algorithms.AES(self._key), modes.ECB())  # noqa: S305 - FF1's CIPH is single blocks
        self.radix = radix
        self._alphabet = alphabet
        self._index = {c: i for i, c in enumerate(alphabet)} if alphabet is not None else None
        self._min_len = min_length(radix)

    def __repr__(self) -> str:
        return f"FF1(radix={self.radix}, key=<secret>)"

    @property
    def alphabet(self) -> str | None:
        return self._alphabet

    @property
    def min_length(self) -> int:
        """The shortest input accepted for this radix."""
        return self._min_len

    # -- strings -----------------------------------------------------------------------------------
    def encrypt(self, text: str, tweak: bytes = b"") -> str:
        """Encrypt a string over the alphabet; the result has the same length and alphabet."""
        return self._to_text(self.encrypt_numerals(self._to_numerals(text), tweak))

    def decrypt(self, text: str, tweak: bytes = b"") -> str:
        """Invert :meth:`encrypt` under the same key and tweak."""
        return self._to_text(self.decrypt_numerals(self._to_numerals(text), tweak))

    # -- numerals ----------------------------------------------------------------------------------
    def encrypt_numerals(self, numerals: Sequence[int], tweak: bytes = b"") -> list[int]:
        """FF1.Encrypt (Algorithm 7) on numerals in ``[0, radix)``."""
        return self._crypt(numerals, tweak, encrypt=True)

    def decrypt_numerals(self, numerals: Sequence[int], tweak: bytes = b"") -> list[int]:
        """FF1.Decrypt (Algorithm 8) on numerals in ``[0, radix)``."""
        return self._crypt(numerals, tweak, encrypt=False)

    # -- internals ---------------------------------------------------------------------------------
    def _to_numerals(self, text: str) -> list[int]:
        if self._index is None:
            raise UsageError(f"FF1 with radix {self.radix} has no alphabet", "Pass an alphabet or use numerals.")
        try:
            return [self._index[c] for c in text]
        except KeyError:
            raise UsageError("the value has a character outside the FF1 alphabet") from None

    def _to_text(self, numerals: list[int]) -> str:
        alphabet = self._alphabet
        assert alphabet is not None  # _to_numerals checked it
        return "".join(alphabet[x] for x in numerals)

    def _check(self, numerals: Sequence[int], tweak: bytes) -> None:
        n = len(numerals)
        if n < self._min_len:
            raise UsageError(
                f"FF1 with radix {self.radix} needs at least {self._min_len} characters, got {n}",
                f"The domain radix**length must be at least {MIN_DOMAIN:,}; use a longer value or another operator.",
            )
        if n > MAX_LENGTH:
            raise UsageError(f"FF1 input longer than {MAX_LENGTH} characters")
        if not isinstance(tweak, bytes | bytearray) or len(tweak) > MAX_TWEAK_LENGTH:
            raise UsageError(f"an FF1 tweak must be bytes of at most {MAX_TWEAK_LENGTH} bytes")
        radix = self.radix
        if any(not 0 <= x < radix for x in numerals):
            raise UsageError(f"an FF1 numeral is outside [0, {radix})")

    def _num(self, numerals: Sequence[int]) -> int:
        value = 0
        radix = self.radix
        for x in numerals:
            value = value * radix + x
        return value

    def _str(self, value: int, length: int) -> list[int]:
        out = [0] * length
        radix = self.radix
        for i in range(length - 1, -1, -1):
            value, out[i] = divmod(value, radix)
        return out

    def _cbc_mac(self, iv: bytes, data: bytes) -> bytes:
        """The last block of AES-CBC over ``data`` (a multiple of 16 bytes) from ``iv``."""
        encryptor = Cipher(algorithms.AES(self._key), modes.CBC(iv)).encryptor()
        return (encryptor.update(data) + encryptor.finalize())[-_BLOCK:]

    def _crypt(self, numerals: Sequence[int], tweak: bytes, *, encrypt: bool) -> list[int]:
        self._check(numerals, tweak)
        radix, n, t = self.radix, len(numerals), len(tweak)
        u = n // 2
        v = n - u
        # b = ceil(ceil(v * log2(radix)) / 8), computed exactly: ceil(v*log2(radix)) is the bit length of
        # radix**v - 1 (for a power-of-two radix both are exact; otherwise radix**v is not a power of two).
        b = ((radix**v - 1).bit_length() + 7) // 8
        d = 4 * ((b + 3) // 4) + 4
        blocks = (d + _BLOCK - 1) // _BLOCK
        p = bytes([1, 2, 1]) + radix.to_bytes(3, "big") + bytes([10, u % 256]) + n.to_bytes(4, "big")
        p += t.to_bytes(4, "big")
        q_prefix = bytes(tweak) + bytes((-t - b - 1) % _BLOCK)
        mod_u, mod_v = radix**u, radix**v
        a_num, b_num = self._num(numerals[:u]), self._num(numerals[u:])
        ecb = self._ecb.encryptor()
        # PRF(P || Q) is CBC-MAC with a zero IV; P is the same in every round, so its block is chained once.
        p_mac = ecb.update(p)
        rounds = range(_ROUNDS) if encrypt else range(_ROUNDS - 1, -1, -1)
        for i in rounds:
            # In both directions the round function reads the half that is not being changed.
            feed = b_num if encrypt else a_num
            r = self._cbc_mac(p_mac, q_prefix + bytes([i]) + feed.to_bytes(b, "big"))
            s = r
            if blocks > 1:
                r_int = int.from_bytes(r, "big")
                s += ecb.update(b"".join((r_int ^ j).to_bytes(_BLOCK, "big") for j in range(1, blocks)))
            y = int.from_bytes(s[:d], "big")
            modulus = mod_u if i % 2 == 0 else mod_v
            if encrypt:
                a_num, b_num = b_num, (a_num + y) % modulus
            else:
                a_num, b_num = (b_num - y) % modulus, a_num
        # After 10 rounds A has u numerals and B has v (the even number of rounds restores the split).
        return self._str(a_num, u) + self._str(b_num, v)
