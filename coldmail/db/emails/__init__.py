"""Every statement on emails, one module per phase of an email's life.

- `intake`: a user's requests: storing new emails (one prepared INSERT for many), cancel, reschedule.
- `handover`: the scheduler's and the hand-over's: take what is due, mark it queued or move it to
  when its sender's cap allows, or give it back.
- `sending`: a worker's: claim, then record the outcome (sent, failed, retried, deferred, released).
- `recovery`: the sweep's: take back what a dead worker, Redis or a lost message left behind.
- `reads`: one email and its events, pages of emails, the live backlog.
- `threads`: the earlier email a follow-up continues, and the Message-IDs of its thread.

They share `columns` (column lists from the model, statuses from EmailStatus) and
`due` (when an email is due). State changes are compare-and-set (`UPDATE … WHERE
status = …`, and after a claim `AND claims = <the claim's number>`, so a claim
taken back changes nothing) and write their event in the same statement through
a CTE, so a change and its event are never seen apart. Callers hold a connection
(`database.connection_context()`). Importers import the phase module they use.
"""
