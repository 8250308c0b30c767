"""Bad input gets a named outcome and loses nothing: a SIP status, a closed
connection, a log line. Afterwards the edge still relays."""
import pytest

from edgepool import SipClient, sip_request, wait_for
from test_relay import relay


def message(org, call_id, ruri=None, **kw):
    return sip_request("MESSAGE", ruri or "sip:bob@fabrikam.test",
                       from_uri=f"sip:alice@{org.domain}", to_uri="sip:bob@fabrikam.test",
                       call_id=call_id, **kw)


@pytest.fixture
def client(orgs):
    contoso, _ = orgs
    c = SipClient(*contoso.internal)
    yield c
    c.close()


def expect(client, data, status):
    client.send(data)
    r = client.recv_final()
    assert r.status == status, r
    return r


@pytest.mark.parametrize("broken", [
    lambda m: m.replace(b"Call-ID: ", b"X-Call-ID: "),          # mandatory header missing
    lambda m: m.replace(b"CSeq: 1 MESSAGE", b"CSeq: one MESSAGE"),
    lambda m: m.replace(b"CSeq: 1 MESSAGE", b"CSeq: 1 INVITE"),  # method mismatch
    lambda m: m.replace(b"Max-Forwards: 70", b"Max-Forwards 70"),  # no colon
    lambda m: m.replace(b"Max-Forwards: 70", b"Max-Forwards: 7000"),
], ids=["no-call-id", "bad-cseq", "cseq-method", "no-colon", "max-forwards"])
def test_malformed_gets_400_and_connection_stays(orgs, client, broken):
    r = expect(client, broken(message(orgs[0], "bad-1")), 400)
    assert r.header("warning") and "sip.contoso.test" in r.header("warning")
    # Same connection, next request: still served (403: a domain that is no partner).
    expect(client, message(orgs[0], "bad-2", ruri="sip:bob@nowhere.test"), 403)


def test_oversized_gets_513_then_close(orgs, client):
    body = "x" * (129 * 1024)   # internal side limit: 128 KB
    client.send(message(orgs[0], "big-1", body=body))
    assert client.recv().status == 513
    assert client.closed_by_peer()
    assert orgs[0].edge.running()


def test_broken_framing_closes_and_logs(orgs, client):
    port = client.sock.getsockname()[1]
    client.send(message(orgs[0], "frame-1", content_length="abc"))
    assert client.closed_by_peer()
    wait_for(lambda: f"127.0.0.1:{port}" in orgs[0].edge.log() and "framing" in orgs[0].edge.log(),
             5, "a log line naming the peer and the framing error")


def test_garbage_closes(orgs, client):
    client.send(b"\x16\x03\x01 this is not SIP at all\r\n\r\n")
    assert client.closed_by_peer()


def test_keepalive_ping_pong(orgs, client):
    client.send(b"\r\n\r\n")
    assert client.read_raw(2) == b"\r\n"
    expect(client, message(orgs[0], "ka-1", ruri="sip:bob@nowhere.test"), 403)


def test_unknown_domain_403_names_it(orgs, client):
    r = expect(client, message(orgs[0], "dom-1", ruri="sip:bob@nowhere.test"), 403)
    assert "nowhere.test" in r.header("warning")
    assert "not an allowed federation partner" in r.header("warning")


def test_sender_domain_not_ours_403(orgs, client):
    data = sip_request("MESSAGE", "sip:bob@fabrikam.test", from_uri="sip:mallory@fabrikam.test",
                       to_uri="sip:bob@fabrikam.test", call_id="spoof-1")
    r = expect(client, data, 403)
    assert "fabrikam.test" in r.header("warning")


def test_max_forwards_zero(orgs, client):
    expect(client, message(orgs[0], "mf-1", max_forwards=0), 483)
    data = sip_request("OPTIONS", "sip:bob@fabrikam.test", from_uri="sip:alice@contoso.test",
                       to_uri="sip:bob@fabrikam.test", call_id="mf-2", max_forwards=0)
    r = expect(client, data, 200)
    assert "MESSAGE" in r.header("allow")


def test_options_to_the_edge_itself(orgs, client):
    for i, ruri in enumerate(["sip:sip.contoso.test", f"sip:{orgs[0].internal[0]}:{orgs[0].internal[1]}"]):
        data = sip_request("OPTIONS", ruri, from_uri="sip:alice@contoso.test",
                           to_uri=ruri, call_id=f"opt-{i}")
        assert expect(client, data, 200).header("server") == "EdgePool"
    data = sip_request("INFO", "sip:sip.contoso.test", from_uri="sip:alice@contoso.test",
                       to_uri="sip:sip.contoso.test", call_id="opt-info")
    expect(client, data, 405)


def test_proxy_require_420(orgs, client):
    r = expect(client, message(orgs[0], "pr-1", headers=["Proxy-Require: foo"]), 420)
    assert r.header("unsupported") == "foo"


def test_partner_requests_checked(orgs, pki):
    """A verified partner may speak only for its own domains, only to ours."""
    contoso, fabrikam = orgs
    c = SipClient(*contoso.external, tls_ca=pki.ca_file, cert=fabrikam.cert, key=fabrikam.key,
                  server_name=contoso.fqdn)
    try:
        relay_req = sip_request("MESSAGE", "sip:eve@litware.test", from_uri="sip:bob@fabrikam.test",
                                to_uri="sip:eve@litware.test", call_id="in-1")
        r = expect(c, relay_req, 403)
        assert "relay denied" in r.header("warning")
        spoof = sip_request("MESSAGE", "sip:alice@contoso.test", from_uri="sip:ceo@northwind.test",
                            to_uri="sip:alice@contoso.test", call_id="in-2")
        r = expect(c, spoof, 403)
        assert "northwind.test" in r.header("warning") and "sip.fabrikam.test" in r.header("warning")
        preloaded = sip_request("MESSAGE", "sip:eve@litware.test", from_uri="sip:bob@fabrikam.test",
                                to_uri="sip:eve@litware.test", call_id="in-3",
                                headers=["Route: <sip:proxy.litware.test;lr>"])
        expect(c, preloaded, 403)
    finally:
        c.close()


def test_unknown_peer_certificate_403(orgs, pki):
    """A certificate from the right CA that names no partner: TLS passes, requests do not."""
    contoso, _ = orgs
    cert, key = pki.issue("sip.evil.test")
    c = SipClient(*contoso.external, tls_ca=pki.ca_file, cert=cert, key=key, server_name=contoso.fqdn)
    try:
        req = sip_request("MESSAGE", "sip:alice@contoso.test", from_uri="sip:eve@evil.test",
                          to_uri="sip:alice@contoso.test", call_id="evil-1")
        r = expect(c, req, 403)
        assert "sip.evil.test" in r.header("warning")
    finally:
        c.close()


def test_still_relays_after_bad_input(orgs, tmp_path):
    contoso, fabrikam = orgs
    assert contoso.edge.status()["malformed"] >= 5
    relay(tmp_path, "message", contoso, fabrikam, calls=3)
