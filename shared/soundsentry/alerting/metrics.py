"""The metric of the events the alert engine makes, shared by the alerter service and
``soundsentry serve`` (one name, one meaning, one dashboard)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

__all__ = ["events_counter"]


def events_counter(registry: CollectorRegistry) -> Counter:
    """``soundsentry_alerter_events_total``: events by label and kind (started, ended)."""
    return Counter(
        "soundsentry_alerter_events_total",
        "Events published, by label and kind (started, ended).",
        ["label", "kind"],
        registry=registry,
    )
