"""Every federation type of Lync's Access Edge, end to end, with the exact
status, Warning and ms-edge-proxy-message-trust value for each, and every
verification level: AlwaysVerifiable and AlwaysUnverifiable whatever the
peer says, UseSourceVerification verified only when the sender's edge marked
the request (ms-source-verified-user: verified, its
MarkSourceVerifiableOnOutgoingMessages) and unverified otherwise.

Partners are mutual-TLS SipUAS servers (they answer what edged sends them,
and their certificates are what the raw SipClient presents inbound); each
edge's internal next hop is a plain SipUAS that records what crossed. Every
partner server is configured with its address except litware.test's, found
by DNS SRV in a real BIND (AutoFederation).

  contoso.test  127.0.0.1  routing dns_srv, partner discovery off
    allowed   fabrikam.test -> sip.fabrikam.test 127.0.0.2 (AlwaysUnverifiable)
              litware.test, no proxy_fqdn: SRV -> sip.litware.test 127.0.0.8
              (UseSourceVerification)
    hosting   Online: sipfed.online.test 127.0.0.5, [hosted.test] (AlwaysVerifiable)
    public    Msgr: fed.msgr.test 127.0.0.6, [msgr.test] (UseSourceVerification)
    blocked   blocked.test
    policies  global: federation; Cloud (alice@contoso.test): federation + public cloud
  adatum.test   127.0.0.3  routing default_route -> sip.upstream.test 127.0.0.7;
                           northwind.test allowed without proxy_fqdn
  tailspin.test 127.0.0.4  allow_federated_users = false
"""
import re

import pytest

from dnslab import Bind
from edgepool import (Edge, SipClient, SipUAS, edge_config, free_port, sip_request,
                      wait_for)

SRV = "_sipfederationtls._tcp"
TRUST = "ms-edge-proxy-message-trust"
MARK = "ms-source-verified-user"
MARKED = [f"{MARK}: verified"]


def trust(source, pool, verified, network, remote):
    return (f"ms-source-type={source};ms-ep-fqdn={pool};"
            f"ms-source-verified-user={verified};ms-source-network={network};"
            f"ms-remote-fqdn={remote}")


class Side:
    """One edged: its listeners, its recording next hop, its process."""

    def __init__(self, domain, host, pki):
        self.domain = domain
        self.fqdn = f"sip.{domain}"
        self.internal = (host, free_port(host))
        self.external = (host, free_port(host))
        self.cert, self.key = pki.issue(self.fqdn)
        self.uas = SipUAS(host, free_port(host))
        self.edge = None

    def start(self, work, pki, **kw):
        text = edge_config(pool_fqdn=self.fqdn, domains=[self.domain], ca=pki.ca_file,
                           cert=self.cert, key=self.key, internal=self.internal,
                           next_hop=self.uas.addr, external=self.external,
                           limits={"connect_timeout_ms": 2000}, **kw)
        self.edge = Edge(work, self.domain, text, [self.internal, self.external]).start()


class Lab:
    pass


