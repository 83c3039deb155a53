"""TLS for listeners: the server :class:`ssl.SSLContext` and the client certificate's identity.

asyncio does the TLS (``loop.create_server(..., ssl=context)``); this module only builds the
context from a listener's Mosquitto options and reads the peer certificate afterwards, so the
broker core never sees a socket or a certificate, only a username string.

- :func:`make_context` reads ``certfile``/``keyfile``/``cafile``/``capath`` and applies
  ``require_certificate``, ``tls_version`` and ``ciphers`` as Mosquitto 2.0's ``net.c`` does. Any
  problem is a :class:`~midge.config.ConfigError` naming the configuration line to fix.
- :class:`ServerTls` is one listener's TLS: the context given to ``create_server`` and the
  certificates in use, which :meth:`ServerTls.reload` replaces for new connections (SIGHUP).
- :func:`peer_username` is ``use_identity_as_username`` (the certificate's CN) and
  ``use_subject_as_username`` (its subject, printed as Mosquitto prints it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from typing import Any

from midge.config import ConfigError, ListenerConfig

log = logging.getLogger("midge.transport")

#: Mosquitto's cipher list when ``ciphers`` is not set (net.c, TLS 1.2 and earlier).
DEFAULT_CIPHERS = "DEFAULT:!aNULL:!eNULL:!LOW:!EXPORT:!SSLv2:@STRENGTH"


class _EncryptedKey(Exception):
    """Raised from the passphrase callback: a broker cannot prompt for a key's passphrase."""


def _no_passphrase() -> str:
    raise _EncryptedKey


def _error(listener: ListenerConfig, option: str, message: str) -> ConfigError:
    """A ConfigError at the line that set ``option`` (or the listener's first TLS line)."""
    where = listener.where.get(option)
    if where is None:
        for name in ("certfile", "keyfile"):
            if name in listener.where:
                where = listener.where[name]
                break
    if where is None:
        return ConfigError(f"listener on port {listener.port}: {message}")
    return ConfigError(message, where[0], where[1])


def _check_readable(listener: ListenerConfig, option: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except IsADirectoryError:
        raise _error(
            listener, option, f"{option} '{path}' is a directory; give the path of a PEM file"
        ) from None
    except OSError as exc:
        raise _error(
            listener,
            option,
            f"cannot read {option} '{path}': {exc.strerror}; check the path and the file's "
            "permissions",
        ) from None


def make_context(listener: ListenerConfig) -> ssl.SSLContext:
    """A server context for ``listener`` (which must have certfile and keyfile).

    As Mosquitto 2.0 (``net__tls_server_ctx``, ``net__tls_load_verify``): TLS 1.2 and 1.3 unless
    ``tls_version tlsv1.3``; ``ciphers`` (or Mosquitto's default list) for TLS 1.2; no
    compression, no renegotiation, the server's cipher preference; the CA certificates from
    ``cafile``/``capath``; the client's certificate requested and verified only with
    ``require_certificate`` (otherwise not requested at all, like Mosquitto's SSL_VERIFY_NONE).
    midge never allows less than TLS 1.2.
    """
    assert listener.certfile is not None and listener.keyfile is not None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if listener.tls_version == "tlsv1.3" else ssl.TLSVersion.TLSv1_2
    )
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_COMPRESSION
    ctx.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    ciphers = listener.ciphers or DEFAULT_CIPHERS
    try:
        ctx.set_ciphers(ciphers)
    except ssl.SSLError:
        raise _error(
            listener,
            "ciphers",
            f"no usable cipher in '{ciphers}': give an OpenSSL cipher list (see "
            f"'openssl ciphers -v {ciphers}')",
        ) from None

    certfile, keyfile = listener.certfile, listener.keyfile
    cert_pem = _check_readable(listener, "certfile", certfile)
    key_pem = _check_readable(listener, "keyfile", keyfile)
    if b"-----BEGIN CERTIFICATE-----" not in cert_pem:
        raise _error(
            listener,
            "certfile",
            f"certfile '{certfile}' holds no PEM certificate (-----BEGIN CERTIFICATE-----); "
            "give the server certificate in PEM form",
        )
    if b"PRIVATE KEY-----" not in key_pem:
        raise _error(
            listener,
            "keyfile",
            f"keyfile '{keyfile}' holds no PEM private key (-----BEGIN ... PRIVATE KEY-----); "
            "give the server certificate's private key in PEM form",
        )
    try:
        ctx.load_cert_chain(certfile, keyfile, password=_no_passphrase)
    except _EncryptedKey:
        raise _error(
            listener,
            "keyfile",
            f"keyfile '{keyfile}' is encrypted and a broker cannot ask for its passphrase; "
            "decrypt it (openssl pkey -in KEY -out KEY.plain) and protect it with file "
            "permissions",
        ) from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise _error(
                listener,
                "keyfile",
                f"keyfile '{keyfile}' is not the private key of certfile '{certfile}'; give "
                "the key the certificate was issued for",
            ) from None
        raise _error(
            listener,
            "certfile",
            f"cannot load certfile '{certfile}' with keyfile '{keyfile}': "
            f"{exc.reason or exc}; check that both are valid PEM files",
        ) from None
    except OSError as exc:  # pragma: no cover - read above; only a race gets here
        raise _error(listener, "certfile", f"cannot load certfile: {exc}") from None

    if listener.cafile is not None:
        ca_pem = _check_readable(listener, "cafile", listener.cafile)
        if b"-----BEGIN CERTIFICATE-----" not in ca_pem:
            raise _error(
                listener,
                "cafile",
                f"cafile '{listener.cafile}' holds no PEM certificate; give the CA "
                "certificates in PEM form",
            )
        try:
            ctx.load_verify_locations(cafile=listener.cafile)
        except ssl.SSLError as exc:
            raise _error(
                listener,
                "cafile",
                f"cannot load CA certificates from cafile '{listener.cafile}': "
                f"{exc.reason or exc}; check the file",
            ) from None
    if listener.capath is not None:
        if not os.path.isdir(listener.capath):
            raise _error(
                listener,
                "capath",
                f"capath '{listener.capath}' is not a directory; give a directory of PEM CA "
                "certificates prepared with 'openssl rehash'",
            )
        if not os.access(listener.capath, os.R_OK | os.X_OK):
            raise _error(
                listener,
                "capath",
                f"cannot read capath '{listener.capath}': permission denied",
            )
        ctx.load_verify_locations(capath=listener.capath)
    if listener.crlfile is not None:
        _load_crl(ctx, listener, listener.crlfile)
    if listener.dhparamfile is not None:
        _load_dh_params(ctx, listener, listener.dhparamfile)
    ctx.verify_mode = ssl.CERT_REQUIRED if listener.require_certificate else ssl.CERT_NONE
    return ctx


