"""The session registry: lookups by full and bare JID, replacement of a duplicate resource."""

from stockade.core.sessions import ClientSession, SessionManager
from stockade.protocol.jid import parse_jid


class Channel:
    address = "127.0.0.1"
    is_secure = True

    def __init__(self):
        self.sent = []

    def send_stanza(self, stanza):
        self.sent.append(stanza)

    def send_bytes(self, data):
        self.sent.append(data)

    def close(self, error=None):
        self.closed = error


def session(jid: str) -> ClientSession:
    return ClientSession(parse_jid(jid), Channel(), 0.0)


def test_register_lookup_and_replace():
    sm = SessionManager()
    a1, a2 = session("alice@example.com/one"), session("alice@example.com/two")
    assert sm.register(a1) is None and sm.register(a2) is None
    assert len(sm) == 2 and sm.get(parse_jid("alice@example.com/one")) is a1
    assert set(sm.of_user(parse_jid("alice@example.com"))) == {a1, a2}
    newer = session("alice@example.com/one")
    assert sm.register(newer) is a1                   # the caller ends a1 with <conflict/>
    assert len(sm) == 2
    assert not sm.unregister(a1)                      # a replaced session is not removed twice
    assert sm.unregister(newer) and sm.unregister(a2)
    assert len(sm) == 0 and not sm.is_online(parse_jid("alice@example.com"))


def test_available_means_sent_presence():
    sm = SessionManager()
    s = session("bob@example.com/x")
    sm.register(s)
    assert sm.available(parse_jid("bob@example.com")) == []
    s.is_available = True
    assert sm.available(parse_jid("bob@example.com")) == [s]