@pytest.fixture(scope="module")
def lab(tmp_path_factory, pki):
    work = tmp_path_factory.mktemp("federation-types")
    lab = Lab()
    lab.pki = pki
    lab.uas = {}        # partner servers by FQDN: mutual-TLS SipUAS
    lab.certs = {}      # peer certificates by FQDN: (cert, key)
    sides = []
    dns = None
    try:
        for fqdn, host in [("sip.fabrikam.test", "127.0.0.2"), ("sipfed.online.test", "127.0.0.5"),
                           ("fed.msgr.test", "127.0.0.6"), ("sip.upstream.test", "127.0.0.7"),
                           ("sip.litware.test", "127.0.0.8")]:
            lab.certs[fqdn] = cert, key = pki.issue(fqdn)
            lab.uas[fqdn] = SipUAS(host, free_port(host), tls=(cert, key, pki.ca_file))
        lab.certs["sip.unknown.test"] = pki.issue("sip.unknown.test")
        litware = lab.uas["sip.litware.test"].addr
        dns = Bind(work / "dns", {"litware.test": [
            f"{SRV} 60 IN SRV 0 0 {litware[1]} sip.litware.test.",
            f"sip 60 IN A {litware[0]}"]}).start()

        def addr(fqdn):
            return {"address": lab.uas[fqdn].addr[0], "port": lab.uas[fqdn].addr[1]}

        lab.contoso = Side("contoso.test", "127.0.0.1", pki)
        sides.append(lab.contoso)
        lab.contoso.start(work, pki, sections={
            "allowed_domains": [{"domain": "fabrikam.test", "proxy_fqdn": "sip.fabrikam.test",
                                 **addr("sip.fabrikam.test"),
                                 "verification_level": "AlwaysUnverifiable"},
                                {"domain": "litware.test"}],
            "hosting_providers": [{"identity": "Online", "proxy_fqdn": "sipfed.online.test",
                                   **addr("sipfed.online.test"), "domains": ["hosted.test"]}],
            "public_providers": [{"identity": "Msgr", "proxy_fqdn": "fed.msgr.test",
                                  **addr("fed.msgr.test"), "domains": ["msgr.test"]}],
            "blocked_domains": [{"domain": "blocked.test", "comment": "abuse"}],
        }, policies=[
            {"identity": "global", "enable_federation_access": True,
             "enable_public_cloud_access": False},
            {"identity": "Cloud", "users": ["alice@contoso.test"],
             "enable_federation_access": True, "enable_public_cloud_access": True},
        ], access_edge={"enable_partner_discovery": False}, dns=dns.address)

        lab.adatum = Side("adatum.test", "127.0.0.3", pki)
        sides.append(lab.adatum)
        lab.adatum.start(work, pki, access_edge={
            "routing": "default_route",
            "default_route": {"fqdn": "sip.upstream.test", **addr("sip.upstream.test")},
        }, sections={"allowed_domains": [{"domain": "northwind.test"}]})

        lab.tailspin = Side("tailspin.test", "127.0.0.4", pki)
        sides.append(lab.tailspin)
        lab.tailspin.start(work, pki, access_edge={"allow_federated_users": False}, sections={
            "allowed_domains": [{"domain": "fabrikam.test", "proxy_fqdn": "sip.fabrikam.test",
                                 **addr("sip.fabrikam.test")}]})
        yield lab
    finally:
        codes = {s.domain: s.edge.stop() for s in sides if s.edge}
        for s in sides:
            s.uas.stop()
        for u in lab.uas.values():
            u.stop()
        if dns:
            dns.stop()
    # A sanitizer report or a crash at shutdown shows as a non-zero exit.
    assert set(codes.values()) <= {0}, \
        f"edges did not exit cleanly: {codes}\n" + "\n".join(s.edge.log()[-3000:] for s in sides if s.edge)


# ---- helpers ----

@pytest.fixture
def call_id(request):
    """A Call-ID naming the test (and its parameters)."""
    return "ft-" + re.sub(r"[^A-Za-z0-9.-]+", "-", request.node.name)


def outbound(side, call_id, to, sender, headers=()):
    """A MESSAGE from the organization's front end (TCP, internal side)."""
    c = SipClient(*side.internal)
    try:
        c.send(sip_request("MESSAGE", f"sip:{to}", from_uri=f"sip:{sender}", to_uri=f"sip:{to}",
                           call_id=call_id, via=(side.internal[0], 5999), headers=headers,
                           body="hello"))
        return c.recv_final()
    finally:
        c.close()


def inbound(lab, side, peer, call_id, sender, to, headers=()):
    """A MESSAGE from a partner holding peer's certificate (mutual TLS, external side)."""
    cert, key = lab.certs[peer]
    c = SipClient(*side.external, tls_ca=lab.pki.ca_file, cert=cert, key=key,
                  server_name=side.fqdn)
    try:
        c.send(sip_request("MESSAGE", f"sip:{to}", from_uri=f"sip:{sender}", to_uri=f"sip:{to}",
                           call_id=call_id, headers=headers, body="hello"))
        return c.recv_final()
    finally:
        c.close()


def warning_of(r, side):
    """The text of the edge's Warning: 399 <pool_fqdn> "text"."""
    w = r.header("warning")
    prefix = f'399 {side.fqdn} "'
    assert w and w.startswith(prefix) and w.endswith('"'), r
    return w[len(prefix):-1]


def received(uas, call_id):
    return wait_for(lambda: uas.received(call_id), 5, f"{call_id} at {uas.addr}")


def headers_named(msg, name):
    return [v for n, v in msg.headers if n == name]


def trust_at_next_hop(side, call_id):
    """Every trust header of the one request that reached the front end; the
    partner's verifiable mark must have stopped at the edge."""
    got = received(side.uas, call_id)
    assert len(got) == 1, got
    assert headers_named(got[0], MARK) == [], got[0]
    return headers_named(got[0], TRUST)