def _load_crl(ctx: ssl.SSLContext, listener: ListenerConfig, crlfile: str) -> None:
    """``crlfile``: the revocation lists go into the context's store and the client's own
    certificate is checked against them (Mosquitto's ``X509_V_FLAG_CRL_CHECK``, which is
    VERIFY_CRL_CHECK_LEAF): a revoked certificate fails the handshake, and so does one whose
    issuer has no list in the file ("unable to get certificate CRL"), as in Mosquitto."""
    pem = _check_readable(listener, "crlfile", crlfile)
    if b"-----BEGIN X509 CRL-----" not in pem:
        raise _error(
            listener,
            "crlfile",
            f"crlfile '{crlfile}' holds no PEM certificate revocation list (-----BEGIN X509 "
            "CRL-----); give the CA's CRL in PEM form (openssl crl -inform DER -outform PEM)",
        )
    try:
        ctx.load_verify_locations(cafile=crlfile)
    except ssl.SSLError as exc:
        raise _error(
            listener,
            "crlfile",
            f"cannot load the revocation list crlfile '{crlfile}': {exc.reason or exc}; check "
            "the file",
        ) from None
    ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF


def _load_dh_params(ctx: ssl.SSLContext, listener: ListenerConfig, dhparamfile: str) -> None:
    """``dhparamfile``: Diffie-Hellman parameters for the DHE ciphers of TLS 1.2
    (Mosquitto's ``SSL_CTX_set_tmp_dh``)."""
    pem = _check_readable(listener, "dhparamfile", dhparamfile)
    if b"-----BEGIN DH PARAMETERS-----" not in pem:
        raise _error(
            listener,
            "dhparamfile",
            f"dhparamfile '{dhparamfile}' holds no PEM Diffie-Hellman parameters (-----BEGIN DH "
            "PARAMETERS-----); make them with 'openssl dhparam -out FILE 2048'",
        )
    try:
        ctx.load_dh_params(dhparamfile)
    except ssl.SSLError as exc:
        raise _error(
            listener,
            "dhparamfile",
            f"cannot load dhparamfile '{dhparamfile}': {exc.reason or exc}; check the file",
        ) from None


