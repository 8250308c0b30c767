"""Discovered-partner protection (Lync's Access Edge): the request rate,
the contacts limit against user enumeration, and suspicious partners whose
requests mostly fail. Exact outcomes under bounded bursts.

fabrikam.test runs two edges with partner discovery on and no allowed
domains, so every partner below is discovered and verified by DNS SRV:
  strict  rate 2/s                      partner contoso.test
  wide    rate 1000/s, 3 contacts       partners northwind.test (contacts),
                                        litware.test (suspicious)
The partners are raw TLS clients holding their edge's certificate.
"""
import time

import pytest

from dnslab import Bind
from edgepool import (Edge, SipClient, SipUAS, edge_config, free_port, sip_request)

SRV = "_sipfederationtls._tcp"
PARTNERS = {"contoso.test": "127.0.0.1", "northwind.test": "127.0.0.3",
            "litware.test": "127.0.0.4"}


class Edgeside:
    def __init__(self, name, rate, contacts, pki, work, dns):
        self.fqdn = "sip.fabrikam.test"
        self.internal = ("127.0.0.2", free_port("127.0.0.2"))
        self.external = ("127.0.0.2", free_port("127.0.0.2"))
        self.uas = SipUAS("127.0.0.2", free_port("127.0.0.2"),
                          status=lambda m: 404 if "ghost" in m.start else 200)
        cert, key = pki.issue(self.fqdn, file_name=f"fabrikam-{name}")
        text = edge_config(pool_fqdn=self.fqdn, domains=["fabrikam.test"], ca=pki.ca_file,
                           cert=cert, key=key, internal=self.internal, next_hop=self.uas.addr,
                           external=self.external, status_port=free_port(), dns=dns.address,
                           access_edge={"enable_partner_discovery": True,
                                        "discovered_partner_standard_rate": rate,
                                        "max_contacts_per_discovered_partner": contacts})
        self.edge = Edge(work, f"fabrikam-{name}", text, [self.internal, self.external])


@pytest.fixture(scope="module")
def lab(tmp_path_factory, pki):
    work = tmp_path_factory.mktemp("limits")
    zones = {d: [f"{SRV} 60 IN SRV 0 0 5061 sip.{d}.", f"sip 60 IN A {a}"]
             for d, a in PARTNERS.items()}
    dns = Bind(work / "dns", zones).start()
    sides = {}
    try:
        sides["strict"] = Edgeside("strict", 2, 1000, pki, work, dns)
        sides["wide"] = Edgeside("wide", 1000, 3, pki, work, dns)
        for s in sides.values():
            s.edge.start()
        certs = {d: pki.issue(f"sip.{d}") for d in PARTNERS}
        yield sides, certs, pki
    finally:
        codes = [s.edge.stop() for s in sides.values() if s.edge.proc]
        for s in sides.values():
            s.uas.stop()
        dns.stop()
    assert set(codes) <= {0}, codes


def client(lab, side, domain):
    sides, certs, pki = lab
    cert, key = certs[domain]
    return SipClient(*sides[side].external, tls_ca=pki.ca_file, cert=cert, key=key,
                     server_name=sides[side].fqdn)


def message(domain, call_id, to="bob"):
    return sip_request("MESSAGE", f"sip:{to}@fabrikam.test", from_uri=f"sip:carol@{domain}",
                       to_uri=f"sip:{to}@fabrikam.test", call_id=call_id, body="hi")


def exchange(c, data):
    c.send(data)
    return c.recv_final()


def test_rate_of_a_discovered_partner(lab):
    """10 requests in one burst at 2/s: the bucket holds 2, the 8 others get 503."""
    c = client(lab, "strict", "contoso.test")
    try:
        c.send(b"".join(message("contoso.test", f"rate-{i}") for i in range(10)))
        answers = [c.recv_final() for _ in range(10)]
    finally:
        c.close()
    statuses = sorted(r.status for r in answers)
    assert statuses == [200] * 2 + [503] * 8, statuses
    for r in answers:
        if r.status == 503:
            assert r.header("retry-after") == "1", r
            assert "over 2 requests per second" in r.header("warning"), r
    status = lab[0]["strict"].edge.status()["discovered_partners"]
    assert status["rate_refused"] == 8 and status["tracked"] == 1, status


def test_contacts_limit_blocks_the_partner(lab):
    c = client(lab, "wide", "northwind.test")
    try:
        for i, user in enumerate(["u1", "u2", "u3"]):
            assert exchange(c, message("northwind.test", f"ct-{i}", user)).status == 200
        r = exchange(c, message("northwind.test", "ct-4", "u4"))
        assert r.status == 403 and "blocked" in r.header("warning"), r
        # Until the report period ends: periods are aligned on the wall clock (whole hours here).
        left = 3600 - time.time() % 3600
        assert abs(int(r.header("retry-after")) - left) <= 3, (r, left)
        # Blocked for the period, even toward a user it reached before.
        r = exchange(c, message("northwind.test", "ct-5", "u1"))
        assert r.status == 403, r
    finally:
        c.close()
    uas = lab[0]["wide"].uas
    assert uas.received("ct-2") and not uas.received("ct-4") and not uas.received("ct-5")
    assert "discovered partner northwind.test is blocked" in lab[0]["wide"].edge.log()


def test_suspicious_partner_drops_to_one_per_second(lab):
    c = client(lab, "wide", "litware.test")
    try:
        for i in range(20):   # THR_SUSPICIOUS_MIN_RESPONSES, every one a 404
            assert exchange(c, message("litware.test", f"sus-{i}", "ghost")).status == 404
        c.send(b"".join(message("litware.test", f"sus-b{i}") for i in range(5)))
        statuses = sorted(c.recv_final().status for _ in range(5))
    finally:
        c.close()
    assert statuses == [200] + [503] * 4, statuses
    side = lab[0]["wide"]
    assert "litware.test is suspicious" in side.edge.log()
    status = side.edge.status()["discovered_partners"]
    assert status["suspicious"] == 1 and status["blocked"] == 1, status


def test_allowed_domains_are_exempt(lab, tmp_path, pki):
    """The same burst from an allowed (not discovered) domain all passes."""
    sides, certs, _ = lab
    uas = SipUAS("127.0.0.2", free_port("127.0.0.2"))
    cert, key = pki.issue("sip.fabrikam.test", file_name="fabrikam-exempt")
    internal, external = ("127.0.0.2", free_port("127.0.0.2")), ("127.0.0.2", free_port("127.0.0.2"))
    text = edge_config(pool_fqdn="sip.fabrikam.test", domains=["fabrikam.test"], ca=pki.ca_file,
                       cert=cert, key=key, internal=internal, next_hop=uas.addr, external=external,
                       partners=[{"domains": ["contoso.test"], "fqdn": "sip.contoso.test",
                                  "address": "127.0.0.1", "port": 5061}],
                       access_edge={"discovered_partner_standard_rate": 1})
    edge = Edge(tmp_path, "exempt", text, [internal, external]).start()
    try:
        ccert, ckey = certs["contoso.test"]
        c = SipClient(*external, tls_ca=pki.ca_file, cert=ccert, key=ckey,
                      server_name="sip.fabrikam.test")
        try:
            c.send(b"".join(message("contoso.test", f"ex-{i}") for i in range(10)))
            statuses = [c.recv_final().status for _ in range(10)]
        finally:
            c.close()
        assert statuses == [200] * 10, statuses
    finally:
        assert edge.stop() == 0
        uas.stop()
