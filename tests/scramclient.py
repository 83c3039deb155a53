"""A SCRAM client (RFC 5802 / RFC 7677) for the tests, independent of midge.auth.scram.

It uses only hashlib, hmac and base64, so a server bug cannot hide behind shared code.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}


def _escape(name: str) -> str:
    return name.replace("=", "=3D").replace(",", "=2C")


class ScramClient:
    def __init__(
        self,
        mechanism: str,
        username: str,
        password: str,
        nonce: str | None = None,
        gs2_header: str = "n,,",
    ) -> None:
        self.hash = HASHES[mechanism]
        self.username = username
        self.password = password
        self.nonce = nonce or base64.b64encode(os.urandom(18)).decode().replace(",", "_")
        self.gs2_header = gs2_header
        self.client_first_bare = f"n={_escape(username)},r={self.nonce}"
        self.server_signature = b""
        self.server_first = ""

    def first(self) -> bytes:
        return (self.gs2_header + self.client_first_bare).encode()

    def final(self, server_first: bytes, nonce: str | None = None) -> bytes:
        """client-final for ``server_first`` (``nonce`` replaces the combined nonce if given)."""
        text = server_first.decode()
        self.server_first = text
        attrs = dict(part.split("=", 1) for part in text.split(","))
        combined = attrs["r"]
        assert combined.startswith(self.nonce), "server nonce must extend the client's"
        salt = base64.b64decode(attrs["s"])
        iterations = int(attrs["i"])
        salted = hashlib.pbkdf2_hmac(self.hash, self.password.encode(), salt, iterations)
        client_key = hmac.new(salted, b"Client Key", self.hash).digest()
        stored_key = hashlib.new(self.hash, client_key).digest()
        cbind = base64.b64encode(self.gs2_header.encode()).decode()
        without_proof = f"c={cbind},r={nonce if nonce is not None else combined}"
        auth_message = f"{self.client_first_bare},{text},{without_proof}".encode()
        signature = hmac.new(stored_key, auth_message, self.hash).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = hmac.new(salted, b"Server Key", self.hash).digest()
        self.server_signature = hmac.new(server_key, auth_message, self.hash).digest()
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final: bytes) -> bool:
        """Whether ``server_final`` proves the server knows the credentials (v=...)."""
        return server_final == b"v=" + base64.b64encode(self.server_signature)


def tamper(client_final: bytes) -> bytes:
    """The same client-final with one bit of the proof flipped."""
    head, _, proof = client_final.rpartition(b",p=")
    raw = bytearray(base64.b64decode(proof))
    raw[0] ^= 1
    return head + b",p=" + base64.b64encode(bytes(raw))
