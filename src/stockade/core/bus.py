"""Dispatch of hook events to handlers, through precomputed, priority-ordered handler lists."""

from __future__ import annotations

import inspect
import logging
from typing import Any, Awaitable, Callable

from .hooks import CATALOGUE

log = logging.getLogger(__name__)


class HookBus:
    """Handlers per hook type. Sync hooks run plain functions only; async hooks run both kinds."""

    def __init__(self) -> None:
        self._entries: dict[type, list[tuple[int, int, Callable[..., Any], bool]]] = {}
        self._chains: dict[type, tuple[tuple[Callable[..., Any], bool], ...]] = {}
        self._plain: dict[type, tuple[Callable[..., Any], ...]] = {}    # _chains' handlers alone, for fire
        self._order = 0
        # `has(hook)`: whether a hook has handlers. Asked before building an event, several
        # times per stanza: the C method of _plain, which holds only the hooks with handlers.
        self.has: Callable[[type], bool] = self._plain.__contains__

    def on(self, hook: type, handler: Callable[..., Any], priority: int = 0) -> None:
        if hook not in CATALOGUE:
            raise TypeError(f"{hook!r} is not a hook in core.hooks.CATALOGUE")
        is_async = inspect.iscoroutinefunction(handler)
        if is_async and not hook.ASYNC:
            raise TypeError(f"{hook.__name__} is fired synchronously; {handler!r} must not be async")
        self._order += 1
        entries = self._entries.setdefault(hook, [])
        entries.append((-priority, self._order, handler, is_async))
        entries.sort(key=lambda e: (e[0], e[1]))
        self._chain(hook, entries)

    def off(self, hook: type, handler: Callable[..., Any]) -> None:
        # `!=`, not `is not`: `obj.method` makes a new bound-method object each time it is read,
        # and those compare equal when they are the same function of the same object.
        entries = [e for e in self._entries.get(hook, []) if e[2] != handler]
        self._entries[hook] = entries
        self._chain(hook, entries)

    def _chain(self, hook: type, entries: list[tuple[int, int, Callable[..., Any], bool]]) -> None:
        if entries:
            self._chains[hook] = tuple((h, a) for _, _, h, a in entries)
            self._plain[hook] = tuple(h for _, _, h, _ in entries)
        else:
            self._chains.pop(hook, None)
            self._plain.pop(hook, None)

    def toggle(self, hook: type, handler: Callable[..., Any], priority: int, wanted: bool) -> None:
        """Register `handler` while `wanted`, unregister it otherwise; idempotent. For controls
        whose hooks are registered only while some host uses them, so that they cost nothing on
        the message path otherwise."""
        present = any(e[2] == handler for e in self._entries.get(hook, ()))
        if wanted and not present:
            self.on(hook, handler, priority)
        elif not wanted and present:
            self.off(hook, handler)

    def fire(self, event: Any) -> Any:
        """Run a sync hook's chain; the first non-None result ends it and is returned."""
        for handler in self._plain.get(type(event), ()):
            result = handler(event)
            if result is not None:
                return result
        return None

    async def fire_async(self, event: Any) -> Any:
        """Run an async hook's chain. A handler that raises is logged; on a hook that may veto
        (VETO = True) the failure is a refusal, so a crashed safety check never lets something
        through; on the others it is skipped, so one broken module cannot stop session cleanup or
        shutdown for the rest."""
        for handler, is_async in self._chains.get(type(event), ()):
            try:
                result = handler(event)
                if is_async:
                    result = await result
            except Exception:
                log.exception("handler %r failed on %s", handler, type(event).__name__)
                if getattr(event, "VETO", False):
                    from .verdict import Deny
                    return Deny("internal-server-error", "a safety check failed; the action was refused",
                                rule=f"{type(event).__name__} handler failure")
                continue
            if result is not None:
                return result
        return None


Handler = Callable[[Any], Any | Awaitable[Any]]
