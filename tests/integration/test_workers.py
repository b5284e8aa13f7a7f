"""Several worker processes on the same ports ([server] workers = 2), with real clients.

Each account lives in one worker (core/partition.py): alice's home is worker 1, bob's worker 0.
A client lands in whichever worker the kernel gives its connection to and moves to its home
after SASL (net/handoff.py); stanzas between accounts in different workers are forwarded. The
same conversations as with one process must work: chat, presence and probes, offline messages,
group chat (in worker 0), an external component (connected to worker 0), and the brute-force
limits must count attempts made in every worker.
The compliance journal is on (the default), as a company runs it: every worker records what its
clients send, in one hash chain.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import zlib
from pathlib import Path

import pytest

from stockade.core.partition import Partition
from stockade.testing.process import ServerProcess
from stockade.testing.raw import RawStream, header
from stockade.testing.xmpp import client

from .conftest import DOMAIN, USERS, jid
from .test_component import Component
from .test_mam import MAM_PLUGINS
from .test_muc_support import create, enter, muc_client, room
from .test_pep import TUNE, event_items, events_about, next_event, pep_client, publish
from .test_presence import befriend

BOT, BOT_SECRET = "bot.example.com", "bot-shared-secret-1"       # an external component (XEP-0114)
JUDY = ("judy", "judy-pw-6666")       # another account of worker 0
# Only the journal test uses these two (they never go online: the messages wait offline for them).
RECORDERS = {"grace": "grace-pw-7777", "oscar": "oscar-pw-8888"}       # worker 1, worker 0
TARGET = "ivan"                       # the account the brute-force test locks
TARGET_PASSWORD = "ivan-pw-5555"
MAX_FAILURES = 10
TRIES = 40                            # a connection lands in a given worker with probability 1/2


def home(user: str) -> int:
    return Partition(0, 2, lambda worker, stanza: None, set()).home(DOMAIN, user)


@pytest.fixture(scope="module")
def workers(tmp_path_factory) -> ServerProcess:
    proc = ServerProcess(tmp_path_factory.mktemp("workers"), [DOMAIN], config={
        "server": {"workers": 2, "log_level": "debug"}, "http": {"enabled": False},
        "c2s": {"require_tls": False}, "component_listener": {"enabled": True},
        "components": [{"domain": BOT, "secret": BOT_SECRET}],
        "auth": {"max_failures_per_account": MAX_FAILURES, "lockout": 3600.0}})
    for user, password in [*USERS.items(), *RECORDERS.items(), JUDY, (TARGET, TARGET_PASSWORD)]:
        assert proc.cli("user", "add", jid(user), "--password", password).status == 0
    with proc:
        yield proc


def test_alice_and_bob_live_in_different_workers():
    # what the other tests rely on (each pair of accounts befriends once: the server lives on)
    assert home("alice") == home("carol") == home("grace") == 1
    assert home("bob") == home(JUDY[0]) == home("oscar") == 0


async def test_alice_and_bob_in_different_workers_chat(workers):
    async with client(workers, jid("alice"), USERS["alice"]) as alice, \
               client(workers, jid("bob"), USERS["bob"]) as bob:
        alice.send_message(mto=jid("bob"), mbody="hello bob", mtype="chat")
        msg = await bob.next_message()
        assert msg["body"] == "hello bob" and msg["from"] == alice.boundjid
        bob.send_message(mto=msg["from"], mbody="hi alice", mtype="chat")
        reply = await alice.next_message()
        assert reply["body"] == "hi alice" and reply["from"] == bob.boundjid


async def test_a_forged_from_is_replaced_before_the_stanza_crosses_workers(workers):
    async with client(workers, jid("bob"), USERS["bob"]) as bob:
        raw = await RawStream.open(workers, DOMAIN)      # alice, whose home is the other worker
        try:
            assert b"success" in await raw.authenticate("alice", USERS["alice"])
            await raw.bind("forger")
            await raw.send(f"<message from='{jid('carol')}/desk' to='{jid('bob')}' type='chat'>"
                           "<body>from carol, honestly</body></message>")
            msg = await bob.next_message()
            assert msg["body"] == "from carol, honestly"
            assert str(msg["from"]) == jid("alice") + "/forger"       # the true sender
        finally:
            await raw.close()


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue                                  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def test_nothing_outside_the_node_can_reach_the_links_between_workers(workers):
    """What crosses between workers is trusted (docs/security.md): the links must be socket
    pairs only the workers hold, never a path in the file system or a port."""
    children = Path(f"/proc/{workers.pid}/task/{workers.pid}/children").read_text().split()
    inodes = set().union(*(socket_inodes(int(pid)) for pid in [workers.pid, *children]))
    unix = [line.split() for line in Path("/proc/net/unix").read_text().splitlines()[1:]]
    ours = [fields for fields in unix if fields[6] in inodes]
    assert len(ours) >= 4                             # 2 workers: 2 pairs, both ends held
    assert all(len(fields) == 7 for fields in ours), [f[7] for f in ours if len(f) > 7]   # no path
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:                       # LISTEN
                listening.add(int(fields[1].rsplit(":", 1)[1], 16))
    assert listening == {workers.c2s_port, workers.direct_tls_port, workers.ports["component"]}   # the configured ones


async def test_presence_and_probes_cross_workers(workers):
    async with client(workers, jid("alice"), USERS["alice"]) as alice, \
               client(workers, jid("bob"), USERS["bob"]) as bob:
        await befriend(alice, bob)
        alice.send_presence(pshow="dnd", pstatus="in a meeting")
        seen = await bob.next_presence(jid("alice"), match=lambda p: p["status"] == "in a meeting")
        assert seen["show"] == "dnd"
        # an IQ to a full JID in the other worker (allowed between contacts), and its answer back
        pong = await alice.plugin["xep_0199"].send_ping(bob.boundjid, timeout=30)
        assert pong["type"] == "result" and pong["from"] == bob.boundjid
        # bob's second device logs in: its probe reaches alice's worker, her presence comes back
        async with client(workers, jid("bob") + "/phone", USERS["bob"]) as phone:
            probed = await phone.next_presence(jid("alice"), match=lambda p: p["status"] == "in a meeting")
            assert probed["show"] == "dnd"
        full = str(alice.boundjid)
        await alice.close()
        gone = await bob.next_presence(full, match=lambda p: p["type"] == "unavailable")
        assert str(gone["from"]) == full


async def test_pep_events_reach_interested_contacts_in_the_other_worker_only(workers):
    async with pep_client(workers, "carol") as carol, pep_client(workers, "bob", notify=(TUNE,)) as bob, \
               pep_client(workers, "judy", password=JUDY[1]) as judy:
        await befriend(carol, bob)
        await befriend(carol, judy)
        reply = await publish(carol, TUNE, "<tune xmlns='http://jabber.org/protocol/tune'><artist>Finzi</artist></tune>",
                              item_id="t1")
        assert reply["type"] == "result"
        # bob's client asked for tune+notify: his worker delivers it, to his resource
        event = await next_event(bob, TUNE)
        assert event["from"] == jid("carol") and str(event["to"]) == str(bob.boundjid)
        assert event_items(event)[0][1] == "t1"
        # judy, a contact in the same worker as bob whose client did not ask, gets nothing
        await judy.roundtrip()
        assert events_about(judy, TUNE) == []


async def test_a_message_for_an_offline_account_in_the_other_worker_waits_for_it(workers):
    raw = await RawStream.open(workers, DOMAIN)
    try:
        assert b"success" in await raw.authenticate("carol", USERS["carol"])      # worker 1
        await raw.bind("desk")
        await raw.send("<enable xmlns='urn:xmpp:sm:3'/>")
        await raw.read_until(b"<enabled")
        await raw.send(f"<message to='{jid(JUDY[0])}' type='chat'><body>while you were out</body></message>"
                       "<r xmlns='urn:xmpp:sm:3'/>")
        await raw.read_until(r"<a [^>]*/>")          # acknowledged: judy's worker has stored it
    finally:
        await raw.close()
    async with client(workers, jid(JUDY[0]), JUDY[1]) as judy:
        msg = await judy.next_message()
        assert msg["body"] == "while you were out" and msg["from"].bare == jid("carol")


async def carol_writes_to_judy(proc: ServerProcess, body: str) -> None:
    """carol (worker 1 of 2) sends judy a chat message and waits for its acknowledgement: both
    archive copies are stored."""
    raw = await RawStream.open(proc, DOMAIN)
    try:
        assert b"success" in await raw.authenticate("carol", USERS["carol"])
        await raw.bind("archive")
        await raw.send("<enable xmlns='urn:xmpp:sm:3'/>")
        await raw.read_until(b"<enabled")
        await raw.send(f"<message to='{jid(JUDY[0])}' type='chat'><body>{body}</body></message>"
                       "<r xmlns='urn:xmpp:sm:3'/>")
        await raw.read_until(r"<a [^>]*/>")
    finally:
        await raw.close()


async def archived_bodies(proc: ServerProcess, user: str, password: str) -> list[str]:
    async with client(proc, jid(user), password, plugins=MAM_PLUGINS) as someone:
        result = await someone.plugin["xep_0313"].retrieve()
        return [m["mam_result"]["forwarded"]["stanza"]["body"] for m in result["mam"]["results"]]


async def test_each_workers_archives_are_in_a_file_of_its_own(workers):
    """carol lives in worker 1, judy in worker 0: carol's copy of their conversation is archived
    in stockade.archive-1.db by worker 1, judy's in the database itself by worker 0
    (storage/archive_files.py); each reads hers back over MAM."""
    body = "archived in each worker's own file"
    await carol_writes_to_judy(workers, body)

    def archived(path: Path, user: str, partner: str) -> bool:
        # (The values are encrypted at rest: the partner tells the conversation.)
        with sqlite3.connect(path) as conn:
            return conn.execute("SELECT count(*) FROM archive JOIN archive_owners o ON o.id = archive.owner "
                                "WHERE o.username = ? AND o.store = 'mam' AND archive.with_jid = ?",
                                (user, jid(partner))).fetchone()[0] > 0

    files = [workers.data_dir / "stockade.db", workers.data_dir / "stockade.archive-1.db"]
    assert [archived(path, "carol", JUDY[0]) for path in files] == [False, True]
    assert [archived(path, JUDY[0], "carol") for path in files] == [True, False]
    for user, password in (("carol", USERS["carol"]), JUDY):
        assert body in await archived_bodies(workers, user, password), user


async def recording_stream(workers, user: str) -> RawStream:
    """`user` logged in with stream management on: an ack says what the journal recorded."""
    raw = await RawStream.open(workers, DOMAIN)
    assert b"success" in await raw.authenticate(user, RECORDERS[user])
    await raw.bind("journal")
    await raw.send("<enable xmlns='urn:xmpp:sm:3'/>")
    await raw.read_until(b"<enabled")
    return raw


async def test_every_worker_records_into_the_one_journal_chain(workers):
    """grace's messages are recorded by worker 1, oscar's by worker 0, in turns: each append
    must read the chain's head under the database's write lock (storage/journal.py), not
    remember its own last one, for the records to form one chain that verifies, with every
    message in it once, as sent."""
    rounds, per_round = 4, 10
    grace, oscar = await recording_stream(workers, "grace"), await recording_stream(workers, "oscar")
    try:
        for r in range(rounds):
            for raw, peer, word in ((grace, "oscar", "quince"), (oscar, "grace", "medlar")):
                await raw.send("".join(f"<message to='{jid(peer)}' type='chat'><body>{word} {r}.{n}</body>"
                                       f"</message>" for n in range(per_round)) + "<r xmlns='urn:xmpp:sm:3'/>")
                await raw.read_until(rf"<a [^>]*h=['\"]{per_round * (r + 1)}['\"]")      # recorded
    finally:
        await grace.close()
        await oscar.close()
    verified = workers.cli("archive", "verify")
    assert verified.status == 0, verified.stderr
    assert verified.lines[0].startswith("journal intact:")
    for word, sender, peer in (("quince", "grace", "oscar"), ("medlar", "oscar", "grace")):
        found = workers.cli("archive", "search", "--host", DOMAIN, "--words", word, "--limit", "500", "--json")
        assert found.status == 0, found.stderr
        records = [json.loads(line) for line in found.lines if line.startswith("{")]
        assert sorted(r["body"] for r in records) == sorted(f"{word} {r}.{n}" for r in range(rounds)
                                                            for n in range(per_round))
        assert {(r["from"].split("/")[0], r["to"]) for r in records} == {(jid(sender), jid(peer))}
        assert all(r["verified"] for r in records)


async def test_group_chat_with_occupants_in_both_workers(workers):
    lobby = room("workers-lobby")
    async with muc_client(workers, "alice") as alice, muc_client(workers, "bob") as bob:
        await create(alice, lobby, "Alice")
        _, _, occupants, _ = await enter(bob, lobby, "Bob")
        assert "Alice" in [p["muc"]["nick"] for p in occupants]
        alice.send_message(mto=lobby, mbody="welcome, bob", mtype="groupchat")
        for c in (alice, bob):
            msg = await c.next_message()
            assert msg["body"] == "welcome, bob" and str(msg["from"]) == f"{lobby}/Alice"


async def test_an_external_component_serves_the_users_of_every_worker(workers):
    """The component is connected to worker 0 (the services' worker); stanzas for its domain
    cross to it from alice's worker, and its answers cross back."""
    bot = Component(BOT, BOT_SECRET, workers.ports["component"])
    assert await bot.handshake(), "the component was refused"
    try:
        async with client(workers, jid("alice"), USERS["alice"]) as alice, \
                   client(workers, jid("bob"), USERS["bob"]) as bob:
            for user in (alice, bob):
                user.send_message(mto=f"echo@{BOT}", mbody=f"ping from {user.boundjid.user}", mtype="chat")
                received = await asyncio.wait_for(bot.messages.get(), 30)
                assert received["body"] == f"ping from {user.boundjid.user}" and received["from"] == user.boundjid
                bot.send_message(mto=received["from"], mfrom=f"echo@{BOT}", mbody="pong", mtype="chat")
                reply = await user.next_message()
                assert reply["body"] == "pong" and reply["from"] == f"echo@{BOT}"
            info = await alice.plugin["xep_0030"].get_info(jid=BOT, timeout=30)      # an IQ there and back
            assert info["from"] == BOT
    finally:
        await bot.close()


async def ack_while_worker_0_stops(workers, resource: str, stanza: str) -> None:
    """alice (worker 1, stream management on) sends `stanza` while worker 0 is stopped: no ack
    comes until worker 0 runs again, then <a h='1'/>."""
    raw = await RawStream.open(workers, DOMAIN)      # plaintext: alice's socket ends up in worker 1 only
    try:
        assert b"success" in await raw.authenticate("alice", USERS["alice"])
        await raw.bind(resource)
        await raw.send("<enable xmlns='urn:xmpp:sm:3'/>")
        await raw.read_until(b"<enabled")
        os.kill(workers.pid, signal.SIGSTOP)         # worker 0, bob's and judy's, stops
        try:
            await raw.send(stanza + "<r xmlns='urn:xmpp:sm:3'/>")
            with pytest.raises(TimeoutError):        # no ack while worker 0 cannot store it
                await raw.read_until(b"<a ", timeout=3)
        finally:
            os.kill(workers.pid, signal.SIGCONT)
        assert re.search(rb"<a [^>]*h=['\"]1['\"]", await raw.read_until(r"<a [^>]*/>"))
    finally:
        await raw.close()


async def test_a_stream_management_ack_waits_for_the_recipients_worker(workers):
    """XEP-0198: what the server acknowledged is stored. alice's message for bob is stored by
    bob's worker (his archive copy, offline storage), so alice's ack waits for it."""
    await ack_while_worker_0_stops(workers, "sm", f"<message to='{jid('bob')}' type='chat' id='m1'>"
                                                  "<body>stored?</body></message>")
    async with client(workers, jid("bob"), USERS["bob"]) as bob:
        msg = await bob.next_message()               # kept for him while he was offline
        assert msg["body"] == "stored?" and msg["from"].bare == jid("alice")


async def test_a_subscription_request_is_acknowledged_once_the_contacts_worker_stored_it(workers):
    await ack_while_worker_0_stops(workers, "sub", f"<presence to='{jid(JUDY[0])}' type='subscribe'/>")
    async with client(workers, jid(JUDY[0]), JUDY[1]) as judy:      # the request waited for her
        request = await judy.next_of(judy.subscription_requests)
        assert request["from"].bare == jid("alice")


async def test_a_session_resumes_in_its_worker_whichever_worker_the_new_connection_reaches(workers):
    async with client(workers, jid("bob"), USERS["bob"]) as bob:
        raw = await RawStream.open(workers)
        await raw.login("alice", USERS["alice"], resource="phone")
        await raw.send("<presence/>")
        await raw.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
        previd = re.search(rb'id="([^"]+)"', await raw.read_until(r"<enabled[^>]*/>")).group(1).decode()
        raw.writer.transport.abort()                  # the network goes away: no </stream:stream>
        for i in range(3):
            bob.send_message(mto=jid("alice"), mbody=f"while away {i}", mtype="chat")
        await bob.roundtrip()
        again = await RawStream.open(workers)
        await again.starttls()
        assert b"success" in await again.authenticate("alice", USERS["alice"])
        await again.send(header(DOMAIN))
        await again.read_until(b"</stream:features>")
        await again.send(f"<resume xmlns='urn:xmpp:sm:3' previd='{previd}' h='0'/>")
        assert f'previd="{previd}"'.encode() in await again.read_until(r"<resumed[^>]*/>")
        data = await again.read_until(b"while away 2</body>")
        assert re.findall(rb"<body>([^<]+)</body>", data) == [b"while away 0", b"while away 1", b"while away 2"]
        await again.close()


async def test_direct_tls_connections_reach_their_worker(workers):
    async with client(workers, jid("bob"), USERS["bob"]) as bob:
        raw = await RawStream.open(workers, DOMAIN, direct_tls=True)
        try:
            assert b"success" in await raw.authenticate("alice", USERS["alice"])
            assert b"<jid>alice@example.com/" in await raw.bind("direct")
            await raw.send(f"<message to='{jid('bob')}' type='chat'><body>over direct TLS</body></message>")
            assert (await bob.next_message())["body"] == "over direct TLS"
        finally:
            await raw.close()


async def test_tls_connections_in_the_wrong_worker_are_relayed_to_their_account(workers):
    async with client(workers, jid("bob"), USERS["bob"]) as bob:
        for attempt in range(TRIES):
            before = workers.log.count("moving alice@example.com")
            async with client(workers, jid("alice"), USERS["alice"]) as alice:
                alice.send_message(mto=jid("bob"), mbody=f"try {attempt}", mtype="chat")
                assert (await bob.next_message())["body"] == f"try {attempt}"
                moved = workers.log.count("moving alice@example.com") > before
            if moved:
                break
        assert re.search(r"moving alice@example\.com from \S+ to worker 1 \(relayed\)", workers.log)


async def test_plaintext_connections_in_the_wrong_worker_pass_their_socket(workers):
    async with client(workers, jid("bob"), USERS["bob"]) as bob:
        for attempt in range(TRIES):
            before = workers.log.count("(socket passed)")
            raw = await RawStream.open(workers, DOMAIN)
            try:
                assert b"success" in await raw.authenticate("alice", USERS["alice"])
                assert b"<jid>alice@example.com/" in await raw.bind("plain")
                await raw.send(f"<message to='{jid('bob')}' type='chat'><body>plain {attempt}</body></message>")
                assert (await bob.next_message())["body"] == f"plain {attempt}"
            finally:
                await raw.close()
            if workers.log.count("(socket passed)") > before:
                break
        assert re.search(r"moving alice@example\.com from \S+ to worker 1 \(socket passed\)", workers.log)


async def test_failed_logins_in_every_worker_count_towards_one_lockout(workers):
    for _ in range(MAX_FAILURES):
        raw = await RawStream.open(workers, DOMAIN)
        try:
            assert b"</failure>" in await raw.authenticate(TARGET, "not-the-password")
        finally:
            await raw.close()
    # Locked, whichever worker this attempt lands in, although each saw only some failures.
    for _ in range(4):
        raw = await RawStream.open(workers, DOMAIN)
        try:
            assert b"</failure>" in await raw.authenticate(TARGET, TARGET_PASSWORD)
        finally:
            await raw.close()


def children_of(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def worker_holding(proc: ServerProcess, raw: RawStream) -> int:
    """Which worker holds the server's end of `raw` (with two workers: worker 0 is the process
    the test started, worker 1 its child)."""
    port = raw.writer.get_extra_info("sockname")[1]
    inode = None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == proc.c2s_port and int(fields[2].rsplit(":", 1)[1], 16) == port:
                inode = fields[9]
    assert inode is not None
    [worker] = [n for n, pid in enumerate([proc.pid, *children_of(proc.pid)]) if inode in socket_inodes(pid)]
    return worker


async def connect(proc: ServerProcess) -> tuple[RawStream, bool]:
    """A new connection, and whether it was admitted: then it is past STARTTLS. The worker that
    counts the address refuses at once; another one answers the stream header and holds what
    the client sends next until the counting worker answered, so the answer to <starttls/> is
    <proceed/> or the stream error that refuses the connection."""
    raw = await RawStream.open(proc, DOMAIN)
    await raw.send(header(DOMAIN))
    answer = await raw.read_until(r"</stream:features>|</stream:stream>")
    if b"</stream:features>" in answer:
        await raw.send(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        answer = await raw.read_until(r"<proceed[^>]*/>|</stream:stream>")
    if b"<proceed" not in answer:
        assert b"<policy-violation" in answer and b"too many connections from your address" in answer
        return raw, False
    await raw.writer.start_tls(RawStream._tls(raw.cert), server_hostname="localhost")
    raw.received = b""
    return raw, True


async def test_a_new_number_of_workers_moves_the_archives_and_loses_nothing(tmp_path):
    """Two workers, then one process, then two again (storage/archive_files.py): each start moves
    the archives whose file changed before serving, and both sides of the conversation still
    read their whole archive, in order, over MAM."""
    proc = ServerProcess(tmp_path, [DOMAIN], config={
        "server": {"workers": 2}, "http": {"enabled": False}, "c2s": {"require_tls": False}})
    for user, password in (("carol", USERS["carol"]), JUDY):
        assert proc.cli("user", "add", jid(user), "--password", password).status == 0
    second_file = proc.data_dir / "stockade.archive-1.db"
    expected = []
    for workers in (2, 1, 2):
        proc.doc["server"]["workers"] = workers
        await proc.astart()
        try:
            assert second_file.exists() == (workers == 2)
            body = f"written with {workers} worker(s), message {len(expected) + 1}"
            await carol_writes_to_judy(proc, body)
            expected.append(body)
            for user, password in (("carol", USERS["carol"]), JUDY):
                assert await archived_bodies(proc, user, password) == expected, (workers, user)
        finally:
            proc.stop()
    with sqlite3.connect(second_file) as conn:        # carol's archive is back in worker 1's file
        assert conn.execute("SELECT count(*) FROM archive JOIN archive_owners o ON o.id = archive.owner "
                            "WHERE o.username = 'carol' AND o.store = 'mam'").fetchone()[0] == 3


async def test_the_connections_per_address_limit_holds_for_the_whole_node(tmp_path):
    """One worker counts an address's connections wherever the kernel put them
    (net/address_gate.py): with two held in each worker the limit of four is reached, although
    each worker holds only two; a connection that ends in the other worker frees its place, and
    so does one that moved to its account's worker after logging in."""
    cap = 4
    proc = ServerProcess(tmp_path, [DOMAIN], config={
        "server": {"workers": 2}, "http": {"enabled": False},
        "c2s": {"require_tls": False, "max_connections_per_address": cap}})
    assert proc.cli("user", "add", jid("alice"), "--password", USERS["alice"]).status == 0
    await proc.astart()
    held: dict[int, list[RawStream]] = {0: [], 1: []}
    try:
        for _ in range(TRIES):                # two in each worker, as the kernel deals them
            if all(len(conns) == cap // 2 for conns in held.values()):
                break
            raw, admitted = await connect(proc)
            if admitted and len(held[worker := worker_holding(proc, raw)]) < cap // 2:
                held[worker].append(raw)
            else:                             # one too many in that worker (or refused meanwhile)
                await raw.close()
        assert all(len(conns) == cap // 2 for conns in held.values())
        refused, admitted = await connect(proc)
        assert not admitted
        await refused.close()
        # One ends in the worker that does not count 127.0.0.1: the counting worker hears of it.
        other = 1 - zlib.crc32(b"127.0.0.1") % 2
        await held[other].pop().close()
        for _ in range(TRIES):
            raw, admitted = await connect(proc)
            held[0].append(raw)
            if admitted:
                break
        assert admitted
        for raw in held[0] + held[1]:
            await raw.close()
        held = {0: [], 1: []}
        # Logged in, a connection moves to alice's worker (net/handoff.py) when it landed in the
        # other one (TLS: relayed); counted where it was admitted, it must be released from
        # where it ends.
        moved = 0
        for _ in range(4 * TRIES):
            raw, admitted = await connect(proc)      # refused while a release is on its way
            if admitted:
                landed = worker_holding(proc, raw)
                assert b"success" in await raw.authenticate("alice", USERS["alice"])
                assert b"<jid>" in await raw.bind("counted")
                moved += landed != home("alice")
            await raw.close()
            if moved > cap:
                break
        assert moved > cap
    finally:
        for raw in held[0] + held[1]:
            await raw.close()
        proc.stop()


async def test_a_worker_that_exits_stops_the_whole_node(tmp_path):
    proc = ServerProcess(tmp_path, [DOMAIN], config={
        "server": {"workers": 2}, "http": {"enabled": False}})
    await proc.astart()
    try:
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(children) == 1
        os.kill(int(children[0]), signal.SIGKILL)
        status = await proc.await_exit()
        assert status == 1
        assert "worker process 1" in proc.log and "stopping every worker" in proc.log
    finally:
        proc.stop()


async def test_the_other_workers_exit_when_worker_0_is_killed(tmp_path):
    """A worker left behind would keep accepting connections on the shared port."""
    proc = ServerProcess(tmp_path, [DOMAIN], config={
        "server": {"workers": 2}, "http": {"enabled": False}})
    await proc.astart()
    child = int(Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()[0])
    pidfd = os.pidfd_open(child)
    try:
        proc.kill()                                   # SIGKILL: no shutdown of its own
        loop = asyncio.get_running_loop()
        exited = loop.create_future()
        loop.add_reader(pidfd, lambda: exited.done() or exited.set_result(None))
        try:
            await asyncio.wait_for(exited, 60)         # the pidfd is readable once the child exits
        finally:
            loop.remove_reader(pidfd)
    finally:
        os.close(pidfd)
    assert "worker process 0 is gone" in proc.log


def test_pinned_workers_run_every_thread_on_a_core_of_their_own(tmp_path):
    """[server] pin_workers: worker 0 on the first core it may use, worker 1 on the second,
    every thread of each (the database writer and readers included)."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.skip("needs two CPU cores")
    proc = ServerProcess(tmp_path, [DOMAIN], config={
        "server": {"workers": 2, "pin_workers": True}, "http": {"enabled": False},
        "c2s": {"require_tls": False}})
    proc.start()
    try:
        [worker_1] = children_of(proc.pid)
        for pid, core in ((proc.pid, cores[0]), (worker_1, cores[1])):
            threads = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
            assert len(threads) > 1
            assert {t: os.sched_getaffinity(t) for t in threads} == {t: {core} for t in threads}
    finally:
        proc.stop()
