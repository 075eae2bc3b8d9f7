"""soundsentry.testing.kafka_broker.free_port: the ports the tests give their servers."""

from __future__ import annotations

import socket
from pathlib import Path

from soundsentry.testing.kafka_broker import free_port


def test_free_ports_are_distinct_bindable_and_below_the_ephemeral_range() -> None:
    # An ephemeral port can become an outgoing connection's source port before the server
    # that was given it binds it.
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    assert all(1024 <= port < low for port in ports)
    for port in ports[:5]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))
