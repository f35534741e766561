"""The retry rules: which failure is retried, when, and what it costs in attempts."""

import pytest

from coldmail.delivery.retry import GiveBack, Release, RetryPolicy, backoff_s, is_hard_bounce
from coldmail.errors import ConfigError, PermanentSendError, TransientSendError

POLICY = RetryPolicy(max_attempts=3, backoff_base_s=10, backoff_max_s=1000)


def test_backoff_doubles_with_jitter_and_is_capped():
    for attempt, expected in [(1, 10), (2, 20), (3, 40)]:
        values = [backoff_s(attempt, base_s=10, max_s=1000) for _ in range(200)]
        assert min(values) >= expected * 0.8 and max(values) <= expected * 1.2
        assert len(set(values)) > 1
    assert backoff_s(30, base_s=10, max_s=60) <= 60 * 1.2


def test_a_transient_failure_goes_again_after_the_backoff_until_the_last_attempt():
    error = TransientSendError("451 later", code=451)
    second = POLICY.after_failure(error, attempt=2)
    assert (second.error, second.code) == ("451 later", 451) and 16 <= second.retry_in_s <= 24
    last = POLICY.after_failure(error, attempt=3)
    assert (last.error, last.code, last.retry_in_s) == ("451 later (after 3 attempts)", 451, None)


@pytest.mark.parametrize("error,code", [(PermanentSendError("550 no", code=550), 550),
                                        (ConfigError("not an SMTP URL"), None)])
def test_a_permanent_failure_or_a_bad_relay_fails_on_the_first_attempt(error, code):
    verdict = POLICY.after_failure(error, attempt=1)
    assert (verdict.error, verdict.code, verdict.retry_in_s) == (str(error), code, None)


def test_a_message_that_cannot_be_built_fails_at_once_with_the_reason():
    verdict = POLICY.unbuildable(UnicodeEncodeError("utf-8", "x", 0, 1, "a bug"))
    assert verdict.retry_in_s is None and verdict.error.startswith("the message could not be built: UnicodeEncodeError")


def test_claims_given_back_go_again_at_once_after_the_failed_email_or_after_a_pause():
    assert POLICY.give_back(Release.STOPPING) == GiveBack(Release.STOPPING, 0.0)
    assert POLICY.give_back(Release.HALF_LEASE) == GiveBack(Release.HALF_LEASE, 0.0)
    assert POLICY.give_back(Release.NO_GLOBAL_SLOT) == GiveBack(Release.NO_GLOBAL_SLOT, 0.0)
    assert POLICY.give_back(Release.RELAY_FAILED, relay_retry_in_s=12.5) == GiveBack(Release.RELAY_FAILED, 12.5)
    assert POLICY.give_back(Release.ERROR) == GiveBack(Release.ERROR, 10)
    assert str(Release.STOPPING) == "worker stopping"


@pytest.mark.parametrize("error,hard", [
    # RCPT TO refused as a mailbox or domain that does not exist: a hard bounce
    (PermanentSendError("550 5.1.1 <x@example.com>: Recipient address rejected: User unknown", code=550,
                        at_rcpt=True), True),
    (PermanentSendError("550-5.1.1 The email account that you tried to reach does not exist.", code=550,
                        at_rcpt=True), True),
    (PermanentSendError("554 5.1.2 bad destination domain", code=554, at_rcpt=True), True),
    (PermanentSendError("550 no such user here", code=550, at_rcpt=True), True),
    (PermanentSendError("551 user not local", code=551, at_rcpt=True), True),
    (PermanentSendError("553 mailbox name not allowed", code=553, at_rcpt=True), True),
    # policy (the sender, not the address), other 5xx without a code, temporary: not
    (PermanentSendError("550 5.7.1 Message rejected as spam", code=550, at_rcpt=True), False),
    (PermanentSendError("554 5.7.1 Relay access denied", code=554, at_rcpt=True), False),
    (PermanentSendError("552 mailbox full", code=552, at_rcpt=True), False),
    (PermanentSendError("554 transaction failed", code=554, at_rcpt=True), False),
    (PermanentSendError("550 4.1.1 odd, but a temporary enhanced code", code=550, at_rcpt=True), False),
    (TransientSendError("450 4.2.0 mailbox busy", code=450, at_rcpt=True), False),
    (TransientSendError("451 4.1.1 try later", code=451, at_rcpt=True), False),
    # not an answer to RCPT TO (MAIL FROM, DATA): not about the recipient
    (PermanentSendError("550 5.1.1 user unknown", code=550), False),
    (ConfigError("not an SMTP URL"), False),
])
def test_only_a_recipient_that_does_not_exist_is_a_hard_bounce(error, hard):
    assert is_hard_bounce(error) is hard
    verdict = POLICY.after_failure(error, attempt=1)
    assert verdict.hard_bounce is hard
    if hard:
        assert verdict.retry_in_s is None
