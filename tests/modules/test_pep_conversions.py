"""The payload conversions of bookmarks (XEP-0048 <-> XEP-0402) and avatars (vCard PHOTO)."""

from __future__ import annotations

import base64
import struct

from stockade.modules.pep.avatar import decode_base64, image_size, photo_of
from stockade.modules.pep.bookmarks import NS_BOOKMARKS, NS_LEGACY, to_legacy, to_modern
from stockade.protocol.xml import parse


def test_a_legacy_conference_becomes_a_modern_item_and_back():
    legacy = parse(f"<conference xmlns='{NS_LEGACY}' jid='room@muc.example.com' name='Room' autojoin='1'>"
                   f"<nick>Me</nick><password>pw</password></conference>")
    modern = to_modern(legacy, None)
    assert modern.xmlns == NS_BOOKMARKS and "jid" not in modern.attrs
    assert modern.get("autojoin") == "true" and modern.find_text("nick", NS_BOOKMARKS) == "Me"
    back = to_legacy("room@muc.example.com", modern)
    assert back.attrs == {"jid": "room@muc.example.com", "name": "Room", "autojoin": "true"}
    assert back.find_text("password", NS_LEGACY) == "pw"


def test_extensions_of_the_modern_item_survive_a_legacy_write():
    previous = parse(f"<conference xmlns='{NS_BOOKMARKS}'><extensions><x xmlns='urn:c'/></extensions></conference>")
    legacy = parse(f"<conference xmlns='{NS_LEGACY}' jid='room@muc.example.com' autojoin='false'/>")
    modern = to_modern(legacy, previous)
    assert "autojoin" not in modern.attrs
    assert modern.find("extensions", NS_BOOKMARKS).find("x", "urn:c") is not None


def test_the_vcard_photo_is_decoded_with_line_breaks():
    image = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dIHDR" + struct.pack(">II", 96, 32) + b"rest"
    encoded = base64.b64encode(image).decode()
    wrapped = "\n".join(encoded[i:i + 20] for i in range(0, len(encoded), 20))
    vcard = parse(f"<vCard xmlns='vcard-temp'><PHOTO><TYPE>image/png</TYPE><BINVAL>{wrapped}</BINVAL></PHOTO></vCard>")
    assert photo_of(vcard) == ("image/png", image)
    assert image_size(image) == (96, 32)
    assert image_size(b"GIF89a" + struct.pack("<HH", 16, 24)) == (16, 24)
    assert image_size(b"\xff\xd8 jpeg") is None


def test_broken_photos_are_no_photos():
    assert decode_base64("not base64!") is None
    assert photo_of(parse("<vCard xmlns='vcard-temp'><PHOTO><BINVAL>%%%</BINVAL></PHOTO></vCard>")) is None
    assert photo_of(parse("<vCard xmlns='vcard-temp'><FN>x</FN></vCard>")) is None
