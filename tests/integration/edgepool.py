"""Helpers for EdgePool's integration tests.

Real parts only: certificates made here with python3-cryptography, edged
processes, sipp and Kamailio as peers, and raw SIP over TCP or TLS (Python's
ssl module) for the cases no real peer would produce. Everything listens on
loopback; every wait polls with a deadline.
"""
import datetime
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HERE = Path(__file__).resolve().parent
SCENARIOS = HERE / "scenarios"
REPO = HERE.parents[1]


def edged_binary():
    path = os.environ.get("EDGED")
    if not path:
        raise RuntimeError("set EDGED to the edged binary, e.g. EDGED=build/edged (make integration does)")
    return os.path.abspath(path)   # tests run edged from other directories too


def balancerd_binary():
    """BALANCERD, or the balancerd built beside EDGED (the same build, sanitizers or not)."""
    path = os.environ.get("BALANCERD") or os.path.join(os.path.dirname(edged_binary()),
                                                       "balancerd")
    return os.path.abspath(path)


def wait_for(predicate, timeout=10.0, what="a condition", interval=0.02):
    """Polls predicate until it returns a true value, which is returned."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


_taken_ports = set()


def free_port(host="127.0.0.1"):
    """A TCP port free on host now, never handed out twice in this run."""
    while True:
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in _taken_ports:
            _taken_ports.add(port)
            return port


def terminate(proc, timeout=20.0, sig=signal.SIGTERM):
    """Stops a process we started: sig, then SIGKILL after timeout. Returns the
    exit code, or None when it had to be killed."""
    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


def port_accepts(host, port):
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def port_listening(host, port):
    """Whether something listens on host:port, without connecting to it."""
    out = subprocess.run(["ss", "-Hltn", f"src {host}:{port}"], capture_output=True, text=True)
    return bool(out.stdout.strip())


# ---- certificates ----

class PKI:
    """A test CA and the certificates a test needs, good and bad."""

    def __init__(self, directory, ca_name="EdgePool test CA"):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_name)])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.ca_cert = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(self.ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(self.ca_key, hashes.SHA256())
        )
        self.ca_file = self.dir / f"{re.sub(r'[^a-z0-9]+', '-', ca_name.lower())}.pem"
        self.ca_file.write_bytes(self.ca_cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, name, *, file_name=None, san=True, eku=("server", "client"),
              expired=False, cn=None, extra_names=()):
        """Writes NAME.pem and NAME.key; returns (cert_path, key_path)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        if expired:
            start, end = now - datetime.timedelta(days=30), now - datetime.timedelta(days=1)
        else:
            start, end = now - datetime.timedelta(days=1), now + datetime.timedelta(days=30)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn or name)]))
            .issuer_name(self.ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )
        if san:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in (name, *extra_names)]),
                critical=False)
        usages = {"server": ExtendedKeyUsageOID.SERVER_AUTH, "client": ExtendedKeyUsageOID.CLIENT_AUTH}
        if eku:
            builder = builder.add_extension(x509.ExtendedKeyUsage([usages[u] for u in eku]),
                                            critical=False)
        cert = builder.sign(self.ca_key, hashes.SHA256())
        base = self.dir / (file_name or name)
        cert_path, key_path = Path(f"{base}.pem"), Path(f"{base}.key")
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return cert_path, key_path


# ---- edged ----

def libconfig_text(settings, indent=0):
    """libconfig text for a dict: dicts become groups, lists of dicts lists
    `( {...} )`, other lists arrays `[ ... ]`, bools true/false, numbers as
    they are, anything else a quoted string. Any configuration, valid or not."""
    def value(v, level):
        if isinstance(v, dict):
            return "{\n" + libconfig_text(v, level + 1) + "  " * level + "}"
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return str(v)
        if isinstance(v, (list, tuple)):
            if v and all(isinstance(x, dict) for x in v):
                inner = ",\n".join("  " * (level + 1) + value(x, level + 1) for x in v)
                return "(\n" + inner + "\n" + "  " * level + ")"
            return "[ " + ", ".join(value(x, level) for x in v) + " ]"
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    return "".join(f"{'  ' * indent}{k} = {value(v, indent)};\n" for k, v in settings.items())


