"""Interop with a real peer: Kamailio (tls.so, tm) as fabrikam.test's edge.

contoso's sipp -> edged -> mutual TLS -> Kamailio -> fabrikam's sipp, and the
other way round, Kamailio presenting fabrikam's certificate as its client
certificate; both sides verify each other.
"""
import signal
import subprocess

import pytest

from conftest import make_org, start_edge
from edgepool import HERE, Sipp, free_port, port_listening, run_uac, wait_for

CALLS = 10


class Kamailio:
    def __init__(self, workdir, *, host, tls_port, tcp_port, peer, edge, cert, key, ca):
        self.dir = workdir
        self.tls = (host, tls_port)
        self.tcp = (host, tcp_port)
        tls_cfg = workdir / "kamailio-tls.cfg"
        tls_cfg.write_text((HERE / "kamailio" / "tls.cfg").read_text()
                           .replace("@KEY@", str(key)).replace("@CERT@", str(cert))
                           .replace("@CA@", str(ca)))
        values = {"@HOST@": host, "@TLS_PORT@": str(tls_port), "@TCP_PORT@": str(tcp_port),
                  "@TLS_CFG@": str(tls_cfg), "@PEER_HOST@": peer[0], "@PEER_PORT@": str(peer[1]),
                  "@EDGE_HOST@": edge[0], "@EDGE_PORT@": str(edge[1])}
        text = (HERE / "kamailio" / "partner.cfg").read_text()
        for k, v in values.items():
            text = text.replace(k, v)
        self.cfg = workdir / "kamailio.cfg"
        self.cfg.write_text(text)
        self.log_path = workdir / "kamailio.log"
        self.proc = None

    def start(self):
        check = subprocess.run(["kamailio", "-c", "-f", str(self.cfg)], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr[-2000:]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            ["kamailio", "-f", str(self.cfg), "-P", str(self.dir / "kamailio.pid"),
             "-w", str(self.dir), "-m", "64", "-M", "16", "-DD", "-E"],
            stdout=self._log, stderr=subprocess.STDOUT)
        for addr in (self.tls, self.tcp):
            wait_for(lambda: self.proc.poll() is not None or port_listening(*addr), 20,
                     f"Kamailio on {addr}")
        assert self.proc.poll() is None, self.log_path.read_text()[-3000:]
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self._log.close()


@pytest.fixture(scope="module")
def federation(tmp_path_factory, pki):
    """contoso's edged federated with Kamailio as fabrikam's edge."""
    workdir = tmp_path_factory.mktemp("kamailio")
    contoso = make_org("contoso.test", "127.0.0.1", pki)
    fabrikam = make_org("fabrikam.test", "127.0.0.2", pki)   # external = Kamailio's TLS
    kamailio_tcp = ("127.0.0.2", free_port("127.0.0.2"))
    kamailio = Kamailio(workdir, host="127.0.0.2", tls_port=fabrikam.external[1],
                        tcp_port=kamailio_tcp[1], peer=fabrikam.peer, edge=contoso.external,
                        cert=fabrikam.cert, key=fabrikam.key, ca=pki.ca_file)
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
