"""A server whose archive appends are written by a process of their own ([storage]
archive_process, storage/writer_process.py): chat through real clients is archived and read
back with MAM as with the writer thread; XEP-0198 acks wait for those writes all the same."""

from __future__ import annotations

import os

from stockade.testing.server import RunningServer

from .conftest import DOMAIN, USERS, jid
from .test_mam import body, mam_client, query_archive


async def test_chat_is_archived_by_the_writer_process_and_paged_back(tmp_path):
    with RunningServer([DOMAIN], data_dir=tmp_path, config={"storage": {"archive_process": "on"}}) as srv:
        for user in ("alice", "bob"):
            srv.add_user(jid(user), USERS[user])
        async with mam_client(srv, "alice") as alice, mam_client(srv, "bob") as bob:
            for i in range(30):
                alice.send_message(mto=jid("bob"), mbody=f"m{i:02}", mtype="chat")
            await alice.roundtrip()
            _, sent = await query_archive(alice, max=50)
            _, received = await query_archive(bob, max=50)
            process = srv.server.storage._archive_process._proc         # it wrote them
            assert process is not None and process.pid != os.getpid()
            assert [body(r) for r in sent] == [f"m{i:02}" for i in range(30)]
            assert [body(r) for r in received] == [f"m{i:02}" for i in range(30)]
    assert process.returncode == 0                   # the server's stop let it finish
    with RunningServer([DOMAIN], data_dir=tmp_path) as srv:           # and it all stayed
        async with mam_client(srv, "alice") as alice:
            _, again = await query_archive(alice, max=50)
            assert len(again) == 30


def test_the_test_servers_keep_the_writes_in_their_thread():
    with RunningServer([DOMAIN]) as srv:
        assert srv.server.storage._archive_process is None
