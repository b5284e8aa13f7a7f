"""The load generator: asyncio + uvloop over raw sockets, pre-serialised stanzas, a byte scanner."""
