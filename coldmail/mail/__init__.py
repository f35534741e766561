"""Building MIME messages and handing them to a relay or the outbox; the only package that talks SMTP."""
