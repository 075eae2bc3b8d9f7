"""Development tools: simulated sensors (simulate) and the whole system on one machine (stack)."""