def refused(r, side, status, text, uas, call_id):
    assert r.status == status, r
    assert text in warning_of(r, side), r
    # The edge answers only once it has decided: nothing may have crossed by now.
    assert not uas.received(call_id)


# ---- inbound: partner -> contoso's front end ----

C_POOL = "sip.contoso.test"


@pytest.mark.parametrize("peer, sender, to, mark, expected", [
    # DirectPartner, allowed with AlwaysUnverifiable: the partner's mark changes nothing.
    ("sip.fabrikam.test", "bob@fabrikam.test", "carl@contoso.test", MARKED,
     trust("DirectPartner", C_POOL, "unverified", "federation", "sip.fabrikam.test")),
    # Hosting provider, AlwaysVerifiable (its default): no mark needed, its own domain ...
    ("sipfed.online.test", "carol@hosted.test", "carl@contoso.test", [],
     trust("AuthorizedServer", C_POOL, "verified", "federation", "sipfed.online.test")),
    # ... and any other domain that is neither blocked nor ours, even marked unverified.
    ("sipfed.online.test", "dan@elsewhere.test", "carl@contoso.test", [f"{MARK}: unverified"],
     trust("AuthorizedServer", C_POOL, "verified", "federation", "sipfed.online.test")),
    # Public provider, UseSourceVerification (its default): verified when marked ...
    ("fed.msgr.test", "dave@msgr.test", "alice@contoso.test", MARKED,
     trust("AuthorizedServer", C_POOL, "verified", "publiccloud", "fed.msgr.test")),
    # ... unverified without the mark, for its own domain too ...
    ("fed.msgr.test", "dave@msgr.test", "alice@contoso.test", [],
     trust("AuthorizedServer", C_POOL, "unverified", "publiccloud", "fed.msgr.test")),
    # ... or marked unverified.
    ("fed.msgr.test", "eve@other.test", "alice@contoso.test", [f"{MARK}: unverified"],
     trust("AuthorizedServer", C_POOL, "unverified", "publiccloud", "fed.msgr.test")),
    # A provider may speak for any domain neither blocked nor ours: marked, verified.
    ("fed.msgr.test", "eve@other.test", "alice@contoso.test", MARKED,
     trust("AuthorizedServer", C_POOL, "verified", "publiccloud", "fed.msgr.test")),
    # AutoFederation: litware.test's SRV target is named by the certificate;
    # UseSourceVerification (the allowed domain's default) reads the mark.
    ("sip.litware.test", "lee@litware.test", "carl@contoso.test", MARKED,
     trust("AutoFederation", C_POOL, "verified", "federation", "sip.litware.test")),
    ("sip.litware.test", "lee@litware.test", "carl@contoso.test", [],
     trust("AutoFederation", C_POOL, "unverified", "federation", "sip.litware.test")),
], ids=["direct-partner-always-unverifiable", "hosting-own-domain-always-verifiable",
        "hosting-other-domain-always-verifiable", "public-source-verified",
        "public-source-unmarked-unverified", "public-source-marked-unverified",
        "public-other-domain-source-verified",
        "auto-federation-source-verified", "auto-federation-source-unmarked-unverified"])
def test_inbound_accepted(lab, peer, sender, to, mark, expected, call_id):
    r = inbound(lab, lab.contoso, peer, call_id, sender, to, headers=mark)
    assert r.status == 200, r
    assert trust_at_next_hop(lab.contoso, call_id) == [expected]


