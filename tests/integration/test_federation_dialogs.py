"""Dialogs with partners found by DNS SRV: INVITE/ACK/BYE, CANCEL and
SUBSCRIBE/NOTIFY through two edges that know each other only from DNS
(a real BIND), with sipp on both internal sides. In-dialog requests carry
the partner's Record-Route, and must find its edge the same way.

contoso.test (127.0.0.1) has partner discovery on and no allowed domain;
fabrikam.test (127.0.0.2) allows contoso.test without a ProxyFqdn.
"""
import pytest

from conftest import make_org, start_edge
from dnslab import Bind
from test_relay import relay

SRV = "_sipfederationtls._tcp"


@pytest.fixture(scope="module")
def srv_orgs(tmp_path_factory, pki):
    work = tmp_path_factory.mktemp("srv-dialogs")
    contoso = make_org("contoso.test", "127.0.0.1", pki)
    fabrikam = make_org("fabrikam.test", "127.0.0.2", pki)
    dns = Bind(work / "dns", {
        "contoso.test": [f"{SRV} 60 IN SRV 0 0 {contoso.external[1]} sip.contoso.test.",
                         "sip 60 IN A 127.0.0.1"],
        "fabrikam.test": [f"{SRV} 60 IN SRV 0 0 {fabrikam.external[1]} sip.fabrikam.test.",
                          "sip 60 IN A 127.0.0.2"],
    }).start()
    try:
        start_edge(work, contoso, [], pki, dns=dns.address,
                   access_edge={"enable_partner_discovery": True})
        start_edge(work, fabrikam, [], pki, dns=dns.address,
                   sections={"allowed_domains": [{"domain": "contoso.test"}]})
        yield contoso, fabrikam
    finally:
        codes = [o.edge.stop() for o in (contoso, fabrikam) if o.edge]
        dns.stop()
    assert set(codes) <= {0}, codes


@pytest.mark.parametrize("scenario", ["message", "invite", "cancel", "subscribe"])
def test_contoso_to_fabrikam(srv_orgs, tmp_path, scenario):
    contoso, fabrikam = srv_orgs
    relay(tmp_path, scenario, contoso, fabrikam, calls=5)


@pytest.mark.parametrize("scenario", ["message", "invite"])
def test_fabrikam_to_contoso(srv_orgs, tmp_path, scenario):
    contoso, fabrikam = srv_orgs
    relay(tmp_path, scenario, fabrikam, contoso, calls=5)


def test_dns_cache_carries_the_dialogs(srv_orgs):
    """Twenty-odd dialogs, a handful of DNS queries: answers are cached within their TTL."""
    contoso, _ = srv_orgs
    dns = contoso.edge.status()["dns"]
    assert dns["cache_hits"] > dns["queries"], dns
