"""Persistence options (issue 5): Mosquitto's names and midge's, in both readers, and the
command line's durable default."""

from __future__ import annotations

import pytest

from midge.cli import _durable_by_default
from midge.cluster.workers import worker_db_name
from midge.config import Config, ConfigError, parse_mosquitto_conf, parse_toml


def test_defaults_keep_config_usable_in_tests() -> None:
    """``Config()`` writes nothing anywhere: no data_dir until the CLI gives ./data."""
    c = Config()
    assert c.data_dir is None and c.durability == "fsync"


def test_cli_default_is_sqlite_in_data() -> None:
    c = Config()
    _durable_by_default(c)
    assert c.data_dir == "./data" and c.durability == "fsync"


def test_cli_keeps_memory_when_persistence_is_off() -> None:
    c = parse_mosquitto_conf("persistence false\n")
    _durable_by_default(c)
    assert c.durability == "none" and c.data_dir is None


def test_cli_workers_are_durable_by_default_too() -> None:
    c = Config(workers=3)
    _durable_by_default(c)
    assert c.durability != "none" and c.data_dir == "./data"
    assert c.persistence_file == "midge.db" and not c.notices


def test_cli_workers_keep_an_explicit_data_dir_and_persistence_file() -> None:
    c = Config(workers=2, data_dir="/var/lib/midge")
    _durable_by_default(c)
    assert c.data_dir == "/var/lib/midge"
    c = parse_mosquitto_conf("workers 2\npersistence true\npersistence_file m.db\n")
    _durable_by_default(c)
    assert c.persistence_file == "m.db" and c.durability != "none"


def test_worker_database_names() -> None:
    assert worker_db_name("midge.db", 0) == "midge.db"
    assert worker_db_name("midge.db", 2) == "midge-w2.db"
    assert worker_db_name("sub/mosquitto.db", 1) == "sub/mosquitto-w1.db"
    assert worker_db_name("state", 3) == "state-w3"


@pytest.mark.parametrize(
    ("text", "durability", "data_dir"),
    [
        ("persistence true\n", "fsync", None),
        ("persistence false\n", "none", None),
        (
            "persistence true\npersistence_location /var/lib/mosquitto/\n",
            "fsync",
            "/var/lib/mosquitto/",
        ),
        ("retained_persistence false\n", "none", None),
        ("durability os\ndata_dir /srv/midge\n", "os", "/srv/midge"),
        ("durability none\npersistence true\n", "fsync", None),
    ],
)
def test_mosquitto_conf(text: str, durability: str, data_dir: str | None) -> None:
    c = parse_mosquitto_conf(text)
    assert (c.durability, c.data_dir) == (durability, data_dir)


@pytest.mark.parametrize(
    ("text", "durability", "data_dir"),
    [
        ("persistence = false\n", "none", None),
        ('persistence = true\npersistence_location = "/m"\n', "fsync", "/m"),
        ('durability = "os"\ndata_dir = "/d"\n', "os", "/d"),
        ('durability = "none"\n', "none", None),
    ],
)
def test_toml(text: str, durability: str, data_dir: str | None) -> None:
    c = parse_toml(text)
    assert (c.durability, c.data_dir) == (durability, data_dir)


def test_bad_durability_is_named() -> None:
    with pytest.raises(ConfigError, match=r"test\.conf:1: durability: invalid value .sometimes."):
        parse_mosquitto_conf("durability sometimes\n", "test.conf")
    with pytest.raises(ConfigError, match=r"test\.toml:1: durability: invalid value .x."):
        parse_toml('durability = "x"\n', "test.toml")


