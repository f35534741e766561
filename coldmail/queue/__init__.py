"""Everything that touches Dramatiq: the broker, the send actor, its middleware and the hand-over."""
