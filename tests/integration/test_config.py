"""edged -t: a configuration is checked as a whole, errors name FILE:LINE."""
import subprocess

import pytest

from edgepool import REPO, edged_binary, edge_config, libconfig_text


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
                    "sip.contoso.test", "contoso.test"], check=True)
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
    (lambda t: t.replace('domain = "fabrikam.test"', 'domain = "contoso.test"'),
     'domain = "contoso.test"', "sip_domains"),
    (lambda t: t.replace('level = "debug"', 'level = "chatty"'), "chatty", "unknown log level"),
    (lambda t: t.replace('transport = "tcp"; } );\n  next', 'transport = "tcp"; } );\n'
                         '  pool_fqdn = "edge..int";\n  next'),
     "edge..int", "not a valid domain name"),
], ids=["syntax", "port", "transport", "section", "own-domain-as-partner", "log-level",
        "internal-pool-name"])
def test_errors_name_the_line(good_config, tmp_path, change, line_of, message):
    text = change(good_config)
    path = tmp_path / "bad.conf"
    path.write_text(text)
    line = next(i for i, l in enumerate(text.splitlines(), 1) if line_of in l)
    r = check(path)
    assert r.returncode == 1
    assert f"{path}:{line}:" in r.stderr and message in r.stderr, r.stderr


def test_sample_config_without_its_certificates(tmp_path):
    """etc/edged.conf where run/pki does not exist. edged -t checks the TLS
    files too (see -h), so this is an error; like every -t error it must name
    the file and the line of the setting at fault."""
    conf = REPO / "etc" / "edged.conf"
    line = next(i for i, l in enumerate(conf.read_text().splitlines(), 1)
                if l.strip().startswith("ca_file"))
    r = check(conf, cwd=tmp_path)
    assert r.returncode == 1, r
    assert "run/pki/ca.pem" in r.stderr, r.stderr
    assert f"{conf}:{line}:" in r.stderr, f"no FILE:LINE in: {r.stderr}"


def test_unreadable_config_file(tmp_path):
    r = check(tmp_path / "missing.conf")
    assert r.returncode == 1 and str(tmp_path / "missing.conf") in r.stderr, r.stderr


def test_help_and_bad_option():
    r = subprocess.run([edged_binary(), "-h"], capture_output=True, text=True)
    assert r.returncode == 0 and "-t" in r.stdout + r.stderr and "-c FILE" in r.stdout + r.stderr
    r = subprocess.run([edged_binary(), "-Z"], capture_output=True, text=True)
    assert r.returncode != 0 and "usage" in r.stderr


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


def full_config(pki):
    """Every section, several listeners and partners, as a dict."""
    cert, key = pki.issue("sip.contoso.test")
    return {
        "node": {"pool_fqdn": "sip.contoso.test", "sip_domains": ["contoso.test", "corp.contoso.test"]},
        "log": {"level": "notice", "syslog": False},
        "tls": {"ca_file": pki.ca_file, "cert_file": cert, "key_file": key},
        "internal": {
            "listen": [{"address": "127.0.0.1", "port": 5060, "transport": "tcp"},
                       {"address": "127.0.0.3", "port": 5060, "transport": "tcp"}],
            "next_hop": {"host": "127.0.0.1", "port": 5070, "transport": "tcp"},
            "max_message_kb": 64,
        },
        "external": {"listen": [{"address": "127.0.0.1", "port": 5061}], "max_message_kb": 1000},
        "access_edge": {"allow_federated_users": True, "enable_partner_discovery": True,
                        "outgoing_tls_count": 2},
        "allowed_domains": [
            {"domain": "fabrikam.test", "proxy_fqdn": "sip.fabrikam.test", "address": "127.0.0.2",
             "port": 5061, "verification_level": "AlwaysVerifiable"},
            {"domain": "litware.test", "proxy_fqdn": "sip.litware.test", "address": "127.0.0.4"},
            {"domain": "eu.litware.test", "comment": "found by DNS SRV"},
        ],
        "blocked_domains": [{"domain": "spam.test", "comment": "abuse"}],
        "hosting_providers": [{"identity": "Online", "proxy_fqdn": "sipfed.online.test",
                               "domains": ["hosted.test"], "enabled_shared_address_space": True}],
        "public_providers": [{"identity": "Messenger", "proxy_fqdn": "federation.messenger.test",
                              "domains": ["messenger.test"]}],
        "external_access_policies": [
            {"identity": "global", "enable_federation_access": True},
            {"identity": "NoFederation", "users": ["mallory@contoso.test", "*@corp.contoso.test"],
             "enable_federation_access": False},
        ],
        "dns": {"server": "127.0.0.1", "port": 5353, "cache_record_count": 100},
        "cluster": {"name": "edge-1", "address": "127.0.0.1", "port": 7946,
                    "keys": ["AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
                             "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="],
                    "join": ["127.0.0.2:7946", "[::1]:7946"], "probe_interval_ms": 500},
        "status": {"address": "127.0.0.1", "port": 9199},
        "limits": {"max_connections": 100, "connect_timeout_ms": 2000, "max_keep_alive_interval_s": 60},
    }


