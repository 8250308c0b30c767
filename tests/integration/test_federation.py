"""Lync-style federation end to end: partner discovery by DNS SRV (a real
BIND), source verification, blocked domains, external access policies,
failover between SRV targets, TTL changes, and the trust header the front
ends get.

Three organizations on loopback, each an edged whose internal next hop is a
recording SIP server (SipUAS), so tests read exactly what crossed:
  contoso.test   127.0.0.1  discovery on; fabrikam.test allowed without
                            ProxyFqdn (SRV); blocked.test blocked;
                            mallory's policy denies federation
  fabrikam.test  127.0.0.2  contoso.test allowed without ProxyFqdn; also
                            serves twoprio.test, moving.test, tlsfail.test and
                            blackhole.test
  northwind.test 127.0.0.3  discovery on; serves moving.test too
"""
import socket

import pytest

from dnslab import Bind
from edgepool import (Edge, SipClient, SipUAS, edge_config, free_port, sip_request,
                      wait_for)

SRV = "_sipfederationtls._tcp"


class Org:
    def __init__(self, domain, host, pki, domains=(), extra_names=()):
        self.domain, self.host = domain, host
        self.fqdn = f"sip.{domain}"
        self.domains = [domain, *domains]
        self.internal = (host, free_port(host))
        self.external = (host, free_port(host))
        self.next_hop = (host, free_port(host))
        self.status_port = free_port()
        self.cert, self.key = pki.issue(self.fqdn, extra_names=extra_names)
        self.uas = self.edge = None


@pytest.fixture(scope="module")
def fed(tmp_path_factory, pki):
    work = tmp_path_factory.mktemp("federation")
    contoso = Org("contoso.test", "127.0.0.1", pki)
    fabrikam = Org("fabrikam.test", "127.0.0.2", pki,
                   domains=["twoprio.test", "moving.test", "tlsfail.test", "blackhole.test"],
                   extra_names=["sip.twoprio.test", "sip.moving.test", "sip2.tlsfail.test",
                                "sip2.blackhole.test"])
    northwind = Org("northwind.test", "127.0.0.3", pki, domains=["moving.test"],
                    extra_names=["sip2.moving.test"])
    dead_port = free_port()              # nothing listens there
    # A black hole: a listener whose accept queue is full drops every SYN,
    # so a connect to it hangs until edged's connect timeout.
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(0)
    filler = socket.create_connection(hole.getsockname())
    zones = {
        "contoso.test": [f"{SRV} 60 IN SRV 0 0 {contoso.external[1]} sip.contoso.test.",
                         "sip 60 IN A 127.0.0.1"],
        "fabrikam.test": [f"{SRV} 60 IN SRV 0 0 {fabrikam.external[1]} sip.fabrikam.test.",
                          "sip 60 IN A 127.0.0.2"],
        "northwind.test": [f"{SRV} 60 IN SRV 0 0 {northwind.external[1]} sip.northwind.test.",
                           "sip 60 IN A 127.0.0.3"],
        "nosrv.test": ["sip 60 IN A 127.0.0.2"],
        "outside.test": [f"{SRV} 60 IN SRV 0 0 {fabrikam.external[1]} sip.fabrikam.test."],
        # The target answers, but its certificate names fabrikam's edge, not this.
        "liar.test": [f"{SRV} 60 IN SRV 0 0 {northwind.external[1]} sip.liar.test.",
                      "sip 60 IN A 127.0.0.3"],
        "twoprio.test": [f"{SRV} 60 IN SRV 10 0 {dead_port} dead.twoprio.test.",
                         f"{SRV} 60 IN SRV 20 0 {fabrikam.external[1]} sip.twoprio.test.",
                         "dead 60 IN A 127.0.0.1", "sip 60 IN A 127.0.0.2"],
        # The first target's certificate is someone else's: the handshake fails.
        "tlsfail.test": [f"{SRV} 60 IN SRV 10 0 {northwind.external[1]} sip.tlsfail.test.",
                         f"{SRV} 60 IN SRV 20 0 {fabrikam.external[1]} sip2.tlsfail.test.",
                         "sip 60 IN A 127.0.0.3", "sip2 60 IN A 127.0.0.2"],
        "blackhole.test": [f"{SRV} 60 IN SRV 10 0 {hole.getsockname()[1]} sip.blackhole.test.",
                           f"{SRV} 60 IN SRV 20 0 {fabrikam.external[1]} sip2.blackhole.test.",
                           "sip 60 IN A 127.0.0.1", "sip2 60 IN A 127.0.0.2"],
        "moving.test": [f"{SRV} 1 IN SRV 0 0 {fabrikam.external[1]} sip.moving.test.",
                        "sip 60 IN A 127.0.0.2", "sip2 60 IN A 127.0.0.3"],
    }
    dns = Bind(work / "dns", zones).start()
    settings = {
        contoso: dict(access_edge={"enable_partner_discovery": True},
                      sections={"allowed_domains": [{"domain": "fabrikam.test",
                                                     "mark_for_monitoring": True}],
                                "blocked_domains": [{"domain": "blocked.test",
                                                     "comment": "abuse"}]},
                      policies=[{"identity": "global", "enable_federation_access": True},
                                {"identity": "NoFederation", "users": ["mallory@contoso.test"]}]),
        fabrikam: dict(sections={"allowed_domains": [{"domain": "contoso.test"}]}),
        northwind: dict(access_edge={"enable_partner_discovery": True}),
    }
    orgs = (contoso, fabrikam, northwind)
    try:
        for org in orgs:
            # The front ends' diagnostics on every answer: they must not reach a partner.
            org.uas = SipUAS(*org.next_hop, headers=['ms-diagnostics: 2;reason="internal"'])
            text = edge_config(pool_fqdn=org.fqdn, domains=org.domains, ca=pki.ca_file,
                               cert=org.cert, key=org.key, internal=org.internal,
                               next_hop=org.next_hop, external=org.external,
                               status_port=org.status_port, dns=dns.address,
                               limits={"connect_timeout_ms": 1000}, **settings[org])
            org.edge = Edge(work, org.domain, text, [org.internal, org.external]).start()
        yield contoso, fabrikam, northwind, dns
    finally:
        codes = {o.domain: o.edge.stop() if o.edge else 0 for o in orgs}
        for o in orgs:
            if o.uas:
                o.uas.stop()
        dns.stop()
        filler.close()
        hole.close()
    assert set(codes.values()) == {0}, codes


