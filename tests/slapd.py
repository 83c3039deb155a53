"""A real OpenLDAP ``slapd`` for the LDAP backend's tests: started on a free 127.0.0.1 port as an
unprivileged process, from a ``slapd.conf`` (``-f``) in a temporary directory, with a small
directory loaded by ``slapadd``; stopped (and its files removed) by :meth:`Slapd.stop`.

Optionally with TLS (a test CA and a server certificate for ``localhost``/127.0.0.1 made by
``openssl``): the same port then offers StartTLS, and a second port answers ``ldaps://``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.procbroker import free_port

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
MODULE_DIR = "/usr/lib/ldap"
SCHEMA_DIR = "/etc/ldap/schema"
SUFFIX = "dc=example,dc=org"
ADMIN_DN = f"cn=admin,{SUFFIX}"
ADMIN_PASSWORD = "adminpw"
SERVICE_DN = f"cn=mqtt,ou=services,{SUFFIX}"
SERVICE_PASSWORD = "servicepw"

#: user -> password; groups: sensors (alice, carol), ops (bob), admins (posixGroup: carol)
USERS = {"alice": "alicepw", "bob": "bobpw", "carol": "carolpw", "dave": "davepw"}

DIRECTORY = (
    f"""\
dn: {SUFFIX}
objectClass: dcObject
objectClass: organization
dc: example
o: Example

dn: ou=people,{SUFFIX}
objectClass: organizationalUnit
ou: people

dn: ou=groups,{SUFFIX}
objectClass: organizationalUnit
ou: groups

dn: ou=services,{SUFFIX}
objectClass: organizationalUnit
ou: services

dn: {SERVICE_DN}
objectClass: person
cn: mqtt
sn: mqtt
userPassword: {SERVICE_PASSWORD}
"""
    + "".join(
        f"""
dn: uid={user},ou=people,{SUFFIX}
objectClass: inetOrgPerson
uid: {user}
cn: {user.title()}
sn: {user.title()}
userPassword: {password}
"""
        for user, password in USERS.items()
    )
    + f"""
dn: cn=sensors,ou=groups,{SUFFIX}
objectClass: groupOfNames
cn: sensors
member: uid=alice,ou=people,{SUFFIX}
member: uid=carol,ou=people,{SUFFIX}

dn: cn=ops,ou=groups,{SUFFIX}
objectClass: groupOfNames
cn: ops
member: uid=bob,ou=people,{SUFFIX}

dn: cn=admins,ou=groups,{SUFFIX}
objectClass: posixGroup
cn: admins
gidNumber: 5000
memberUid: carol
"""
)


def available() -> str | None:
    """None if slapd can run here, else why not (for a skip)."""
    for tool in (SLAPD, SLAPADD):
        if not os.access(tool, os.X_OK):
            return f"{tool} not installed (make debs installs slapd and ldap-utils)"
    if not os.path.exists(os.path.join(MODULE_DIR, "back_mdb.so")):
        return f"{MODULE_DIR}/back_mdb.so missing (Debian's slapd package provides it)"
    return None


def make_ca(directory: Path) -> tuple[Path, Path, Path]:
    """(CA certificate, server certificate for localhost and 127.0.0.1, server key)."""
    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    key, csr, crt = directory / "server.key", directory / "server.csr", directory / "server.crt"
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            "/CN=midge test LDAP CA", "-keyout", str(ca_key), "-out", str(ca_crt))  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
            "-keyout", str(key), "-out", str(csr))  # fmt: skip
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
            "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(crt))  # fmt: skip
    return ca_crt, crt, key


def listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` has a socket listening on 127.0.0.1:``port`` (Linux /proc)."""
    local = f"0100007F:{port:04X}"
    inodes = set()
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[1] == local and fields[3] == "0A":  # LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return False
    fds = f"/proc/{pid}/fd"
    with contextlib.suppress(OSError):
        for fd in os.listdir(fds):
            with contextlib.suppress(OSError):
                if os.readlink(f"{fds}/{fd}") in inodes:
                    return True
    return False


