"""The HTTP edge's pure parts (router/http/edge.py); its deadlines and caps over real sockets
are tests/integration/test_edge.py."""

from __future__ import annotations

from voxrouter.router.http.edge import client_key


def test_client_addresses():
    assert client_key(("203.0.113.9", 5000)) == "203.0.113.9"
    assert client_key(("2001:db8:1:2:aaaa::1", 5000, 0, 0)) == client_key(("2001:db8:1:2:bbbb::2", 1, 0, 0)) == "2001:db8:1:2::/64"
    assert client_key(("::ffff:198.51.100.7", 1, 0, 0)) == "198.51.100.7"
    assert client_key("/run/voxrouter.sock") is None