def config_from_template(path, **values):
    """A template's text with each @KEY@ replaced by str(values[KEY]); every
    placeholder must get a value."""
    text = Path(path).read_text()
    for k, v in values.items():
        text = text.replace(f"@{k}@", str(v))
    left = sorted(set(re.findall(r"@[A-Z_]+@", text)))
    assert not left, f"{path}: no value for {left}"
    return text


def edge_config(*, pool_fqdn, domains, ca, cert, key, internal, next_hop, external,
                partners=(), status_port=None, log_level="debug", internal_max_kb=None,
                limits=None, access_edge=None, policies=None, dns=None, sections=None,
                status_host="127.0.0.1", proxy_listen=None, proxy_from=()):
    """The text of an edged configuration. internal/next_hop/external are (host, port).

    partners: [{"domains": [...], "fqdn": ..., "address": ..., "port": ...}], each
    domain an allowed domain served by that partner server (direct federation).
    access_edge: settings over {"allow_federated_users": True}. policies: the
    external access policies (default: a global one permitting federation).
    dns: (host, port) of the resolver. sections: more top-level sections, as
    libconfig_text() renders them (allowed_domains given here replace partners').
    status_host: the address the status listener binds (with status_port).
    proxy_listen: (host, port) of a second external listener, for the balancer
    (PROXY protocol v2 first), which only proxy_from may connect to."""
    def strs(values):
        return ", ".join(f'"{v}"' for v in values)

    allowed = [{"domain": d, "proxy_fqdn": p["fqdn"], "address": p["address"], "port": p["port"]}
               for p in partners for d in p["domains"]]
    settings = {
        "access_edge": {"allow_federated_users": True, **(access_edge or {})},
        "external_access_policies": policies if policies is not None else
        [{"identity": "global", "enable_federation_access": True}],
    }
    if allowed:
        settings["allowed_domains"] = allowed
    if dns:
        settings["dns"] = {"server": dns[0], "port": dns[1], "timeout_ms": 500, "tries": 2}
    settings.update(sections or {})
    lines = [
        f'node = {{ pool_fqdn = "{pool_fqdn}"; sip_domains = [ {strs(domains)} ]; }};',
        f'log = {{ level = "{log_level}"; }};',
        f'tls = {{ ca_file = "{ca}"; cert_file = "{cert}"; key_file = "{key}"; }};',
        "internal = {",
        f'  listen = ( {{ address = "{internal[0]}"; port = {internal[1]}; transport = "tcp"; }} );',
        f'  next_hop = {{ host = "{next_hop[0]}"; port = {next_hop[1]}; transport = "tcp"; }};',
    ]
    if internal_max_kb:
        lines.append(f"  max_message_kb = {internal_max_kb};")
    lines += [
        "};",
    ]
    listeners = [f'{{ address = "{external[0]}"; port = {external[1]}; }}']
    if proxy_listen:
        listeners.append(f'{{ address = "{proxy_listen[0]}"; port = {proxy_listen[1]}; '
                         'proxy_protocol = true; }')
    balancers = f" proxy_from = [ {strs(proxy_from)} ];" if proxy_from else ""
    lines.append(f'external = {{ listen = ( {", ".join(listeners)} );{balancers} }};')
    if status_port:
        lines.append(f'status = {{ address = "{status_host}"; port = {status_port}; }};')
    if limits:
        lines.append("limits = { " + " ".join(f"{k} = {v};" for k, v in limits.items()) + " };")
    return "\n".join(lines) + "\n" + libconfig_text(settings)


def balancer_config(*, ca, cert, key, edges, status=None, zones=None, dns_listen=(),
                    vip=None, cluster=None, health=None, extra=None, log_level="debug"):
    """The text of a balancerd configuration.

    edges: [{"name", "fqdn", "address", "sip_port", ...}]; zones: the dns.zones
    list; dns_listen: [(host, port)]; vip: the `vip` section; cluster: the
    `cluster` section; status: (host, port); extra: more top-level sections or
    dns settings ({"dns": {...}} entries are merged into dns)."""
    settings = {
        "log": {"level": log_level},
        "tls": {"ca_file": str(ca), "cert_file": str(cert), "key_file": str(key)},
        "edges": edges,
        "health": health or {"interval_ms": 200, "timeout_ms": 500, "rise": 2, "fall": 2},
    }
    extra = dict(extra or {})
    if zones:
        dns = {"ttl": 1, "zones": zones, **extra.pop("dns", {})}
        if dns_listen:
            dns["listen"] = [{"address": h, "port": p} for h, p in dns_listen]
        settings["dns"] = dns
    if vip:
        settings["vip"] = vip
    if cluster:
        settings["cluster"] = cluster
    if status:
        settings["status"] = {"address": status[0], "port": status[1]}
    settings.update(extra)
    return libconfig_text(settings)


