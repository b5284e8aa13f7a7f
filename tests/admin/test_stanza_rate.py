"""The dashboard's stanzas per minute: two readings of the received-stanza total a minute apart."""

from __future__ import annotations

from stockade.admin.actions import StanzaRate
from stockade.testing.clock import FakeClock


def test_the_rate_is_the_difference_of_the_last_two_readings_per_minute():
    clock, total = FakeClock(), [1000]
    rate = StanzaRate(lambda: total[0], clock)
    assert rate.per_minute() is None                    # no reading yet
    rate.sample()
    assert rate.per_minute() is None                    # one reading is not a rate
    total[0] += 240
    clock.advance(60)
    rate.sample()
    assert rate.per_minute() == 240
    total[0] += 30                                      # a late reading: 30 stanzas in 120 s
    clock.advance(120)
    rate.sample()
    assert rate.per_minute() == 15


def test_a_total_that_went_down_reads_as_no_traffic_not_a_negative_rate():
    clock, total = FakeClock(), [500]
    rate = StanzaRate(lambda: total[0], clock)
    rate.sample()
    total[0] = 100
    clock.advance(60)
    rate.sample()
    assert rate.per_minute() == 0
