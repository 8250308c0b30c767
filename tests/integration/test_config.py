"""edged -t: a configuration is checked as a whole, errors name FILE:LINE."""
import subprocess

import pytest

from edgepool import REPO, edged_binary, edge_config


def check(path, cwd=None):
    return subprocess.run([edged_binary(), "-t", "-c", str(path)], capture_output=True,
                          text=True, cwd=cwd)


@pytest.fixture
def good_config(pki, tmp_path):
    cert, key = pki.issue("sip.contoso.test")
    return edge_config(pool_fqdn="sip.contoso.test", domains=["contoso.test"], ca=pki.ca_file,
                       cert=cert, key=key, internal=("127.0.0.1", 5060),
                       next_hop=("127.0.0.1", 5070), external=("127.0.0.1", 5061),
                       partners=[{"domains": ["fabrikam.test"], "fqdn": "sip.fabrikam.test",
                                  "address": "127.0.0.2", "port": 5061}])


def test_good_config(good_config, tmp_path):
    path = tmp_path / "good.conf"
    path.write_text(good_config)
    r = check(path)
    assert r.returncode == 0 and "configuration OK" in r.stdout, r.stderr


def test_sample_config_checks_with_its_certificates(tmp_path):
    """etc/edged.conf, as the embedded default, with the certificates make run makes."""
    subprocess.run([str(REPO / "tools" / "mkcerts.sh"), str(tmp_path / "run" / "pki"),
                    "sip.contoso.test"], check=True)
    r = check(REPO / "etc" / "edged.conf", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([edged_binary(), "-t"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and "(default): configuration OK" in r.stdout, r.stderr


@pytest.mark.parametrize("change, line_of, message", [
    (lambda t: t.replace("port = 5060;", "port = 5060 5061;"), "port = 5060", "syntax error"),
    (lambda t: t.replace("port = 5060;", "port = 70000;"), "port = 70000", "out of range"),
    (lambda t: t.replace('transport = "tcp"; } );\n  next', 'transport = "udp"; } );\n  next'),
     'transport = "udp"', "unknown transport"),
    (lambda t: t + 'extrnal = { };\n', "extrnal", "unknown section"),
    (lambda t: t.replace('"fabrikam.test" ]', '"contoso.test" ]'), '{ domains = [ "contoso.test" ]',
     "sip_domains"),
    (lambda t: t.replace('level = "debug"', 'level = "chatty"'), "chatty", "unknown log level"),
], ids=["syntax", "port", "transport", "section", "own-domain-as-partner", "log-level"])
def test_errors_name_the_line(good_config, tmp_path, change, line_of, message):
    text = change(good_config)
    path = tmp_path / "bad.conf"
    path.write_text(text)
    line = next(i for i, l in enumerate(text.splitlines(), 1) if line_of in l)
    r = check(path)
    assert r.returncode == 1
    assert f"{path}:{line}:" in r.stderr and message in r.stderr, r.stderr


def test_missing_certificate_file(good_config, tmp_path):
    path = tmp_path / "nocert.conf"
    path.write_text(good_config.replace('cert_file = "', 'cert_file = "/nonexistent'))
    r = check(path)
    assert r.returncode == 1 and "/nonexistent" in r.stderr


def test_certificate_without_clientauth_is_refused(pki, good_config, tmp_path):
    cert, key = pki.issue("sip.contoso.test", file_name="server-only", eku=("server",))
    text = good_config
    for old, new in ((f"sip.contoso.test.pem", "server-only.pem"),
                     (f"sip.contoso.test.key", "server-only.key")):
        text = text.replace(old, new)
    path = tmp_path / "eku.conf"
    path.write_text(text)
    r = check(path)
    assert r.returncode == 1 and "clientAuth" in r.stderr, r.stderr
