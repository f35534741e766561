"""Webhooks: signed HTTP POSTs that tell an account's application what became of its emails (issue 14)."""
