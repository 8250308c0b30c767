"""A real BIND 9 `named` for tests that need DNS: authoritative zones on
loopback, changed at run time by RFC 2136 dynamic updates (nsupdate, TSIG).

    with Bind(tmp_path, {"fabrikam.test": [
            "_sipfederationtls._tcp 300 IN SRV 0 0 5061 sip.fabrikam.test.",
            "sip 300 IN A 127.0.0.2"]}) as dns:
        dns.address                                   # ("127.0.0.1", port) for edged
        dns.query("sip.fabrikam.test", "A")           # ["127.0.0.2"]
        dns.update("fabrikam.test", delete=["sip.fabrikam.test. A"],
                   add=["sip.fabrikam.test. 1 IN A 127.0.0.3"])

named runs in the foreground (-g) as the current user, from a private working
directory that holds its configuration, zone files, journals, TSIG key, pid
file and log; never as the system service and never on port 53.

named listens only on addresses configured on an interface, so `host` must be
one (on a stock Linux loopback that is 127.0.0.1 only, not 127.0.0.2): Bind
says so at once rather than time out. One zone can serve every organization.

The zone checks are lenient on purpose (no integrity, check-names, MX/SRV
CNAME or duplicate checks) so a test may serve data a careful operator would
not, e.g. an SRV whose target has no address; syntax errors still fail.
"""
import base64
import ctypes
import ipaddress
import re
import secrets
import shutil
import signal
import socket
import subprocess
import weakref
from pathlib import Path

from edgepool import free_port, port_listening, terminate, wait_for

KEY_NAME = "dnslab-update"


def _tool(name):
    """BIND's programs live in /usr/sbin, which a CI runner's PATH may lack."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin") or name

# Lenient checks, the same in named.conf and for named-checkzone.
_CHECKS_CONF = """\
  check-integrity no;
  check-names primary ignore;
  check-mx ignore;
  check-mx-cname ignore;
  check-srv-cname ignore;
  check-dup-records ignore;
  check-wildcard no;
  check-sibling no;
"""
_CHECKS_ARGS = ["-i", "none", "-k", "ignore", "-m", "ignore", "-M", "ignore",
                "-n", "ignore", "-r", "ignore", "-S", "ignore", "-W", "ignore"]

# Record types whose rdata update() can compare with dig's output, and which
# rdata fields (0-based) are domain names.
_NAME_FIELDS = {"A": (), "AAAA": (), "CNAME": (0,), "DNAME": (0,), "NS": (0,), "PTR": (0,),
                "MX": (1,), "SRV": (3,)}
_CLASSES = {"IN", "CH", "HS", "ANY", "NONE"}


def _fqdn(zone, name):
    """name made absolute against zone ("@" is the apex), with the trailing dot."""
    if name == "@":
        return zone + "."
    return name if name.endswith(".") else f"{name}.{zone}."


def _interface_addresses():
    out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True)
    return set(re.findall(r"\binet (\S+?)/", out.stdout))


def _udp_free(host, port):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def _die_with_parent():
    """In the child before exec: SIGTERM named if the test runner dies, so no
    named outlives a killed pytest and keeps its ports."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _stop_process(proc, log_file):
    """The finalizer's safety net for a Bind that was never stopped."""
    if proc.poll() is None:
        terminate(proc, 10)
    log_file.close()


