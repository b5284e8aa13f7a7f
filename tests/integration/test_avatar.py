"""Avatars: XEP-0084 (PEP) and XEP-0153 (vCard) kept in step by the server (XEP-0398), and the
avatar hash the server adds to a user's presence (XEP-0398 section 4)."""

from __future__ import annotations

import base64
import hashlib
import struct
import zlib

from .conftest import jid
from .test_pep import error_of, event_items, get_items, iq, items_of, next_event, pep_client, publish
from .test_presence import befriend

DATA = "urn:xmpp:avatar:data"
METADATA = "urn:xmpp:avatar:metadata"
UPDATE = "vcard-temp:x:update"
VCARD = "vcard-temp"
AVATAR_CLIENT = ("xep_0060", "xep_0163", "xep_0084")


def png(width: int, height: int, shade: int = 0) -> bytes:
    """A real (grey) PNG image of the given size."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + bytes([shade]) * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


async def vcard_of(c, who: str):
    reply = await iq(c, "get", f"<vCard xmlns='{VCARD}'/>", to=jid(who))
    assert reply["type"] == "result", reply
    return reply.xml.find(f"{{{VCARD}}}vCard")


def photo_hash(presence) -> str | None:
    photo = presence.xml.find(f"{{{UPDATE}}}x/{{{UPDATE}}}photo")
    return None if photo is None else (photo.text or "")


async def test_a_pep_avatar_becomes_the_vcard_photo(server):
    image = png(64, 64, 200)
    digest = hashlib.sha1(image).hexdigest()
    async with pep_client(server, "alice", plugins=AVATAR_CLIENT) as alice, pep_client(server, "bob") as bob:
        await befriend(alice, bob)
        # XEP-0084: data first, then the metadata that announces it
        await alice["xep_0084"].publish_avatar(image)
        await alice["xep_0084"].publish_avatar_metadata([{"id": digest, "type": "image/png", "bytes": str(len(image)),
                                                          "width": "64", "height": "64"}])
        # bob, like a MUC participant would, reads the vCard: the same image
        photo = (await vcard_of(bob, "alice")).find(f"{{{VCARD}}}PHOTO")
        assert photo.findtext(f"{{{VCARD}}}TYPE") == "image/png"
        assert base64.b64decode(photo.findtext(f"{{{VCARD}}}BINVAL")) == image
        # alice's next presence carries the hash, though her client does not do XEP-0153
        alice.send_presence(pstatus="new avatar")
        seen = await bob.next_presence(jid("alice"), match=lambda p: p["status"] == "new avatar")
        assert photo_hash(seen) == digest
        # she disables her avatar (empty metadata, XEP-0084 4.5): the vCard photo goes too
        await alice["xep_0084"].stop()
        assert (await vcard_of(bob, "alice")).find(f"{{{VCARD}}}PHOTO") is None
        alice.send_presence(pstatus="no avatar")
        seen = await bob.next_presence(jid("alice"), match=lambda p: p["status"] == "no avatar")
        assert photo_hash(seen) == ""


async def test_a_vcard_photo_becomes_a_pep_avatar(server):
    image = png(32, 48, 10)
    digest = hashlib.sha1(image).hexdigest()
    async with pep_client(server, "alice", plugins=("xep_0054", "xep_0153")) as alice, \
               pep_client(server, "bob", notify=(METADATA,)) as bob:
        await befriend(alice, bob)
        # alice's client knows vCard avatars only (XEP-0153)
        await alice["xep_0153"].set_avatar(avatar=image, mtype="image/png")
        # bob's client (XEP-0084 only) is told about the new avatar ...
        [(_, item_id, metadata)] = event_items(await next_event(bob, METADATA))
        info = metadata.find(f"{{{METADATA}}}info")
        assert item_id == digest and info.get("id") == digest
        assert (info.get("type"), info.get("bytes"), info.get("width"), info.get("height")) == \
            ("image/png", str(len(image)), "32", "48")
        # ... and fetches the image by its id
        [(_, data)] = items_of(await get_items(bob, DATA, to=jid("alice"), ids=(digest,)))
        assert base64.b64decode(data.text) == image
        # setting the same vCard again announces nothing new
        await iq(alice, "set", f"<vCard xmlns='{VCARD}'><FN>Alice A.</FN><PHOTO><TYPE>image/png</TYPE>"
                               f"<BINVAL>{base64.b64encode(image).decode()}</BINVAL></PHOTO></vCard>")
        alice.send_presence(pstatus="same face")
        seen = await bob.next_presence(jid("alice"), match=lambda p: p["status"] == "same face")
        assert photo_hash(seen) == digest
        await bob.roundtrip()
        assert [m for m in bob.pending(bob.events) if m.xml.find(f".//{{*}}items[@node='{METADATA}']") is not None] == []
        # and the avatar nodes stay readable by contacts only (the PEP default)
        async with pep_client(server, "carol") as carol:
            assert error_of(await get_items(carol, DATA, to=jid("alice")))[0] == "not-authorized"


async def test_avatar_data_that_does_not_match_its_id_is_not_copied(server):
    image, other = png(8, 8, 1), png(8, 8, 2)
    claimed = hashlib.sha1(other).hexdigest()
    async with pep_client(server, "alice") as alice:
        await publish(alice, DATA, f"<data xmlns='{DATA}'>{base64.b64encode(image).decode()}</data>", item_id=claimed)
        await publish(alice, METADATA, f"<metadata xmlns='{METADATA}'><info id='{claimed}' type='image/png' "
                                       f"bytes='{len(image)}'/></metadata>", item_id=claimed)
        assert (await vcard_of(alice, "alice")).find(f"{{{VCARD}}}PHOTO") is None


async def test_the_clients_own_photo_element_is_left_alone(server):
    async with pep_client(server, "alice") as alice, pep_client(server, "bob") as bob:
        await befriend(alice, bob)
        await iq(alice, "set", f"<vCard xmlns='{VCARD}'><PHOTO><TYPE>image/png</TYPE>"
                               f"<BINVAL>{base64.b64encode(png(4, 4)).decode()}</BINVAL></PHOTO></vCard>")
        presence = alice.make_presence(pstatus="not ready")
        presence.xml.append(presence.xml.makeelement(f"{{{UPDATE}}}x", {}))
        presence.xml[-1].append(presence.xml.makeelement(f"{{{UPDATE}}}photo", {}))
        presence.send()
        seen = await bob.next_presence(jid("alice"), match=lambda p: p["status"] == "not ready")
        assert photo_hash(seen) == ""