class Edge:
    """One edged process (or balancerd: binary) on a configuration file, with its log captured."""

    def __init__(self, workdir, name, config_text, ports, wrapper=(), status_host="127.0.0.1",
                 binary=None, status_port=None):
        self.name = name
        self.binary = binary
        self.dir = Path(workdir)
        self.conf = self.dir / f"{name}.conf"
        self.conf.write_text(config_text)
        self.log_path = self.dir / f"{name}.log"
        self.ports = ports            # [(host, port)] that must accept once started
        self.wrapper = list(wrapper)  # e.g. valgrind
        self.proc = None
        self.status_host = status_host  # where status() asks: the config's status address
        self.status_port = None
        m = re.search(rf"status = \{{ address = \"{re.escape(status_host)}\"; port = (\d+);",
                      config_text)
        if m:
            self.status_port = int(m.group(1))
        if status_port:
            self.status_port = status_port

    def start(self, timeout=30.0):
        """Starts edged and waits until it listens; stops it again if it does not."""
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.wrapper + [self.binary or edged_binary(), "-c",
                                                     str(self.conf)],
                                     stdout=self._log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: self.proc.poll() is not None or "ready" in self.log(),
                     timeout, f"{self.name} to log 'ready'")
            assert self.proc.poll() is None, f"{self.name} exited early:\n{self.log()}"
            for host, port in self.ports:
                wait_for(lambda: port_listening(host, port), timeout, f"{self.name} on {host}:{port}")
        except BaseException:
            self.stop()
            raise
        return self

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def status(self):
        with urllib.request.urlopen(f"http://{self.status_host}:{self.status_port}/status",
                                    timeout=2) as r:
            return json.loads(r.read())

    def stop(self, timeout=30.0):
        """Stops it with SIGTERM; returns the exit code (None if it had to be killed)."""
        if self.proc is None:
            return None
        code = terminate(self.proc, timeout)
        self._log.close()
        self.proc = None
        return code


# ---- sipp ----

class Sipp:
    """One sipp process over TCP; a UAS listens, a UAC calls `remote`."""

    def __init__(self, workdir, scenario, *, local, remote=None, calls=1, rate=10,
                 timeout=30, extra=(), wrapper=()):
        self.dir = Path(workdir)
        self.local = local
        self.out_path = self.dir / f"sipp-{Path(scenario).stem}-{local[1]}.out"
        cmd = list(wrapper) + ["sipp", "-sf", str(SCENARIOS / scenario), "-t", "t1", "-i", local[0],
               "-p", str(local[1]), "-m", str(calls), "-r", str(rate), "-nostdin",
               "-timeout", f"{timeout}s", "-timeout_error", "-trace_err",
               "-error_file", str(self.dir / f"sipp-{Path(scenario).stem}-{local[1]}.err")]
        cmd += list(extra)
        if remote:
            cmd.append(f"{remote[0]}:{remote[1]}")
        self.cmd = cmd
        self.proc = None

    def start(self):
        self._out = open(self.out_path, "wb")
        self.proc = subprocess.Popen(self.cmd, stdout=self._out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.dir)
        wait_for(lambda: self.proc.poll() is not None or port_listening(*self.local), 10,
                 f"sipp on {self.local}")
        return self

    def wait(self, timeout=60):
        """Waits for sipp to end; returns (exit code, successful calls, failed calls)."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            terminate(self.proc, 0, signal.SIGKILL)
            code = None
        self._out.close()
        return code, self.count("Successful call"), self.count("Failed call")

    def stop(self):
        if self.proc:
            terminate(self.proc, 10)
            self._out.close()

    def output(self):
        return self.out_path.read_text(errors="replace")

    def count(self, label):
        """The cumulative figure of a line of sipp's final statistics."""
        found = re.findall(rf"{label}\s*\|\s*\d+\s*\|\s*(\d+)", self.output())
        return int(found[-1]) if found else 0


def run_uac(workdir, scenario, *, local, remote, calls=1, rate=10, timeout=30, extra=()):
    uac = Sipp(workdir, scenario, local=local, remote=remote, calls=calls, rate=rate,
               timeout=timeout, extra=extra).start()
    return uac.wait(timeout + 30)


