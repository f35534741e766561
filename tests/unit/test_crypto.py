"""PasswordBox: the first key seals, every key opens, re-sealing moves a secret to the first key, and a
secret no key opens is SecretUnreadable (its email is held), never a configuration error."""

import pytest

pytest.importorskip("cryptography")

from cryptography.fernet import Fernet  # noqa: E402

from coldmail.crypto import PasswordBox, make_key  # noqa: E402
from coldmail.errors import BadRequest, ConfigError, SecretUnreadable  # noqa: E402

K1, K2, K3 = make_key(), make_key(), make_key()


def test_the_first_key_seals_and_every_key_opens():
    old = PasswordBox((K1,)).seal("pw-old")
    box = PasswordBox((K2, K1))
    new = box.seal("pw-new")
    assert Fernet(K2).decrypt(new.encode()) == b"pw-new"
    assert (box.open(old), box.open(new)) == ("pw-old", "pw-new")
    assert box.opens(old) and box.opens(new)


def test_a_secret_no_key_opens_is_unreadable_and_says_so_without_the_secret():
    sealed = PasswordBox((K1,)).seal("pw-old")
    for box in (PasswordBox((K2,)), PasswordBox((K3, K2)), PasswordBox(())):
        assert not box.opens(sealed)
        with pytest.raises(SecretUnreadable) as e:
            box.open(sealed)
        assert not isinstance(e.value, ConfigError)
        assert "COLDMAIL_SECRET_KEY" in str(e.value) and "pw-old" not in str(e.value)


def test_resealing_moves_a_secret_to_the_first_key():
    sealed = PasswordBox((K1,)).seal("pw")
    fresh = PasswordBox((K2, K1)).reseal(sealed)
    assert PasswordBox((K2,)).open(fresh) == "pw"
    assert not PasswordBox((K1,)).opens(fresh)
    with pytest.raises(SecretUnreadable):
        PasswordBox((K3,)).reseal(sealed)


def test_without_a_key_nothing_is_sealed():
    with pytest.raises(BadRequest, match="COLDMAIL_SECRET_KEY"):
        PasswordBox(()).seal("pw")
