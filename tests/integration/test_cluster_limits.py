"""The discovered-partner limits hold for the pool, not per node: two edges
of fabrikam.test's pool, A and B, each count their part of a discovered
partner's contacts and publish it in the pool's store; the contacts limit
applies to the sum. contoso.test is discovered through a real BIND."""
import base64

import pytest

from dnslab import Bind
from edgepool import Edge, SipClient, SipUAS, edge_config, free_port, sip_request, wait_for
from test_cluster import udp_free_port

KEY = base64.b64encode(bytes(range(32))).decode()
SRV = "_sipfederationtls._tcp"


@pytest.fixture(scope="module")
def pool(tmp_path_factory, pki):
    work = tmp_path_factory.mktemp("pool-limits")
    cert, key = pki.issue("sip.fabrikam.test", file_name="fabrikam-limits")
    creds = pki.issue("sip.contoso.test", file_name="contoso-limits")
    northwind = pki.issue("sip.northwind.test", file_name="northwind-limits")
    dns = Bind(work / "dns", {"contoso.test": [f"{SRV} 60 IN SRV 0 0 5061 sip.contoso.test.",
                                               "sip 60 IN A 127.0.0.1"],
                              "northwind.test": [f"{SRV} 60 IN SRV 0 0 5061 sip.northwind.test.",
                                                 "sip 60 IN A 127.0.0.1"]}).start()
    uas = SipUAS("127.0.0.2", free_port("127.0.0.2"))
    ports = {"edge-a": udp_free_port(), "edge-b": udp_free_port()}
    nodes = {}
    try:
        for name, host, seeds in (("edge-a", "127.0.0.2", []), ("edge-b", "127.0.0.3", ["edge-a"])):
            internal, external = (host, free_port(host)), (host, free_port(host))
            cluster = {"name": name, "address": "127.0.0.1", "port": ports[name], "keys": [KEY],
                       "join": [f"127.0.0.1:{ports[s]}" for s in seeds],
                       "probe_interval_ms": 200, "probe_timeout_ms": 100,
                       "gossip_interval_ms": 50, "pushpull_interval_s": 2}
            text = edge_config(pool_fqdn="sip.fabrikam.test", domains=["fabrikam.test"],
                               ca=pki.ca_file, cert=cert, key=key, internal=internal,
                               next_hop=uas.addr, external=external, status_port=free_port(),
                               dns=dns.address,
                               access_edge={"enable_partner_discovery": True,
                                            "max_contacts_per_discovered_partner": 3},
                               sections={"cluster": cluster})
            nodes[name] = Edge(work, name, text, [internal, external]).start()
            nodes[name].external = external
        wait_for(lambda: all(n.status()["cluster"]["alive"] == 2 for n in nodes.values()), 10,
                 "the pool of two")
        yield nodes, creds, pki, northwind, dns
    finally:
        codes = [n.stop() for n in nodes.values()]
        uas.stop()
        dns.stop()
    assert set(codes) <= {0}, codes


def send(node, creds, pki, user, call_id, sender="carol@contoso.test"):
    c = SipClient(*node.external, tls_ca=pki.ca_file, cert=creds[0], key=creds[1],
                  server_name="sip.fabrikam.test")
    try:
        c.send(sip_request("MESSAGE", f"sip:{user}@fabrikam.test", from_uri=f"sip:{sender}",
                           to_uri=f"sip:{user}@fabrikam.test", call_id=call_id, body="hi"))
        return c.recv_final()
    finally:
        c.close()


def test_verified_sources_are_shared(pool):
    """A verifies northwind.test by DNS SRV and tells the pool: B trusts it
    without a lookup of its own, even once the DNS server is gone."""
    nodes, _, pki, northwind, dns = pool
    a, b = nodes["edge-a"], nodes["edge-b"]
    before = b.status()["cluster"]["store"]["records"]
    assert send(a, northwind, pki, "v1", "vs-1", sender="nina@northwind.test").status == 200
    wait_for(lambda: b.status()["cluster"]["store"]["records"] > before, 10,
             "the verification to reach edge-b")
    dns.stop()
    try:
        assert b.status()["dns"]["queries"] == 0
        assert send(b, northwind, pki, "v2", "vs-2", sender="nina@northwind.test").status == 200
    finally:
        dns.start()                      # the next test needs it


def test_contacts_limit_is_pool_wide(pool):
    nodes, creds, pki, _, _ = pool
    a, b = nodes["edge-a"], nodes["edge-b"]
    # The previous test left northwind.test with one user through each node: 2 in the pool,
    # once both parts have spread.
    wait_for(lambda: all(n.status()["discovered_partners"]["pool_contacts"] == 2
                         for n in (a, b)), 10, "the pool's counts to settle")
    known = 2
    assert send(a, creds, pki, "u1", "pl-1").status == 200
    assert send(a, creds, pki, "u2", "pl-2").status == 200
    # A's part (2 users) reaches B through the store.
    wait_for(lambda: b.status()["discovered_partners"]["pool_contacts"] == known + 2, 10,
             "edge-a's count to reach edge-b")
    assert send(b, creds, pki, "u3", "pl-3").status == 200   # 3 in the pool: the limit
    r = send(b, creds, pki, "u4", "pl-4")                     # 4 > 3, though B saw only 2
    assert r.status == 403 and "blocked" in r.header("warning"), r
    # And A learns that B's part tips the pool over too.
    wait_for(lambda: send(a, creds, pki, "u5", "pl-5").status == 403, 10,
             "edge-a to refuse as well")
