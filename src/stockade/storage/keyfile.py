"""Where the master keys of encryption at rest come from: a key file or an environment variable.

`load_keyring(config, data_dir)` is the one way the server (app.py) and every CLI command
(cli.py, cli_admin.py, cli_keys.py) get the keys, so that they all read encrypted data alike.

The key file is text, mode 0600, one master key per line, the last line the current key:

    # Stockade master keys (docs/encryption.md). ...
    1a2b3c4d JVjX0c7...base64 of 32 bytes...=
    9f8e7d6c 3bq1mP+...=

The first word is the key's id (crypto.master_key_id: derived from the key, checked on reading,
so that a changed character is found at once). Several lines exist only during a rotation
(`stockade keys rotate`, cli_keys.py). The environment variable (encryption.master_key_env)
holds the base64 keys alone, separated by spaces or commas, the last one current.

With neither option set, the key file is data_dir/keys/master.key, generated on first start like
the self-signed certificate, but only while the database holds no data keys: a missing key file
beside encrypted data stops startup (storage/service.py), as does any damage to the file.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from .crypto import KEY_BYTES, Keyring, KeyFileError, master_key_id
from ..protocol.entropy import entropy

if TYPE_CHECKING:
    from ..config import ServerConfig

DEFAULT_KEY_FILE = Path("keys") / "master.key"     # in the data folder
_HEADER = ("# Stockade master keys (docs/encryption.md). Keep this file secret and back it up apart\n"
           "# from the database: without it the encrypted messages and files cannot be read.\n"
           "# One key per line: its id and the key (base64, 32 bytes); the last line is current.\n")
_SEPARATORS = re.compile(r"[\s,]+")


def key_file_path(config: ServerConfig, data_dir: Path) -> Path:
    """The key file the configuration names (or the default one in the data folder)."""
    from ..config import resolve_path
    path = config.encryption.master_key_path
    return resolve_path(config, path) if path else data_dir / DEFAULT_KEY_FILE


def load_keyring(config: ServerConfig, data_dir: Path) -> Keyring | None:
    """The master keys of the configuration; None when encryption is off. Raises KeyFileError
    (naming the file or variable, the problem and what to do) when they cannot be used."""
    section = config.encryption
    if not section.enabled:
        return None
    if section.master_key_env:
        return read_env(section.master_key_env, config.source)
    path = key_file_path(config, data_dir)
    if not path.exists():
        keyring = Keyring([new_master_key()], f"the master key file {path}", path=path, is_new=True)
    else:
        keyring = read_key_file(path)
    keyring.refresh = lambda: read_key_file(path)
    return keyring


def new_master_key() -> bytes:
    return entropy.take(KEY_BYTES)


def read_env(name: str, source: str = "the configuration") -> Keyring:
    where = f"the environment variable {name} (encryption.master_key_env in {source})"
    value = os.environ.get(name)
    if value is None or not value.strip():
        raise KeyFileError(f"{where} is not set or empty; set it to the base64 master key, or unset "
                           "encryption.master_key_env to use a key file")
    keys = []
    for n, word in enumerate(_SEPARATORS.split(value.strip()), 1):
        try:
            keys.append(base64.b64decode(word, validate=True))
        except (binascii.Error, ValueError):
            raise KeyFileError(f"key {n} of {where} is not valid base64; set it to the key exactly as "
                               "it was generated") from None
    return Keyring(keys, where)


def read_key_file(path: Path) -> Keyring:
    """The keys of a key file (format: module docstring)."""
    where = f"the master key file {path}"
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise KeyFileError(f"{where} is missing; restore it from your backup") from None
    except UnicodeDecodeError:
        raise KeyFileError(f"{where} is damaged (it is not plain ASCII text); restore it from your backup") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read {where}: {exc.strerror}; give the user that runs Stockade "
                           "read access to it (and nobody else)") from None
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        words = line.split()
        if len(words) != 2:
            raise KeyFileError(f"{where} is damaged: line {number} is not '<id> <base64 key>'; "
                               "restore it from your backup")
        key_id, encoded = words
        try:
            key = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise KeyFileError(f"{where} is damaged: the key on line {number} is not valid base64; "
                               "restore it from your backup") from None
        if len(key) != KEY_BYTES:
            raise KeyFileError(f"{where} is damaged: the key on line {number} has {len(key)} bytes, "
                               f"master keys have {KEY_BYTES} (AES-256); restore it from your backup")
        if master_key_id(key) != key_id:
            raise KeyFileError(f"{where} is damaged: the key on line {number} does not match its id "
                               f"{key_id}; restore it from your backup")
        keys.append(key)
    if not keys:
        raise KeyFileError(f"{where} holds no master key (it is empty or all comments); restore it "
                           "from your backup")
    return Keyring(keys, where, path=path)


def key_file_text(keys: list[bytes]) -> str:
    return _HEADER + "".join(f"{master_key_id(k)} {base64.b64encode(k).decode('ascii')}\n" for k in keys)


def write_key_file(path: Path, keys: list[bytes], *, is_new: bool = False) -> None:
    """Write the keys atomically (temporary file, fsync, rename), mode 0600. With `is_new`, fail
    with FileExistsError instead of replacing a file that exists."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(key_file_text(keys))
            f.flush()
            os.fsync(f.fileno())
        if is_new:
            os.link(temp, path)          # fails if another process wrote the file meanwhile
            temp.unlink()
        else:
            os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_new_keyring(keyring: Keyring) -> Keyring:
    """Write a just-generated keyring to its key file; if another process wrote the file first,
    the keys of that file. Raises KeyFileError when the file cannot be written."""
    path = keyring.path
    assert isinstance(path, Path)
    try:
        write_key_file(path, list(keyring.keys.values()), is_new=True)
    except FileExistsError:
        loaded = read_key_file(path)
        loaded.refresh = keyring.refresh
        return loaded
    except OSError as exc:
        raise KeyFileError(f"cannot write the new master key file {path}: {exc.strerror}; make its "
                           "folder writable by the user that runs Stockade, or set "
                           "encryption.master_key_path") from None
    keyring.is_new = False
    return keyring