def test_autosave_options_are_accepted_with_a_notice() -> None:
    c = parse_mosquitto_conf(
        "persistence true\nautosave_interval 1800\nautosave_on_changes false\n", "m.conf"
    )
    assert len(c.notices) == 2 and "autosave_interval" in c.notices[0]
    assert "group commit" in c.notices[0]
    assert c.durability == "fsync"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "listener 1883\nallow_anonymous true\n",
        "persistence_location /var/lib/mosquitto/\n",
        "autosave_interval 60\n",
    ],
)
def test_mosquitto_conf_without_persistence_true_keeps_nothing(text: str) -> None:
    """Issue 11: Mosquitto's default is ``persistence false``, and so is midge's under a conf."""
    c = parse_mosquitto_conf(text)
    _durable_by_default(c)
    assert c.durability == "none"


def test_location_without_persistence_says_it_has_no_effect() -> None:
    c = parse_mosquitto_conf(
        "persistence_location /var/lib/mosquitto/\npersistence_file m.db\n", "m.conf"
    )
    assert c.durability == "none"
    assert [n.split(": ", 1)[0] for n in c.notices] == ["m.conf:1", "m.conf:2"]
    assert "'persistence_location' has no effect" in c.notices[0]
    assert "persistence true" in c.notices[0]


@pytest.mark.parametrize(
    ("text", "durability", "data_dir", "db_file"),
    [
        # Mosquitto's defaults: mosquitto.db in the current directory.
        ("persistence true\n", "fsync", ".", "mosquitto.db"),
        (
            "persistence true\npersistence_location /var/lib/m/\npersistence_file s.db\n",
            "fsync",
            "/var/lib/m/",
            "s.db",
        ),
        ("retained_persistence true\npersistence_file s.db\n", "fsync", ".", "s.db"),
        # midge's own options turn it on too, and keep their meaning.
        ("durability os\ndata_dir /srv/midge\n", "os", "/srv/midge", "mosquitto.db"),
        ("durability fsync\n", "fsync", ".", "mosquitto.db"),
        ("persistence true\npersistence false\n", "none", None, None),
        ("persistence true\ndurability none\n", "none", None, None),
    ],
)
def test_cli_under_mosquitto_conf(
    text: str, durability: str, data_dir: str | None, db_file: str | None
) -> None:
    c = parse_mosquitto_conf(text)
    _durable_by_default(c)
    assert (c.durability, c.data_dir, c.persistence_file) == (durability, data_dir, db_file)


@pytest.mark.parametrize(
    ("text", "data_dir", "db_file"),
    [
        ("", "./data", "midge.db"),
        ('persistence_file = "x.db"\n', "./data", "x.db"),
        ('persistence_location = "/m"\n', "/m", "midge.db"),
    ],
)
def test_cli_under_toml_stays_durable(text: str, data_dir: str, db_file: str) -> None:
    c = parse_toml(text)
    _durable_by_default(c)
    assert (c.durability, c.data_dir, c.persistence_file) == ("fsync", data_dir, db_file)


def test_persistence_file_given_twice_is_an_error() -> None:
    with pytest.raises(ConfigError, match="given twice"):
        parse_mosquitto_conf("persistence_file a.db\npersistence_file b.db\n")


def test_data_dir_given_twice_is_an_error() -> None:
    with pytest.raises(ConfigError, match="given twice"):
        parse_mosquitto_conf("persistence_location /a/\ndata_dir /b\n")


@pytest.mark.parametrize("name", ["retry_interval"])
def test_options_mosquitto_ignores_are_accepted_with_a_notice(name: str) -> None:
    """Issue 11: ``retry_interval`` (Mosquitto 2 ignores it) starts midge, in both formats,
    with a notice naming the file and line; bad values are still
    refused with the file and line."""
    c = parse_mosquitto_conf(f"{name} 3\n", "m.conf")
    assert c.notices == [c.notices[0]] and c.notices[0].startswith(f"m.conf:1: {name} is ")
    t = parse_toml(f"{name} = 3\n", "m.toml")
    assert len(t.notices) == 1 and t.notices[0].startswith(f"m.toml: {name} is ")
    with pytest.raises(ConfigError, match=f"m.conf:2: .*{name}"):
        parse_mosquitto_conf(f"# x\n{name} -1\n", "m.conf")
