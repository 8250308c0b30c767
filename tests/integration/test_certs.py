"""Certificate verification, both directions, with real TLS.

Inbound: a partner's client certificate must chain to the CA, be valid now
and carry the clientAuth EKU, or the handshake fails and the edge logs it
with the peer's address. Outbound: the partner's server certificate must
chain to the CA, be valid, carry serverAuth and name the configured FQDN,
or the edge answers 504 and the partner never receives a byte of SIP.
"""
import socket
import ssl
import threading

import pytest

from conftest import make_org, start_edge
from edgepool import PKI, SipClient, free_port, sip_request, wait_for


def options(ruri="sip:sip.contoso.test", call_id="tls-1"):
    return sip_request("OPTIONS", ruri, from_uri="sip:bob@fabrikam.test", to_uri=ruri,
                       call_id=call_id)


def tls_attempt(org, pki, cert=None, key=None):
    """Connects to org's external listener and sends OPTIONS. Returns
    (local port, status or None when the TLS session failed)."""
    raw = socket.create_connection(org.external, timeout=5)
    port = raw.getsockname()[1]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(pki.ca_file))
    if cert:
        ctx.load_cert_chain(str(cert), str(key))
    try:
        # TLS 1.3 finishes the client's handshake before the server has
        # judged the client certificate: the refusal shows on first read.
        s = ctx.wrap_socket(raw, server_hostname=org.fqdn)
        s.sendall(options(call_id=f"tls-{port}"))
        data = s.recv(65536)
        return port, int(data.split(b" ")[1]) if data else None
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return port, None
    finally:
        raw.close()


def test_valid_partner_certificate_accepted(orgs, pki):
    contoso, fabrikam = orgs
    assert tls_attempt(contoso, pki, fabrikam.cert, fabrikam.key)[1] == 200


@pytest.mark.parametrize("case", ["no-certificate", "other-ca", "expired", "no-clientauth-eku"])
def test_inbound_bad_client_certificate(orgs, pki, other_pki, case):
    contoso, _ = orgs
    cert = key = None
    if case == "other-ca":
        cert, key = other_pki.issue("sip.fabrikam.test", file_name="other-fabrikam")
    elif case == "expired":
        cert, key = pki.issue("sip.fabrikam.test", file_name="expired-fabrikam", expired=True)
    elif case == "no-clientauth-eku":
        cert, key = pki.issue("sip.fabrikam.test", file_name="server-only-fabrikam", eku=("server",))
    port, status = tls_attempt(contoso, pki, cert, key)
    assert status is None, f"{case}: the edge answered {status}"
    line = wait_for(lambda: next((l for l in contoso.edge.log().splitlines()
                                  if f"127.0.0.1:{port}" in l and "TLS" in l and "failed" in l), None),
                    5, f"a log line about the TLS failure from port {port}")
    expected = {"no-certificate": "certificate", "other-ca": "certificate verification failed",
                "expired": "expired", "no-clientauth-eku": "purpose"}[case]
    assert expected in line, line


