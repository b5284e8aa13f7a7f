"""Bulk import of accounts and rosters: how an administrator migrates from another server.

JSON:
    {"users":   [{"jid": "alice@example.com", "password": "..."},
                 {"jid": "bob@example.com", "scram": {"sha1": {"salt": "<base64>", "iterations": 4096,
                                                                "stored_key": "<base64>", "server_key": "<base64>"}}}],
     "rosters": [{"owner": "alice@example.com", "contact": "bob@example.com", "name": "Bob",
                  "groups": ["Team"], "subscription": "both"}]}

CSV (accounts only): a header line, then `jid,password` rows.

Passwords are turned into SCRAM keys (in worker processes: PBKDF2 is slow on purpose) and never
stored; accounts migrated from a server that kept SCRAM keys keep their keys, so nobody has to
choose a new password. A roster entry between two local accounts also gets its mirror in the
contact's roster ("to" on one side is "from" on the other). Everything is checked before
anything is written; accounts that already exist are reported and left alone.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import csv
import io
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..protocol.jid import InvalidJid, JID, parse_jid
from ..protocol.sasl.scram import ScramCredential, derive

MIRROR = {"both": "both", "to": "from", "from": "to", "none": "none"}
BATCH = 500


class ImportProblem(Exception):
    """The file cannot be imported; the text names the entry and the problem."""


@dataclass
class ImportReport:
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    roster_items: int = 0


@dataclass
class _User:
    jid: JID
    password: str | None
    scram: list[ScramCredential]


def _derive_both(args: tuple[str, int]) -> list[ScramCredential]:
    password, iterations = args
    return [derive(password, "sha1", iterations=iterations), derive(password, "sha256", iterations=iterations)]


def _b64(value: Any, where: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise ImportProblem(f"{where}: not valid base64") from None


def _account(text: Any, where: str, domains: set[str]) -> JID:
    if not isinstance(text, str):
        raise ImportProblem(f"{where}: expected an address like user@example.com")
    try:
        jid = parse_jid(text)
    except InvalidJid as exc:
        raise ImportProblem(f"{where}: {text!r} is not a valid address ({exc})") from None
    if jid.local is None or jid.resource is not None:
        raise ImportProblem(f"{where}: {text!r} is not an account address (user@domain)")
    if jid.domain not in domains:
        raise ImportProblem(f"{where}: {jid.domain!r} is not a domain this server serves")
    return jid


def parse_users(data: dict[str, Any], domains: set[str], min_password: int,
                check_password: Callable[[str, str, str], None] | None = None) -> list[_User]:
    """The accounts of the file. `check_password(host, username, password)` applies the
    password policy (raising with the reason); without it only the length is checked."""
    users: list[_User] = []
    for i, entry in enumerate(data.get("users", [])):
        where = f"users[{i}]"
        if not isinstance(entry, dict):
            raise ImportProblem(f"{where}: expected an object")
        unknown = set(entry) - {"jid", "password", "scram", "name"}
        if unknown:
            raise ImportProblem(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        jid = _account(entry.get("jid"), f"{where}.jid", domains)
        password, scram = entry.get("password"), entry.get("scram")
        if (password is None) == (scram is None):
            raise ImportProblem(f"{where}: give either 'password' or 'scram'")
        creds: list[ScramCredential] = []
        if password is not None:
            if not isinstance(password, str) or len(password) < min_password:
                raise ImportProblem(f"{where}.password: at least {min_password} characters")
            if check_password is not None:
                try:
                    check_password(jid.domain, jid.local or "", password)
                except Exception as exc:          # the policy's own reason, for this entry
                    raise ImportProblem(f"{where}.password: {exc}") from None
        else:
            if not isinstance(scram, dict) or not scram:
                raise ImportProblem(f"{where}.scram: expected {{\"sha1\": {{...}}, \"sha256\": {{...}}}}")
            for hash_name, keys in scram.items():
                if hash_name not in ("sha1", "sha256") or not isinstance(keys, dict):
                    raise ImportProblem(f"{where}.scram.{hash_name}: use sha1 or sha256 with salt, iterations, stored_key, server_key")
                try:
                    iterations = int(keys["iterations"])
                    creds.append(ScramCredential(hash_name, _b64(keys["salt"], f"{where}.scram.{hash_name}.salt"),
                                                 iterations, _b64(keys["stored_key"], f"{where}.scram.{hash_name}.stored_key"),
                                                 _b64(keys["server_key"], f"{where}.scram.{hash_name}.server_key")))
                except (KeyError, TypeError, ValueError) as exc:
                    raise ImportProblem(f"{where}.scram.{hash_name}: missing or bad {exc}") from None
        users.append(_User(jid, password, creds))
    return users


def parse_rosters(data: dict[str, Any], domains: set[str]) -> list[tuple[JID, JID, dict[str, Any]]]:
    items = []
    for i, entry in enumerate(data.get("rosters", [])):
        where = f"rosters[{i}]"
        if not isinstance(entry, dict):
            raise ImportProblem(f"{where}: expected an object")
        unknown = set(entry) - {"owner", "contact", "name", "groups", "subscription"}
        if unknown:
            raise ImportProblem(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        owner = _account(entry.get("owner"), f"{where}.owner", domains)
        try:
            contact = parse_jid(str(entry.get("contact", ""))).bare
        except InvalidJid as exc:
            raise ImportProblem(f"{where}.contact: {exc}") from None
        sub = entry.get("subscription", "none")
        if sub not in MIRROR:
            raise ImportProblem(f"{where}.subscription: one of both, to, from, none")
        groups = entry.get("groups", [])
        if not isinstance(groups, list) or not all(isinstance(g, str) and g.strip() for g in groups):
            raise ImportProblem(f"{where}.groups: a list of non-empty names")
        items.append((owner, contact, {"name": str(entry.get("name", "")), "groups": groups,
                                       "subscription": sub, "ask": None, "approved": False}))
    return items


def load_file(text: str, fmt: str) -> dict[str, Any]:
    if fmt == "json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ImportProblem(f"not valid JSON: {exc}") from None
        if not isinstance(data, dict) or set(data) - {"users", "rosters"}:
            raise ImportProblem("expected an object with 'users' and/or 'rosters'")
        return data
    rows = list(csv.DictReader(io.StringIO(text)))
    if rows and not {"jid", "password"} <= set(rows[0]):
        raise ImportProblem("the CSV header must name the columns jid and password")
    return {"users": [{"jid": r["jid"], "password": r["password"]} for r in rows]}


async def run_import(storage: Any, data: dict[str, Any], domains: set[str], *, iterations: int,
                     min_password: int, check_password: Callable[[str, str, str], None] | None = None
                     ) -> ImportReport:
    """Validate everything (passwords against `check_password`, see parse_users), then write
    accounts and rosters in batches."""
    users = parse_users(data, domains, min_password, check_password)
    rosters = parse_rosters(data, domains)
    report = ImportReport()
    to_derive = [(i, u.password) for i, u in enumerate(users) if u.password is not None]
    if to_derive:
        loop = asyncio.get_running_loop()
        with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            results = await asyncio.gather(*(loop.run_in_executor(pool, _derive_both, (pw, iterations))
                                             for _, pw in to_derive))
        for (i, _), creds in zip(to_derive, results):
            users[i].scram = creds
    for start in range(0, len(users), BATCH):
        batch = users[start:start + BATCH]
        created = set(await storage.accounts.create_many(
            [(u.jid.domain, u.jid.local, u.scram) for u in batch]))
        for u in batch:
            (report.created if (u.jid.domain, u.jid.local) in created else report.existing).append(str(u.jid))
    local = {str(u.jid) for u in users} | {f"{u}@{h}" for h, u in await storage.accounts.list()}
    entries: dict[tuple[str, str, str], dict[str, Any]] = {}
    for owner, contact, item in rosters:
        entries[(owner.domain, owner.local or "", str(contact))] = item
        if str(contact) in local and contact.domain in domains and item["subscription"] != "none":
            key = (contact.domain, contact.local or "", str(owner))
            entries.setdefault(key, {**item, "name": "", "subscription": MIRROR[item["subscription"]]})
    rows = [(h, u, k, v) for (h, u, k), v in entries.items()]
    roster_store, version_store = storage.map("roster"), storage.keyval("roster_version")
    for start in range(0, len(rows), BATCH * 10):
        await roster_store.set_bulk(rows[start:start + BATCH * 10])
    # A new, larger roster version makes clients fetch the imported roster instead of trusting
    # their cache; the time in seconds is larger than any count of changes made since.
    owners = sorted({(h, u) for h, u, _, _ in rows})
    await version_store.set_bulk([(h, u, int(time.time())) for h, u in owners])
    report.roster_items = len(rows)
    return report
