"""XEP-0115 verification strings (section 5), checked against the XEP's own examples."""

from __future__ import annotations

from stockade.modules.pep.caps import compute_ver, interests_of, verification_string
from stockade.protocol.xml import parse

SIMPLE = """<query xmlns='http://jabber.org/protocol/disco#info'>
  <identity category='client' name='Exodus 0.9.1' type='pc'/>
  <feature var='http://jabber.org/protocol/caps'/>
  <feature var='http://jabber.org/protocol/disco#info'/>
  <feature var='http://jabber.org/protocol/disco#items'/>
  <feature var='http://jabber.org/protocol/muc'/>
</query>"""

COMPLEX = """<query xmlns='http://jabber.org/protocol/disco#info'>
  <identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>
  <identity xml:lang='el' category='client' name='&#936; 0.11' type='pc'/>
  <feature var='http://jabber.org/protocol/caps'/>
  <feature var='http://jabber.org/protocol/disco#info'/>
  <feature var='http://jabber.org/protocol/disco#items'/>
  <feature var='http://jabber.org/protocol/muc'/>
  <x xmlns='jabber:x:data' type='result'>
    <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>
    <field var='ip_version'><value>ipv4</value><value>ipv6</value></field>
    <field var='os'><value>Mac</value></field>
    <field var='os_version'><value>10.5.1</value></field>
    <field var='software'><value>Psi</value></field>
    <field var='software_version'><value>0.11</value></field>
  </x>
</query>"""


def test_the_simple_example_of_section_5_2():
    query = parse(SIMPLE)
    assert verification_string(query) == (
        "client/pc//Exodus 0.9.1<http://jabber.org/protocol/caps<http://jabber.org/protocol/disco#info<"
        "http://jabber.org/protocol/disco#items<http://jabber.org/protocol/muc<")
    assert compute_ver(query, "sha-1") == "QgayPKawpkPSDYmwT/WM94uAlu0="


def test_the_complex_example_of_section_5_3():
    assert compute_ver(parse(COMPLEX), "sha-1") == "q07IKJEyjvHSyhy//CH0CxmKi8w="


def test_ill_formed_answers_verify_nothing():
    duplicate_feature = SIMPLE.replace("</query>", "<feature var='http://jabber.org/protocol/muc'/></query>")
    assert compute_ver(parse(duplicate_feature), "sha-1") is None
    duplicate_identity = SIMPLE.replace("</query>", "<identity category='client' name='Exodus 0.9.1' type='pc'/></query>")
    assert compute_ver(parse(duplicate_identity), "sha-1") is None
    two_forms = COMPLEX.replace("</query>", COMPLEX[COMPLEX.index("<x "):COMPLEX.index("</x>") + 4] + "</query>")
    assert compute_ver(parse(two_forms), "sha-1") is None


def test_weak_or_unknown_hashes_are_not_accepted():
    assert compute_ver(parse(SIMPLE), "md5") is None
    assert compute_ver(parse(SIMPLE), "sha-256") is not None


def test_interests_are_the_notify_features():
    query = parse("<query xmlns='http://jabber.org/protocol/disco#info'>"
                  "<feature var='http://jabber.org/protocol/tune+notify'/><feature var='urn:xmpp:avatar:metadata+notify'/>"
                  "<feature var='http://jabber.org/protocol/tune'/><feature var='+notify'/></query>")
    assert interests_of(query) == {"http://jabber.org/protocol/tune", "urn:xmpp:avatar:metadata"}
