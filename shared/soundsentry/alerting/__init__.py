"""Events for many sensors: the alert engine, its rules, overrides, sensor groups and state
snapshots."""
