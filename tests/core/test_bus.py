"""The hook bus: priority order, first result wins, sync hooks refuse coroutine handlers."""

import pytest

from stockade.core.bus import HookBus
from stockade.core.hooks import FALLBACK, HANDLED, POLICY, MessageUndeliverable, StanzaFromClient
from stockade.protocol.jid import parse_jid
from stockade.protocol.xml import Element


def test_higher_priority_runs_first_and_the_first_result_ends_the_chain():
    bus = HookBus()
    seen = []
    bus.on(StanzaFromClient, lambda e: seen.append("default"))
    bus.on(StanzaFromClient, lambda e: seen.append("policy") or "verdict", POLICY)
    bus.on(StanzaFromClient, lambda e: seen.append("fallback"), FALLBACK)
    assert bus.fire(StanzaFromClient(None, Element("message"))) == "verdict"
    assert seen == ["policy"]


def test_sync_hooks_refuse_coroutines_and_unknown_hooks_are_refused():
    bus = HookBus()

    async def handler(event):
        return None
    with pytest.raises(TypeError):
        bus.on(StanzaFromClient, handler)
    with pytest.raises(TypeError):
        bus.on(dict, lambda e: None)


async def test_async_hooks_run_both_kinds_and_survive_a_failing_handler():
    bus = HookBus()

    async def broken(event):
        raise RuntimeError("boom")

    async def keeper(event):
        return HANDLED
    bus.on(MessageUndeliverable, broken, 10)
    bus.on(MessageUndeliverable, keeper)
    assert await bus.fire_async(MessageUndeliverable(Element("message"), parse_jid("a@b"))) is HANDLED


async def test_a_failing_handler_of_a_veto_hook_refuses():
    from stockade.core.hooks import UploadReceived
    from stockade.core.verdict import Deny
    bus = HookBus()

    async def crashed_scanner(event):
        raise ConnectionError("scanner unreachable")
    bus.on(UploadReceived, crashed_scanner)
    verdict = await bus.fire_async(UploadReceived("example.com", "alice", "s", "f.txt", "text/plain", 1, None))
    assert isinstance(verdict, Deny) and verdict.condition == "internal-server-error"


def test_a_control_switched_off_and_on_again_runs_once_per_stanza():
    """Controls register their handlers (bound methods) only while a host uses them. Switching
    one off must really remove it, and on again must not register it twice: a bound method read
    twice is two objects, so identity (`is`) never matched and the handler piled up."""
    class Control:
        def __init__(self) -> None:
            self.calls = 0

        def check(self, event: StanzaFromClient) -> None:
            self.calls += 1

    bus, control = HookBus(), Control()
    for wanted in (True, True, False, True, False, True):
        bus.toggle(StanzaFromClient, control.check, POLICY, wanted)
    bus.fire(StanzaFromClient(None, Element("message")))          # type: ignore[arg-type]
    assert control.calls == 1 and bus.has(StanzaFromClient)
    bus.off(StanzaFromClient, control.check)
    assert not bus.has(StanzaFromClient)
