"""A flood of requests for domains that need DNS, against a resolver that
never answers: at most dns.max_pending_lookups wait, the rest get 503 with
Retry-After at once, and the waiting ones 504 when the lookup times out.
The edge stays up and relays afterwards."""
import socket

import pytest

from conftest import make_org, org_config
from edgepool import Edge, SipClient, sip_request

PENDING = 20
FLOOD = 30


@pytest.fixture
def silent_dns():
    """A UDP socket on loopback that takes queries and never answers."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    yield s.getsockname()
    s.close()


def test_dns_flood_is_bounded(tmp_path, pki, silent_dns):
    contoso = make_org("contoso.test", "127.0.0.1", pki)
    fabrikam = make_org("fabrikam.test", "127.0.0.2", pki)
    text = org_config(contoso, [fabrikam], pki, access_edge={"enable_partner_discovery": True},
                      sections={"dns": {"server": silent_dns[0], "port": silent_dns[1],
                                        "timeout_ms": 2000, "tries": 1,
                                        "max_pending_lookups": PENDING}})
    contoso.edge = Edge(tmp_path, "contoso", text, [contoso.internal, contoso.external]).start()
    try:
        c = SipClient(*contoso.internal, timeout=20)
        try:
            c.send(b"".join(sip_request("MESSAGE", f"sip:x@d{i}.test", from_uri="sip:alice@contoso.test",
                                        to_uri=f"sip:x@d{i}.test", call_id=f"flood-{i}")
                            for i in range(FLOOD)))
            answers = [c.recv_final() for _ in range(FLOOD)]
        finally:
            c.close()
        first = answers[:FLOOD - PENDING]
        assert [r.status for r in first] == [503] * (FLOOD - PENDING), first
        assert all(r.header("retry-after") == "1" and "too many DNS lookups" in r.header("warning")
                   for r in first), first
        rest = answers[FLOOD - PENDING:]
        assert [r.status for r in rest] == [504] * PENDING, rest
        assert "lookup of _sipfederationtls._tcp.d0.test failed: no answer from the DNS server" \
            in rest[0].header("warning"), rest[0]
        assert contoso.edge.running()
    finally:
        assert contoso.edge.stop() == 0, contoso.edge.log()[-3000:]
