"""Shared helpers of EdgePool's benchmarks (Python 3 standard library only).

Self-contained on purpose: the benchmarks must not change when the
integration-test helpers do. Every process started here is recorded and
stopped by its pid on exit, on an exception and on SIGTERM/SIGINT/SIGHUP.
Every wait polls with a deadline; nothing sleeps for a fixed time to wait for
readiness. All traffic stays on 127.0.0.0/8.
"""
import atexit
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parents[1]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def wait_until(predicate, timeout, what, interval=0.02):
    """Polls predicate until it returns a true value, which is returned."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


# ---- processes ----

_started = []   # every Popen we started, stopped by pid at exit


def _cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def spawn(cmd, *, log_path, cwd=None, cpus=None):
    """Starts cmd with stdout+stderr to log_path; cpus: a set of CPUs to pin it
    (and everything it forks) to, set before exec so no thread escapes."""
    out = open(log_path, "wb")
    pre = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            cwd=cwd, preexec_fn=pre)
    out.close()
    proc.extra_pids = []      # forked children to stop too (Kamailio's workers)
    proc.name_hint = Path(cmd[0]).name
    _started.append(proc)
    return proc


def descendants(pid):
    """pid's children, grandchildren, ... (from /proc, no external tools)."""
    kids = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in kids.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def stop(proc, timeout=20.0):
    """SIGTERM, then SIGKILL after timeout; the same for the recorded children
    that outlive it (only if their command line still names the program)."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + timeout
    for pid in proc.extra_pids:
        while proc.name_hint in _cmdline(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if proc.name_hint in _cmdline(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    if proc in _started:
        _started.remove(proc)
    return proc.returncode


def stop_all():
    for proc in list(reversed(_started)):
        try:
            stop(proc, 10)
        except Exception as e:   # keep stopping the others
            log(f"cleanup: {e}")


def _on_signal(signum, frame):
    raise SystemExit(128 + signum)


atexit.register(stop_all)
for _s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(_s, _on_signal)


def cpu_ticks(pids):
    """utime + stime of the pids, in clock ticks (processes that are gone count 0)."""
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        f = stat[stat.rindex(")") + 2:].split()
        total += int(f[11]) + int(f[12])
    return total


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_stat():
    """{cpu number: (busy, steal)} in clock ticks, from /proc/stat: busy is
    user+nice+system+irq+softirq, steal what the hypervisor gave elsewhere."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        f = line.split()
        if f and f[0].startswith("cpu") and f[0] != "cpu":
            v = [int(x) for x in f[1:9]]
            out[int(f[0][3:])] = (v[0] + v[1] + v[2] + v[5] + v[6], v[7])
    return out


def mem_kb(pids):
    """(sum of Pss, sum of VmRSS) in KB over pids."""
    pss = rss = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss += int(line.split()[1])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss += int(line.split()[1])
    return pss, rss


# ---- sockets ----

_given = set()


def free_port(host):
    """A TCP port free on host now, never handed out twice in this run."""
    while True:
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in _given:
            _given.add(port)
            return port


def listening(host, port):
    """Whether a socket listens on host:port (from /proc/net/tcp, no connect)."""
    want = f"{int.from_bytes(socket.inet_aton(host), sys.byteorder):08X}:{port:04X}"
    try:
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            f = line.split()
            if f[1] == want and f[3] == "0A":
                return True
    except OSError:
        pass
    return False


# ---- certificates ----

