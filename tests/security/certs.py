"""Certificates made by a test, with ``cryptography``: a CA, a server certificate for
127.0.0.1/localhost, client certificates with chosen subjects, an untrusted CA, an expired one.

Keys are ECDSA P-256 (fast to make; every client here speaks it). :class:`Pki` writes everything
as PEM files in a directory and returns their paths, which is what brokers and the Mosquitto
tools take.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Key = ec.EllipticCurvePrivateKey

_NAME_OIDS = {
    "CN": NameOID.COMMON_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "L": NameOID.LOCALITY_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "C": NameOID.COUNTRY_NAME,
    "emailAddress": NameOID.EMAIL_ADDRESS,
    "DC": NameOID.DOMAIN_COMPONENT,
    "serialNumber": NameOID.SERIAL_NUMBER,
}


def name(*rdns: tuple[str, str] | list[tuple[str, str]]) -> x509.Name:
    """An X.509 name from RDNs in certificate order (outermost first): ``("C", "GB")``, or a list
    of pairs for a multi-valued RDN."""
    result = []
    for rdn in rdns:
        pairs = rdn if isinstance(rdn, list) else [rdn]
        result.append(
            x509.RelativeDistinguishedName([x509.NameAttribute(_NAME_OIDS[k], v) for k, v in pairs])
        )
    return x509.Name(result)


def new_key() -> Key:
    return ec.generate_private_key(ec.SECP256R1())


def issue(
    subject: x509.Name,
    key: Key,
    issuer: x509.Certificate | None,
    issuer_key: Key,
    *,
    ca: bool = False,
    server: bool = False,
    days: tuple[int, int] = (-1, 30),
) -> x509.Certificate:
    """A certificate for ``subject``/``key`` signed by ``issuer_key`` (self-signed when
    ``issuer`` is None), valid from ``days[0]`` to ``days[1]`` days from now."""
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if issuer is None else issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + datetime.timedelta(days=days[0]))
        .not_valid_after(now + datetime.timedelta(days=days[1]))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
        )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def write_cert(path: Path, *certs: x509.Certificate) -> str:
    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))
    return str(path)


def write_key(path: Path, key: Key, passphrase: bytes | None = None) -> str:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
    path.chmod(0o600)
    return str(path)


class Pki:
    """A CA, a server certificate it signed (``server_cert``/``server_key``), and on demand client
    certificates (:meth:`client`); ``other_ca`` is a second CA the broker does not trust."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.ca_key = new_key()
        self.ca = issue(
            name(("O", "midge tests"), ("CN", "midge test CA")),
            self.ca_key,
            None,
            self.ca_key,
            ca=True,
        )
        self.cafile = write_cert(directory / "ca.crt", self.ca)
        server_key = new_key()
        server = issue(name(("CN", "localhost")), server_key, self.ca, self.ca_key, server=True)
        self.server_cert = write_cert(directory / "server.crt", server)
        self.server_key = write_key(directory / "server.key", server_key)
        self.other_ca_key = new_key()
        self.other_ca = issue(
            name(("CN", "untrusted CA")), self.other_ca_key, None, self.other_ca_key, ca=True
        )
        self.other_cafile = write_cert(directory / "other-ca.crt", self.other_ca)

    def client(
        self,
        file_stem: str,
        subject: x509.Name,
        *,
        untrusted: bool = False,
        days: tuple[int, int] = (-1, 30),
    ) -> tuple[str, str]:
        """(certfile, keyfile) of a client certificate for ``subject``."""
        key = new_key()
        if untrusted:
            cert = issue(subject, key, self.other_ca, self.other_ca_key, days=days)
        else:
            cert = issue(subject, key, self.ca, self.ca_key, days=days)
        return (
            write_cert(self.dir / f"{file_stem}.crt", cert),
            write_key(self.dir / f"{file_stem}.key", key),
        )

    def server(self, file_stem: str, cn: str = "localhost") -> tuple[str, str]:
        """Another server certificate (certfile, keyfile), e.g. for a reload."""
        key = new_key()
        cert = issue(name(("CN", cn)), key, self.ca, self.ca_key, server=True)
        return (
            write_cert(self.dir / f"{file_stem}.crt", cert),
            write_key(self.dir / f"{file_stem}.key", key),
        )

    def crl(self, file_stem: str, *revoked_certfiles: str) -> str:
        """A PEM certificate revocation list of the CA revoking those client certificates
        (``crlfile``)."""
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.ca.subject)
            .last_update(now - datetime.timedelta(days=1))
            .next_update(now + datetime.timedelta(days=30))
        )
        for certfile in revoked_certfiles:
            cert = x509.load_pem_x509_certificate(Path(certfile).read_bytes())
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(cert.serial_number)
                .revocation_date(now - datetime.timedelta(hours=1))
                .build()
            )
        crl = builder.sign(self.ca_key, hashes.SHA256())
        path = self.dir / f"{file_stem}.crl"
        path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
        return str(path)