class FakePartner:
    """A TLS server in a thread, standing in for a partner's edge: it records
    what SIP bytes arrive, and answers nothing. Its certificate can change."""

    def __init__(self, host, port):
        self.addr = (host, port)
        self.sock = socket.create_server(self.addr)
        self.sock.settimeout(0.2)
        self.ctx = None
        self.received = b""
        self.accepted = 0     # TCP connections, whatever became of their handshake
        self.handshakes = 0
        self.stopping = False
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def use(self, cert, key):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        self.ctx = ctx

    def serve(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            self.accepted += 1
            with conn:
                conn.settimeout(2)
                try:
                    tls = self.ctx.wrap_socket(conn, server_side=True)
                    self.handshakes += 1
                    while True:
                        data = tls.recv(65536)
                        if not data:
                            break
                        self.received += data
                except (ssl.SSLError, OSError):
                    pass

    def close(self):
        self.stopping = True
        self.thread.join(5)
        self.sock.close()


@pytest.fixture(scope="module")
def lone_edge(tmp_path_factory, pki):
    """contoso, whose partner fabrikam.test is a FakePartner on 127.0.0.3."""
    workdir = tmp_path_factory.mktemp("lone")
    contoso = make_org("contoso.test", "127.0.0.1", pki)
    fabrikam = make_org("fabrikam.test", "127.0.0.3", pki)
    partner = FakePartner(*fabrikam.external)
    try:
        start_edge(workdir, contoso, [fabrikam], pki)
        yield contoso, fabrikam, partner
    finally:
        partner.close()
        code = contoso.edge.stop() if contoso.edge else 0
    assert code == 0, contoso.edge.log()[-3000:]


def send_out(contoso, call_id):
    c = SipClient(*contoso.internal)
    try:
        c.send(sip_request("MESSAGE", "sip:bob@fabrikam.test", from_uri="sip:alice@contoso.test",
                           to_uri="sip:bob@fabrikam.test", call_id=call_id, body="hi"))
        return c.recv_final()
    finally:
        c.close()


@pytest.mark.parametrize("case", ["wrong-name", "other-ca", "expired", "no-serverauth-eku"])
def test_outbound_bad_partner_certificate(lone_edge, pki, other_pki, case):
    contoso, fabrikam, partner = lone_edge
    if case == "wrong-name":
        partner.use(*pki.issue("sip.evil.test"))
    elif case == "other-ca":
        partner.use(*other_pki.issue("sip.fabrikam.test", file_name="other-partner"))
    elif case == "expired":
        partner.use(*pki.issue("sip.fabrikam.test", file_name="expired-partner", expired=True))
    else:
        partner.use(*pki.issue("sip.fabrikam.test", file_name="client-only-partner", eku=("client",)))
    partner.received = b""
    accepted = partner.accepted
    r = send_out(contoso, f"out-{case}")
    assert r.status == 504, r
    warning = r.header("warning")
    assert warning.startswith('399 sip.contoso.test "'), warning
    assert "sip.fabrikam.test" in warning and "certificate" in warning, warning
    reason = {"wrong-name": ("hostname", "mismatch", "does not name"),
              "other-ca": ("issuer", "unknown ca", "untrusted"),
              "expired": ("expired",), "no-serverauth-eku": ("purpose",)}[case]
    assert any(word in warning for word in reason), f"{case}: the reason is not given: {warning}"
    assert partner.accepted > accepted, "the edge never tried the partner"
    assert partner.received == b"", "an unverified partner was sent SIP"


def test_outbound_partner_unreachable(tmp_path_factory, pki):
    workdir = tmp_path_factory.mktemp("unreachable")
    contoso = make_org("contoso.test", "127.0.0.1", pki)
    nobody = make_org("fabrikam.test", "127.0.0.4", pki)   # nothing listens there
    start_edge(workdir, contoso, [nobody], pki)
    try:
        r = send_out(contoso, "out-unreachable")
        assert r.status == 504 and "refused" in r.header("warning"), r
    finally:
        assert contoso.edge.stop() == 0


def test_loop_detected(lone_edge, pki):
    """The partner sends the edge's own forwarded request back to it: 482."""
    contoso, fabrikam, partner = lone_edge
    partner.use(fabrikam.cert, fabrikam.key)
    partner.received = b""
    c = SipClient(*contoso.internal)
    try:
        c.send(sip_request("MESSAGE", "sip:bob@fabrikam.test", from_uri="sip:alice@contoso.test",
                           to_uri="sip:bob@fabrikam.test", call_id="loop-1", body="hi"))
        forwarded = wait_for(lambda: b"\r\n\r\nhi" in partner.received and partner.received, 5,
                             "the request at the partner")
        assert b"Via: SIP/2.0/TLS" in forwarded
        back = SipClient(*contoso.internal)
        try:
            back.send(forwarded)
            assert back.recv_final().status == 482
        finally:
            back.close()
    finally:
        c.close()