def make_pki(directory, names):
    """A test CA (ca.pem) and for each name NAME.pem/NAME.key: EC P-256,
    subjectAltName DNS:NAME, EKU serverAuth+clientAuth. tools/mkcerts.sh when
    it is there, inline openssl otherwise."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tool = REPO / "tools" / "mkcerts.sh"
    if tool.is_file() and os.access(tool, os.X_OK):
        r = subprocess.run([str(tool), str(d), *names], capture_output=True, text=True)
        if r.returncode == 0 and all((d / f"{n}.pem").is_file() and (d / f"{n}.key").is_file()
                                     for n in names) and (d / "ca.pem").is_file():
            return d
        log(f"tools/mkcerts.sh failed ({r.stderr.strip()[-300:]}); using inline openssl")
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"), "-days", "30", "-sha256",
        "-subj", "/CN=EdgePool bench CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for n in names:
        ext = d / f"{n}.ext"
        ext.write_text(f"subjectAltName=DNS:{n}\nextendedKeyUsage=serverAuth,clientAuth\n"
                       "keyUsage=critical,digitalSignature\nbasicConstraints=critical,CA:FALSE\n")
        run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(d / f"{n}.key"), "-out", str(d / f"{n}.csr"), "-subj", f"/CN={n}")
        run("openssl", "x509", "-req", "-in", str(d / f"{n}.csr"), "-CA", str(d / "ca.pem"),
            "-CAkey", str(d / "ca.key"), "-set_serial", str(int.from_bytes(os.urandom(8), "big")),
            "-days", "30", "-sha256", "-extfile", str(ext), "-out", str(d / f"{n}.pem"))
    return d


# ---- servers ----

def fill(template, values):
    text = Path(template).read_text()
    for k, v in values.items():
        text = text.replace(f"@{k}@", str(v))
    left = sorted(set(re.findall(r"@[A-Z_]+@", text)))
    if left:
        raise RuntimeError(f"{template}: no value for {left}")
    return text


class Kamailio:
    """Kamailio from a template of tests/bench/ with its TLS module.

    values fill the template's @KEYS@; @TLS_CFG@ is filled here with a tls.cfg
    that requires and verifies the peer's certificate both ways."""

    def __init__(self, workdir, name, template, *, pki, fqdn, values, cpus=None,
                 shm_mb=1024, pkg_mb=64, allocator="tlsf"):
        self.dir, self.name, self.cpus = Path(workdir), name, cpus
        self.dir.mkdir(parents=True, exist_ok=True)
        self.shm_mb, self.pkg_mb = shm_mb, pkg_mb
        # "qm" is Kamailio's default allocator (-x/-X not given); it spends
        # most of a busy relay's CPU in qm_malloc. "tlsf" is its fast one.
        self.allocator = allocator
        tls_cfg = self.dir / f"{name}-tls.cfg"
        tls_cfg.write_text(fill(BENCH / "kamailio-tls.cfg", {
            "KEY": pki / f"{fqdn}.key", "CERT": pki / f"{fqdn}.pem", "CA": pki / "ca.pem"}))
        self.cfg = self.dir / f"{name}.cfg"
        self.cfg.write_text(fill(template, dict(values, TLS_CFG=tls_cfg)))
        self.listen = [(h, int(p)) for h, p in
                       re.findall(r"^listen=\w+:([\d.]+):(\d+)", self.cfg.read_text(), re.M)]
        self.log_path = self.dir / f"{name}.log"
        self.proc = None

    def start(self, timeout=30):
        check = subprocess.run(["kamailio", "-c", "-f", str(self.cfg)], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"kamailio -c -f {self.cfg}:\n{check.stderr[-2000:]}")
        self.proc = spawn(["kamailio", "-f", str(self.cfg), "-P", str(self.dir / f"{self.name}.pid"),
                           "-w", str(self.dir), "-m", str(self.shm_mb), "-M", str(self.pkg_mb),
                           *([] if self.allocator == "qm" else ["-x", self.allocator, "-X", self.allocator]),
                           "-DD", "-E"], log_path=self.log_path, cwd=self.dir, cpus=self.cpus)
        try:
            for host, port in self.listen:
                wait_until(lambda: self.proc.poll() is not None or listening(host, port), timeout,
                           f"{self.name} on {host}:{port}")
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log_path.read_text()[-2000:]}")
        except BaseException:
            stop(self.proc)
            raise
        # Kamailio binds its sockets before it forks its workers: wait for the
        # set of processes to stop growing (same set over 0.5 s).
        seen = {"pids": None, "since": 0.0}

        def settled():
            now = tuple(descendants(self.proc.pid))
            if now != seen["pids"]:
                seen["pids"], seen["since"] = now, time.monotonic()
                return False
            return bool(now) and time.monotonic() - seen["since"] >= 0.5
        try:
            wait_until(settled, timeout, f"{self.name}'s worker processes", interval=0.05)
        except BaseException:
            stop(self.proc)
            raise
        self.proc.extra_pids = list(seen["pids"])
        return self

    def pids(self):
        return [self.proc.pid] + descendants(self.proc.pid)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        stop(self.proc)

    def problems(self):
        """Log lines at ERROR/CRITICAL/ALERT (OpenSSL's low-memory notice aside)."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return [l for l in text.splitlines() if re.search(r"\b(ERROR|CRITICAL|ALERT|BUG)\b", l)]


def edged_binary():
    path = os.environ.get("EDGED") or str(REPO / "build" / "edged")
    if not os.access(path, os.X_OK):
        raise SystemExit(f"no edged at {path}: run `make` or set EDGED")
    return os.path.abspath(path)


class Edged:
    """One edged (organization contoso.test) on a generated configuration."""

    def __init__(self, workdir, name, *, pki, internal, external, partner, cpus=None,
                 level="notice"):
        self.dir, self.name, self.cpus = Path(workdir), name, cpus
        self.dir.mkdir(parents=True, exist_ok=True)
        self.internal, self.external = internal, external
        self.conf = self.dir / f"{name}.conf"
        self.conf.write_text(
            'node = { pool_fqdn = "sip.contoso.test"; sip_domains = [ "contoso.test" ]; };\n'
            f'log = {{ level = "{level}"; }};\n'
            f'tls = {{ ca_file = "{pki}/ca.pem"; cert_file = "{pki}/sip.contoso.test.pem"; '
            f'key_file = "{pki}/sip.contoso.test.key"; }};\n'
            f'internal = {{ listen = ( {{ address = "{internal[0]}"; port = {internal[1]}; }} ); '
            f'next_hop = {{ host = "{internal[0]}"; port = {free_port(internal[0])}; }}; }};\n'
            f'external = {{ listen = ( {{ address = "{external[0]}"; port = {external[1]}; }} ); }};\n'
            'access_edge = { allow_federated_users = true; };\n'
            'external_access_policies = ( { identity = "global"; enable_federation_access = true; } );\n'
            f'allowed_domains = ( {{ domain = "fabrikam.test"; proxy_fqdn = "sip.fabrikam.test"; '
            f'address = "{partner[0]}"; port = {partner[1]}; }} );\n')
        self.log_path = self.dir / f"{name}.log"
        self.proc = None

    def start(self, timeout=30):
        self.proc = spawn([edged_binary(), "-c", str(self.conf)], log_path=self.log_path,
                          cwd=self.dir, cpus=self.cpus)
        try:
            wait_until(lambda: self.proc.poll() is not None or "ready" in self.log(), timeout,
                       f"{self.name} to log 'ready'")
            for host, port in (self.internal, self.external):
                wait_until(lambda: self.proc.poll() is not None or listening(host, port), timeout,
                           f"{self.name} on {host}:{port}")
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n{self.log()[-2000:]}")
        except BaseException:
            stop(self.proc)
            raise
        return self

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def pids(self):
        return [self.proc.pid]

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        return stop(self.proc)

    def problems(self):
        return [l for l in self.log().splitlines()
                if re.search(r"\[(warning|error|crit|alert|emerg)\]", l)]


def machine():
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    def ver(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0].strip()
        except (OSError, IndexError):
            return "?"
    return {"nproc": os.cpu_count(), "model": model,
            "kernel": os.uname().release,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "openssl": ver(["openssl", "version"]),
            "kamailio": ver(["kamailio", "-v"]),
            "sipp": next((l.strip() for l in subprocess.run(["sipp", "-v"], capture_output=True,
                          text=True).stdout.splitlines() if "SIPp" in l), "?"),
            "loadavg": Path("/proc/loadavg").read_text().split()[0]}


def median(xs):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def percentile(values, p):
    """Nearest-rank percentile."""
    values = sorted(values)
    if not values:
        return float("nan")
    k = max(0, min(len(values) - 1, int(-(-len(values) * p // 100)) - 1))
    return values[k]