@pytest.mark.parametrize("peer, sender, to, text", [
    ("sip.fabrikam.test", "x@hosted.test", "carl@contoso.test",
     "spoofed source: hosted.test is served by sipfed.online.test, "
     "not by the peer (sip.fabrikam.test)"),
    ("sip.unknown.test", "bob@fabrikam.test", "carl@contoso.test",
     "spoofed source: fabrikam.test is served by sip.fabrikam.test, "
     "not by the peer (sip.unknown.test)"),
    ("sipfed.online.test", "alice@contoso.test", "carl@contoso.test",
     "spoofed source: sipfed.online.test may not speak for our domain contoso.test"),
    # The root's dot (RFC 1034) makes no other domain of ours, or of a blocked one.
    ("sipfed.online.test", "ceo@contoso.test.", "carl@contoso.test",
     "spoofed source: sipfed.online.test may not speak for our domain contoso.test."),
    ("sipfed.online.test", "x@blocked.test.", "carl@contoso.test",
     "sender domain blocked.test. is blocked"),
    ("sipfed.online.test", "x@blocked.test", "carl@contoso.test",
     "sender domain blocked.test is blocked"),
    ("sip.fabrikam.test", "x@blocked.test", "carl@contoso.test",
     "sender domain blocked.test is blocked"),
    ("fed.msgr.test", "eve@other.test", "bob@contoso.test",
     "external access policy 'global' of the recipient does not permit public cloud access"),
    ("fed.msgr.test", "dave@msgr.test", "bob@contoso.test",
     "external access policy 'global' of the recipient does not permit public cloud access"),
    ("sip.unknown.test", "x@unknown.test", "carl@contoso.test",
     "sender domain unknown.test is not an allowed federation partner "
     "(peer certificate names: sip.unknown.test)"),
    ("sip.unknown.test", "lee@litware.test", "carl@contoso.test",
     "spoofed source: no SRV target of litware.test inside it is named by the peer's "
     "certificate (sip.unknown.test)"),
    ("sip.fabrikam.test", "bob@fabrikam.test", "x@elsewhere.test",
     "relay denied: elsewhere.test is not a domain of this organization"),
], ids=["direct-partner-spoofs-hosted-domain", "unknown-peer-spoofs-direct-partner",
        "hosting-sends-as-our-domain", "hosting-sends-as-our-domain-root-dot",
        "hosting-sends-as-blocked-root-dot", "hosting-sends-as-blocked", "direct-partner-sends-as-blocked",
        "public-to-global-policy-user", "public-own-domain-to-global-policy-user",
        "unknown-peer-discovery-off", "unknown-peer-spoofs-srv-partner",
        "relay-to-foreign-domain"])
def test_inbound_refused(lab, peer, sender, to, text, call_id):
    r = inbound(lab, lab.contoso, peer, call_id, sender, to)
    refused(r, lab.contoso, 403, text, lab.contoso.uas, call_id)


def test_spoofed_source_is_logged_with_the_certificate_names(lab, call_id):
    r = inbound(lab, lab.contoso, "sip.unknown.test", call_id, "bob@fabrikam.test",
                "carl@contoso.test")
    assert r.status == 403, r
    wait_for(lambda: any(call_id in line and "sip.unknown.test" in line
                         for line in lab.contoso.edge.log().splitlines()),
             5, "the refusal logged with the peer's certificate name")


@pytest.mark.parametrize("peer, sender, expected", [
    ("sip.fabrikam.test", "bob@fabrikam.test",
     trust("DirectPartner", C_POOL, "unverified", "federation", "sip.fabrikam.test")),
    ("fed.msgr.test", "eve@other.test",
     trust("AuthorizedServer", C_POOL, "unverified", "publiccloud", "fed.msgr.test")),
], ids=["direct-partner", "public-provider"])
def test_forged_trust_header_is_replaced(lab, peer, sender, expected, call_id):
    """A peer claiming to be verified, twice, still reaches the front end with edged's one header."""
    forged = trust("DirectPartner", C_POOL, "verified", "federation", "sip.contoso.test")
    r = inbound(lab, lab.contoso, peer, call_id, sender, "alice@contoso.test",
                headers=[f"{TRUST}: {forged}", f"MS-Edge-Proxy-Message-Trust: {forged}",
                         f"{MARK}: unverified"])
    assert r.status == 200, r
    assert trust_at_next_hop(lab.contoso, call_id) == [expected]


# ---- outbound: contoso's front end -> partner ----

@pytest.mark.parametrize("sender, to, server", [
    ("bob@contoso.test", "bob@fabrikam.test", "sip.fabrikam.test"),
    ("bob@contoso.test", "carol@hosted.test", "sipfed.online.test"),
    ("alice@contoso.test", "dave@msgr.test", "fed.msgr.test"),
    ("bob@contoso.test", "lee@litware.test", "sip.litware.test"),
], ids=["direct-partner", "hosting-provider", "public-provider-cloud-policy",
        "allowed-by-dns-srv"])
def test_outbound_reaches_the_partner_server(lab, sender, to, server, call_id):
    r = outbound(lab.contoso, call_id, to, sender)
    assert r.status == 200, r
    got = received(lab.uas[server], call_id)
    assert len(got) == 1 and got[0].start == f"MESSAGE sip:{to} SIP/2.0", got
    for other, uas in lab.uas.items():
        if other != server:
            assert not uas.received(call_id), other
    # The partner verified edged's client certificate.
    assert lab.uas[server].tls_failures == []


