"""Connection limits and the internal TLS listener."""
import socket
import ssl

import pytest

from conftest import make_org, org_config
from edgepool import Edge, SipClient, sip_request, wait_for


def start(tmp_path, pki, org, partners, config_edit=lambda t: t, **kw):
    text = config_edit(org_config(org, partners, pki, **kw))
    org.edge = Edge(tmp_path, org.domain, text, [org.internal, org.external])
    return org.edge.start()


@pytest.fixture
def limited(tmp_path, pki):
    """contoso with an idle timeout of 1 s and room for 2 connections."""
    contoso = make_org("contoso.test", "127.0.0.1", pki)
    fabrikam = make_org("fabrikam.test", "127.0.0.2", pki)
    start(tmp_path, pki, contoso, [fabrikam],
          limits={"idle_timeout_s": 1, "max_connections": 2})
    yield contoso
    assert contoso.edge.stop() == 0, contoso.edge.log()[-3000:]


def test_idle_connection_is_closed(limited):
    c = SipClient(*limited.internal)
    try:
        assert c.closed_by_peer(timeout=5), "an idle connection outlived idle_timeout_s"
    finally:
        c.close()


def test_connection_limit(limited):
    first, second = SipClient(*limited.internal), SipClient(*limited.internal)
    third = SipClient(*limited.internal)
    port = third.sock.getsockname()[1]
    try:
        assert third.closed_by_peer(timeout=5)
        wait_for(lambda: f"127.0.0.1:{port}" in limited.edge.log()
                 and "connection limit" in limited.edge.log(), 5, "the refusal in the log")
        # The two within the limit still work.
        req = sip_request("OPTIONS", "sip:sip.contoso.test", from_uri="sip:alice@contoso.test",
                          to_uri="sip:sip.contoso.test", call_id="limit-1")
        first.send(req)
        assert first.recv_final().status == 200
    finally:
        for c in (first, second, third):
            c.close()


def test_internal_tls_listener(tmp_path, pki):
    """The organization's servers may connect over mutual TLS too."""
    contoso = make_org("contoso.test", "127.0.0.1", pki)
    fabrikam = make_org("fabrikam.test", "127.0.0.2", pki)
    front_end = pki.issue("fe.contoso.test")
    start(tmp_path, pki, contoso, [fabrikam],
          config_edit=lambda t: t.replace('transport = "tcp"; } );', 'transport = "tls"; } );', 1))
    try:
        c = SipClient(*contoso.internal, tls_ca=pki.ca_file, cert=front_end[0], key=front_end[1],
                      server_name=contoso.fqdn)
        try:
            c.send(sip_request("OPTIONS", "sip:sip.contoso.test", from_uri="sip:alice@contoso.test",
                               to_uri="sip:sip.contoso.test", call_id="itls-1"))
            assert c.recv_final().status == 200
            c.send(sip_request("MESSAGE", "sip:bob@nowhere.test", from_uri="sip:alice@contoso.test",
                               to_uri="sip:bob@nowhere.test", call_id="itls-2"))
            assert c.recv_final().status == 403
        finally:
            c.close()
        # Without a client certificate the internal TLS listener refuses too.
        raw = socket.create_connection(contoso.internal, timeout=5)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(str(pki.ca_file))
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError, EOFError, OSError)):
            s = ctx.wrap_socket(raw, server_hostname=contoso.fqdn)
            s.sendall(b"\r\n\r\n")
            if not s.recv(2):
                raise EOFError("closed")
        raw.close()
    finally:
        assert contoso.edge.stop() == 0, contoso.edge.log()[-3000:]
