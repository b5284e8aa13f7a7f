"""XEP-0059 request parsing, the result <set/>, and paging an in-memory result set."""

from __future__ import annotations

import pytest

from stockade.modules.rsm import (NS_RSM, RsmPage, RsmRequest, page_limit, page_result_set, paginate,
                                  parse_rsm, result_set)
from stockade.protocol.errors import StanzaError
from stockade.protocol.xml import parse


def query(set_xml: str = "") -> object:
    return parse(f"<query xmlns='urn:example'>{set_xml}</query>")


def rsm(inner: str) -> str:
    return f"<set xmlns='{NS_RSM}'>{inner}</set>"


def test_no_set_is_none_and_the_server_limit_applies():
    assert parse_rsm(query()) is None
    assert page_limit(None, 50) == 50


@pytest.mark.parametrize("inner, expected", [
    ("<max>10</max>", RsmRequest(max=10)),
    ("<max> 7 </max><after>abc</after>", RsmRequest(max=7, after="abc")),
    ("<max>10</max><before/>", RsmRequest(max=10, before="")),
    ("<before>xyz</before>", RsmRequest(before="xyz")),
])
def test_requests_are_read(inner, expected):
    request = parse_rsm(query(rsm(inner)))
    assert request == expected
    assert request.is_backward == (expected.before is not None)


def test_the_client_max_is_capped_by_the_server():
    assert page_limit(RsmRequest(max=500), 100) == 100
    assert page_limit(RsmRequest(max=0), 100) == 0
    assert page_limit(RsmRequest(), 100) == 100


@pytest.mark.parametrize("inner, condition", [
    ("<max>ten</max>", "bad-request"),
    ("<max>-1</max>", "bad-request"),
    ("<max>1</max><max>2</max>", "bad-request"),
    ("<after/>", "bad-request"),
    ("<after>a</after><before>b</before>", "bad-request"),
    ("<index>3</index>", "feature-not-implemented"),
])
def test_bad_requests_are_refused_with_a_reason(inner, condition):
    with pytest.raises(StanzaError) as info:
        parse_rsm(query(rsm(inner)))
    assert info.value.condition == condition and info.value.text


def test_index_where_the_protocol_allows_it():
    assert parse_rsm(query(rsm("<index>3</index><max>2</max>")), allow_index=True) == RsmRequest(max=2, index=3)
    with pytest.raises(StanzaError):
        parse_rsm(query(rsm("<index>3</index><after>x</after>")), allow_index=True)


def test_the_result_set_has_first_last_and_count_only_when_known():
    assert result_set(count=0).serialize() == f'<set xmlns="{NS_RSM}"><count>0</count></set>'.encode()
    out = result_set("a", "c", 3, 0)
    assert out.find("first", NS_RSM).text == "a" and out.find("first", NS_RSM).get("index") == "0"
    assert out.find_text("last", NS_RSM) == "c" and out.find_text("count", NS_RSM) == "3"
    assert result_set().children == []
    page = RsmPage(["x", "y"], None, None, True)
    out = page_result_set(page, str.upper)
    assert out.find_text("first", NS_RSM) == "X" and out.find("count", NS_RSM) is None


ITEMS = [f"i{n}" for n in range(25)]


def test_paginate_forwards_and_backwards():
    ident = str
    first = paginate(ITEMS, RsmRequest(max=10), ident, 100)
    assert (first.items, first.first_index, first.count, first.is_complete) == (ITEMS[:10], 0, 25, False)
    second = paginate(ITEMS, RsmRequest(max=10, after="i9"), ident, 100)
    assert (second.items[0], second.first_index) == ("i10", 10)
    third = paginate(ITEMS, RsmRequest(max=10, after="i19"), ident, 100)
    assert (third.items, third.is_complete) == (ITEMS[20:], True)
    last = paginate(ITEMS, RsmRequest(max=10, before=""), ident, 100)
    assert (last.items, last.first_index, last.is_complete) == (ITEMS[15:], 15, False)
    earliest = paginate(ITEMS, RsmRequest(max=10, before="i5"), ident, 100)
    assert (earliest.items, earliest.first_index, earliest.is_complete) == (ITEMS[:5], 0, True)
    by_index = paginate(ITEMS, RsmRequest(max=3, index=22), ident, 100)
    assert (by_index.items, by_index.is_complete) == (ITEMS[22:], True)
    assert paginate(ITEMS, None, ident, 4).items == ITEMS[:4]
    with pytest.raises(StanzaError) as info:
        paginate(ITEMS, RsmRequest(after="gone"), ident, 10)
    assert info.value.condition == "item-not-found"
