"""Interop with a real peer: Kamailio (tls.so, tm) as fabrikam.test's edge.

contoso's sipp -> edged -> mutual TLS -> Kamailio -> fabrikam's sipp, and the
other way round, Kamailio presenting fabrikam's certificate as its client
certificate; both sides verify each other.
"""
import pytest

from conftest import make_org, start_edge
from edgepool import HERE, Kamailio, Sipp, free_port, run_uac

CALLS = 10


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


def relay(tmp_path, scenario, src, dst, calls=CALLS):
    uas = Sipp(tmp_path, f"uas_{scenario}.xml", local=dst.peer, calls=calls).start()
    try:
        code, ok, failed = run_uac(tmp_path, f"uac_{scenario}.xml", local=src.peer,
                                   remote=src.internal, calls=calls, rate=20,
                                   extra=src.keys(dst))
        uas_result = uas.wait(30)
    finally:
        uas.stop()
    return (code, ok, failed), uas_result[:2]


def test_message_edged_to_kamailio(federation, tmp_path):
    contoso, fabrikam = federation
    uac, uas = relay(tmp_path, "message", contoso, fabrikam)
    assert uac == (0, CALLS, 0) and uas == (0, CALLS), contoso.edge.log()[-2000:]


def test_message_kamailio_to_edged(federation, tmp_path):
    contoso, fabrikam = federation
    uac, uas = relay(tmp_path, "message", fabrikam, contoso)
    assert uac == (0, CALLS, 0) and uas == (0, CALLS), contoso.edge.log()[-2000:]
    assert "certificate names sip.fabrikam.test" in contoso.edge.log()


def test_invite_edged_to_kamailio(federation, tmp_path):
    """In-dialog ACK and BYE follow Kamailio's Record-Route (its address)."""
    contoso, fabrikam = federation
    uac, uas = relay(tmp_path, "invite", contoso, fabrikam, calls=5)
    assert uac == (0, 5, 0) and uas == (0, 5), contoso.edge.log()[-2000:]