def send(org, call_id, to, sender="alice@contoso.test", headers=()):
    """A MESSAGE from the organization's internal side; returns the final response."""
    c = SipClient(*org.internal)
    try:
        c.send(sip_request("MESSAGE", f"sip:{to}", from_uri=f"sip:{sender}", to_uri=f"sip:{to}",
                           call_id=call_id, via=(org.internal[0], 5999), headers=headers,
                           body="hello"))
        return c.recv_final()
    finally:
        c.close()


def trust_of(org, call_id):
    """The trust headers of the request that reached the organization's front end."""
    got = wait_for(lambda: org.uas.received(call_id), 5, f"{call_id} at {org.domain}")
    return [v for n, v in got[0].headers if n == "ms-edge-proxy-message-trust"]


def test_srv_route_and_srv_verified_source(fed):
    contoso, fabrikam, _, _ = fed
    r = send(contoso, "fed-1", "bob@fabrikam.test")
    assert r.status == 200, r
    assert trust_of(fabrikam, "fed-1") == [
        "ms-source-type=AutoFederation;ms-ep-fqdn=sip.fabrikam.test;"
        "ms-source-verified-user=verified;ms-source-network=federation;"
        "ms-remote-fqdn=sip.contoso.test"]


def test_discovered_partner_both_ways(fed):
    contoso, _, northwind, _ = fed
    assert send(contoso, "fed-2", "carol@northwind.test").status == 200
    assert trust_of(northwind, "fed-2")[0].startswith("ms-source-type=AutoFederation;")
    r = send(northwind, "fed-3", "alice@contoso.test", sender="carol@northwind.test")
    assert r.status == 200, r
    assert trust_of(contoso, "fed-3")[0].endswith("ms-remote-fqdn=sip.northwind.test")


