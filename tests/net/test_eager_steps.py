"""net/connection.py runs the processing of a client's input up to its first wait in place, and
`_resume` hands the rest to a task: the task must see exactly what the coroutine would have
seen had the task run it from the start (results, failures, cancellation, bare yields)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from stockade.net.connection import _resume


def _started(coro: Any) -> Any:
    """`coro` run by hand up to its first wait, and the rest of it as an awaitable."""
    step = coro.send(None)
    return _resume(coro, step)


async def test_the_rest_gets_the_result_of_what_the_first_step_waited_for() -> None:
    loop = asyncio.get_running_loop()
    first, second = loop.create_future(), loop.create_future()

    async def steps() -> list[str]:
        got = [await first]
        await asyncio.sleep(0)                   # a bare yield in between
        got.append(await second)
        return got

    task = asyncio.ensure_future(_started(steps()))
    await asyncio.sleep(0)
    assert not task.done()
    first.set_result("one")
    loop.call_soon(second.set_result, "two")
    assert await asyncio.wait_for(task, 10) == ["one", "two"]


async def test_a_failed_wait_raises_inside_the_coroutine() -> None:
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    async def steps() -> str:
        try:
            await future
        except LookupError as exc:
            return f"caught {exc}"
        return "not caught"

    task = asyncio.ensure_future(_started(steps()))
    future.set_exception(LookupError("gone"))
    assert await asyncio.wait_for(task, 10) == "caught gone"


async def test_an_uncaught_failure_fails_the_task() -> None:
    future = asyncio.get_running_loop().create_future()

    async def steps() -> None:
        await future

    task = asyncio.ensure_future(_started(steps()))
    future.set_exception(ValueError("bad"))
    with pytest.raises(ValueError, match="bad"):
        await asyncio.wait_for(task, 10)


async def test_cancelling_the_task_cancels_the_coroutine_where_it_waits() -> None:
    never = asyncio.get_running_loop().create_future()
    seen: list[str] = []

    async def steps() -> None:
        try:
            await never
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        finally:
            seen.append("cleaned up")

    task = asyncio.ensure_future(_started(steps()))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["cancelled", "cleaned up"]
    assert never.cancelled()                     # the wait itself was cancelled, as in a plain task
