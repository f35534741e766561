"""Delivery: what a worker does with the email ids of one queue message (claim → cap → send → record)."""
