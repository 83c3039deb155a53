"""Authentication and authorization from Mosquitto's files: ``password_file``, ``acl_file`` and
``allow_anonymous``, globally or per listener (``per_listener_settings``), with Mosquitto 2's
secure defaults and SIGHUP reload.

CONNECT (Mosquitto 2.0.11, src/security.c and security_default.c; checked on the wire):

- no username: accepted only where anonymous clients are allowed;
- a username with a password file: the user must be in it and the password must match;
- a username without a password file: accepted only where anonymous clients are allowed;
- every refusal is "not authorised": v3 return code 5, v5 reason 0x87 (Mosquitto never sends 4 /
  0x86 for these, so that a client cannot tell an unknown user from a wrong password).

Anonymous clients: with no listener configured (Mosquitto's local-only mode, 127.0.0.1 only)
they are allowed — even if ``allow_anonymous false`` is set, as in Mosquitto 2.0; as soon as a
listener is configured they are refused unless ``allow_anonymous true``. ``midge broker --host
ADDRESS`` without a configuration file binds the local-only listener elsewhere: on an address other
than the loopback, anonymous clients are refused (nothing else can log in, so the broker says so).

Authorization comes from the ACL file (:mod:`midge.auth.acl`); without one every topic is open
(the broker then skips the per-message checks entirely).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from midge.auth.acl import READ, WRITE, AclFile, ClientAcl, load_acl_file
from midge.auth.base import AllowAll, Authenticator, Capability, ConnectRequest, Reloaded
from midge.auth.passwd import PasswordFile, PasswordHash, load_password_file
from midge.codec.reasons import Reason
from midge.config import Config, ListenerConfig

log = logging.getLogger("midge.auth")

_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _is_loopback(host: str | None) -> bool:
    return host is not None and (host in _LOOPBACK or host.startswith("127."))


_Key = tuple[bool | None, str | None, str | None, str | None]


def _key(listener: ListenerConfig) -> _Key:
    """What a listener's security depends on (resolve_listener copies keep all of it)."""
    return (listener.allow_anonymous, listener.password_file, listener.acl_file, listener.host)


@dataclass(slots=True)
class Domain:
    """The security settings of the whole broker, or of one listener (per_listener_settings)."""

    allow_anonymous: bool
    password_file: str | None
    acl_file: str | None
    passwords: PasswordFile | None = None
    acl: AclFile | None = None

    def load(self) -> None:
        """(Re)read the files; a :class:`ConfigError` leaves this domain unchanged."""
        passwords = load_password_file(self.password_file) if self.password_file else None
        acl = load_acl_file(self.acl_file) if self.acl_file else None
        self.passwords, self.acl = passwords, acl


def _domain_for(config: Config, listener: ListenerConfig | None) -> Domain:
    per = config.per_listener_settings and listener is not None
    anon = config.allow_anonymous
    pw, acl = config.password_file, config.acl_file
    if per:
        assert listener is not None
        if listener.allow_anonymous is not None:
            anon = listener.allow_anonymous
        pw = listener.password_file if listener.password_file is not None else pw
        acl = listener.acl_file if listener.acl_file is not None else acl
    if config.local_only:
        host = listener.host if listener is not None else "127.0.0.1"
        if _is_loopback(host):
            anon = True  # Mosquitto 2: local-only mode always allows anonymous clients
        elif anon is None:
            anon = False
    elif anon is None:
        anon = False
    return Domain(anon, pw, acl)


def anonymous_notices(config: Config) -> list[str]:
    """What the operator should know about anonymous access at startup."""
    notices: list[str] = []
    if config.local_only:
        if config.allow_anonymous is False and all(
            _is_loopback(lst.host) for lst in config.listeners
        ):
            notices.append(
                "'allow_anonymous false' has no effect in local-only mode (no listener "
                "configured), as in Mosquitto 2; configure a 'listener' to refuse anonymous "
                "clients"
            )
        for lst in config.listeners:
            if not _is_loopback(lst.host) and not _domain_for(config, lst).allow_anonymous:
                shown = lst.host or "every address"
                notices.append(
                    f"listening on {shown} (not the loopback) with no configured listener: "
                    "anonymous clients are refused (Mosquitto 2's secure default); set "
                    "'allow_anonymous true' and/or a 'password_file' in a configuration file"
                )
    return notices


