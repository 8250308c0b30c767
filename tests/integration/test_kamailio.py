"""Interop with a real peer: Kamailio (tls.so, tm) as fabrikam.test's edge.

contoso's sipp -> edged -> mutual TLS -> Kamailio -> fabrikam's sipp, and the
other way round, Kamailio presenting fabrikam's certificate as its client
certificate; both sides verify each other.
"""
import pytest

from conftest import make_org, start_edge
from edgepool import HERE, Kamailio, free_port
from test_relay import relay


@pytest.fixture(scope="module")
def federation(tmp_path_factory, pki):
    """contoso's edged federated with Kamailio as fabrikam's edge."""
    workdir = tmp_path_factory.mktemp("kamailio")
    contoso = make_org("contoso.test", "127.0.0.1", pki)
    fabrikam = make_org("fabrikam.test", "127.0.0.2", pki)   # external = Kamailio's TLS
    kamailio_tcp = ("127.0.0.2", free_port("127.0.0.2"))
    kamailio = Kamailio(workdir, HERE / "kamailio" / "partner.cfg",
                        tls=(fabrikam.external[0], fabrikam.external[1]), tcp=kamailio_tcp,
                        cert=fabrikam.cert, key=fabrikam.key, ca=pki.ca_file,
                        values={"@PEER_HOST@": fabrikam.peer[0], "@PEER_PORT@": str(fabrikam.peer[1]),
                                "@EDGE_HOST@": contoso.external[0],
                                "@EDGE_PORT@": str(contoso.external[1])})
    try:
        kamailio.start()
        start_edge(workdir, contoso, [fabrikam], pki)
        fabrikam.internal = kamailio_tcp   # fabrikam's users enter through Kamailio
        yield contoso, fabrikam
    finally:
        kamailio.stop()
        code = contoso.edge.stop() if contoso.edge else 0
    assert code == 0, contoso.edge.log()[-3000:]


def test_message_edged_to_kamailio(federation, tmp_path):
    contoso, fabrikam = federation
    relay(tmp_path, "message", contoso, fabrikam)


def test_message_kamailio_to_edged(federation, tmp_path):
    contoso, fabrikam = federation
    relay(tmp_path, "message", fabrikam, contoso)
    assert "certificate names sip.fabrikam.test" in contoso.edge.log()


def test_invite_edged_to_kamailio(federation, tmp_path):
    """In-dialog ACK and BYE follow Kamailio's Record-Route (its address)."""
    contoso, fabrikam = federation
    relay(tmp_path, "invite", contoso, fabrikam, calls=5)


def test_invite_kamailio_to_edged(federation, tmp_path):
    """Kamailio opens the mutual-TLS connection with fabrikam's certificate;
    ACK and BYE come back through Kamailio and edged on the route set."""
    contoso, fabrikam = federation
    relay(tmp_path, "invite", fabrikam, contoso, calls=5)
