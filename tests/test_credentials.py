"""Credentials files: only credential keys, only from files and folders nobody else can read or change."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fsmount.logs import scrub
from fsmount.service.config import EX_CONFIG, ConfigError
from fsmount.service.credentials import load_credentials
from tests.helpers import run_cli

OTHER_UID = 65534  # nobody


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    d = tmp_path / "etc"
    d.mkdir(mode=0o700)
    os.chmod(d, 0o700)
    return d


def _creds(folder: Path, text: str, mode: int = 0o600) -> Path:
    f = folder / "creds"
    f.write_text(text)
    os.chmod(f, mode)
    return f


def test_credential_keys_are_loaded(folder: Path) -> None:
    f = _creds(folder, "# comment\n\nAWS_ACCESS_KEY_ID=AKIA1\nexport AWS_SECRET_ACCESS_KEY='s3cr3tvalue'\n"
                       'AZURE_STORAGE_CONNECTION_STRING="AccountName=a;AccountKey=k=="\r\n'
                       "AWS_REGION = eu-west-1\n")
    assert load_credentials(f) == {
        "AWS_ACCESS_KEY_ID": "AKIA1", "AWS_SECRET_ACCESS_KEY": "s3cr3tvalue",
        "AZURE_STORAGE_CONNECTION_STRING": "AccountName=a;AccountKey=k==", "AWS_REGION": "eu-west-1",
    }
    assert scrub("the key is s3cr3tvalue") == "the key is ***"  # loaded secrets are scrubbed from logs


@pytest.mark.parametrize("key", ["PYTHONPATH", "LD_PRELOAD", "PATH", "FSMOUNT_CACHE_DIR", "aws_access_key_id",
                                 "AWS_ACCESS_KEY_ID\tX", "BASH_ENV"])
def test_any_other_key_is_refused_by_name(folder: Path, key: str) -> None:
    f = _creds(folder, f"AWS_ACCESS_KEY_ID=AKIA1\n{key}=/tmp/evil\n")
    with pytest.raises(ConfigError, match=r"creds:2: .* is not a credential variable") as e:
        load_credentials(f)
    assert e.value.exit_code == EX_CONFIG == 78
    assert key.split("\t")[0] in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("text", ["AWS_SESSION_TOKEN=a\0b\n", "AWS_SESSION_TOKEN=a\x1bb\n",
                                  "AWS_SESSION_TOKEN=ab\rAWS_PROFILE=x\n", "no equals sign\n",
                                  "AWS_PROFILE=a\nAWS_PROFILE=b\n"])
def test_bad_lines_are_refused(folder: Path, text: str) -> None:
    with pytest.raises(ConfigError, match=r"creds:\d+: "):
        load_credentials(_creds(folder, text))


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o666, 0o602])
def test_a_file_others_can_read_or_write_is_refused_with_the_fix(folder: Path, mode: int) -> None:
    f = _creds(folder, "AWS_SECRET_ACCESS_KEY=s3cr3t\n", mode)
    with pytest.raises(ConfigError, match=f"mode {mode:04o}.*chmod 600 {f}$"):
        load_credentials(f)


def test_0400_and_a_root_owned_file_are_fine(folder: Path) -> None:
    f = _creds(folder, "AWS_PROFILE=x\n", 0o400)
    os.chown(f, 0, 0)
    assert load_credentials(f) == {"AWS_PROFILE": "x"}


def test_a_file_of_another_user_is_refused(folder: Path) -> None:
    f = _creds(folder, "AWS_PROFILE=x\n")
    os.chown(f, OTHER_UID, OTHER_UID)
    with pytest.raises(ConfigError, match=f"belongs to uid {OTHER_UID}"):
        load_credentials(f)


def test_a_folder_of_another_user_or_writable_by_others_is_refused(folder: Path) -> None:
    f = _creds(folder, "AWS_PROFILE=x\n")
    os.chmod(folder, 0o777)
    with pytest.raises(ConfigError, match=r"folder .* is writable by other users"):
        load_credentials(f)
    os.chmod(folder, 0o770)
    with pytest.raises(ConfigError, match=r"folder .* is writable by other users"):
        load_credentials(f)
    os.chmod(folder, 0o1777)  # sticky, as /tmp: nobody else can replace our file
    assert load_credentials(f) == {"AWS_PROFILE": "x"}
    os.chmod(folder, 0o755)
    os.chown(folder, OTHER_UID, OTHER_UID)
    with pytest.raises(ConfigError, match=f"folder .* belongs to uid {OTHER_UID}"):
        load_credentials(f)


def test_a_symlink_is_checked_at_both_ends(folder: Path, tmp_path: Path) -> None:
    f = _creds(folder, "AWS_PROFILE=x\n")
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    os.chmod(open_dir, 0o777)
    link = open_dir / "creds"
    link.symlink_to(f)
    with pytest.raises(ConfigError, match="writable by other users"):
        load_credentials(link)
    safe = folder / "link"
    safe.symlink_to(f)
    assert load_credentials(safe) == {"AWS_PROFILE": "x"}


def test_not_a_regular_file_or_missing(folder: Path) -> None:
    with pytest.raises(ConfigError, match="not a regular file"):
        load_credentials(folder)
    with pytest.raises(ConfigError, match="No such file"):
        load_credentials(folder / "missing")


def test_the_cli_refuses_a_hostile_credentials_file(folder: Path, tmp_path: Path) -> None:
    f = _creds(folder, "AWS_ACCESS_KEY_ID=AKIA1\nPYTHONPATH=/tmp/evil\n")
    (tmp_path / "mnt").mkdir()
    proc = run_cli("mount", "p/n", str(tmp_path / "mnt"), "--credentials-file", str(f), check=False)
    assert proc.returncode == EX_CONFIG and "PYTHONPATH is not a credential variable" in proc.stderr
    os.chmod(f, 0o644)
    proc = run_cli("mount", "p/n", str(tmp_path / "mnt"), "--credentials-file", str(f), check=False)
    assert proc.returncode == EX_CONFIG and f"chmod 600 {f}" in proc.stderr
