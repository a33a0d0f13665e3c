"""Ports for processes started later (`pipelines.common.free_port`): HAProxy's side ports, test servers."""

import socket

from pipelines import common


def test_ports_lie_outside_the_ephemeral_range_and_are_never_repeated():
    low, high = common.ephemeral_ports()
    ports = [common.free_port(20000, 20040) for _ in range(30)]
    assert len(set(ports)) == 30
    assert all(20000 <= p < 20040 and not low <= p <= high for p in ports)
    for port in ports:  # and each one is free: something can listen there
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
            s.listen()


def _listening_outside_ephemeral():
    low, high = common.ephemeral_ports()
    for port in range(21000, 22000):
        if low <= port <= high:
            continue
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            s.close()
            continue
        s.listen()
        return s
    raise AssertionError("no free port in 21000-21999")


def test_a_port_something_listens_on_is_passed_over():
    with _listening_outside_ephemeral() as taken:
        busy = taken.getsockname()[1]
        # the span holds the busy port alone: the kernel's choice instead
        port = common.free_port(busy, busy + 1)
        assert port != busy
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_a_span_inside_the_ephemeral_range_falls_back_to_the_kernel(monkeypatch):
    monkeypatch.setattr(common, "ephemeral_ports", lambda: (20000, 20099))
    port = common.free_port(20000, 20100)
    assert port not in range(20000, 20100) and port in common._HANDED_OUT