class Slapd:
    def __init__(self, tls: bool = False) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="midge-slapd-"))
        self.port = free_port()
        self.ldaps_port = free_port() if tls else 0
        self.url = f"ldap://127.0.0.1:{self.port}"
        self.ldaps_url = f"ldaps://localhost:{self.ldaps_port}" if tls else ""
        self.ca_file: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.tls = tls
        #: The ports, bound while slapd is paused (see :meth:`pause`).
        self._held: list[socket.socket] = []

    def start(self) -> Slapd:
        data = self.dir / "data"
        data.mkdir()
        tls_lines = ""
        if self.tls:
            self.ca_file, crt, key = make_ca(self.dir)
            tls_lines = (
                f"TLSCACertificateFile {self.ca_file}\n"
                f"TLSCertificateFile {crt}\nTLSCertificateKeyFile {key}\n"
            )
        conf = self.dir / "slapd.conf"
        conf.write_text(
            "".join(
                f"include {SCHEMA_DIR}/{s}.schema\n"
                for s in ("core", "cosine", "inetorgperson", "nis")
            )
            + f"modulepath {MODULE_DIR}\nmoduleload back_mdb\n"
            + f"pidfile {self.dir}/slapd.pid\nargsfile {self.dir}/slapd.args\n"
            + tls_lines
            + f'database mdb\nmaxsize 10485760\nsuffix "{SUFFIX}"\nrootdn "{ADMIN_DN}"\n'
            + f"rootpw {ADMIN_PASSWORD}\ndirectory {data}\n"
            + "access to attrs=userPassword by anonymous auth by self read by * none\n"
            + "access to * by users read by anonymous read\n"
        )
        ldif = self.dir / "directory.ldif"
        ldif.write_text(DIRECTORY)
        subprocess.run(
            [SLAPADD, "-f", str(conf), "-l", str(ldif)], check=True, capture_output=True, timeout=30
        )
        urls = self.url + (f" ldaps://127.0.0.1:{self.ldaps_port}" if self.tls else "")
        self.command = [SLAPD, "-d", "0", "-f", str(conf), "-h", urls]
        if os.geteuid() == 0:
            # Never as root: the files go to nobody, slapd drops to it after opening the ports.
            os.chmod(self.dir, 0o755)
            for path in [self.dir, *self.dir.rglob("*")]:
                os.chown(path, 65534, 65534)
            self.command += ["-u", "nobody", "-g", "nogroup"]
        self.resume()
        return self

    def ports(self) -> list[int]:
        return [self.port, self.ldaps_port] if self.tls else [self.port]

    def resume(self) -> None:
        """Start slapd (again, after :meth:`pause`) on the same port and data. Started means
        that this slapd listens on its ports: another process's listener on a port we lost
        (another test's server, picked while ours was paused) must not pass for ours."""
        for held in self._held:
            held.close()
        self._held = []
        self.proc = subprocess.Popen(
            self.command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 15
        while not all(listens(self.proc.pid, port) for port in self.ports()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                self.stop()
                raise RuntimeError(f"slapd did not start: {err[-2000:]}")
            time.sleep(0.05)

    def pause(self) -> None:
        """Stop the slapd process, keeping its files for :meth:`resume`, and its ports: each
        stays bound (not listening: a connection is refused, as with no server) until
        :meth:`resume`, so that no other test picks it meanwhile (:func:`free_port`)."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc is not None and proc.stderr is not None:
            proc.stderr.close()
        for port in self.ports():
            held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                held.bind(("127.0.0.1", port))
            except OSError:
                held.close()  # taken already: resume says so
                continue
            self._held.append(held)

    def freeze(self, frozen: bool) -> None:
        """SIGSTOP / SIGCONT: a server that accepts connections and never answers."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP if frozen else signal.SIGCONT)

    def modify(self, ldif: str) -> None:
        """Change the directory as its administrator (ldapmodify)."""
        subprocess.run(
            ["ldapmodify", "-x", "-H", self.url, "-D", ADMIN_DN, "-w", ADMIN_PASSWORD],
            input=ldif.encode(),
            check=True,
            capture_output=True,
            timeout=10,
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGCONT)
        self.pause()
        for held in self._held:
            held.close()
        self._held = []
        shutil.rmtree(self.dir, ignore_errors=True)
