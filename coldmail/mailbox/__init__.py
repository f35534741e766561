"""Reading senders' own mailboxes over IMAP: the URL (target.py), a connection through the outbound guard
(client.py), and the poller the scheduler runs (poller.py), which hands each new message to the inbound
classifier. A mailbox is only ever read: EXAMINE and BODY.PEEK[], never a flag, a move or a delete.
"""
