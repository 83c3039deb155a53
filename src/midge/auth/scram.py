"""SCRAM-SHA-256 and SCRAM-SHA-512 over MQTT 5 enhanced authentication (4.12).

The server side of SCRAM (RFC 5802, RFC 7677) under the Authentication Method names EMQX uses,
``SCRAM-SHA-256`` and ``SCRAM-SHA-512``, with EMQX's message flow so that clients written for EMQX
work unchanged::

    CONNECT  method, data = client-first   n,,n=USER,r=CNONCE
    AUTH     0x18,   data = server-first   r=CNONCE+SNONCE,s=SALT,i=ITERATIONS
    AUTH     0x18,   data = client-final   c=biws,r=CNONCE+SNONCE,p=PROOF
    CONNACK  0x00,   data = server-final   v=SIGNATURE

Re-authentication (AUTH 0x19 after CONNACK) runs the same exchange and ends with AUTH 0x00 carrying
the server-final message. Every failure, whatever its cause (a malformed message, an unknown user,
a wrong proof, a changed nonce), is 0x87 Not authorized with no data, as EMQX answers; the exchange
never raises.

Choices, where RFC 5802 leaves room:

* Channel binding is not offered (no ``-PLUS`` method), so the GS2 flag must be ``n`` or ``y``
  (``y``: the client could bind but believes the server cannot, which is true here); ``p=`` fails.
  The ``c=`` attribute must then be the base64 of the GS2 header exactly (``biws`` for ``n,,``).
* An authorization identity (``a=``) is accepted only when it names the authenticating user.
* A mandatory extension (``m=``) fails, as RFC 5802 5.1 requires; other extensions are ignored.
* No SASLprep (RFC 4013): the password is hashed as its UTF-8 bytes, by ``midge scram`` and by
  the client alike. For ASCII passwords this is what SASLprep would produce.
* The user name is ``n=`` (with ``=2C``/``=3D`` decoded). If the CONNECT also carries a User Name
  it must be the same; if it carries none, the SCRAM user becomes the connection's user name (what
  ACLs see). A re-authentication must be for the same user.
* An unknown user gets a server-first message like any other (a salt derived from the name and a
  per-process secret) and fails at the proof, so that the exchange does not tell which users exist
  (RFC 5802 9, "simulated" authentication). EMQX refuses at the first message instead; the reason
  code is the same.

Credentials are kept as RFC 5803 verifiers in a text file (``scram_file``), one line per user and
mechanism, never the password itself::

    alice:SCRAM-SHA-256$4096:<salt b64>$<StoredKey b64>:<ServerKey b64>

:func:`load_scram_file` reads it (a :class:`~midge.config.ConfigError` naming file and line for any
bad line); ``midge scram`` (:mod:`midge.auth.scram_cli`) writes it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from midge.auth.base import Authenticator, AuthExchange, Capability, ConnectRequest, Reloaded
from midge.codec.reasons import Reason
from midge.config import ConfigError, read_text_file

log = logging.getLogger("midge.auth.scram")

#: Authentication Method -> hashlib name.
MECHANISMS: dict[str, str] = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
#: RFC 7677 5: at least 4096 iterations; EMQX's default too.
DEFAULT_ITERATIONS = 4096
MAX_ITERATIONS = 10_000_000
SALT_BYTES = 16
_NONCE_BYTES = 18  # 24 base64url characters

# RFC 5802 7: printable = %x21-2B / %x2D-7E (no comma); base64 and value-safe characters.
_PRINTABLE = re.compile(r"[\x21-\x2b\x2d-\x7e]+")
_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_ATTR = re.compile(r"[A-Za-z]=")


def digest_size(mechanism: str) -> int:
    return hashlib.new(MECHANISMS[mechanism]).digest_size


@dataclass(frozen=True, slots=True)
class ScramCredential:
    """What the server keeps for one user and mechanism (RFC 5802 3): not the password."""

    mechanism: str
    iterations: int
    salt: bytes
    stored_key: bytes
    server_key: bytes

    def encode(self) -> str:
        """The RFC 5803 form: ``MECH$ITER:SALT$STOREDKEY:SERVERKEY`` (base64 values)."""
        b64 = _b64encode
        return (
            f"{self.mechanism}${self.iterations}:{b64(self.salt)}"
            f"${b64(self.stored_key)}:{b64(self.server_key)}"
        )


def make_credential(
    mechanism: str,
    password: str,
    iterations: int = DEFAULT_ITERATIONS,
    salt: bytes | None = None,
) -> ScramCredential:
    """Derive the stored verifier from ``password`` (RFC 5802 3; UTF-8, no SASLprep)."""
    name = MECHANISMS[mechanism]
    if salt is None:
        salt = secrets.token_bytes(SALT_BYTES)
    salted = hashlib.pbkdf2_hmac(name, password.encode("utf-8"), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", name)
    return ScramCredential(
        mechanism,
        iterations,
        salt,
        hashlib.new(name, client_key).digest(),
        hmac.digest(salted, b"Server Key", name),
    )


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64decode(text: str) -> bytes | None:
    """Strict base64 (padding required, no other characters), or None."""
    if not _BASE64.fullmatch(text):
        return None
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:  # pragma: no cover - the pattern admits only valid base64
        return None


# ---------------------------------------------------------------------------------------------
# The credential file


class ScramStore:
    """Credentials by (user name, mechanism), as read from a ``scram_file``."""

    def __init__(self, credentials: Iterable[tuple[str, ScramCredential]] = ()) -> None:
        self._creds: dict[tuple[str, str], ScramCredential] = {}
        for user, cred in credentials:
            self._creds[(user, cred.mechanism)] = cred

    def get(self, username: str, mechanism: str) -> ScramCredential | None:
        return self._creds.get((username, mechanism))

    def users(self) -> list[str]:
        return sorted({user for user, _ in self._creds})

    def __len__(self) -> int:
        return len(self._creds)


def check_username(username: str) -> str | None:
    """Why ``username`` cannot be stored in a scram_file, or None if it can."""
    if not username:
        return "the user name is empty"
    if ":" in username:
        return "a user name cannot contain ':'"
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in username):
        return "a user name cannot contain control characters"
    return None


def parse_credential(text: str) -> ScramCredential | str:
    """An RFC 5803 verifier ``MECH$ITER:SALT$STOREDKEY:SERVERKEY``, or why it is not one."""
    form = "expected MECHANISM$ITERATIONS:SALT$STOREDKEY:SERVERKEY (as written by 'midge scram')"
    parts = text.split("$")
    if len(parts) != 3:
        return form
    mechanism, first, keys = parts
    if mechanism not in MECHANISMS:
        return f"unknown mechanism '{mechanism}': expected {' or '.join(MECHANISMS)}"
    iter_salt = first.split(":")
    stored_server = keys.split(":")
    if len(iter_salt) != 2 or len(stored_server) != 2:
        return form
    iterations_text, salt_text = iter_salt
    if not re.fullmatch(r"[0-9]{1,8}", iterations_text):
        return f"invalid iteration count '{iterations_text}': expected a whole number"
    iterations = int(iterations_text)
    if not 1 <= iterations <= MAX_ITERATIONS:
        return f"iteration count {iterations} out of range 1..{MAX_ITERATIONS}"
    salt = _b64decode(salt_text)
    if not salt:
        return "invalid salt: expected non-empty base64"
    size = digest_size(mechanism)
    keys_bytes: list[bytes] = []
    for what, value in zip(("StoredKey", "ServerKey"), stored_server, strict=True):
        key = _b64decode(value)
        if key is None or len(key) != size:
            return f"invalid {what}: expected the base64 of {size} bytes for {mechanism}"
        keys_bytes.append(key)
    return ScramCredential(mechanism, iterations, salt, keys_bytes[0], keys_bytes[1])


def parse_scram_file(text: str, path: str = "<string>") -> ScramStore:
    """Read a scram_file: ``USER:VERIFIER`` lines; blank lines and ``#`` comments are skipped.

    Any bad line (no ':', a bad user name, a bad verifier, the same user and mechanism twice) is a
    :class:`ConfigError` naming the file and line."""
    seen: dict[tuple[str, str], int] = {}
    creds: list[tuple[str, ScramCredential]] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        user, sep, verifier = line.partition(":")
        if not sep:
            raise ConfigError(
                "expected USER:MECHANISM$ITERATIONS:SALT$STOREDKEY:SERVERKEY; "
                "add users with 'midge scram FILE USER'",
                path,
                lineno,
            )
        why = check_username(user)
        if why is not None:
            raise ConfigError(f"{why}; fix or remove the line", path, lineno)
        cred = parse_credential(verifier.strip())
        if isinstance(cred, str):
            raise ConfigError(f"user '{user}': {cred}", path, lineno)
        key = (user, cred.mechanism)
        if key in seen:
            raise ConfigError(
                f"user '{user}' has a second {cred.mechanism} line (first on line {seen[key]}); "
                "remove one",
                path,
                lineno,
            )
        seen[key] = lineno
        creds.append((user, cred))
    return ScramStore(creds)


def load_scram_file(path: str) -> ScramStore:
    """Read the scram_file at ``path``; every problem is a :class:`ConfigError`."""
    return parse_scram_file(read_text_file(path, "scram_file"), path)


# ---------------------------------------------------------------------------------------------
# The exchange


class _Fail(Exception):
    """A reason to refuse; only ever logged (at debug level), never sent."""


def _decode_saslname(value: str) -> str:
    """RFC 5802 5.1: ',' and '=' are sent as '=2C' and '=3D'; any other '=' is an error."""
    if "," in value:
        raise _Fail("',' in a user name")
    out: list[str] = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "=":
            esc = value[i + 1 : i + 3]
            if esc == "2C":
                out.append(",")
            elif esc == "3D":
                out.append("=")
            else:
                raise _Fail("bad '=' escape in user name")
            i += 3
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _attributes(text: str, what: str) -> list[tuple[str, str]]:
    """``a=v,b=w`` into [(a, v), (b, w)], strictly: every part is one letter, '=', a value."""
    pairs = []
    for part in text.split(","):
        if not _ATTR.match(part):
            raise _Fail(f"malformed {what}")
        pairs.append((part[0], part[2:]))
    return pairs


class ScramExchange(AuthExchange):
    """One SCRAM conversation: :meth:`start` takes client-first, :meth:`step` client-final.

    After success :attr:`username` is the authenticated user (the connection adopts it)."""

    def __init__(
        self,
        mechanism: str,
        store: ScramStore,
        connect_username: str | None,
        secret: bytes,
        server_nonce: str | None = None,
    ) -> None:
        self.mechanism = mechanism
        #: Fixed only by tests (the RFC 7677 vector); otherwise random per exchange.
        self._server_nonce = server_nonce
        self._hash = MECHANISMS[mechanism]
        self._store = store
        self._connect_username = connect_username
        self._secret = secret
        #: The authenticated user, set on success only.
        self.username: str | None = None
        self._user: str | None = None
        self._cred: ScramCredential | None = None
        self._known = False
        self._gs2_header = ""
        self._client_first_bare = ""
        self._server_first = ""
        self._nonce = ""
        self._done = False

    # -- AuthExchange

    def start(self, data: bytes | None) -> tuple[int, bytes | None]:
        try:
            return Reason.CONTINUE_AUTHENTICATION, self._client_first(data)
        except _Fail as exc:
            return self._refuse(str(exc))

    def step(self, data: bytes | None) -> tuple[int, bytes | None]:
        try:
            if self._cred is None or self._done:
                raise _Fail("client-final out of order")
            self._done = True
            return Reason.SUCCESS, self._client_final(data)
        except _Fail as exc:
            return self._refuse(str(exc))

    # -- messages

    def _refuse(self, why: str) -> tuple[int, bytes | None]:
        self._done = True
        log.debug("%s refused for %r: %s", self.mechanism, self._user, why)
        return Reason.NOT_AUTHORIZED, None

    @staticmethod
    def _text(data: bytes | None, what: str) -> str:
        if not data:
            raise _Fail(f"no {what}")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise _Fail(f"{what} is not UTF-8") from None

    def _client_first(self, data: bytes | None) -> bytes:
        text = self._text(data, "client-first message")
        # gs2-header = gs2-cbind-flag "," [authzid] "," ; then client-first-message-bare.
        parts = text.split(",", 2)
        if len(parts) != 3:
            raise _Fail("malformed client-first message")
        flag, authzid, bare = parts
        if flag not in ("n", "y"):
            # "p=...": the client requires channel binding, which is not offered.
            raise _Fail(f"unsupported channel binding flag {flag[:8]!r}")
        authz: str | None = None
        if authzid:
            if not authzid.startswith("a="):
                raise _Fail("malformed authzid")
            authz = _decode_saslname(authzid[2:])
        attrs = _attributes(bare, "client-first message")
        if len(attrs) < 2 or attrs[0][0] != "n" or attrs[1][0] != "r":
            # A leading m= (reserved-mext) lands here too: RFC 5802 5.1 says fail.
            raise _Fail("client-first message must be n=USER,r=NONCE")
        user = _decode_saslname(attrs[0][1])
        nonce = attrs[1][1]
        if not user:
            raise _Fail("empty user name")
        if not _PRINTABLE.fullmatch(nonce):
            raise _Fail("bad client nonce")
        self._user = user
        if authz is not None and authz != user:
            raise _Fail("authorization identity differs from the user")
        if self._connect_username is not None and self._connect_username != user:
            raise _Fail("the SCRAM user differs from the CONNECT/connection user name")
        cred = self._store.get(user, self.mechanism)
        self._known = cred is not None
        if cred is None:
            cred = self._simulated(user)
        self._cred = cred
        self._gs2_header = f"{flag},{authzid},"
        self._client_first_bare = bare
        self._nonce = nonce + (self._server_nonce or secrets.token_urlsafe(_NONCE_BYTES))
        self._server_first = f"r={self._nonce},s={_b64encode(cred.salt)},i={cred.iterations}"
        return self._server_first.encode("ascii")

    def _simulated(self, user: str) -> ScramCredential:
        """A stable salt for an unknown user, and keys no proof can match (RFC 5802 9)."""
        size = digest_size(self.mechanism)
        salt = hmac.digest(self._secret, f"{self.mechanism}:{user}".encode(), "sha256")
        return ScramCredential(
            self.mechanism,
            DEFAULT_ITERATIONS,
            salt[:SALT_BYTES],
            secrets.token_bytes(size),
            secrets.token_bytes(size),
        )

    def _client_final(self, data: bytes | None) -> bytes:
        cred = self._cred
        assert cred is not None
        text = self._text(data, "client-final message")
        # client-final-message = channel-binding "," nonce ["," extensions] "," proof
        without_proof, sep, proof_attr = text.rpartition(",")
        if not sep or not proof_attr.startswith("p="):
            raise _Fail("client-final message has no proof")
        attrs = _attributes(without_proof, "client-final message")
        if len(attrs) < 2 or attrs[0][0] != "c" or attrs[1][0] != "r":
            raise _Fail("client-final message must be c=...,r=...,p=...")
        if _b64decode(attrs[0][1]) != self._gs2_header.encode("utf-8"):
            raise _Fail("channel binding data does not match the GS2 header")
        if not hmac.compare_digest(attrs[1][1].encode("utf-8"), self._nonce.encode("ascii")):
            raise _Fail("nonce mismatch")
        proof = _b64decode(proof_attr[2:])
        if proof is None or len(proof) != len(cred.stored_key):
            raise _Fail("malformed proof")
        auth_message = ",".join(
            (self._client_first_bare, self._server_first, without_proof)
        ).encode("utf-8")
        name = self._hash
        client_signature = hmac.digest(cred.stored_key, auth_message, name)
        client_key = bytes(a ^ b for a, b in zip(proof, client_signature, strict=True))
        ok = hmac.compare_digest(hashlib.new(name, client_key).digest(), cred.stored_key)
        if not ok or not self._known:
            raise _Fail("wrong proof" if self._known else "unknown user")
        server_signature = hmac.digest(cred.server_key, auth_message, name)
        self.username = self._user
        return b"v=" + base64.b64encode(server_signature)


# ---------------------------------------------------------------------------------------------
# The authenticator


class ScramAuthenticator(Authenticator):
    """Serves the SCRAM methods from a :class:`ScramStore`: a layer of the chain
    (:class:`~midge.auth.base.AuthChain`) that provides enhanced authentication only.

    Plain CONNECTs, publish and subscribe are the other layers' (the password/ACL files, a
    plugin), and so are other Authentication Methods: this layer comes first in the chain and
    answers None for them, so the two compose."""

    #: Its name in /metrics (midge_auth_failures_total{backend}).
    backend = "scram"

    provides = frozenset({Capability.ENHANCED, Capability.RELOAD})
    name = "SCRAM file"

    def __init__(self, store: ScramStore, path: str | None = None) -> None:
        self.store = store
        #: The scram_file, for :meth:`reload` (without one there is nothing to reload).
        self.path = path
        if path is None:
            self.provides = frozenset({Capability.ENHANCED})
        # Salts for simulated (unknown) users are stable for the life of the process.
        self._secret = secrets.token_bytes(32)

    @classmethod
    def from_file(cls, path: str) -> ScramAuthenticator:
        return cls(load_scram_file(path), path)

    def reload(self) -> Reloaded:
        """Re-read the scram_file (a :class:`ConfigError` keeps the old credentials)."""
        if self.path is not None:
            self.store = load_scram_file(self.path)
        return Reloaded()

    def enhanced(self, request: ConnectRequest) -> AuthExchange | None:
        method = request.auth_method
        if method in MECHANISMS:
            assert method is not None
            return ScramExchange(method, self.store, request.username, self._secret)
        return None


# ---------------------------------------------------------------------------------------------
# The client side (midge.client's enhanced authentication)


def _escape_saslname(name: str) -> str:
    return name.replace("=", "=3D").replace(",", "=2C")


class ScramClient:
    """The client's half of the exchange above (RFC 5802 3), for :mod:`midge.client`.

    :meth:`first` gives client-first (CONNECT's Authentication Data), :meth:`final` answers
    server-first with client-final, :meth:`verify` checks server-final. The password is hashed as
    its UTF-8 bytes, as :func:`make_credential` does (no SASLprep), so what ``midge scram`` stored
    for a password is what this proves.
    """

    def __init__(
        self, mechanism: str, username: str, password: str, nonce: str | None = None
    ) -> None:
        if mechanism not in MECHANISMS:
            raise ValueError(
                f"unknown SCRAM mechanism {mechanism!r}; use one of {list(MECHANISMS)}"
            )
        self.mechanism = mechanism
        self.username = username
        self._password = password
        self._hash = MECHANISMS[mechanism]
        self._nonce = nonce or secrets.token_urlsafe(_NONCE_BYTES)
        self._bare = f"n={_escape_saslname(username)},r={self._nonce}"
        self._server_signature: bytes | None = None

    def first(self) -> bytes:
        return ("n,," + self._bare).encode("utf-8")

    def final(self, server_first: bytes | None) -> bytes:
        """client-final for ``server_first``; ``ValueError`` if it is not a valid answer."""
        try:
            text = (server_first or b"").decode("utf-8")
            attrs = dict(_attributes(text, "server-first message"))
        except (UnicodeDecodeError, _Fail) as exc:
            raise ValueError(f"malformed server-first message: {exc}") from None
        nonce, salt_text, iterations = attrs.get("r", ""), attrs.get("s", ""), attrs.get("i", "")
        salt = _b64decode(salt_text)
        if not nonce.startswith(self._nonce) or salt is None or not iterations.isdigit():
            raise ValueError("server-first message does not extend our nonce or lacks s=/i=")
        count = int(iterations)
        if not 1 <= count <= MAX_ITERATIONS:
            raise ValueError(f"server asks for {count} iterations")
        name = self._hash
        salted = hashlib.pbkdf2_hmac(name, self._password.encode("utf-8"), salt, count)
        client_key = hmac.digest(salted, b"Client Key", name)
        stored_key = hashlib.new(name, client_key).digest()
        without_proof = f"c=biws,r={nonce}"
        auth_message = f"{self._bare},{text},{without_proof}".encode()
        signature = hmac.digest(stored_key, auth_message, name)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = hmac.digest(salted, b"Server Key", name)
        self._server_signature = hmac.digest(server_key, auth_message, name)
        return f"{without_proof},p={_b64encode(proof)}".encode("ascii")

    def verify(self, server_final: bytes | None) -> bool:
        """Whether ``server_final`` (``v=...``) proves the server knows the credential."""
        if self._server_signature is None or not server_final:
            return False
        expected = b"v=" + base64.b64encode(self._server_signature)
        return hmac.compare_digest(server_final, expected)
