"""One exception root for coldmail; the API turns these into HTTP in one place."""


class ColdmailError(Exception):
    """Base class of every coldmail error."""


class ConfigError(ColdmailError, ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


class ServiceUnavailable(ColdmailError, ConnectionError):
    """PostgreSQL or Redis cannot be reached; the message says which URL and how to start it."""


class NotFound(ColdmailError, LookupError):
    """The requested object does not exist."""


class Conflict(ColdmailError):
    """The request conflicts with the object's current state (wrong status, reused key)."""


class BadRequest(ColdmailError, ValueError):
    """The request asks for something impossible, or its body is not a JSON object."""


class InvalidJson(BadRequest):
    """The request body is not valid JSON."""


class BadContentEncoding(BadRequest):
    """The request body does not decode from the Content-Encoding it names."""


class UnsupportedMediaType(ColdmailError, ValueError):
    """The request body is not sent as application/json."""


class UnsupportedContentEncoding(UnsupportedMediaType):
    """The request body comes in a Content-Encoding the API does not take."""


class PayloadTooLarge(ColdmailError, ValueError):
    """The request body is larger than its endpoint takes."""


class SendError(ColdmailError):
    """Sending one message failed."""

    def __init__(self, message: str, *, code: int | None = None, at_rcpt: bool = False) -> None:
        super().__init__(message)
        self.code = code
        #: the relay's reply was to RCPT TO: it is about the recipient (coldmail.delivery.retry.is_hard_bounce)
        self.at_rcpt = at_rcpt


class TransientSendError(SendError):
    """Worth retrying later: SMTP 4xx, a timeout, a refused or dropped connection."""


class PermanentSendError(SendError):
    """Never worth retrying: SMTP 5xx, an address the relay will not take."""


class SecretUnreadable(ColdmailError):
    """A stored secret that no key of COLDMAIL_SECRET_KEY opens (the key was changed, or is unset): its
    emails are held, not failed, until the key is back."""
