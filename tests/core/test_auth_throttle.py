"""Login throttling: sliding windows per key, lockout and its expiry, on an injected clock."""

from stockade.core.auth import LoginThrottle, ThrottleLimits
from stockade.testing.clock import FakeClock


def test_lock_after_the_limit_within_the_window_and_unlock_after_lockout():
    clock = FakeClock()
    t = LoginThrottle(clock, ThrottleLimits(max_failures_per_account=3, window=60, lockout=300))
    key = t.account_key("example.com", "alice")
    assert not t.record_failure(key, 3) and not t.record_failure(key, 3)
    assert t.record_failure(key, 3)                 # the third failure locks
    assert t.locked(key) == 300
    clock.advance(299)
    assert t.locked(key) > 0
    clock.advance(2)
    assert t.locked(key) == 0                       # lock expired, counts forgotten
    assert not t.record_failure(key, 3)


def test_failures_outside_the_window_do_not_count():
    clock = FakeClock()
    t = LoginThrottle(clock, ThrottleLimits(window=60, lockout=300))
    key = t.address_key("192.0.2.1")
    t.record_failure(key, 3)
    t.record_failure(key, 3)
    clock.advance(61)
    assert not t.record_failure(key, 3)             # the old two fell out of the window
    assert t.locked(key) == 0


def test_success_resets_and_unlock_is_explicit():
    clock = FakeClock()
    t = LoginThrottle(clock, ThrottleLimits(window=60, lockout=300))
    key = t.account_key("example.com", "bob")
    for _ in range(3):
        t.record_failure(key, 3)
    assert t.unlock(key) and t.locked(key) == 0
    assert not t.unlock(key)
    t.gc()
