"""dnslab.Bind: a real named serves the test zones, over UDP and TCP, and
takes dynamic updates."""
import os

import pytest

from dnslab import Bind

ZONES = {
    "fabrikam.test": [
        "_sipfederationtls._tcp 300 IN SRV 0 0 5061 sip.fabrikam.test.",
        "_sipfederationtls._tcp 300 IN SRV 10 0 5061 sip-backup.fabrikam.test.",
        "sip 300 IN A 127.0.0.2",
        "sip-backup.fabrikam.test. 300 IN A 127.0.0.3",
        "short 1 IN A 127.0.0.4",
    ],
    "contoso.test": [
        "_sipfederationtls._tcp 300 IN SRV 0 0 5061 sip.contoso.test.",
        "sip 300 IN A 127.0.0.1",
    ],
}


@pytest.fixture(scope="module")
def dns(tmp_path_factory):
    bind = Bind(tmp_path_factory.mktemp("dns"), ZONES)
    try:
        yield bind.start()
    finally:
        bind.stop()


def srv(dns, name, tcp=False):
    return sorted(dns.query(name, "SRV", tcp=tcp))


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_serves_srv_and_a(dns, tcp):
    assert dns.address[0] == "127.0.0.1"
    assert srv(dns, "_sipfederationtls._tcp.fabrikam.test", tcp) == [
        "0 0 5061 sip.fabrikam.test.", "10 0 5061 sip-backup.fabrikam.test."]
    assert dns.query("sip.fabrikam.test", "A", tcp=tcp) == ["127.0.0.2"]
    assert dns.query("sip-backup.fabrikam.test", "A", tcp=tcp) == ["127.0.0.3"]
    assert dns.query("short.fabrikam.test", "A", tcp=tcp) == ["127.0.0.4"]
    assert srv(dns, "_sipfederationtls._tcp.contoso.test", tcp) == ["0 0 5061 sip.contoso.test."]
    assert dns.query("sip.contoso.test", "A", tcp=tcp) == ["127.0.0.1"]


def test_short_ttl_is_served_as_written(dns):
    answer = dns.dig("short.fabrikam.test", "A", "+noall", "+answer")
    assert answer.stdout.split()[1:5] == ["1", "IN", "A", "127.0.0.4"], answer.stdout


def test_update_replaces_srv_target(dns):
    name = "_sipfederationtls._tcp.contoso.test."
    dns.update("contoso.test", delete=[f"{name} SRV"],
               add=[f"{name} 2 IN SRV 0 0 5061 sip2.contoso.test.", "sip2 2 IN A 127.0.0.5"])
    assert srv(dns, name) == ["0 0 5061 sip2.contoso.test."]
    assert srv(dns, name, tcp=True) == ["0 0 5061 sip2.contoso.test."]
    assert dns.query("sip2.contoso.test", "A") == ["127.0.0.5"]
    assert "updating zone 'contoso.test/IN'" in dns.log()
    # The other zone is untouched.
    assert len(srv(dns, "_sipfederationtls._tcp.fabrikam.test")) == 2


def test_update_removes_one_srv_of_two(dns):
    name = "_sipfederationtls._tcp.fabrikam.test."
    dns.update("fabrikam.test", delete=[f"{name} SRV 0 0 5061 sip.fabrikam.test."])
    assert srv(dns, name) == ["10 0 5061 sip-backup.fabrikam.test."]


def test_absent_names_answer_nxdomain(dns):
    assert dns.status("sip.fabrikam.test") == "NOERROR"
    assert dns.status("nothere.fabrikam.test") == "NXDOMAIN"
    assert dns.status("_sip._udp.contoso.test", "SRV") == "NXDOMAIN"
    assert dns.status("nothere.contoso.test", tcp=True) == "NXDOMAIN"
    assert dns.query("nothere.fabrikam.test", "A") == []
    # A zone it does not serve: no recursion.
    assert dns.status("sip.example.test") == "REFUSED"


def test_context_manager_and_stop(tmp_path):
    with Bind(tmp_path, {"solo.test": ["sip IN A 127.0.0.9"]}) as solo:
        assert solo.running()
        assert solo.query("sip.solo.test", "A") == ["127.0.0.9"]
        pid = solo.proc.pid
    assert not solo.running() and solo.returncode == 0, solo.log()[-2000:]
    assert solo.stop() == 0   # again: same answer, nothing to stop
    assert "exiting" in solo.log()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_stop_returns_0(dns):
    """Last: stops the module's named."""
    assert dns.stop() == 0, dns.log()[-3000:]
    assert not dns.running()
