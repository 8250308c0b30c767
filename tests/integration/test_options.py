"""OPTIONS answered by the edge itself: addressed to it (its pool FQDN or a
listener's address), or with Max-Forwards 0, from either side."""
import pytest

from edgepool import SipClient, sip_request


def options(ruri, call_id, **kw):
    return sip_request("OPTIONS", ruri, from_uri="sip:alice@contoso.test", to_uri=ruri,
                       call_id=call_id, **kw)


def ask(client, data):
    client.send(data)
    return client.recv_final()


def answered_by_edge(r, request_call_id, fqdn="sip.contoso.test"):
    """A 200 built by the edge for our request: our Via, Call-ID and CSeq back,
    a To tag added, what it supports listed."""
    assert r.status == 200, r
    assert r.header("call-id") == request_call_id, r
    assert r.header("cseq") == "1 OPTIONS", r
    assert f"branch=z9hG4bK-{request_call_id}-1" in r.header("via"), r
    assert ";tag=" in r.header("to"), r
    assert r.header("server") == "EdgePool", r
    for method in ("MESSAGE", "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "SUBSCRIBE", "NOTIFY"):
        assert method in r.header("allow"), r


@pytest.fixture
def internal(orgs):
    c = SipClient(*orgs[0].internal)
    yield c
    c.close()


@pytest.fixture
def external(orgs, pki):
    """A mutual-TLS connection from fabrikam (a partner) to contoso's edge."""
    contoso, fabrikam = orgs
    c = SipClient(*contoso.external, tls_ca=pki.ca_file, cert=fabrikam.cert, key=fabrikam.key,
                  server_name=contoso.fqdn)
    yield c
    c.close()


def test_options_to_pool_fqdn(orgs, internal):
    answered_by_edge(ask(internal, options("sip:sip.contoso.test", "o-fqdn")), "o-fqdn")


def test_options_to_internal_listener_address(orgs, internal):
    host, port = orgs[0].internal
    answered_by_edge(ask(internal, options(f"sip:{host}:{port}", "o-addr")), "o-addr")


def test_options_max_forwards_zero_not_forwarded(orgs, internal):
    """To a partner's user, but Max-Forwards 0: the edge answers, nothing goes out."""
    contoso, fabrikam = orgs
    before = fabrikam.edge.status()["requests_forwarded"]
    r = ask(internal, sip_request("OPTIONS", "sip:bob@fabrikam.test", from_uri="sip:alice@contoso.test",
                                  to_uri="sip:bob@fabrikam.test", call_id="o-mf0", max_forwards=0))
    answered_by_edge(r, "o-mf0")
    assert fabrikam.edge.status()["requests_forwarded"] == before


def test_options_several_on_one_connection(orgs, internal):
    for i in range(5):
        answered_by_edge(ask(internal, options("sip:sip.contoso.test", f"o-many-{i}")), f"o-many-{i}")


def test_options_from_partner_to_pool_fqdn(orgs, external):
    r = ask(external, sip_request("OPTIONS", "sip:sip.contoso.test", from_uri="sip:bob@fabrikam.test",
                                  to_uri="sip:sip.contoso.test", call_id="o-ext"))
    answered_by_edge(r, "o-ext")


def test_options_from_partner_to_external_listener_address(orgs, external):
    host, port = orgs[0].external
    ruri = f"sip:{host}:{port};transport=tls"
    r = ask(external, sip_request("OPTIONS", ruri, from_uri="sip:bob@fabrikam.test", to_uri=ruri,
                                  call_id="o-ext-addr"))
    answered_by_edge(r, "o-ext-addr")


def test_other_method_to_the_edge_405(orgs, internal):
    r = ask(internal, sip_request("INFO", "sip:sip.contoso.test", from_uri="sip:alice@contoso.test",
                                  to_uri="sip:sip.contoso.test", call_id="o-info"))
    assert r.status == 405, r
    # RFC 3261 21.4.6: a 405 MUST list the allowed methods.
    assert "OPTIONS" in (r.header("allow") or ""), f"405 without Allow: {r}"
