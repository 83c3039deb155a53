"""Password files: Mosquitto's format read and written, both ways with the real tools."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import pytest

from midge.auth.passwd import (
    DEFAULT_ITERATIONS,
    hash_password,
    load_password_file,
    parse_password_file,
)
from midge.config import ConfigError
from tests.procbroker import free_port, run_midge

MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd")
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
needs_tools = pytest.mark.skipif(
    MOSQUITTO_PASSWD is None, reason="mosquitto_passwd is not installed (make debs)"
)


def mosquitto_passwd(*args: str) -> None:
    assert MOSQUITTO_PASSWD is not None
    subprocess.run([MOSQUITTO_PASSWD, *args], check=True, timeout=10, capture_output=True)


def midge_passwd(*args: str) -> subprocess.CompletedProcess[str]:
    return run_midge(["passwd", *args], timeout=20)


@needs_tools
def test_reads_files_written_by_mosquitto_passwd(tmp_path: Path) -> None:
    path = str(tmp_path / "passwd")
    mosquitto_passwd("-c", "-b", path, "alice", "wonder land")
    mosquitto_passwd("-b", path, "bob", "b0b")
    mosquitto_passwd("-H", "sha512", "-b", path, "carol", "old-style")  # $6$
    mosquitto_passwd("-I", "1000", "-b", path, "dave", "many rounds")
    text = Path(path).read_text()
    assert "carol:$6$" in text and "dave:$7$1000$" in text
    pw = load_password_file(path)
    assert pw.check("alice", b"wonder land")
    assert pw.check("bob", b"b0b")
    assert pw.check("carol", b"old-style")
    assert pw.check("dave", b"many rounds")
    assert not pw.check("alice", b"wonder")
    assert not pw.check("alice", None)
    assert not pw.check("eve", b"b0b")


def test_written_hash_has_mosquittos_shape() -> None:
    entry = hash_password(b"secret")
    kind, iterations, salt, digest = entry.encode().split("$")[1:]
    assert (kind, iterations) == ("7", str(DEFAULT_ITERATIONS))
    assert len(base64.b64decode(salt)) == 12 and len(base64.b64decode(digest)) == 64
    assert entry.verify(b"secret") and not entry.verify(b"Secret")
    assert hash_password(b"x", kind=6).encode().startswith("$6$")


def _mosquitto_accepts(path: str, user: str, password: str, tmp_path: Path) -> int:
    """Start the real mosquitto with ``path`` as password_file; mosquitto_pub's exit status."""
    port = free_port()
    conf = tmp_path / "m.conf"
    conf.write_text(f"listener {port} 127.0.0.1\npassword_file {path}\n")
    broker = subprocess.Popen(
        [MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        code = 1
        for _ in range(50):  # until it listens (bounded: 5 s)
            # fmt: off
            result = subprocess.run(
                ["mosquitto_pub", "-p", str(port), "-u", user, "-P", password, "-t", "t", "-m", ""],
                capture_output=True,
                timeout=10,
                check=False,
            )
            # fmt: on
            code = result.returncode
            if b"refused" not in result.stderr or b"not authori" in result.stderr:
                break
            subprocess.run(["sleep", "0.1"], check=True)
        return code
    finally:
        broker.terminate()
        broker.wait(10)


@needs_tools
def test_mosquitto_reads_files_written_by_midge_passwd(shared_dir: Path) -> None:
    tmp_path = shared_dir
    path = tmp_path / "passwd"
    assert midge_passwd("-c", "-b", str(path), "alice", "pw-a").returncode == 0
    assert midge_passwd("-b", str(path), "bob", "pw-b").returncode == 0
    assert midge_passwd("-H", "sha512", "-b", str(path), "carol", "pw-c").returncode == 0
    path.chmod(0o644)  # mosquitto started as root reads it as the 'mosquitto' user
    assert _mosquitto_accepts(str(path), "alice", "pw-a", tmp_path) == 0
    assert _mosquitto_accepts(str(path), "bob", "pw-b", tmp_path) == 0
    assert _mosquitto_accepts(str(path), "carol", "pw-c", tmp_path) == 0
    assert _mosquitto_accepts(str(path), "alice", "pw-b", tmp_path) == 5  # not authorised


def test_midge_passwd_update_delete_and_plain_text(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    assert midge_passwd("-c", "-b", str(path), "alice", "one").returncode == 0
    assert midge_passwd("-b", str(path), "bob", "two").returncode == 0
    first = path.read_text()
    assert midge_passwd("-b", str(path), "alice", "three").returncode == 0  # update in place
    pw = load_password_file(str(path))
    assert list(pw.users) == ["alice", "bob"]
    assert pw.check("alice", b"three") and pw.check("bob", b"two")
    assert first.splitlines()[1] == path.read_text().splitlines()[1]  # bob untouched
    result = midge_passwd("-D", str(path), "alice")
    assert result.returncode == 0
    assert list(load_password_file(str(path)).users) == ["bob"]
    result = midge_passwd("-D", str(path), "alice")
    assert result.returncode == 1 and "User alice not found" in result.stderr
    plain = tmp_path / "plain"
    plain.write_text("# comment\ncarol:c-pw\ndave : d pw \n")
    with pytest.raises(ConfigError, match="not hashed; hash the file with 'midge passwd -U"):
        load_password_file(str(plain))
    assert midge_passwd("-U", str(plain)).returncode == 0
    pw = load_password_file(str(plain))
    assert pw.check("carol", b"c-pw") and pw.check("dave", b"d pw")
    assert plain.read_text().startswith("# comment\n")
    again = midge_passwd("-U", str(plain))
    assert again.returncode == 1 and "already hashed" in again.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-c", "-D", "f", "u"], "-c and -D cannot be used together."),
        (["-b", "-D", "f", "u"], "-b and -D cannot be used together."),
        (["-c", "-b", "f", "u"], "-c argument given but password file, username, or password"),
        (["-b", "f", "a:b", "pw"], "Username must not contain the ':' character."),
        (["-H", "md5", "f", "u"], "Unknown hash type 'md5'"),
        (["-I", "0", "f", "u"], "Number of iterations must be > 0."),
    ],
)
def test_midge_passwd_refuses_like_mosquitto_passwd(args: list[str], message: str) -> None:
    result = midge_passwd(*args)
    assert result.returncode == 1
    assert message in result.stderr


def test_midge_passwd_without_a_terminal_fails_cleanly(tmp_path: Path) -> None:
    """No -b: the password is asked on the terminal; with none (CI) it fails, no traceback."""
    result = midge_passwd("-c", str(tmp_path / "p"), "alice")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "p").exists()


