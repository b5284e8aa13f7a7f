"""AccountService.reconcile: accounts created or removed by another process (the CLI) are picked
up, and the account list is read only when the counter of account changes moved."""

from __future__ import annotations

from stockade.core.accounts import AccountService
from stockade.protocol.sasl.scram import derive
from stockade.storage import Storage

HOST = "example.com"
KEYS = [derive("correct horse", "sha256", salt=b"salt-sha256-0123", iterations=4096)]


async def _in_another_process(url: str, change) -> None:
    other = await Storage.open(url)
    try:
        await change(other.accounts)
    finally:
        await other.close()


async def test_reconcile_reads_the_accounts_only_after_they_changed(storage_url: str) -> None:
    storage = await Storage.open(storage_url)
    try:
        await storage.accounts.create(HOST, "alice", KEYS)
        service = AccountService(storage, {HOST})
        await service.load()
        removed: list[tuple[str, str]] = []
        service.on_removed.append(lambda host, user: removed.append((host, user)))
        listed = 0
        list_accounts = storage.accounts.list

        async def counting_list(*args, **kwargs):
            nonlocal listed
            listed += 1
            return await list_accounts(*args, **kwargs)

        storage.accounts.list = counting_list
        assert await service.reconcile() == [] and listed == 0        # nothing changed: no list

        await _in_another_process(storage_url, lambda accounts: accounts.remove(HOST, "alice"))
        assert await service.reconcile() == [(HOST, "alice")]
        assert removed == [(HOST, "alice")] and listed == 1
        assert not service.exists_cached(HOST, "alice")
        assert await service.reconcile() == [] and listed == 1

        await _in_another_process(storage_url, lambda accounts: accounts.create(HOST, "bob", KEYS))
        assert await service.reconcile() == [] and listed == 2
        assert service.exists_cached(HOST, "bob")
        assert removed == [(HOST, "alice")]
    finally:
        await storage.close()
