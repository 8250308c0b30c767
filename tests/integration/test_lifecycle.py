"""Start, log and stop: what an operator sees of edged's life."""
import re
import signal

import pytest

from conftest import make_org, org_config
from edgepool import Edge, SipClient, sip_request, wait_for
from test_relay import relay


def start(workdir, pki, log_level="debug", partner_host="127.0.0.2"):
    """contoso's edge alone; its partner fabrikam is on partner_host."""
    contoso = make_org("contoso.test", "127.0.0.1", pki)
    fabrikam = make_org("fabrikam.test", partner_host, pki)
    contoso.edge = Edge(workdir, "contoso.test", org_config(contoso, [fabrikam], pki, log_level=log_level),
                        [contoso.internal, contoso.external])
    return contoso, fabrikam


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_cleanly_with_open_connections(pki, tmp_path, sig):
    contoso, fabrikam = start(tmp_path, pki)
    contoso.edge.start()
    clients = []
    try:
        assert re.search(r"\bready\b", contoso.edge.log())
        clients.append(SipClient(*contoso.internal))
        clients.append(SipClient(*contoso.external, tls_ca=pki.ca_file, cert=fabrikam.cert,
                                 key=fabrikam.key, server_name=contoso.fqdn))
        # Both connections are up on the edge's side: each answers a ping.
        for c in clients:
            c.send(b"\r\n\r\n")
            assert c.read_raw(2) == b"\r\n"
        contoso.edge.proc.send_signal(sig)
        code = contoso.edge.proc.wait(10)
        assert code == 0, contoso.edge.log()[-3000:]
        for c in clients:
            assert c.closed_by_peer(5)
    finally:
        for c in clients:
            c.close()
        contoso.edge.stop()


def test_debug_logs_each_routed_request_with_its_call_id(pki, tmp_path):
    contoso, fabrikam = start(tmp_path, pki, log_level="debug", partner_host="127.0.0.7")
    contoso.edge.start()
    try:
        c = SipClient(*contoso.internal)
        try:
            for i in range(3):
                c.send(sip_request("MESSAGE", "sip:bob@nowhere.test", from_uri="sip:alice@contoso.test",
                                   to_uri="sip:bob@nowhere.test", call_id=f"dbg-{i}"))
                assert c.recv_final().status == 403
        finally:
            c.close()
        for i in range(3):
            wait_for(lambda: f"call-id=dbg-{i}" in contoso.edge.log(), 5, f"a line with call-id=dbg-{i}")
    finally:
        assert contoso.edge.stop() == 0


def test_notice_level_hides_info_and_debug(pki, tmp_path):
    contoso, fabrikam = start(tmp_path, pki, log_level="notice", partner_host="127.0.0.7")
    contoso.edge.start()
    try:
        c = SipClient(*contoso.internal)
        try:
            c.send(sip_request("OPTIONS", "sip:sip.contoso.test", from_uri="sip:alice@contoso.test",
                               to_uri="sip:sip.contoso.test", call_id="quiet-1"))
            assert c.recv_final().status == 200
        finally:
            c.close()
    finally:
        assert contoso.edge.stop() == 0
    log = contoso.edge.log()
    assert "ready" in log
    assert "[debug]" not in log and "[info]" not in log and "call-id=quiet-1" not in log, log


def test_relayed_requests_logged_at_debug(orgs, tmp_path):
    """One debug line per routed request on each edge, naming its Call-ID."""
    contoso, fabrikam = orgs
    relay(tmp_path, "message", contoso, fabrikam, calls=3)
    for org in orgs:
        lines = [l for l in org.edge.log().splitlines() if "MESSAGE" in l and "call-id=" in l]
        call_ids = {re.search(r"call-id=(\S+)", l).group(1) for l in lines}
        assert len([cid for cid in call_ids if re.match(r"\d+-\d+@", cid)]) >= 3, lines[-10:]
