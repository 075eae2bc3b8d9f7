"""Second opinions for uncertain windows: when to escalate (policy) and the backends that answer
(escalator)."""