def test_monitored_domain_is_counted(fed):
    """MarkForMonitoring: requests to and from fabrikam.test are counted in the status."""
    contoso, fabrikam, _, _ = fed
    before = contoso.edge.status()["monitored_domains"]["fabrikam.test"]
    assert send(contoso, "fed-18a", "bob@fabrikam.test").status == 200
    assert send(contoso, "fed-18b", "bob@fabrikam.test").status == 200
    r = send(fabrikam, "fed-18c", "alice@contoso.test", sender="bob@fabrikam.test")
    assert r.status == 200, r
    after = contoso.edge.status()["monitored_domains"]["fabrikam.test"]
    assert (after["out"] - before["out"], after["in"] - before["in"]) == (2, 1), (before, after)
    assert list(contoso.edge.status()["monitored_domains"]) == ["fabrikam.test"]
    assert fabrikam.edge.status()["monitored_domains"] == {}


def test_blocked_domain(fed):
    r = send(fed[0], "fed-4", "eve@blocked.test")
    assert r.status == 403 and "blocked" in r.header("warning"), r


def test_policy_denies_one_user(fed):
    r = send(fed[0], "fed-5", "bob@fabrikam.test", sender="mallory@contoso.test")
    assert r.status == 403 and "NoFederation" in r.header("warning"), r
    assert not fed[1].uas.received("fed-5")
    assert send(fed[0], "fed-5b", "bob@fabrikam.test").status == 200


def test_no_srv_record(fed):
    r = send(fed[0], "fed-6", "x@nosrv.test")
    assert r.status == 404 and "SRV" in r.header("warning"), r


def test_srv_target_outside_domain(fed):
    r = send(fed[0], "fed-7", "x@outside.test")
    assert r.status == 504 and "outside" in r.header("warning"), r
    assert not fed[1].uas.received("fed-7")


def test_srv_target_with_someone_elses_certificate(fed):
    r = send(fed[0], "fed-8", "x@liar.test")
    assert r.status == 504 and "sip.liar.test" in r.header("warning"), r
    assert not fed[2].uas.received("fed-8")


def test_failover_to_second_priority(fed):
    contoso, fabrikam, _, _ = fed
    r = send(contoso, "fed-9", "bob@twoprio.test")
    assert r.status == 200, r
    assert fabrikam.uas.received("fed-9")
    assert "dead.twoprio.test" in contoso.edge.log()


def test_failover_after_a_failed_handshake(fed):
    contoso, fabrikam, northwind, _ = fed
    r = send(contoso, "fed-15", "bob@tlsfail.test")
    assert r.status == 200, r
    assert fabrikam.uas.received("fed-15") and not northwind.uas.received("fed-15")
    log = contoso.edge.log()
    assert "cannot reach sip.tlsfail.test" in log and "trying the next target" in log


def test_failover_after_a_connect_timeout(fed):
    contoso, fabrikam, _, _ = fed
    r = send(contoso, "fed-17", "bob@blackhole.test")
    assert r.status == 200, r
    assert fabrikam.uas.received("fed-17")
    assert "cannot reach sip.blackhole.test: connect timeout, trying the next target" \
        in contoso.edge.log()
    # The next request goes to the live target first: one timeout, not one per request.
    r = send(contoso, "fed-19", "bob@blackhole.test")
    assert r.status == 200, r
    log = [line for line in contoso.edge.log().splitlines() if "call-id=fed-19" in line]
    assert any("to sip2.blackhole.test" in line for line in log), log
    assert not any("sip.blackhole.test" in line for line in log), log


