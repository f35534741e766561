"""The watchdog wakes a thread blocked in a read at its deadline, and leaves a send that ended alone."""

from __future__ import annotations

import socket
import time

from coldmail.mail.deadline import Watchdog


def test_a_blocked_read_is_woken_at_the_deadline():
    watchdog = Watchdog()
    ours, peer = socket.socketpair()
    with ours, peer:
        watch = watchdog.watch(0.3)
        watch.attach(ours)
        started = time.monotonic()
        assert ours.recv(1) == b""  # the peer never writes: only the shutdown ends the read
        assert 0.25 <= time.monotonic() - started < 1
        assert watch.end() is True


def test_a_watch_ended_in_time_does_not_fire_and_the_earliest_deadline_goes_first():
    watchdog = Watchdog()
    late_ours, late_peer = socket.socketpair()
    early_ours, early_peer = socket.socketpair()
    with late_ours, late_peer, early_ours, early_peer:
        late = watchdog.watch(5)
        late.attach(late_ours)
        done = watchdog.watch(0.1)
        assert done.end() is False
        early = watchdog.watch(0.2)  # later than `late` was armed, due first
        early.attach(early_ours)
        assert early_ours.recv(1) == b""
        time.sleep(0.1)
        late_peer.sendall(b"x")
        assert late_ours.recv(1) == b"x"  # still open
        assert (late.end(), early.end(), done.fired) == (False, True, False)
