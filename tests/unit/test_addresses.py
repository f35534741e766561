"""normalise() spells a domain as email-validator's ascii_domain does, so every recipient the API accepts
matches its suppression entry however the user wrote it."""

import pytest
from email_validator import validate_email

from coldmail.addresses import normalise


@pytest.mark.parametrize("address", ["x@Bücher.example", "x@ÉXAMPLE.com", "x@straße.de", "x@例え.テスト",
                                     "x@ＥＸＡＭＰＬＥ.com", "Ab@faß.de", "Mixed.Case@Sub.Example.ORG"])
def test_the_domain_is_email_validators_ascii_domain_and_the_local_part_lower_case(address):
    checked = validate_email(address, check_deliverability=False)
    local, domain = normalise(address).split("@")
    assert domain == checked.ascii_domain.lower()
    assert local == address.split("@")[0].lower()
    # and the form the API stores a recipient in normalises the same
    assert normalise(checked.normalized) == normalise(address)