# ---- Kamailio ----

class Kamailio:
    """Kamailio with its TLS module, from a template under tests/integration/kamailio/.

    The template's @HOST@, @TLS_PORT@, @TCP_PORT@ and @TLS_CFG@ are filled here,
    other placeholders from `values`; tls.cfg gets the certificate paths."""

    def __init__(self, workdir, template, *, tls, tcp, cert, key, ca, values=None, name="kamailio",
                 shm_mb=64, pkg_mb=16, wrapper=()):
        self.dir = Path(workdir)
        self.wrapper = list(wrapper)
        self.name = name
        self.tls, self.tcp = tls, tcp
        self.shm_mb, self.pkg_mb = shm_mb, pkg_mb
        tls_cfg = self.dir / f"{name}-tls.cfg"
        tls_cfg.write_text((HERE / "kamailio" / "tls.cfg").read_text()
                           .replace("@KEY@", str(key)).replace("@CERT@", str(cert))
                           .replace("@CA@", str(ca)))
        fill = {"@HOST@": tls[0], "@TLS_PORT@": str(tls[1]), "@TCP_PORT@": str(tcp[1]),
                "@TLS_CFG@": str(tls_cfg)}
        fill.update(values or {})
        text = Path(template).read_text()
        for k, v in fill.items():
            text = text.replace(k, v)
        self.cfg = self.dir / f"{name}.cfg"
        self.cfg.write_text(text)
        self.log_path = self.dir / f"{name}.log"
        self.proc = None

    def start(self):
        check = subprocess.run(["kamailio", "-c", "-f", str(self.cfg)], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr[-2000:]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self.wrapper + ["kamailio", "-f", str(self.cfg), "-P", str(self.dir / f"{self.name}.pid"),
             "-w", str(self.dir), "-m", str(self.shm_mb), "-M", str(self.pkg_mb), "-DD", "-E"],
            stdout=self._log, stderr=subprocess.STDOUT)
        try:
            for addr in (self.tls, self.tcp):
                wait_for(lambda: self.proc.poll() is not None or port_listening(*addr), 20,
                         f"Kamailio on {addr}")
            assert self.proc.poll() is None, self.log_path.read_text()[-3000:]
        except BaseException:
            self.stop()
            raise
        return self

    def pids(self):
        """Kamailio's processes: the one started and every descendant."""
        pids, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            pids.append(pid)
            out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
            todo += [int(p) for p in out.stdout.split()]
        return pids

    def stop(self):
        if self.proc:
            terminate(self.proc)
            self._log.close()


# ---- raw SIP ----

def sip_request(method, ruri, *, from_uri, to_uri, call_id, via=("127.0.0.1", 5999),
                branch=None, cseq=1, max_forwards=70, headers=(), body="", to_tag=None,
                content_length=None):
    branch = branch or f"z9hG4bK-{call_id}-{cseq}"
    lines = [f"{method} {ruri} SIP/2.0",
             f"Via: SIP/2.0/TCP {via[0]}:{via[1]};branch={branch}",
             f"Max-Forwards: {max_forwards}",
             f"From: <{from_uri}>;tag=f-{call_id}",
             f"To: <{to_uri}>" + (f";tag={to_tag}" if to_tag else ""),
             f"Call-ID: {call_id}",
             f"CSeq: {cseq} {method}"]
    lines += list(headers)
    length = len(body.encode()) if content_length is None else content_length
    lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


class SipResponse:
    def __init__(self, raw):
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode(errors="replace").split("\r\n")
        self.start = lines[0]
        parts = self.start.split(" ", 2)
        self.status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        self.headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers.append((name.strip().lower(), value.strip()))

    def header(self, name):
        for n, v in self.headers:
            if n == name.lower():
                return v
        return None

    def __repr__(self):
        return f"<SipResponse {self.start!r} {self.headers!r}>"