class FileAuthenticator(Authenticator):
    """:class:`~midge.auth.base.Authenticator` over password/ACL files and allow_anonymous.

    Each client's ACL is compiled once, at CONNECT, for its client id, username and listener,
    and keeps a small cache of decisions (see :class:`midge.auth.acl.ClientAcl`); a reload
    recompiles them. Without an ACL file it provides no publish or read check: the broker then
    skips the per-message calls.
    """

    #: Its name in /metrics (midge_auth_failures_total{backend}).
    backend = "password_file"

    provides = frozenset(
        {
            Capability.CONNECT,
            Capability.PUBLISH,
            Capability.SUBSCRIBE,
            Capability.READ,
            Capability.RELOAD,
            Capability.SESSION_END,
            Capability.SESSION_RESTORED,
        }
    )
    name = "password and ACL files"

    def __init__(self, config: Config) -> None:
        self.per_listener = config.per_listener_settings
        self.local_only = config.local_only
        #: Per listener (per_listener_settings): the listener's key -> its domain. Listeners with
        #: the same settings share one (connections hold copies of the configured listeners).
        self.domains: dict[_Key, Domain] = {}
        self.global_domain = _domain_for(config, None)
        #: Without per_listener_settings the anonymous rule still depends on the listener's
        #: address in local-only mode.
        self.anon_by_listener: dict[_Key, bool] = {}
        #: Per listener: the listener's port -> its domain (check_retain_source names the
        #: listener a retained message came from by its port, as Mosquitto does).
        self.by_port: dict[int, Domain] = {}
        for lst in config.listeners:
            domain = _domain_for(config, lst)
            if self.per_listener:
                domain = self.domains.setdefault(_key(lst), domain)
                self.by_port.setdefault(lst.port, domain)
            else:
                self.anon_by_listener[_key(lst)] = domain.allow_anonymous
        self.load()
        any_acl = any(d.acl_file for d in self._all_domains())
        #: Whether deliveries are read-checked at all (an unknown client then gets nothing).
        self.checks_read = any_acl
        if not any_acl:
            # Nothing to check per message (the broker skips those calls). SUBSCRIBE stays: once
            # per filter, it refuses a client this layer did not authenticate with
            # per_listener_settings (fail closed) and keeps the identity of one it did not.
            self.provides = self.provides - {Capability.PUBLISH, Capability.READ}
        #: True when a later layer of the chain checks usernames and passwords (a plugin:
        #: midge.auth.plugin): a username that no password file knows is left to it (Mosquitto
        #: defers).
        self.usernames_elsewhere = False
        #: client id -> (username, domain, compiled ACL or None, password entry it logged in with)
        self.clients: dict[str, _Client] = {}

    def _all_domains(self) -> list[Domain]:
        return list(self.domains.values()) if self.per_listener else [self.global_domain]

    def load(self) -> list[str]:
        """Read every file (at start and on reload): all or nothing. Returns notices to log."""
        staged = []
        for domain in self._all_domains():
            copy = Domain(domain.allow_anonymous, domain.password_file, domain.acl_file)
            copy.load()  # raises ConfigError: nothing changed
            staged.append((domain, copy))
        notices: list[str] = []
        for domain, copy in staged:
            domain.passwords, domain.acl = copy.passwords, copy.acl
            if copy.acl is not None:
                notices.extend(copy.acl.notices)
        return notices

    # -- the Authenticator capabilities ---------------------------------------------------------

    def _domain(self, listener: ListenerConfig | None) -> Domain | None:
        if not self.per_listener:
            return self.global_domain
        if listener is None:
            return None
        return self.domains.get(_key(listener))

    def _anonymous(self, domain: Domain, listener: ListenerConfig | None) -> bool:
        if self.per_listener or listener is None:
            return domain.allow_anonymous
        return self.anon_by_listener.get(_key(listener), domain.allow_anonymous)

    def authenticate(self, request: ConnectRequest) -> int:
        domain = self._domain(request.listener)
        if domain is None:
            return Reason.NOT_AUTHORIZED
        username = request.username
        entry: PasswordHash | None = None
        if username is None:
            if not self._anonymous(domain, request.listener):
                return Reason.NOT_AUTHORIZED
        elif domain.passwords is not None:
            entry = domain.passwords.users.get(username)
            # A zero-length password never authenticates, whatever the file holds (Mosquitto 2
            # refuses it too, even for a user whose hash is the empty string's).
            if entry is None or not request.password or not entry.verify(request.password):
                return Reason.NOT_AUTHORIZED
        elif not self.usernames_elsewhere and not self._anonymous(domain, request.listener):
            # Mosquitto: without a password file (and no plugin checking passwords) a username
            # proves nothing.
            return Reason.NOT_AUTHORIZED
        acl = domain.acl.for_client(request.client_id, username) if domain.acl else None
        self.clients[request.client_id] = _Client(username, domain, acl, entry)
        return Reason.SUCCESS

    def _acl(self, client_id: str, username: str | None) -> ClientAcl | bool | None:
        """The client's compiled ACL; None: no ACL (everything allowed); False: unknown client
        (refused: fail closed)."""
        client = self.clients.get(client_id)
        if client is None or client.username != username:
            # Not authenticated here (another layer did it: SCRAM, a plugin), or a will of a
            # connection since taken over: the global rules for this identity, kept so that
            # deliveries to it are read-checked too. Per listener there is no telling which.
            if self.per_listener:
                return False
            domain = self.global_domain
            acl = domain.acl.for_client(client_id, username) if domain.acl else None
            if client is None:
                self.clients[client_id] = _Client(username, domain, acl, None)
            return acl
        return client.acl

    def can_publish(self, client_id: str, username: str | None, topic: str) -> bool:
        acl = self._acl(client_id, username)
        if acl is None:
            return True
        if acl is False:
            return False
        assert isinstance(acl, ClientAcl)
        return acl.allowed(topic, WRITE)

    def source_can_publish(
        self, client_id: str, username: str | None, port: int | None, topic: str
    ) -> bool:
        """The ACL of that identity on that listener, compiled afresh (its client may be gone;
        nothing is kept). Per listener, an unknown listener is refused (as Mosquitto does)."""
        if self.per_listener:
            found = self.by_port.get(port) if port is not None else None
            if found is None:
                return False
            domain = found
        else:
            domain = self.global_domain
        if domain.acl is None:
            return True
        return domain.acl.for_client(client_id, username).allowed(topic, WRITE)

    def can_subscribe(self, client_id: str, username: str | None, topic_filter: str) -> bool:
        """An ACL file refuses no filter, as Mosquitto 2 (security_default.c): deliveries are
        read-checked instead (:meth:`can_read`). A subscriber that another layer authenticated
        (SCRAM, a plugin) is registered here under its identity, so that its deliveries are
        read-checked with its rules; with per_listener_settings there is no telling which
        listener's rules apply: refused (fail closed)."""
        client = self.clients.get(client_id)
        if client is not None and client.username == username:
            return True
        if self.per_listener:
            return False
        domain = self.global_domain
        acl = domain.acl.for_client(client_id, username) if domain.acl else None
        self.clients[client_id] = _Client(username, domain, acl, None)
        return True

    def session_restored(self, client_id: str, username: str | None) -> None:
        """A persistent session came back from disk (its client not connected yet): its
        deliveries are read-checked as ``username``, the user its client last authenticated as.
        With per_listener_settings there is no telling which listener's rules: none are given,
        and it gets nothing until its client is back (fail closed)."""
        if self.per_listener:
            return
        domain = self.global_domain
        acl = domain.acl.for_client(client_id, username) if domain.acl else None
        self.clients[client_id] = _Client(username, domain, acl, None)

    def can_read(self, client_id: str, topic: str) -> bool:
        """Delivery of a message on ``topic`` to the client as it last authenticated (an unknown
        client gets nothing: with per_listener_settings, a session restored from disk whose
        client has not reconnected)."""
        client = self.clients.get(client_id)
        if client is None:
            return not self.checks_read
        acl = client.acl
        return acl is None or acl.allowed(topic, READ)

    def session_ended(self, client_id: str) -> None:
        """The client's session ended: drop what was kept for it."""
        self.clients.pop(client_id, None)

    # -- reload ------------------------------------------------------------------------------------

    def reconfigure(self, config: Config) -> str | None:
        """SIGHUP with a changed ``allow_anonymous``, ``password_file`` or ``acl_file`` (the
        global ones): take the new settings, reading the new files first (a ConfigError
        changes nothing). None when done; otherwise why it needs a restart (per-listener
        settings, or an ACL file added where there was none: the per-message checks are
        chosen at start)."""
        if self.per_listener or config.per_listener_settings:
            return "per_listener_settings: security settings are read at start"
        new = _domain_for(config, None)
        old = self.global_domain
        if (old.acl_file is None) != (new.acl_file is None):
            return "an ACL file added or removed: the per-message checks are chosen at start"
        new.load()  # ConfigError: nothing changed
        old.allow_anonymous, old.password_file, old.acl_file = (
            new.allow_anonymous,
            new.password_file,
            new.acl_file,
        )
        old.passwords, old.acl = new.passwords, new.acl
        self.local_only = config.local_only
        for lst in config.listeners:
            self.anon_by_listener[_key(lst)] = _domain_for(config, lst).allow_anonymous
        return None

    def reload(self) -> Reloaded:
        """Re-read the files (SIGHUP). Revoked: the clients whose user is gone or whose password
        entry changed. Raises ConfigError (nothing changed)."""
        notices = self.load()
        revoked: list[str] = []
        for client_id, client in list(self.clients.items()):
            domain = client.domain
            if client.username is None and not domain.allow_anonymous and not self.local_only:
                # As Mosquitto's reload: an anonymous client that is no longer allowed goes.
                revoked.append(client_id)
                del self.clients[client_id]
                continue
            if client.username is not None and domain.passwords is not None:
                entry = domain.passwords.users.get(client.username)
                if entry is None or entry != client.entry:
                    revoked.append(client_id)
                    del self.clients[client_id]
                    continue
            acl = domain.acl
            client.acl = acl.for_client(client_id, client.username) if acl else None
        return Reloaded(notices, revoked)


@dataclass(slots=True)
class _Client:
    username: str | None
    domain: Domain
    acl: ClientAcl | None
    entry: PasswordHash | None


def needs_files(config: Config) -> bool:
    """Whether the configuration asks for anything AllowAll would not do."""
    if config.password_file or config.acl_file:
        return True
    for lst in config.listeners:
        if lst.password_file or lst.acl_file:
            return True
        if not _domain_for(config, lst).allow_anonymous:
            return True
    return False


def build_authenticator(config: Config) -> Authenticator:
    """The authenticator ``config`` describes: :class:`AllowAll` when it asks for nothing (every
    client anonymous-allowed, no files), otherwise a :class:`FileAuthenticator` (the files are
    read now: a bad line raises :class:`~midge.config.ConfigError` naming it)."""
    if not needs_files(config):
        return AllowAll()
    return FileAuthenticator(config)
