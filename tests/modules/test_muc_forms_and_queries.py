"""The pure parts of the chat service: discussion history limits (XEP-0045 7.2.15), the room
configuration form (10.1.3, 10.2), and XEP-0313/XEP-0059 query parsing and paging over a real
archive store."""

from __future__ import annotations

import pytest

from stockade.modules.muc.config import RoomConfig, apply_form, config_form, privacy_codes, room_features
from stockade.modules.muc.forms import read_submission
from stockade.modules.muc.history import History, HistoryLimits, parse_stamp
from stockade.modules.muc.mam_query import MamQuery, RsmRequest, fetch_page, parse_query
from stockade.protocol.errors import StanzaError
from stockade.protocol.xml import Element, parse
from stockade.storage import Storage

NS_MUC = "http://jabber.org/protocol/muc"


def message(n: int) -> Element:
    return parse(f"<message xmlns='jabber:client' from='r@c.example.com/a' type='groupchat'><body>m{n}</body></message>")


def join_x(**attrs: str) -> Element:
    x = Element("x", NS_MUC)
    x.add("history", attrs=attrs)
    return x


def test_history_sends_the_smallest_set_meeting_every_limit():
    history = History(max_entries=5)
    for n in range(7):
        history.add(message(n), when=1000.0 + n)
    assert [e.stanza.find_text("body") for e in history.select(HistoryLimits())] == ["m2", "m3", "m4", "m5", "m6"]
    limits = HistoryLimits.from_join(join_x(maxstanzas="3", seconds="3"), now=1006.5)
    assert [e.stanza.find_text("body") for e in history.select(limits)] == ["m4", "m5", "m6"]
    size = history.entries[-1].size
    limits = HistoryLimits.from_join(join_x(maxchars=str(2 * size + 1)), now=0)
    assert len(history.select(limits)) == 2                       # whole stanzas only
    assert history.select(HistoryLimits.from_join(join_x(maxchars="0"), now=0)) == []
    since = HistoryLimits.from_join(join_x(since="1970-01-01T00:16:45Z"), now=0)   # 1005
    assert [e.stanza.find_text("body") for e in history.select(since)] == ["m5", "m6"]


@pytest.mark.parametrize("attrs", [{"maxstanzas": "many"}, {"seconds": "-1"}, {"since": "yesterday"},
                                   {"since": "2024-01-01T00:00:00"}])
def test_bad_history_requests_are_refused(attrs):
    with pytest.raises(StanzaError) as exc:
        HistoryLimits.from_join(join_x(**attrs), now=0)
    assert exc.value.condition == "bad-request" and exc.value.text


def test_dates_are_xep_0082():
    assert parse_stamp("1970-01-01T00:00:10Z", "since") == 10.0
    assert parse_stamp("1970-01-01T01:00:10+01:00", "since") == 10.0


def submit(**fields: str) -> Element:
    x = Element("x", "jabber:x:data", {"type": "submit"})
    f = x.add("field", attrs={"var": "FORM_TYPE"})
    f.add("value", text="http://jabber.org/protocol/muc#roomconfig")
    for name, value in fields.items():
        x.add("field", attrs={"var": f"muc#roomconfig_{name}"}).add("value", text=value)
    return x


def test_a_configuration_form_round_trips_and_changes_only_what_it_says():
    config = RoomConfig()
    form = read_submission(config_form("lounge", config, 200))
    assert apply_form(config, form, 200) == config
    new = apply_form(config, read_submission(submit(roomname="Lounge", moderatedroom="1", whois="anyone",
                                                    maxusers="20", unknownfield="ignored")), 200)
    assert (new.name, new.is_moderated, new.whois, new.max_users) == ("Lounge", True, "anyone", 20)
    assert privacy_codes(config, new) == ["172", "104"]
    assert "muc_moderated" in room_features(new) and "muc_nonanonymous" in room_features(new)


@pytest.mark.parametrize("fields", [{"passwordprotectedroom": "1"}, {"moderatedroom": "maybe"},
                                    {"maxusers": "1000"}, {"maxusers": "lots"}, {"whois": "everyone"},
                                    {"roomname": "x" * 2000}])
def test_a_bad_configuration_value_refuses_the_whole_form(fields):
    with pytest.raises(StanzaError) as exc:
        apply_form(RoomConfig(), read_submission(submit(**fields)), 200)
    assert exc.value.condition == "not-acceptable" and exc.value.text


def mam(form: str = "", rsm: str = "") -> Element:
    return parse(f"<query xmlns='urn:xmpp:mam:2' queryid='q'>{form}"
                 f"<set xmlns='http://jabber.org/protocol/rsm'>{rsm}</set></query>")


def test_queries_are_parsed_strictly():
    q = parse_query(mam("<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>urn:xmpp:mam:2</value>"
                        "</field><field var='with'><value>Room@Conference.Example.com/Nick</value></field>"
                        "<field var='start'><value>1970-01-01T00:00:05Z</value></field></x>", "<max>10</max><before/>"))
    assert q == MamQuery("q", "room@conference.example.com/Nick", 5.0, None, RsmRequest(10, None, ""), False)
    for rsm, condition in (("<max>-1</max>", "bad-request"), ("<index>3</index>", "feature-not-implemented"),
                           ("<after>a</after><before>b</before>", "bad-request"), ("<max>ten</max>", "bad-request")):
        with pytest.raises(StanzaError) as exc:
            parse_query(mam(rsm=rsm))
        assert exc.value.condition == condition


async def test_paging_over_a_real_archive(tmp_path):
    storage = await Storage.open(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        archive = storage.archive("muc_archive")
        for n in range(5):
            await archive.append("c.example.com", "room", f"<message>{n}</message>", key=f"k{n}", when=100.0 + n,
                                 with_jid="room@c.example.com/a" if n % 2 else "room@c.example.com/b")
        page = await fetch_page(archive, "c.example.com", "room", MamQuery(rsm=RsmRequest(max=2)), 100)
        assert [i.key for i in page.items] == ["k0", "k1"] and (page.count, page.first_index, page.complete) == (5, 0, False)
        page = await fetch_page(archive, "c.example.com", "room", MamQuery(rsm=RsmRequest(max=2, after="k3")), 100)
        assert [i.key for i in page.items] == ["k4"] and (page.first_index, page.complete) == (4, True)
        page = await fetch_page(archive, "c.example.com", "room", MamQuery(rsm=RsmRequest(max=2, before="")), 100)
        assert [i.key for i in page.items] == ["k3", "k4"] and not page.complete
        page = await fetch_page(archive, "c.example.com", "room", MamQuery(rsm=RsmRequest(max=2, before="k2")), 100)
        assert [i.key for i in page.items] == ["k0", "k1"] and (page.first_index, page.complete) == (0, True)
        page = await fetch_page(archive, "c.example.com", "room",
                                MamQuery(with_jid="room@c.example.com/a", start=101.5), 1)
        assert [i.key for i in page.items] == ["k3"] and page.count == 1 and page.complete
        with pytest.raises(StanzaError) as exc:
            await fetch_page(archive, "c.example.com", "room", MamQuery(rsm=RsmRequest(after="nope")), 100)
        assert exc.value.condition == "item-not-found"
        # another room's ids are not positions in this one
        await archive.append("c.example.com", "other", "<message/>", key="elsewhere")
        with pytest.raises(StanzaError):
            await fetch_page(archive, "c.example.com", "room", MamQuery(rsm=RsmRequest(after="elsewhere")), 100)
    finally:
        await storage.close()
