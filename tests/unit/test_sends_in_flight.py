"""SendsInFlight: what webhook deliveries wait on before they claim, so that they take the gaps between sends."""

import threading
import time

from coldmail.queue.sending import SendsInFlight


def test_no_send_in_flight_means_no_wait():
    sends = SendsInFlight()
    started = time.monotonic()
    assert sends.wait_idle(5.0) is True
    assert time.monotonic() - started < 0.1


def test_a_wait_ends_when_the_last_send_in_flight_ends():
    sends = SendsInFlight()
    first, second = sends.sending(), sends.sending()
    first.__enter__()
    second.__enter__()
    ended: list[float] = []

    def end_both() -> None:
        time.sleep(0.1)
        first.__exit__(None, None, None)  # one still in flight: the wait goes on
        time.sleep(0.2)
        ended.append(time.monotonic())
        second.__exit__(None, None, None)

    threading.Thread(target=end_both).start()
    assert sends.wait_idle(5.0) is True
    # Then it returned once both had ended, not at the first
    assert ended and time.monotonic() - ended[0] < 0.1


def test_a_wait_gives_up_after_its_timeout_while_a_send_is_still_in_flight():
    sends = SendsInFlight()
    with sends.sending():
        started = time.monotonic()
        assert sends.wait_idle(0.2) is False
        assert 0.2 <= time.monotonic() - started < 1.0
    assert sends.wait_idle(0.2) is True


def test_a_send_that_raises_is_no_longer_counted():
    sends = SendsInFlight()
    try:
        with sends.sending():
            raise RuntimeError("the send failed")
    except RuntimeError:
        pass
    assert sends.wait_idle(0.0) is True