def test_short_ttl_change_moves_the_route(fed):
    contoso, fabrikam, northwind, dns = fed
    assert send(contoso, "fed-10", "bob@moving.test").status == 200
    assert fabrikam.uas.received("fed-10")
    dns.update("moving.test", delete=[f"{SRV}.moving.test. SRV"],
               add=[f"{SRV}.moving.test. 1 IN SRV 0 0 {northwind.external[1]} sip2.moving.test."])
    n = 0

    def moved():
        nonlocal n
        n += 1
        send(contoso, f"fed-11-{n}", "bob@moving.test")
        return northwind.uas.received(f"fed-11-{n}")
    wait_for(moved, 10, "the new SRV target to take the traffic", interval=0.3)


def test_spoofed_from_domain(fed, pki):
    """northwind's edge sends as contoso.test: contoso.test's SRV names sip.contoso.test."""
    _, fabrikam, northwind, _ = fed
    c = SipClient(*fabrikam.external, tls_ca=pki.ca_file, cert=northwind.cert, key=northwind.key,
                  server_name=fabrikam.fqdn)
    try:
        c.send(sip_request("MESSAGE", "sip:bob@fabrikam.test", from_uri="sip:alice@contoso.test",
                           to_uri="sip:bob@fabrikam.test", call_id="fed-12", body="x"))
        r = c.recv_final()
    finally:
        c.close()
    assert r.status == 403 and "spoofed" in r.header("warning"), r
    assert not fabrikam.uas.received("fed-12")
    assert "sip.northwind.test" in fabrikam.edge.log()


def test_trust_header_from_outside_is_replaced(fed, pki):
    contoso, fabrikam, _, _ = fed
    c = SipClient(*fabrikam.external, tls_ca=pki.ca_file, cert=contoso.cert, key=contoso.key,
                  server_name=fabrikam.fqdn)
    forged = ("ms-edge-proxy-message-trust: ms-source-type=DirectPartner;ms-ep-fqdn=x;"
              "ms-source-verified-user=verified;ms-source-network=federation;ms-remote-fqdn=x")
    try:
        c.send(sip_request("MESSAGE", "sip:bob@fabrikam.test", from_uri="sip:alice@contoso.test",
                           to_uri="sip:bob@fabrikam.test", call_id="fed-13", body="x",
                           headers=[forged]))
        assert c.recv_final().status == 200
    finally:
        c.close()
    # No verifiable mark from the sender's edge: unverified, whatever the forgery says.
    assert trust_of(fabrikam, "fed-13") == [
        "ms-source-type=AutoFederation;ms-ep-fqdn=sip.fabrikam.test;"
        "ms-source-verified-user=unverified;ms-source-network=federation;"
        "ms-remote-fqdn=sip.contoso.test"]


def test_verifiable_mark_is_read_and_consumed(fed, pki):
    """UseSourceVerification: a proven source that its edge marked verifiable is verified;
    the mark itself goes no further than this edge."""
    contoso, fabrikam, _, _ = fed
    c = SipClient(*fabrikam.external, tls_ca=pki.ca_file, cert=contoso.cert, key=contoso.key,
                  server_name=fabrikam.fqdn)
    try:
        c.send(sip_request("MESSAGE", "sip:bob@fabrikam.test", from_uri="sip:alice@contoso.test",
                           to_uri="sip:bob@fabrikam.test", call_id="fed-16", body="x",
                           headers=["ms-source-verified-user: verified"]))
        assert c.recv_final().status == 200
    finally:
        c.close()
    assert "ms-source-verified-user=verified" in trust_of(fabrikam, "fed-16")[0]
    got = fabrikam.uas.received("fed-16")[0]
    assert got.header("ms-source-verified-user") is None


def test_diagnostics_do_not_leave(fed):
    """Neither on a request to a partner nor on the answer: fabrikam's front end
    answers with ms-diagnostics, which fabrikam's edge removes on the way out."""
    contoso, fabrikam, _, _ = fed
    r = send(contoso, "fed-14", "bob@fabrikam.test",
             headers=["ms-diagnostics: 1000;reason=\"internal detail\""])
    assert r.status == 200
    assert r.header("ms-diagnostics") is None, r
    got = fabrikam.uas.received("fed-14")[0]
    assert got.header("ms-diagnostics") is None
