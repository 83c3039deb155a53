"""allow_anonymous, password_file, acl_file and per_listener_settings in both readers, and
Mosquitto 2's secure defaults."""

from __future__ import annotations

import pytest

from midge.auth.base import AllowAll
from midge.auth.files import FileAuthenticator, _domain_for, build_authenticator
from midge.config import Config, ConfigError, ListenerConfig, parse_mosquitto_conf, parse_toml


def test_global_options_in_mosquitto_conf_apply_everywhere() -> None:
    c = parse_mosquitto_conf(
        "listener 1883\nallow_anonymous true\nlistener 1884\npassword_file /p\nacl_file /a\n"
    )
    assert (c.allow_anonymous, c.password_file, c.acl_file) == (True, "/p", "/a")
    assert all(lst.password_file is None for lst in c.listeners)


def test_per_listener_settings_in_mosquitto_conf() -> None:
    c = parse_mosquitto_conf(
        "per_listener_settings true\n"
        "listener 1883\nallow_anonymous true\n"
        "listener 1884\npassword_file /p\nacl_file /a\n"
    )
    first, second = c.listeners
    assert (first.allow_anonymous, first.password_file) == (True, None)
    assert (second.allow_anonymous, second.password_file, second.acl_file) == (None, "/p", "/a")
    assert c.password_file is None
    assert _domain_for(c, first).allow_anonymous is True
    assert _domain_for(c, second).allow_anonymous is False  # a configured listener: refused


def test_per_listener_settings_must_come_first() -> None:
    with pytest.raises(ConfigError, match=r"test.conf:2: per_listener_settings: must be set"):
        parse_mosquitto_conf("password_file /p\nper_listener_settings true\n", "test.conf")


def test_string_options_given_twice_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"test.conf:2: password_file: given twice"):
        parse_mosquitto_conf("password_file /a\npassword_file /b\n", "test.conf")


def test_toml_options() -> None:
    c = parse_toml('allow_anonymous = false\npassword_file = "/p"\nacl_file = "/a"\n')
    assert (c.allow_anonymous, c.password_file, c.acl_file) == (False, "/p", "/a")
    c = parse_toml(
        "per_listener_settings = true\n"
        "[[listener]]\nport = 1883\nallow_anonymous = true\n"
        '[[listener]]\nport = 1884\npassword_file = "/p"\n'
    )
    assert c.listeners[0].allow_anonymous is True and c.listeners[1].password_file == "/p"
    with pytest.raises(ConfigError, match="needs per_listener_settings = true"):
        parse_toml('[[listener]]\nport = 1883\nacl_file = "/a"\n', "t.toml")
    with pytest.raises(ConfigError, match="'allow_anonymous' must be true or false"):
        parse_toml('allow_anonymous = "yes"\n')


def test_secure_defaults_as_mosquitto_2() -> None:
    local = Config()  # no listener configured: local-only mode on 127.0.0.1
    assert local.local_only and _domain_for(local, local.listeners[0]).allow_anonymous
    assert isinstance(build_authenticator(local), AllowAll)
    # local-only mode allows anonymous clients even if told otherwise (Mosquitto 2.0.11)
    forced = Config(allow_anonymous=False)
    assert _domain_for(forced, forced.listeners[0]).allow_anonymous
    configured = parse_mosquitto_conf("listener 1883\n")
    assert not _domain_for(configured, configured.listeners[0]).allow_anonymous
    assert isinstance(build_authenticator(configured), FileAuthenticator)
    opened = parse_mosquitto_conf("listener 1883\nallow_anonymous true\n")
    assert isinstance(build_authenticator(opened), AllowAll)
    # midge broker --host 0.0.0.0 without a configuration: not the loopback, so refused
    wide = Config(listeners=[ListenerConfig(port=1883, host="0.0.0.0")])
    assert not _domain_for(wide, wide.listeners[0]).allow_anonymous


def test_security_option_on_an_uncreated_default_listener_is_an_error() -> None:
    with pytest.raises(ConfigError, match="'acl_file' before any 'listener' line"):
        parse_mosquitto_conf("per_listener_settings true\nacl_file /a\n")
