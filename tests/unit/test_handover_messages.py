"""How the hand-over groups emails into queue messages: due together, up to SEND_BATCH, soonest first."""

from types import SimpleNamespace

from coldmail.queue.handover import HandOver


def grouping(batch: int, spread_ms: int) -> HandOver:
    return HandOver(SimpleNamespace(broker=None), caps=None, batch=batch, spread_ms=spread_ms)


def test_emails_due_together_share_a_message_up_to_the_batch_size():
    messages = grouping(3, 5).messages([(i, 0) for i in range(1, 8)])
    assert messages == [([1, 2, 3], 0), ([4, 5, 6], 0), ([7], 0)]


def test_a_message_spans_at_most_the_spread_and_is_released_for_its_first_email():
    messages = grouping(10, 5).messages([(1, 100), (2, 104), (3, 105), (4, 106), (5, 200)])
    assert messages == [([1, 2, 3], 100), ([4], 106), ([5], 200)]


def test_out_of_order_input_is_sent_soonest_first_and_a_batch_of_one_is_one_per_message():
    assert grouping(10, 5).messages([(2, 50), (1, 0), (3, 52)]) == [([1], 0), ([2, 3], 50)]
    assert grouping(1, 1000).messages([(1, 0), (2, 0)]) == [([1], 0), ([2], 0)]
