"""XEP-0384 OMEMO on the PEP service: device lists and bundles published with an open access
model, fetched by someone who is not a contact (the first message to a stranger), and the device
list announced to contacts who asked for it (+notify). Both the current namespace
(urn:xmpp:omemo:2) and the one deployed clients still use (eu.siacs.conversations.axolotl)."""

from __future__ import annotations

from .conftest import jid
from .test_pep import error_of, event_items, get_items, items_of, next_event, pep_client, publish
from .test_presence import befriend

OMEMO2 = "urn:xmpp:omemo:2"
DEVICES2 = "urn:xmpp:omemo:2:devices"
BUNDLES2 = "urn:xmpp:omemo:2:bundles"
AXOLOTL = "eu.siacs.conversations.axolotl"
DEVICELIST = AXOLOTL + ".devicelist"
OPEN = {"pubsub#access_model": "open"}


def bundle(device: int) -> str:
    return (f"<bundle xmlns='{OMEMO2}'><spk id='0'>c3Br{device}</spk><spks>c2ln</spks><ik>aWs{device}</ik>"
            f"<prekeys><pk id='1'>cGsx</pk><pk id='2'>cGsy</pk></prekeys></bundle>")


async def test_a_stranger_fetches_omemo_2_devices_and_bundles(server):
    async with pep_client(server, "alice") as alice, pep_client(server, "carol") as carol:
        devices = f"<devices xmlns='{OMEMO2}'><device id='12345' label='laptop'/><device id='4223'/></devices>"
        assert (await publish(alice, DEVICES2, devices, item_id="current", options=OPEN))["type"] == "result"
        # bundles: one item per device, so the node keeps as many as there are (max_items 'max')
        for device in (12345, 4223):
            reply = await publish(alice, BUNDLES2, bundle(device), item_id=str(device),
                                  options={**OPEN, "pubsub#max_items": "max"})
            assert reply["type"] == "result", reply
        # carol, who is nobody to alice, starts an encrypted conversation
        [(item_id, payload)] = items_of(await get_items(carol, DEVICES2, to=jid("alice")))
        assert item_id == "current"
        assert [d.get("id") for d in payload.findall(f"{{{OMEMO2}}}device")] == ["12345", "4223"]
        [(item_id, payload)] = items_of(await get_items(carol, BUNDLES2, to=jid("alice"), ids=("4223",)))
        assert item_id == "4223" and payload.findtext(f"{{{OMEMO2}}}ik") == "aWs4223"
        assert [i for i, _ in items_of(await get_items(carol, BUNDLES2, to=jid("alice")))] == ["12345", "4223"]
        # the device list can be read, not written, by her
        reply = await publish(carol, DEVICES2, f"<devices xmlns='{OMEMO2}'/>", item_id="current", to=jid("alice"))
        assert error_of(reply)[0] == "forbidden"


async def test_legacy_axolotl_bundles_are_open_too(server):
    async with pep_client(server, "alice") as alice, pep_client(server, "carol") as carol:
        devicelist = f"<list xmlns='{AXOLOTL}'><device id='31415'/></list>"
        await publish(alice, DEVICELIST, devicelist, item_id="current", options=OPEN)
        legacy_bundle = (f"<bundle xmlns='{AXOLOTL}'><signedPreKeyPublic signedPreKeyId='1'>c3Br</signedPreKeyPublic>"
                         f"<signedPreKeySignature>c2ln</signedPreKeySignature><identityKey>aWs=</identityKey>"
                         f"<prekeys><preKeyPublic preKeyId='1'>cGs=</preKeyPublic></prekeys></bundle>")
        await publish(alice, AXOLOTL + ".bundles:31415", legacy_bundle, item_id="current", options=OPEN)
        [(_, payload)] = items_of(await get_items(carol, DEVICELIST, to=jid("alice")))
        assert payload.find(f"{{{AXOLOTL}}}device").get("id") == "31415"
        [(_, payload)] = items_of(await get_items(carol, AXOLOTL + ".bundles:31415", to=jid("alice")))
        assert payload.findtext(f"{{{AXOLOTL}}}identityKey") == "aWs="


async def test_contacts_who_asked_hear_about_new_devices(server):
    async with pep_client(server, "alice", notify=(DEVICES2,)) as alice, \
               pep_client(server, "bob", notify=(DEVICES2, DEVICELIST)) as bob:
        await befriend(alice, bob)
        devices = f"<devices xmlns='{OMEMO2}'><device id='1'/><device id='2'/></devices>"
        await publish(alice, DEVICES2, devices, item_id="current", options=OPEN)
        [(_, item_id, payload)] = event_items(await next_event(bob, DEVICES2))
        assert item_id == "current" and len(payload.findall(f"{{{OMEMO2}}}device")) == 2
        # alice's other devices check that they are still listed (XEP-0384 4.3)
        assert event_items(await next_event(alice, DEVICES2))[0][1] == "current"
