"""Signing archive entries: Ed25519 over a manifest's canonical JSON, verifiable offline with the public key.

The canonical form is the entry without its ``signature`` field, keys sorted, separators ``,``
and ``:``, UTF-8. ``key_id`` names the key (the first 16 hex digits of the SHA-256 of the raw
public key) so an auditor can tell which key signed. The private key never leaves this module.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .inputs import BadInput

KEY_VARIABLE = "AUDIT_SIGNING_KEY"
PRIVATE_NAME, PUBLIC_NAME = "audit-signing.key", "audit-signing.pub"


def canonical(entry: dict[str, Any]) -> bytes:
    """The bytes a signature covers: ``entry`` without ``signature``, keys sorted, compact, UTF-8."""
    unsigned = {k: v for k, v in entry.items() if k != "signature"}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign(entry: dict[str, Any], private: Ed25519PrivateKey) -> dict[str, Any]:
    """``entry`` with ``key_id`` and a base64 ``signature`` over its canonical form."""
    signed = {**entry, "key_id": key_id(private.public_key())}
    signed["signature"] = base64.b64encode(private.sign(canonical(signed))).decode()
    return signed


def signature_valid(entry: dict[str, Any], public: Ed25519PublicKey) -> bool:
    """True if ``entry['signature']`` is ``public``'s signature of the entry's canonical form."""
    try:
        public.verify(base64.b64decode(str(entry["signature"]), validate=True), canonical(entry))
        return True
    except (InvalidSignature, ValueError, KeyError):
        return False


def create_key_pair(directory: str) -> dict[str, str]:
    """Write a new key pair as PEM: ``audit-signing.key`` (mode 0600) and ``audit-signing.pub``."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    private_path, public_path = folder / PRIVATE_NAME, folder / PUBLIC_NAME
    if private_path.exists() or public_path.exists():
        raise BadInput(f"{folder} already holds a signing key: refusing to replace it")
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)
    public_path.write_bytes(
        private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return {"private_key": str(private_path), "public_key": str(public_path), "key_id": key_id(private.public_key())}


def load_public_key(path: str) -> Ed25519PublicKey:
    """The Ed25519 public key in PEM file ``path``; BadInput if it is not one."""
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise BadInput(f"cannot read an Ed25519 public key from {path}: {type(exc).__name__}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise BadInput(f"{path} is not an Ed25519 public key")
    return key


def _private_from(text_or_path: str) -> Ed25519PrivateKey:
    """A private key from PEM text or a path to it (errors never include the key)."""
    pem = text_or_path.encode() if text_or_path.lstrip().startswith("-----BEGIN") else Path(text_or_path).read_bytes()
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except ValueError:
        raise BadInput(f"${KEY_VARIABLE} does not hold an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BadInput(f"${KEY_VARIABLE} is not an Ed25519 private key")
    return key


def _airflow_setting() -> str | None:
    """The key from an Airflow variable or connection named AUDIT_SIGNING_KEY (only inside Airflow)."""
    if "airflow" not in sys.modules:
        return None
    try:
        from airflow.sdk import BaseHook, Variable

        value = Variable.get(KEY_VARIABLE, default=None)
        if value:
            return str(value)
        connection = BaseHook.get_connection(KEY_VARIABLE)
        return connection.password or connection.extra_dejson.get("path") or None
    except Exception:  # no such variable or connection, or no Airflow context: unsigned
        return None


def signing_key() -> Ed25519PrivateKey | None:
    """The configured private key ($AUDIT_SIGNING_KEY path, else Airflow's), or None: entries stay unsigned."""
    setting = os.environ.get(KEY_VARIABLE) or _airflow_setting()
    return _private_from(setting) if setting else None
