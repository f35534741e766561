"""Taking in emails: accepting one or a batch, cancelling, rescheduling, and a sender's raised limit.

`service.Intake` is what the API holds; `group_commit` stores single emails
that arrive together in one INSERT, and `payload` turns a validated request
into the row to store, with the hash that tells a replay from a conflict.
"""
