"""The send actor on Dramatiq's StubBroker: it hands a message's ids to the process's Deliverer and holds
again, in the queue, an email that came early."""

from __future__ import annotations

import pytest
from dramatiq import Message
from dramatiq.brokers.stub import StubBroker

from coldmail.delivery.outcomes import Outcome, Result
from coldmail.queue.actors import declare_send_actor, install_deliverer, last_outcomes


class Deliverer:
    """Answers each id with the outcome it was given."""

    def __init__(self, outcomes: dict[int, Outcome]) -> None:
        self.outcomes = outcomes
        self.asked: list[list[int]] = []

    def deliver_many(self, email_ids, outcomes):
        self.asked.append(email_ids)
        outcomes.extend((i, self.outcomes[i]) for i in email_ids)


@pytest.fixture
def broker():
    broker = StubBroker()
    yield broker
    install_deliverer(None)
    broker.close()


def test_an_email_that_came_early_is_held_again_for_its_time_within_the_horizon(broker):
    # Given a send actor with a 60 s horizon, and a Deliverer that finds one email due in 5 s, one moved
    # an hour later and one sent
    actor = declare_send_actor(broker, queue_name="test", horizon_s=60, time_limit_ms=1000)
    deliverer = Deliverer({1: Outcome(Result.NOT_YET, 5.0), 2: Outcome(Result.NOT_YET, 3600.0),
                           3: Outcome(Result.SENT)})
    install_deliverer(deliverer)
    # When a message carrying the three runs
    actor(1, 2, 3)
    # Then the Deliverer got them in one call, the middleware can read each outcome, and only the one due
    # within the horizon is back in the queue, delayed by its time (the other is the scheduler's again)
    assert deliverer.asked == [[1, 2, 3]]
    assert [(i, o.result) for i, o in last_outcomes()] == [(1, Result.NOT_YET), (2, Result.NOT_YET),
                                                          (3, Result.SENT)]
    [held] = [Message.decode(data) for data in broker.queues["test.DQ"].queue]
    assert held.args == (1,)
    assert held.options["eta"] - held.message_timestamp == pytest.approx(5000, abs=50)
    assert broker.queues["test"].qsize() == 0


def test_without_a_deliverer_the_actor_raises(broker):
    # Given a send actor in a process whose worker never booted
    actor = declare_send_actor(broker, queue_name="test", horizon_s=60, time_limit_ms=1000)
    # Then a message it runs is an error, not a silent loss
    with pytest.raises(RuntimeError, match="no Deliverer"):
        actor(1)
