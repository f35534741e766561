"""Settings: the contract's defaults, and a bad value names its variable."""

import pytest

from coldmail.errors import ConfigError
from coldmail.settings import Settings, documented, redact_url


def test_defaults_are_the_contract_s():
    s = Settings.from_env({}, dotenv=None)
    assert s.database_url == "postgresql://postgres@127.0.0.1:5432/coldmail"
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.smtp_url is None and s.outbox_dir == "./var/outbox"
    assert s.default_from == "coldmail@localhost"
    assert (s.rate_limit_per_hour, s.rate_limit_window_s, s.global_rate_limit_per_s) == (100, 3600, 0)
    assert s.api_keys == () and (s.host, s.port) == ("127.0.0.1", 8080)
    assert s.allow_private_networks is False
    assert Settings.from_env({"ALLOW_PRIVATE_NETWORKS": "True"}, dotenv=None).allow_private_networks is True


@pytest.mark.parametrize("name,value", [
    ("PORT", "eighty"), ("PORT", "70000"), ("RATE_LIMIT_PER_HOUR", "0"), ("RATE_LIMIT_PER_HOUR", "1.5"),
    ("RATE_LIMIT_WINDOW_SECONDS", "-1"), ("GLOBAL_RATE_LIMIT_PER_SECOND", "x"), ("DATABASE_URL", "mysql://h/db"),
    ("REDIS_URL", "localhost:6379"), ("SMTP_URL", "http://mail.example.com"), ("SMTP_URL", "smtp://host:port"),
    ("COLDMAIL_API_KEYS", "short"), ("LOG_FORMAT", "xml"), ("ALLOW_PRIVATE_NETWORKS", "yes"),
    pytest.param("COLDMAIL_SECRET_KEY", "not-a-fernet-key", marks=pytest.mark.needs("cryptography")),
    ("HANDOVER_INTERVAL_SECONDS", "0"),
])
def test_a_bad_value_names_the_variable(name, value):
    with pytest.raises(ConfigError) as e:
        Settings.from_env({name: value}, dotenv=None)
    assert name in str(e.value)


def test_api_keys_are_key_for_the_default_account_or_account_colon_key():
    s = Settings.from_env({"COLDMAIL_API_KEYS": " plain-key-123, acme:acme-key-456,acme:second:key-789 "},
                          dotenv=None)
    # the account ends at the first ':', so a key may hold one
    assert s.api_keys == (("default", "plain-key-123"), ("acme", "acme-key-456"), ("acme", "second:key-789"))


@pytest.mark.parametrize("value", ["b@d:a-long-enough-key", ":a-long-enough-key", "acme:tiny",
                                   "a:same-key-12345,b:same-key-12345", "acme:schlüssel-key-123",
                                   "acme:tab\tin-the-key"])
def test_a_bad_api_key_entry_names_the_variable_and_never_the_key(value):
    with pytest.raises(ConfigError) as e:
        Settings.from_env({"COLDMAIL_API_KEYS": value}, dotenv=None)
    assert "COLDMAIL_API_KEYS" in str(e.value)
    assert "-key" not in str(e.value) and "tiny" not in str(e.value)


def test_a_bad_smtp_password_is_not_echoed():
    with pytest.raises(ConfigError) as e:
        Settings.from_env({"SMTP_URL": "smtp://user:hunter2@host:bad"}, dotenv=None)
    assert "hunter2" not in str(e.value)


def test_lease_must_outlast_the_smtp_timeout():
    with pytest.raises(ConfigError, match="LEASE_SECONDS"):
        Settings.from_env({"LEASE_SECONDS": "10", "SMTP_TIMEOUT_SECONDS": "30"}, dotenv=None)


@pytest.mark.needs("dotenv")
def test_dotenv_fills_only_what_the_environment_lacks(tmp_path, monkeypatch):
    env_file = tmp_path / ".env"
    env_file.write_text("PORT=9000\nHOST=0.0.0.0\n")
    monkeypatch.setenv("PORT", "9100")
    s = Settings.from_env(dotenv=env_file)
    assert (s.host, s.port) == ("0.0.0.0", 9100)


def test_repr_and_redaction_hide_secrets():
    s = Settings.from_env({"SMTP_URL": "smtp://u:hunter2@mail:587", "COLDMAIL_API_KEYS": "abcdefgh123"}, dotenv=None)
    assert "hunter2" not in repr(s) and "abcdefgh123" not in repr(s)
    assert redact_url("smtp://u:hunter2@mail:587") == "smtp://u:***@mail:587"
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_every_setting_is_documented():
    names = [name for name, _, doc in documented() if doc]
    assert len(names) == len(documented()) and "DATABASE_URL" in names


@pytest.mark.needs("cryptography")
def test_the_secret_key_may_list_keys_newest_first():
    from cryptography.fernet import Fernet

    k1, k2 = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    assert Settings.from_env({}, dotenv=None).secret_keys == ()
    assert Settings.from_env({"COLDMAIL_SECRET_KEY": k1}, dotenv=None).secret_keys == (k1,)
    assert Settings.from_env({"COLDMAIL_SECRET_KEY": f" {k2} , {k1}\n"}, dotenv=None).secret_keys == (k2, k1)


@pytest.mark.needs("cryptography")
@pytest.mark.parametrize("keys,position", [
    ("{good},not-a-fernet-key", "key 2 of 2"),
    ("tooshort,{good}", "key 1 of 2"),
    ("{good},,{good}", "key 2 of 3"),
    ("{good},", "key 2 of 2"),
    ("{good},{good}x", "key 2 of 2"),
])
def test_a_bad_key_in_the_list_is_named_by_its_position_and_not_echoed(keys, position):
    from cryptography.fernet import Fernet

    good = Fernet.generate_key().decode()
    with pytest.raises(ConfigError) as e:
        Settings.from_env({"COLDMAIL_SECRET_KEY": keys.format(good=good)}, dotenv=None)
    message = str(e.value)
    assert "COLDMAIL_SECRET_KEY" in message and position in message
    assert good not in message and "not-a-fernet-key" not in message and "tooshort" not in message


def test_public_base_url_defaults_to_host_and_port_and_loses_a_trailing_slash():
    assert Settings.from_env({}, dotenv=None).public_base == "http://127.0.0.1:8080"
    assert Settings.from_env({"HOST": "::1", "PORT": "9000"}, dotenv=None).public_base == "http://[::1]:9000"
    given = Settings.from_env({"PUBLIC_BASE_URL": "https://mail.example.com/coldmail/"}, dotenv=None)
    assert given.public_base == "https://mail.example.com/coldmail"


@pytest.mark.parametrize("value", [
    "mail.example.com", "ftp://mail.example.com", "https://", "https://mail.example.com/?x=1",
    "https://mail.example.com/#top", "https://mail.example.com:99999", "https://user:pw@mail.example.com",
    "https://mail.example.com/a b",
])
def test_a_bad_public_base_url_is_refused_by_name_and_a_password_in_it_is_not_echoed(value):
    with pytest.raises(ConfigError) as e:
        Settings.from_env({"PUBLIC_BASE_URL": value}, dotenv=None)
    assert "PUBLIC_BASE_URL" in str(e.value) and "pw" not in str(e.value)