def _b64(n: int) -> str:
    return base64.b64encode(bytes(n)).decode()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("alice", "expected USERNAME:HASH"),
        (":$7$101$x$y", "empty username"),
        ("alice:", "no password hash for user 'alice'"),
        ("alice:secret", "not hashed; hash the file with 'midge passwd -U"),
        ("alice:$5$abc$def", "unknown hash type '$5$'"),
        (f"alice:$7$0${_b64(12)}${_b64(64)}", "invalid iteration count '0'"),
        (f"alice:$7$101${_b64(11)}${_b64(64)}", "the salt is 11 bytes, expected 12"),
        (f"alice:$7$101${_b64(12)}$!!!", "the hash is not valid base64"),
        (f"alice:$6${_b64(12)}", "a $6$ hash has the form $6$SALT$HASH"),
    ],
)
def test_bad_lines_name_file_and_line(line: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_password_file(f"# users\n\n{line}\n", "/etc/mosquitto/passwd")
    assert str(info.value).startswith("/etc/mosquitto/passwd:3: ")
    assert message in str(info.value)


def test_duplicate_user_is_refused() -> None:
    line = hash_password(b"x").encode()
    with pytest.raises(ConfigError, match=r"p:2: user 'a' is defined twice \(first at line 1\)"):
        parse_password_file(f"a:{line}\na:{line}\n", "p")


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read password file: No such file"):
        load_password_file(str(tmp_path / "nope"))
