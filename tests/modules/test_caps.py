"""XEP-0115 5.1 verification strings, checked against the XEP's own examples (5.2 and 5.3)."""

from __future__ import annotations

import pytest

from stockade.modules.caps import compute_ver, verification_string
from stockade.protocol.xml import parse

FEATURES = ["http://jabber.org/protocol/caps", "http://jabber.org/protocol/disco#info",
            "http://jabber.org/protocol/disco#items", "http://jabber.org/protocol/muc"]

SOFTWARE_INFO = parse("""<x xmlns='jabber:x:data' type='result'>
  <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>
  <field var='ip_version' type='text-multi'><value>ipv4</value><value>ipv6</value></field>
  <field var='os'><value>Mac</value></field>
  <field var='os_version'><value>10.5.1</value></field>
  <field var='software'><value>Psi</value></field>
  <field var='software_version'><value>0.11</value></field>
</x>""")


def test_the_simple_example_of_section_5_2():
    identities = [("client", "pc", "", "Exodus 0.9.1")]
    assert verification_string(identities, reversed(FEATURES)) == (
        "client/pc//Exodus 0.9.1<http://jabber.org/protocol/caps<http://jabber.org/protocol/disco#info<"
        "http://jabber.org/protocol/disco#items<http://jabber.org/protocol/muc<")
    assert compute_ver(identities, FEATURES) == "QgayPKawpkPSDYmwT/WM94uAlu0="


def test_the_complex_example_of_section_5_3_with_languages_and_a_form():
    identities = [("client", "pc", "en", "Psi 0.11"), ("client", "pc", "el", "\u03a8 0.11")]
    assert compute_ver(identities, FEATURES, [SOFTWARE_INFO]) == "q07IKJEyjvHSyhy//CH0CxmKi8w="


def test_a_form_without_a_hidden_form_type_is_not_hashed():
    not_hidden = parse("<x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE'>"
                       "<value>urn:example</value></field><field var='a'><value>b</value></field></x>")
    identities = [("client", "pc", "", "Exodus 0.9.1")]
    assert compute_ver(identities, FEATURES, [not_hidden]) == "QgayPKawpkPSDYmwT/WM94uAlu0="


@pytest.mark.parametrize("identities, features, forms", [
    ([("server", "im", "", "x"), ("server", "im", "", "x")], ["a"], []),
    ([("server", "im", "", "x")], ["a", "a"], []),
    ([("server", "im", "", "x")], ["a"], [SOFTWARE_INFO, SOFTWARE_INFO]),
])
def test_ill_formed_information_is_refused_rather_than_advertised(identities, features, forms):
    with pytest.raises(ValueError):
        verification_string(identities, features, forms)