class SipClient:
    """A raw SIP connection: TCP, or TLS with an optional client certificate."""

    def __init__(self, host, port, *, tls_ca=None, cert=None, key=None, server_name=None,
                 timeout=5.0, source=None):
        raw = socket.create_connection((host, port), timeout=timeout,
                                       source_address=(source, 0) if source else None)
        if tls_ca is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.load_verify_locations(str(tls_ca))
            ctx.check_hostname = server_name is not None
            if cert:
                ctx.load_cert_chain(str(cert), str(key))
            raw = ctx.wrap_socket(raw, server_hostname=server_name)
        self.sock = raw
        self.sock.settimeout(timeout)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("closed by the edge")
        self.buf += chunk

    def read_raw(self, n):
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def recv(self):
        """The next SIP message (SipResponse); EOFError when the edge closed."""
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        m = re.search(rb"(?im)^(?:content-length|l)\s*:\s*(\d+)", head)
        length = int(m.group(1)) if m else 0
        while len(rest) < length:
            self._fill()
            head, _, rest = self.buf.partition(b"\r\n\r\n")
        self.buf = rest[length:]
        return SipResponse(head + b"\r\n\r\n" + rest[:length])

    def recv_final(self):
        """Skips provisional responses."""
        while True:
            r = self.recv()
            if r.status >= 200:
                return r

    def closed_by_peer(self, timeout=5.0):
        """Whether the edge closes the connection (reading and discarding until then)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                if not self.sock.recv(65536):
                    return True
        except (ConnectionResetError, ssl.SSLError):
            return True
        except socket.timeout:
            return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class SipUAS:
    """A recording SIP server over TCP: answers every request 200 (or `status`,
    a number or a function of the request; None: no answer) and keeps what it received, so
    tests can read the headers edged added. Runs on a thread; stop() closes it.

    tls=(cert_path, key_path, ca_path) makes it a mutual-TLS server (a
    partner's edge or a provider): it presents cert_path and requires a client
    certificate that chains to ca_path; a connection whose handshake fails is
    closed and counted in tls_failures. contact: a Contact header value added
    to every response."""

    def __init__(self, host, port, status=200, *, tls=None, contact=None, headers=()):
        import threading
        self.addr = (host, port)
        self.status = status
        self.extra_headers = list(headers)    # added to every response
        self.contact = contact
        self.tls_failures = []        # str(error) of each failed TLS handshake
        self._tls = None
        if tls is not None:
            cert, key, ca = tls
            self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._tls.load_cert_chain(str(cert), str(key))
            self._tls.load_verify_locations(str(ca))
            self._tls.verify_mode = ssl.CERT_REQUIRED
        self.requests = []            # SipResponse objects (they parse requests too)
        self._lock = threading.Lock()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(self.addr)
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self._stop = False
        self._conns = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        import threading
        while not self._stop:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        if self._tls is not None:
            conn.settimeout(5)
            plain = conn
            try:
                conn = self._tls.wrap_socket(plain, server_side=True)
            except (OSError, ValueError) as e:
                with self._lock:
                    self.tls_failures.append(str(e))
                plain.close()
                return
            self._conns.append(conn)
        buf = b""
        conn.settimeout(0.2)
        while not self._stop:
            try:
                chunk = conn.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while b"\r\n\r\n" in buf:
                head, _, rest = buf.partition(b"\r\n\r\n")
                m = re.search(rb"(?im)^(?:content-length|l)\s*:\s*(\d+)", head)
                length = int(m.group(1)) if m else 0
                if len(rest) < length:
                    break
                buf = rest[length:]
                msg = SipResponse(head + b"\r\n\r\n" + rest[:length])
                if msg.start.startswith("SIP/2.0"):
                    continue
                with self._lock:
                    self.requests.append(msg)
                if msg.start.startswith("ACK "):
                    continue
                status = self.status(msg) if callable(self.status) else self.status
                if status is None:
                    continue                  # this one is never answered
                lines = [f"SIP/2.0 {status} Answer"]
                for name, value in msg.headers:
                    if name in ("via", "from", "call-id", "cseq"):
                        lines.append(f"{name}: {value}")
                    elif name == "to":
                        lines.append(f"to: {value}" + ("" if "tag=" in value else ";tag=uas"))
                if self.contact is not None:
                    lines.append(f"Contact: {self.contact}")
                lines += self.extra_headers
                lines.append("Content-Length: 0")
                try:
                    conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
                except OSError:
                    return

    def received(self, call_id):
        """The requests received with this Call-ID."""
        with self._lock:
            return [r for r in self.requests if r.header("call-id") == call_id]

    def stop(self):
        self._stop = True
        self._sock.close()
        for c in self._conns:
            try:
                c.close()
            except OSError:
                pass
        self._thread.join(2)
