"""Sender caps, in one place: the service the worker, the hand-over and the API use (`Caps`), the sliding
window it checks (window), the store's scripts (scripts, lua/, and stub, its in-memory twin), and the
rules of when an email may go (timing).

Nothing here imports coldmail.queue or coldmail.delivery: they use the caps, not the other way round.
"""

from .scripts import Decision
from .service import Caps
from .timing import MARGIN_MS, TOLERANCE_MS, Plan

__all__ = ["Caps", "Decision", "MARGIN_MS", "Plan", "TOLERANCE_MS"]