class ServerTls:
    """One TLS listener's contexts.

    ``front`` is given to ``create_server`` once and for all; every handshake then switches to
    ``context``, the certificates currently loaded (the server-name callback runs on every
    ClientHello, with or without SNI). :meth:`reload` builds a new ``context`` from the files, so
    new connections get the new certificate, key and CA certificates while established ones keep
    theirs: Mosquitto's SIGHUP certificate reload, without reopening the listening socket.
    Settings fixed when a connection's TLS object is made (``require_certificate``,
    ``tls_version``, ``ciphers``) need a restart to change, as in Mosquitto.
    """

    def __init__(self, listener: ListenerConfig) -> None:
        self.listener = listener
        self.context = make_context(listener)
        self.front = self.context
        self.front.sni_callback = self._select

    def _select(self, sslobj: Any, server_name: str | None, ctx: ssl.SSLContext) -> None:
        current = self.context
        if current is not ctx:
            sslobj.context = current

    def reload(self, listener: ListenerConfig | None = None) -> None:
        """Read the certificate, key and CA files again (from ``listener``'s paths if given).

        On any problem the ConfigError is raised and the certificates in use stay."""
        new = self.listener if listener is None else listener
        old = self.listener
        for name in (
            "require_certificate",
            "tls_version",
            "ciphers",
            "use_identity_as_username",
            "use_subject_as_username",
        ):
            if getattr(new, name) != getattr(old, name):
                raise _error(new, name, f"changing '{name}' needs a restart of the broker")
        self.context = make_context(new)
        self.listener = new


def peer_username(transport: asyncio.BaseTransport, listener: ListenerConfig) -> str | None:
    """The username a TLS client's certificate gives on a ``use_identity_as_username`` or
    ``use_subject_as_username`` listener, or None when there is none (no certificate, no CN, a CN
    with a NUL character): the connection then refuses the CONNECT as Mosquitto does (0x86).

    ``use_identity_as_username`` takes priority when both are set (mosquitto.conf(5)).
    """
    sslobj = transport.get_extra_info("ssl_object")
    if sslobj is None:
        return None
    cert = sslobj.getpeercert()
    if not cert:
        return None
    subject = cert.get("subject", ())
    if listener.use_identity_as_username:
        for rdn in subject:
            for name, value in rdn:
                if name == "commonName":
                    return None if "\x00" in value else str(value)
        return None
    return rfc2253(subject)


_SHORT_NAMES: dict[str, str] = {}


def _short_name(name: str) -> str:
    """OpenSSL's short name for an attribute (commonName -> CN), as X509_NAME_print_ex's
    XN_FLAG_FN_SN prints it; a dotted OID stays as it is."""
    short = _SHORT_NAMES.get(name)
    if short is None:
        try:
            short = ssl._ASN1Object.fromname(name).shortname or name
        except ValueError:
            short = name
        _SHORT_NAMES[name] = short
    return short


def _escape(value: str) -> str:
    """One attribute value escaped as OpenSSL's ASN1_STRFLGS_RFC2253 does: the value as UTF-8,
    every byte above 0x7F and every control character as ``\\XX``, the RFC 2253 specials
    ``,+"\\<>;`` backslash-escaped, and a leading ``#`` or space and a trailing space too."""
    data = value.encode("utf-8")
    out: list[str] = []
    last = len(data) - 1
    for i, byte in enumerate(data):
        ch = chr(byte)
        if byte > 0x7F or byte < 0x20 or byte == 0x7F:
            out.append(f"\\{byte:02X}")
        elif ch in ',+"\\<>;' or (i == 0 and ch in "# ") or (i == last and ch == " "):
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def rfc2253(subject: Any) -> str:
    """A certificate subject (``getpeercert()["subject"]``: RDNs in certificate order) printed
    as Mosquitto's ``use_subject_as_username`` does (X509_NAME_print_ex with XN_FLAG_RFC2253):
    last RDN first, ``,`` between RDNs, ``+`` inside a multi-valued RDN, short names,
    e.g. ``CN=test client,OU=Production,O=Server,L=Nottingham,ST=Nottinghamshire,C=GB``."""
    entries = [(index, name, value) for index, rdn in enumerate(subject) for name, value in rdn]
    parts: list[str] = []
    previous = -1
    for index, name, value in reversed(entries):
        if parts:
            parts.append("+" if index == previous else ",")
        parts.append(f"{_short_name(name)}={_escape(value)}")
        previous = index
    return "".join(parts)
