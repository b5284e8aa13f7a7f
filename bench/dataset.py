"""The accounts every server in the benchmark gets: the same users, passwords, SCRAM keys and rosters.

Every account has its own random salt (as a real server would give it), and the SCRAM-SHA-256 keys
are computed here once and provisioned as keys on every server, so:

- no server ever stores or sees a password (Stockade imports keys, Prosody gets internal_hashed
  account files, ejabberd gets #scram{} records), and all three hold identical credentials;
- the load generator can precompute each user's salted password (PBKDF2, slow on purpose) before
  any timed part, and a login costs it only a few HMACs.

Accounts:
    u00000 .. u{N-1}   plain accounts with empty rosters (1:1, login storm, idle, MUC)
    f000 .. f{F-1}     the presence fan-out population: each has `contacts` contacts among the
                       others (a ring: the nearest contacts/2 on each side), all with subscription both

The derived keys are cached in bench/.cache (keyed by the parameters), so a second run starts at
once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import random
import string
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

DOMAIN = "bench.local"
MUC_DOMAIN = f"conference.{DOMAIN}"
SCRAM_HASH = "sha256"
SCRAM_ITERATIONS = 4096          # the RFC 7677 minimum, also Stockade's and ejabberd's default
SALT_LENGTH = 24                 # printable ASCII: Prosody keeps the salt as a Lua string
PASSWORD_LENGTH = 16
DEFAULT_USERS = 10_000
DEFAULT_FANOUT_USERS = 200
DEFAULT_CONTACTS = 50
CACHE_DIR = Path(__file__).resolve().parent / ".cache"
SEED = 20240601                  # the accounts are the same in every run (reproducible)
_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True, slots=True)
class Account:
    """One user with its SCRAM-SHA-256 credential (the salted password is for the client only)."""
    user: str
    password: str
    salt: bytes
    iterations: int
    salted_password: bytes

    @property
    def jid(self) -> str:
        return f"{self.user}@{DOMAIN}"

    @property
    def stored_key(self) -> bytes:
        client_key = hmac.digest(self.salted_password, b"Client Key", SCRAM_HASH)
        return hashlib.new(SCRAM_HASH, client_key).digest()

    @property
    def server_key(self) -> bytes:
        return hmac.digest(self.salted_password, b"Server Key", SCRAM_HASH)


@dataclass
class Dataset:
    accounts: list[Account]          # plain accounts (u*) then the fan-out population (f*)
    users: int
    fanout_users: int
    contacts: int
    cache_dir: Path = CACHE_DIR

    @property
    def plain(self) -> list[Account]:
        return self.accounts[:self.users]

    @property
    def fanout(self) -> list[Account]:
        return self.accounts[self.users:]

    def roster_pairs(self) -> list[tuple[str, str]]:
        """Every (owner, contact) roster item of the fan-out population, both directions."""
        return fanout_pairs(self.fanout_users, self.contacts)

    def client_keys_file(self) -> Path:
        """A JSON file the load generator reads: user -> [password, salt, iterations, salted hex]."""
        path = self.cache_dir / f"client-keys-{self.users}-{self.fanout_users}-{self.contacts}.json"
        if not path.exists():
            write_json(path, {a.user: [a.password, base64.b64encode(a.salt).decode(), a.iterations,
                                       a.salted_password.hex()] for a in self.accounts})
        return path


def plain_name(i: int) -> str:
    return f"u{i:05d}"


def fanout_name(i: int) -> str:
    return f"f{i:03d}"


def fanout_contacts(i: int, population: int, contacts: int) -> list[int]:
    """The contacts of fan-out user i: the nearest contacts/2 on each side of a ring (symmetric)."""
    half = contacts // 2
    return [(i + d) % population for d in range(-half, half + 1) if d != 0]


def fanout_pairs(population: int, contacts: int) -> list[tuple[str, str]]:
    return [(fanout_name(i), fanout_name(j)) for i in range(population)
            for j in fanout_contacts(i, population, contacts)]


def _derive(args: tuple[str, bytes, int]) -> bytes:
    password, salt, iterations = args
    return hashlib.pbkdf2_hmac(SCRAM_HASH, password.encode(), salt, iterations)


def write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def build(users: int = DEFAULT_USERS, fanout_users: int = DEFAULT_FANOUT_USERS,
          contacts: int = DEFAULT_CONTACTS, cache_dir: Path = CACHE_DIR) -> Dataset:
    """The accounts, with the salted passwords from the cache or computed now (in parallel)."""
    if contacts >= fanout_users or contacts % 2:
        raise ValueError("contacts must be even and smaller than the fan-out population")
    rng = random.Random(SEED)
    names = [plain_name(i) for i in range(users)] + [fanout_name(i) for i in range(fanout_users)]
    secrets_ = [("".join(rng.choices(_ALPHABET, k=PASSWORD_LENGTH)),
                 "".join(rng.choices(_ALPHABET, k=SALT_LENGTH)).encode()) for _ in names]
    cache = cache_dir / f"salted-{users}-{fanout_users}-{SCRAM_ITERATIONS}.json"
    salted: list[bytes] | None = None
    if cache.exists():
        data = json.loads(cache.read_text())
        if len(data) == len(names):
            salted = [bytes.fromhex(x) for x in data]
    if salted is None:
        with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            salted = list(pool.map(_derive, [(pw, salt, SCRAM_ITERATIONS) for pw, salt in secrets_],
                                   chunksize=256))
        write_json(cache, [s.hex() for s in salted])
    accounts = [Account(n, pw, salt, SCRAM_ITERATIONS, s) for n, (pw, salt), s in zip(names, secrets_, salted)]
    return Dataset(accounts, users, fanout_users, contacts, cache_dir)