class Bind:
    """A named serving authoritative zones on host:port (UDP and TCP), from a private directory.

    zones: {"fabrikam.test": [records...]}; a record is a zone-file line, its
    owner relative to the zone or absolute, e.g.
    "_sipfederationtls._tcp 300 IN SRV 0 0 5061 sip.fabrikam.test." or
    "sip 300 IN A 127.0.0.2"; a record without a TTL gets default_ttl. Each
    zone also gets an SOA (negative TTL 1 s) and an NS naming ns.ZONE, with an
    A record for ns.ZONE at host.

    The port is chosen here, so address is known before start(). start()
    writes the zones afresh (any journal from an earlier run is removed), so
    updates do not survive a restart. Use one workdir per Bind.

    Updates are allowed with the TSIG key KEY_NAME, whose secret is
    `secret` (base64) and algorithm `algorithm` (as in named.conf)."""

    def __init__(self, workdir, zones, host="127.0.0.1", port=None, default_ttl=1,
                 algorithm="hmac-sha256"):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise AssertionError(f"Bind: host must be an IPv4 address, not {host!r}") from None
        self.dir = Path(workdir).resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        assert '"' not in str(self.dir), f"Bind: cannot quote {self.dir} in named.conf"
        self.zones = {z.rstrip(".").lower(): list(records) for z, records in zones.items()}
        assert self.zones, "Bind: no zones"
        self.host = host
        self.port = port or self._free_port()
        self.default_ttl = default_ttl
        self.conf = self.dir / "named.conf"
        self.key_file = self.dir / "update.key"
        self.log_path = self.dir / "named.log"
        self.algorithm = algorithm
        self.secret = base64.b64encode(secrets.token_bytes(32)).decode()
        self.proc = None
        self.returncode = None
        self._finalizer = None

    @property
    def address(self):
        """(host, port) for edged's resolver configuration."""
        return (self.host, self.port)

    def _free_port(self):
        # free_port checks TCP; named needs the UDP port as well.
        for _ in range(100):
            port = free_port(self.host)
            if _udp_free(self.host, port):
                return port
        raise AssertionError(f"Bind: no port free for both UDP and TCP on {self.host}")

    def zone_file(self, zone):
        return self.dir / f"{zone}.zone"

    # ---- configuration ----

    def _zone_text(self, zone, records):
        lines = [f"$ORIGIN {zone}.", f"$TTL {self.default_ttl}",
                 f"@ 1 IN SOA ns.{zone}. hostmaster.{zone}. 1 3600 600 86400 1",
                 f"@ 1 IN NS ns.{zone}.",
                 f"ns.{zone}. 1 IN A {self.host}"]
        return "\n".join(lines + list(records)) + "\n"

    def _conf_text(self):
        d = self.dir
        zones = "".join(
            f'zone "{z}" {{\n  type primary;\n  file "{self.zone_file(z)}";\n'
            f'  journal "{d / (z + ".jnl")}";\n  allow-update {{ key "{KEY_NAME}"; }};\n}};\n'
            for z in self.zones)
        return f"""\
include "{self.key_file}";
options {{
  directory "{d}";
  pid-file "{d / 'named.pid'}";
  lock-file "{d / 'named.lock'}";
  session-keyfile "{d / 'session.key'}";
  managed-keys-directory "{d}";
  dump-file "{d / 'named_dump.db'}";
  statistics-file "{d / 'named.stats'}";
  listen-on port {self.port} {{ {self.host}; }};
  listen-on-v6 {{ none; }};
  recursion no;
  dnssec-validation no;
  notify no;
  querylog yes;
{_CHECKS_CONF}}};
controls {{ }};
{zones}"""

    def _write(self):
        self.key_file.write_text(
            f'key "{KEY_NAME}" {{\n  algorithm {self.algorithm};\n  secret "{self.secret}";\n}};\n')
        self.key_file.chmod(0o600)
        for zone, records in self.zones.items():
            self.zone_file(zone).write_text(self._zone_text(zone, records))
            for stale in (self.dir / f"{zone}.jnl", self.dir / f"{zone}.jnl.jnw"):
                stale.unlink(missing_ok=True)
        self.conf.write_text(self._conf_text())

    def _check(self):
        out = subprocess.run([_tool("named-checkconf"), str(self.conf)], capture_output=True, text=True)
        assert out.returncode == 0, \
            f"named-checkconf {self.conf} failed:\n{out.stdout}{out.stderr}\n{self.conf.read_text()}"
        for zone in self.zones:
            path = self.zone_file(zone)
            out = subprocess.run([_tool("named-checkzone"), *_CHECKS_ARGS, zone, str(path)],
                                 capture_output=True, text=True)
            assert out.returncode == 0, \
                f"named-checkzone {zone} failed:\n{out.stdout}{out.stderr}\n{path.read_text()}"

    # ---- process ----

    def start(self, timeout=20):
        """Writes named.conf and the zones, checks them, starts named and waits
        until it answers the SOA of every zone over UDP and listens on TCP."""
        assert self.proc is None, "Bind: already started"
        addresses = _interface_addresses()
        assert self.host in addresses, (
            f"Bind: named listens only on addresses configured on an interface, and "
            f"{self.host} is not one ({', '.join(sorted(addresses))}); use one of those")
        self._write()
        self._check()
        self._log = open(self.log_path, "wb")
        self.returncode = None
        self.proc = subprocess.Popen(
            [_tool("named"), "-g", "-4", "-n", "1", "-c", str(self.conf)], cwd=self.dir,
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent)
        self._finalizer = weakref.finalize(self, _stop_process, self.proc, self._log)
        try:
            for zone in self.zones:
                wait_for(lambda: self.proc.poll() is not None or self._answers_soa(zone),
                         timeout, f"named on {self.host}:{self.port} to serve {zone}", interval=0.05)
                assert self.proc.poll() is None, \
                    f"named exited early ({self.proc.returncode}):\n{self.log()[-4000:]}"
            wait_for(lambda: port_listening(self.host, self.port), timeout,
                     f"named on TCP {self.host}:{self.port}")
        except BaseException:
            self.stop()
            raise
        return self

    def _answers_soa(self, zone):
        out = self.dig(zone, "SOA", "+short", time=1)
        return out.returncode == 0 and len(self._lines(out)) == 1

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=20):
        """SIGTERM by pid (SIGKILL after timeout); returns named's exit code,
        None if it had to be killed or never started. Safe to call twice."""
        if self.proc is None:
            return self.returncode
        self.returncode = terminate(self.proc, timeout)
        self._finalizer.detach()
        self._log.close()
        self.proc = None
        return self.returncode

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def log(self):
        """named's log (its stderr under -g, queries included)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # ---- queries ----

    def dig(self, name, rtype, *opts, tcp=False, time=2):
        """Runs dig against this server with extra options (e.g. "+noall",
        "+answer"); returns the CompletedProcess, whatever its exit code."""
        cmd = [_tool("dig"), "-r", f"@{self.host}", "-p", str(self.port), f"+time={time}", "+tries=1",
               *opts, name, rtype]
        if tcp:
            cmd.insert(-2, "+tcp")
        return subprocess.run(cmd, capture_output=True, text=True)

    @staticmethod
    def _lines(out):
        return [l for l in out.stdout.splitlines() if l.strip() and not l.startswith(";")]

    def query(self, name, rtype, tcp=False) -> list[str]:
        """`dig +short @host -p port name rtype`: the answer's rdata, one string each."""
        out = self.dig(name, rtype, "+short", tcp=tcp)
        assert out.returncode == 0, f"dig {name} {rtype} failed ({out.returncode}):\n{out.stdout}{out.stderr}"
        return self._lines(out)

    def status(self, name, rtype="A", tcp=False) -> str:
        """The response code dig reports: NOERROR, NXDOMAIN, REFUSED, ..."""
        out = self.dig(name, rtype, "+noall", "+comments", tcp=tcp)
        m = re.search(r"status: (\w+)", out.stdout)
        assert out.returncode == 0 and m, \
            f"dig {name} {rtype} failed ({out.returncode}):\n{out.stdout}{out.stderr}"
        return m.group(1)

    # ---- dynamic update ----

    def _update_line(self, zone, line):
        """An nsupdate record with its owner (and domain-name rdata of the
        types in _NAME_FIELDS) made absolute against zone, since nsupdate takes
        relative names as relative to the root; and its parts:
        (line, owner, type or None, rdata fields)."""
        parts = re.split(r"(\s+)", line.strip())
        toks = parts[::2]
        toks[0] = _fqdn(zone, toks[0])
        i = 1
        if i < len(toks) and re.fullmatch(r"\d+([smhdw]\d*)*", toks[i], re.I):
            i += 1
        if i < len(toks) and toks[i].upper() in _CLASSES:
            i += 1
        rtype = toks[i].upper() if i < len(toks) else None
        for f in _NAME_FIELDS.get(rtype, ()):
            if i + 1 + f < len(toks):
                toks[i + 1 + f] = _fqdn(zone, toks[i + 1 + f])
        parts[::2] = toks
        return "".join(parts), toks[0], rtype, toks[i + 1:]

    @staticmethod
    def _norm(rtype, fields):
        """rdata in a form comparable with dig's, or None for types not compared."""
        if rtype not in _NAME_FIELDS:
            return None
        if rtype in ("A", "AAAA"):
            return str(ipaddress.ip_address(fields[0])) if fields else None
        return " ".join(fields).lower()

    def update(self, zone, delete=(), add=(), timeout=10):
        """RFC 2136 update of zone with nsupdate, signed with the fixture's TSIG
        key: each of delete is `name [type [rdata]]`, each of add
        `name ttl [class] type rdata` (names relative to zone or absolute).
        Waits until dig shows the change: added records served; deleted
        records (or, for `name type`, every record but those added) gone.
        Deleting a whole name is not checked."""
        zone = zone.rstrip(".").lower()
        assert zone in self.zones, f"Bind: no zone {zone}"
        deletes = [self._update_line(zone, l) for l in delete]
        adds = [self._update_line(zone, l) for l in add]
        script = [f"server {self.host} {self.port}", f"zone {zone}."]
        script += [f"update delete {d[0]}" for d in deletes]
        script += [f"update add {a[0]}" for a in adds]
        script += ["send", ""]
        out = subprocess.run([_tool("nsupdate"), "-k", str(self.key_file), "-t", str(timeout)],
                             input="\n".join(script), capture_output=True, text=True,
                             timeout=timeout + 5)
        assert out.returncode == 0, \
            f"nsupdate failed ({out.returncode}):\n" + "\n".join(script) + f"\n{out.stdout}{out.stderr}"

        added = {}   # (owner, type) -> {normalized rdata}
        for _, owner, rtype, fields in adds:
            added.setdefault((owner.lower(), rtype), set()).add(self._norm(rtype, fields))

        def served(owner, rtype):
            return {self._norm(rtype, r.split()) for r in self.query(owner, rtype)}

        def visible():
            for (owner, rtype), want in added.items():
                have = served(owner, rtype)
                if not have or not (want - {None}) <= have:
                    return False
            for _, owner, rtype, fields in deletes:
                if rtype is None or rtype not in _NAME_FIELDS and fields:
                    continue
                have = served(owner, rtype)
                if fields:
                    if self._norm(rtype, fields) in have:
                        return False
                elif have - added.get((owner.lower(), rtype), set()):
                    return False
            return True

        wait_for(visible, timeout, f"update of {zone} to show through dig: {script}", interval=0.05)