@pytest.mark.parametrize("sender, to, text", [
    ("bob@contoso.test", "dave@msgr.test",
     "external access policy 'global' of bob@contoso.test does not permit public cloud access"),
    ("bob@contoso.test", "x@unknown.test",
     "domain unknown.test is not an allowed federation partner (partner discovery is off)"),
    ("alice@contoso.test", "x@blocked.test", "domain blocked.test is blocked: abuse"),
    ("bob@elsewhere.test", "bob@fabrikam.test",
     "sender domain elsewhere.test is not a domain of this organization"),
], ids=["public-provider-global-policy", "unknown-discovery-off", "blocked", "foreign-sender"])
def test_outbound_refused(lab, sender, to, text, call_id):
    r = outbound(lab.contoso, call_id, to, sender)
    assert r.status == 403, r
    assert text in warning_of(r, lab.contoso), r
    for fqdn, uas in lab.uas.items():
        assert not uas.received(call_id), fqdn


def test_edge_headers_toward_the_partner(lab, call_id):
    """ms-diagnostics and the front ends' trust header never leave; the partner gets
    edged's one verifiable mark (MarkSourceVerifiableOnOutgoingMessages, default
    true), not the front end's."""
    r = outbound(lab.contoso, call_id, "bob@fabrikam.test", "bob@contoso.test",
                 headers=['ms-diagnostics: 1000;reason="internal detail";source="fe.contoso.test"',
                          f"{MARK}: unverified",
                          f"{TRUST}: ms-source-type=DirectPartner;ms-ep-fqdn=x;"
                          "ms-source-verified-user=verified;ms-source-network=federation;"
                          "ms-remote-fqdn=x"])
    assert r.status == 200, r
    got = received(lab.uas["sip.fabrikam.test"], call_id)
    assert len(got) == 1, got
    assert headers_named(got[0], "ms-diagnostics") == [], got[0]
    assert headers_named(got[0], MARK) == ["verified"], got[0]
    assert headers_named(got[0], TRUST) == [], got[0]


# ---- default route (UseDefaultRouting) ----

A_POOL = "sip.adatum.test"


def test_default_route_outbound(lab, call_id):
    r = outbound(lab.adatum, call_id, "x@northwind.test", "alice@adatum.test")
    assert r.status == 200, r
    got = received(lab.uas["sip.upstream.test"], call_id)
    assert len(got) == 1 and got[0].start == "MESSAGE sip:x@northwind.test SIP/2.0", got
    assert lab.uas["sip.upstream.test"].tls_failures == []


def test_default_route_outbound_unknown_domain(lab, call_id):
    """Discovery is off: a domain that is not allowed goes nowhere, not even upstream."""
    r = outbound(lab.adatum, call_id, "x@unknown.test", "alice@adatum.test")
    assert r.status == 403, r
    assert "domain unknown.test is not an allowed federation partner (partner discovery is off)" \
        in warning_of(r, lab.adatum), r
    assert not lab.uas["sip.upstream.test"].received(call_id)


def test_default_route_inbound_always_verifiable(lab, call_id):
    r = inbound(lab, lab.adatum, "sip.upstream.test", call_id, "y@northwind.test",
                "alice@adatum.test")
    assert r.status == 200, r
    assert trust_at_next_hop(lab.adatum, call_id) == [
        trust("AuthorizedServer", A_POOL, "verified", "federation", "sip.upstream.test")]


def test_default_route_inbound_unknown_peer(lab, call_id):
    """Only the upstream server speaks for northwind.test."""
    r = inbound(lab, lab.adatum, "sip.unknown.test", call_id, "y@northwind.test",
                "alice@adatum.test")
    refused(r, lab.adatum, 403, "spoofed source: northwind.test is served by sip.upstream.test, "
            "not by the peer (sip.unknown.test)", lab.adatum.uas, call_id)


# ---- federation off ----

def test_federation_disabled_outbound(lab, call_id):
    r = outbound(lab.tailspin, call_id, "bob@fabrikam.test", "alice@tailspin.test")
    refused(r, lab.tailspin, 403, "federation is disabled", lab.uas["sip.fabrikam.test"], call_id)


def test_federation_disabled_inbound(lab, call_id):
    r = inbound(lab, lab.tailspin, "sip.fabrikam.test", call_id, "bob@fabrikam.test",
                "alice@tailspin.test")
    refused(r, lab.tailspin, 403, "federation is disabled", lab.tailspin.uas, call_id)
