"""Delivery: what a worker does with the email ids of one queue message (claim → cap → send → record).

`wiring.build_deliverer` builds the `deliverer.Deliverer` from its parts: the
transports behind `routing.Router`, the caps, the `recorder.Recorder` and the
rules of `retry`, and the sender slots of `inflight`. Each email's end is an
`outcomes.Outcome`. `liveness` names the worker process on its claims and beats
for it, so the sweep can take a dead worker's claims back at once.
"""
