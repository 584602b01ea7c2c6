"""Password hashing with scrypt from the standard library.

Stored as scrypt$n$r$p$salt$hash (base64) so the cost can be raised later
without invalidating existing hashes: a verifier reads the parameters back.
"""

from __future__ import annotations

import base64
import hashlib
import secrets

# OWASP's recommended minimum for scrypt; costs ~128 MiB and a fraction of a second per hash.
N, R, P = 2**17, 8, 1
DKLEN = 64
SALT_BYTES = 16


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(SALT_BYTES)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=N, r=R, p=P, dklen=DKLEN, maxmem=2 * 128 * N * R * P
    )
    return f"scrypt${N}${R}${P}${_b64(salt)}${_b64(digest)}"