def test_full_config_from_dict(pki, tmp_path):
    path = tmp_path / "full.conf"
    path.write_text(libconfig_text(full_config(pki)))
    r = check(path)
    assert r.returncode == 0 and "configuration OK" in r.stdout, r.stderr


def _set(path, value):
    def change(c):
        *parents, last = path
        for p in parents:
            c = c[p]
        c[last] = value
    return change


@pytest.mark.parametrize("change, marker, message", [
    (_set(("allowed_domains", 1, "port"), 0), "port = 0;", "out of range"),
    (_set(("internal", "next_hop", "transport"), "sctp"), '"sctp"', "unknown transport"),
    (_set(("external", "listen", 0, "transport"), "tls"), 'transport = "tls"', "transport"),
    (_set(("internal", "listen", 1, "address"), "not-an-ip"), "not-an-ip", "address"),
    (_set(("internal", "max_message_kb"), -1), "max_message_kb = -1", "out of range"),
    (_set(("node", "pool_fqdn"), 5), "pool_fqdn = 5", "string"),
    (_set(("allowed_domains", 1, "domain"), "fabrikam.test"), 'domain = "fabrikam.test"',
     "fabrikam.test"),
    (_set(("blocked_domains", 0, "domain"), "litware.test"), 'domain = "litware.test"',
     "also an allowed domain"),
    (_set(("allowed_domains", 2, "domain"), "bad..domain"), "bad..domain", "not a valid domain"),
    (_set(("external_access_policies", 1, "users"), ["nobody"]), '"nobody"', "user pattern"),
    (_set(("access_edge", "outgoing_tls_count"), 5), "outgoing_tls_count = 5", "out of range"),
    (_set(("public_providers", 0, "verification_level"), "Sometimes"), "Sometimes",
     "verification_level"),
    (_set(("dns", "server"), "localhost"), '"localhost"', "numeric"),
    (_set(("cluster", "keys"), ["c2hvcnQ="]), '"c2hvcnQ="', "32 bytes in base64"),
    (_set(("cluster", "join"), ["edge-2:7946"]), '"edge-2:7946"', "numeric address:port"),
    (_set(("cluster", "name"), "edge 1"), '"edge 1"', "not a node name"),
    (_set(("cluster", "replication"), "eventually"), '"eventually"', "async or sync"),
    # A misspelt setting is as wrong as a misspelt section (which edged refuses).
    (_set(("limits", "max_conections"), 10), "max_conections", "max_conections"),
], ids=["partner-port-0", "next-hop-transport", "external-transport", "listen-address",
        "negative-limit", "fqdn-type", "domain-allowed-twice", "blocked-and-allowed",
        "bad-domain", "bad-user-pattern", "outgoing-tls-count", "verification-level",
        "dns-server-name", "cluster-key", "cluster-join", "cluster-name", "cluster-replication",
        "unknown-setting"])
def test_semantic_errors_from_dict(pki, tmp_path, change, marker, message):
    config = full_config(pki)
    change(config)
    text = libconfig_text(config)
    path = tmp_path / "bad.conf"
    path.write_text(text)
    # The last line holding the marker (a duplicate is wrong where it
    # repeats), or the line opening the group that holds it.
    lines = text.splitlines()
    line = [i for i, l in enumerate(lines, 1) if marker in l][-1]
    group = next(i for i in range(line, 0, -1) if lines[i - 1].rstrip().endswith("{"))
    r = check(path)
    assert r.returncode == 1, f"accepted:\n{text}"
    assert message in r.stderr, r.stderr
    assert f"{path}:{line}:" in r.stderr or f"{path}:{group}:" in r.stderr, \
        f"expected line {line} (or {group}, its group): {r.stderr}"
