"""Acknowledged means recorded: a real `stockade serve` is killed with SIGKILL while a client with
XEP-0198 stream management sends; after a restart every message the client got an <a h='...'/>
for is in the journal, and the chain still verifies.

    alice -> <enable xmlns='urn:xmpp:sm:3'/>; <message>...</message> <r/> (after every stanza)
    server -> <a h='n'/> only once the journal batch holding message n committed
    kill -KILL <server>; restart; stop
    journal  ⊇ every message alice saw acknowledged
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from slixmpp import Message

from stockade.compliance.journal import read_records
from stockade.storage import Storage
from stockade.storage.keyfile import load_keyring
from stockade.testing.process import ServerProcess
from stockade.testing.xmpp import TIMEOUT, Client

DOMAIN = "example.com"
PASSWORD = "alice-pw-1"
FIRST_BURST = 30
SECOND_BURST = 60


async def journal_bodies(proc: ServerProcess) -> list[str]:
    config = proc.config
    storage = await Storage.open(f"sqlite:///{proc.data_dir / 'stockade.db'}",
                                 keyring=load_keyring(config, proc.data_dir))
    try:
        records = await read_records(storage, 0, 100_000, kind="chat")
    finally:
        await storage.close()
    bodies = []
    for record in records:
        stanza = record.payload["stanza"]
        start = stanza.index("<body>") + len("<body>")
        bodies.append(stanza[start:stanza.index("</body>")])
    return bodies


async def test_every_acknowledged_message_is_in_the_journal_after_sigkill(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path, [DOMAIN])
    for user in ("alice", "bob"):
        assert proc.cli("user", "add", f"{user}@{DOMAIN}", "--password", PASSWORD).status == 0
    try:
        await proc.astart()
        alice = Client(f"alice@{DOMAIN}/crash", PASSWORD, port=proc.c2s_port, cert=proc.cert_path,
                       plugins=("xep_0030", "xep_0199", "xep_0198"))
        alice.end_session_on_disconnect = False
        alice.auto_reconnect = False
        sm = alice.plugin["xep_0198"]
        sm.window = sm.window_counter = 1                 # <r/> after every stanza
        enabled = asyncio.Event()
        more_acked = asyncio.Event()
        acked: list[str] = []

        def on_acked(stanza: object) -> None:
            if isinstance(stanza, Message) and stanza["body"]:
                acked.append(stanza["body"])
                more_acked.set()
        alice.add_event_handler("sm_enabled", lambda _: enabled.set())
        alice.add_event_handler("stanza_acked", on_acked)
        try:
            assert await alice.login()
            await asyncio.wait_for(enabled.wait(), TIMEOUT)
            for n in range(FIRST_BURST):
                alice.send_message(mto=f"bob@{DOMAIN}", mbody=f"trade {n}", mtype="chat")
            # slixmpp writes its <r/> before the stanza that triggered it: the ping's <r/> comes
            # after the last message.
            await alice.roundtrip()
            while len(acked) < FIRST_BURST:                # the server works: all are acknowledged
                more_acked.clear()
                await asyncio.wait_for(more_acked.wait(), TIMEOUT)
            for n in range(FIRST_BURST, FIRST_BURST + SECOND_BURST):
                alice.send_message(mto=f"bob@{DOMAIN}", mbody=f"trade {n}", mtype="chat")
            while len(acked) == FIRST_BURST:               # the second burst is arriving...
                more_acked.clear()
                await asyncio.wait_for(more_acked.wait(), TIMEOUT)
            proc.kill()                                    # ...SIGKILL while it is
            await asyncio.wait_for(alice.disconnected_event.wait(), TIMEOUT)
        finally:
            alice.abort_connection()
        assert proc.wait() != 0
        acknowledged = list(acked)
        assert len(acknowledged) >= FIRST_BURST

        await proc.astart()                                # recovers the database, continues the chain
        proc.terminate()
        assert await proc.await_exit() == 0, proc.log
        journaled = await journal_bodies(proc)
        missing = [body for body in acknowledged if body not in journaled]
        assert missing == [], f"acknowledged but not journaled: {missing}"
        assert journaled == sorted(journaled, key=lambda b: int(b.split()[1]))   # routing order
        verified = proc.cli("archive", "verify")
        assert verified.status == 0, verified.stderr
    finally:
        proc.stop()
