"""Test support: a real Kafka broker without Docker, and pytest fixtures around it.

Not imported by any service.
"""
