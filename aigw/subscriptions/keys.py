"""Subscription keys: generated from the OS CSPRNG, stored and looked up only as hashes.

Keys carry 256 bits of entropy, so a plain SHA-256 is enough to store them (nothing to
brute-force, unlike passwords), and looking a key up by its hash in a dict leaks nothing
useful through timing: learning a hash prefix does not help to find a key.
"""

from __future__ import annotations

import hashlib
import secrets

KEY_BYTES = 32  # 256 bits
# Longer presented keys are rejected before hashing; ours are 64 characters.
MAX_KEY_LENGTH = 256


def new_key() -> str:
    return secrets.token_hex(KEY_BYTES)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
