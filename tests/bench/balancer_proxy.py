#!/usr/bin/python3
"""balancerd's L4 proxy (the VIP's) against HAProxy in TCP mode, in one run.

  balancer_proxy.py [--out DIR] [--repeats 5] [--seconds 5]
                    [--systems direct,ours,haproxy] [--loads keepalive,close,bulk,single]
                    [--buffer-kb 64] [--retries 2] [--perf]
  balancer_proxy.py --summary DIR/results.json

The same path for both proxies, on loopback: wrk -> proxy -> nginx. Each
proxy sends a PROXY protocol v2 header first (balancerd: a `vip.forward` with
proxy_protocol = true; HAProxy: `server ... send-proxy-v2`), and nginx's
listener expects it (`listen ... proxy_protocol`). "direct" is wrk -> nginx
on a listener without the header: the path without a proxy, for the added
latency.

  ours     balancerd, one event loop; its configuration has one edge whose
           address is nginx's: the health check of the SIP port (mutual TLS +
           SIP OPTIONS) goes to a real edged's external listener on that
           address, the VIP's forward goes to nginx's PROXY port on the same
           address. balancerd also checks the forward's port itself (PROXY
           LOCAL + TLS + OPTIONS, on a connection it keeps): a stub answers
           that check on the port until balancerd holds the path up, then
           hands the port over to nginx (see VipPathStub). vip.buffer_kb =
           --buffer-kb, per direction of a connection.
  haproxy  HAProxy (Debian haproxy, run here in the foreground with -db, never
           its service): `mode tcp`, nbthread 1, tune.bufsize = --buffer-kb,
           one server with send-proxy-v2, no health check, no splicing
           (HAProxy's default in TCP mode), maxconn 8000 (as balancerd's
           vip.max_connections here: 2 descriptors each within the 20000 allowed).

Loads (wrk, Debian `wrk`; a Lua done() prints exact counts and microsecond
percentiles):

  keepalive  --conns (50) connections on --threads (2) threads, a small
             response (nginx `return 200` of 64 bytes): requests/s, latency;
  close      the same with `Connection: close`: one TCP connection (and one
             PROXY header) per request: connections/s;
  bulk       a 10 MB file over --bulk-conns (4) connections: MB/s;
  single     one connection, one request at a time: the latency of the path
             without queueing (the added latency: proxy p50 - direct p50).

CPUs (2 here): the proxy alone on CPU 0; wrk, nginx (one worker), edged and
this driver on CPU 1. The proxy's CPU time during each load
(/proc/PID/task/*/schedstat) gives its CPU per request (per MB for bulk) and
its busy share of CPU 0: a proxy below ~95 % of its core was not the
bottleneck. The host is shared: a measurement during which processes not
ours used more than --max-foreign of a CPU (the host's busy time less ours)
is done again, --retries times at most. Each repeat runs every system (the
order rotates with the repeat) through every load; figures are medians over
the repeats, ratios ours / HAProxy the median of the per-repeat ratios.
--perf profiles each proxy during each load (perf record -g), for reading
where its time goes, at some cost to its figures.

Markdown on stdout, progress on stderr, raw data (configurations, logs, wrk
output, results.json, summary.md) under --out (default: a new folder under
$TMPDIR). Loopback only (127.0.0.1); each wrk run lasts --seconds and is
killed after 3 x that; every process is stopped by its pid on exit, error
or signal.
"""
import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as bl  # noqa: E402

HOST = "127.0.0.1"
PROXY_CPUS = {0}
LOAD_CPUS = {1}
SMALL = b"x" * 63 + b"\n"
BULK_MB = 10
LOADS = ("keepalive", "close", "bulk", "single")
SYSTEMS = ("direct", "ours", "haproxy")

WRK_LUA = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"duration_us":%d,"requests":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"lat_us":{"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d,"mean":%.1f}}\n',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
"""


def log(msg):
    bl.log(f"[{time.strftime('%H:%M:%S')}] {msg}")


def host_busy_s():
    """CPU seconds spent busy by the whole host (every CPU, softirq included), /proc/stat."""
    return sum(busy for busy, _ in bl.cpu_stat().values()) / bl.CLK_TCK


def softirq_threads():
    """The kernel's ksoftirqd/N threads: the traffic's own network work runs there too."""
    out = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and (d / "comm").read_text().startswith("ksoftirqd/"):
                out.append(int(d.name))
        except OSError:
            pass
    return out


def ours_s(pids):
    """CPU seconds of our processes: the live ones (all threads, schedstat) and
    those already reaped (wrk: RUSAGE_CHILDREN)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return sum(cpu_ns(p) for p in pids) / 1e9 + ru.ru_utime + ru.ru_stime


def cpu_ns(pid):
    """CPU time of all the threads of pid, in ns (schedstat: precise, not ticks)."""
    total = 0
    try:
        for t in Path(f"/proc/{pid}/task").iterdir():
            try:
                total += int((t / "schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    except OSError:
        pass
    return total


# ---- the servers ----

class Nginx:
    """nginx with its own prefix: one worker, a PROXY-v2 listener and a plain one."""

    def __init__(self, workdir):
        self.dir = Path(workdir)
        (self.dir / "html").mkdir(parents=True, exist_ok=True)
        (self.dir / "tmp").mkdir(exist_ok=True)
        with open(self.dir / "html" / "big", "wb") as f:
            chunk = os.urandom(1 << 20)
            for _ in range(BULK_MB):
                f.write(chunk)
        self.pp_port, self.plain_port = bl.free_port(HOST), bl.free_port(HOST)
        tmp = self.dir / "tmp"
        self.conf = self.dir / "nginx.conf"
        self.conf.write_text(f"""# nginx for tests/bench/balancer_proxy.py
user root root;
worker_processes 1;
daemon off;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log notice;
events {{ worker_connections 16384; multi_accept on; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000000;
  keepalive_timeout 60s;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  default_type application/octet-stream;
  server {{
    listen {HOST}:{self.pp_port} proxy_protocol backlog=4096;
    listen {HOST}:{self.plain_port} backlog=4096;
    root {self.dir}/html;
    location = /small {{ return 200 "{SMALL.decode().strip()}\\n"; }}
    location = /pp {{ return 200 "$proxy_protocol_addr:$proxy_protocol_port $server_port\\n"; }}
  }}
}}
""")
        self.proc = None

    def start(self):
        check = subprocess.run(["nginx", "-t", "-p", str(self.dir), "-e", str(self.dir / "error.log"),
                                "-c", str(self.conf)], capture_output=True, text=True)
        if check.returncode:
            raise RuntimeError(f"nginx -t:\n{check.stderr}")
        self.proc = bl.spawn(["nginx", "-p", str(self.dir), "-e", str(self.dir / "error.log"),
                              "-c", str(self.conf)], log_path=self.dir / "nginx.out",
                             cwd=self.dir, cpus=LOAD_CPUS)
        for port in (self.pp_port, self.plain_port):
            bl.wait_until(lambda: self.proc.poll() is not None or bl.listening(HOST, port), 10,
                          f"nginx on {port}")
        if self.proc.poll() is not None:
            raise RuntimeError(f"nginx exited:\n{(self.dir / 'error.log').read_text()[-2000:]}")
        # The master forks its worker after binding: record it, so it is stopped too.
        bl.wait_until(lambda: bl.descendants(self.proc.pid), 10, "nginx's worker")
        self.proc.extra_pids = bl.descendants(self.proc.pid)
        return self

    def stop(self):
        bl.stop(self.proc)


class VipPathStub:
    """Answers balancerd's check of the VIP's path, then hands its port to nginx.

    balancerd checks each port the VIP forwards to with the PROXY protocol on
    a connection of its own, kept open: a PROXY v2 LOCAL header, mutual TLS,
    then a SIP OPTIONS every interval, which must get a 200. nginx, the
    backend here, cannot answer that. So this stub listens on nginx's PROXY
    port first, answers the check on the connection balancerd keeps (as an
    edge would: 200, the certificate of sip.contoso.test), and closes its
    listener once balancerd holds the path up; nginx then binds the port
    (SO_REUSEADDR both sides) and every new connection, the load's, reaches
    nginx. If balancerd's kept connection ever broke, its next one would
    reach nginx and the path would go down: run_load() checks it did not."""

    def __init__(self, port, pki):
        import socket
        import ssl
        import threading
        self.port, self.answered, self.errors = port, 0, []
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(pki / "sip.contoso.test.pem"), str(pki / "sip.contoso.test.key"))
        self.ctx.load_verify_locations(str(pki / "ca.pem"))
        self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # inherited by accepted sockets
        self.lsock.bind((HOST, port))
        self.lsock.listen(8)
        self.lsock.settimeout(0.1)
        self.listening = True
        self.threading = threading
        threading.Thread(target=self._accept, daemon=True, name="vip-path-stub").start()

    def _accept(self):
        while self.listening:
            try:
                conn, _ = self.lsock.accept()
            except OSError:
                continue
            self.threading.Thread(target=self._serve, args=(conn,), daemon=True).start()
        self.lsock.close()

    def _serve(self, conn):
        import re as _re
        try:
            conn.settimeout(10)
            hdr = b""
            while len(hdr) < 16:
                chunk = conn.recv(16 - len(hdr))
                if not chunk:
                    return
                hdr += chunk
            if hdr[:12] != b"\r\n\r\n\x00\r\nQUIT\n":
                raise RuntimeError(f"not a PROXY v2 header: {hdr!r}")
            rest = int.from_bytes(hdr[14:16], "big")
            while rest:
                chunk = conn.recv(rest)
                if not chunk:
                    return
                rest -= len(chunk)
            tls = self.ctx.wrap_socket(conn, server_side=True)
            tls.settimeout(None)
            buf = b""
            while True:
                chunk = tls.recv(65536)
                if not chunk:
                    return
                buf += chunk
                while b"\r\n\r\n" in buf:
                    head, _, buf = buf.partition(b"\r\n\r\n")
                    text = head.decode(errors="replace")
                    if not text.strip():
                        continue
                    keep = [l for l in text.split("\r\n")[1:]
                            if _re.match(r"(?i)(via|from|to|call-id|cseq)\s*:", l)]
                    keep = [l + ";tag=stub" if l.lower().startswith("to:") else l for l in keep]
                    tls.sendall(("SIP/2.0 200 OK\r\n" + "\r\n".join(keep) +
                                 "\r\nContent-Length: 0\r\n\r\n").encode())
                    self.answered += 1
        except Exception as e:   # noqa: BLE001 - reported, the bench checks the path
            self.errors.append(repr(e))
        finally:
            conn.close()

    def hand_over(self):
        """Stops listening (the connections already accepted stay), for nginx to bind."""
        self.listening = False
        bl.wait_until(lambda: not bl.listening(HOST, self.port), 5, "the stub's listener closed")


class Balancerd:
    def __init__(self, workdir, pki, *, edge_sip_port, backend_port, buffer_kb):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = bl.free_port(HOST)
        self.status_port = bl.free_port(HOST)
        self.conf = self.dir / "balancerd.conf"
        self.conf.write_text(f"""# balancerd for tests/bench/balancer_proxy.py: one edge, whose health
# check goes to a real edged (TLS + OPTIONS on {edge_sip_port}); the VIP's
# forward goes to nginx's PROXY v2 listener ({backend_port}) on the same address.
log = {{ level = "notice"; }};
tls = {{ ca_file = "{pki}/ca.pem"; cert_file = "{pki}/sip.contoso.test.pem";
        key_file = "{pki}/sip.contoso.test.key"; }};
edges = ( {{ name = "edge1"; fqdn = "sip.contoso.test"; address = "{HOST}";
            sip_port = {edge_sip_port}; }} );
health = {{ interval_ms = 500; timeout_ms = 1000; rise = 2; fall = 2; }};
vip = {{
  addresses = [ "{HOST}" ];
  forward = ( {{ port = {self.port}; edge_port = {backend_port}; proxy_protocol = true; }} );
  affinity_idle_s = 1200;
  connect_timeout_ms = 2000;
  max_connections = 8000;
  buffer_kb = {buffer_kb};
}};
status = {{ address = "{HOST}"; port = {self.status_port}; }};
""")
        self.proc = None

    def start(self):
        binary = os.environ["BALANCERD"]
        check = subprocess.run([binary, "-t", "-c", str(self.conf)], capture_output=True, text=True)
        if check.returncode:
            raise RuntimeError(f"balancerd -t: {check.stderr}{check.stdout}")
        self.proc = bl.spawn([binary, "-c", str(self.conf)], log_path=self.dir / "balancerd.log",
                             cwd=self.dir, cpus=PROXY_CPUS)
        bl.wait_until(lambda: self.proc.poll() is not None or bl.listening(HOST, self.port), 10,
                      "balancerd's VIP listener")
        bl.wait_until(lambda: self.proc.poll() is not None or self.usable(), 15,
                      "balancerd: the edge usable")
        if self.proc.poll() is not None:
            raise RuntimeError(f"balancerd exited:\n{(self.dir / 'balancerd.log').read_text()[-2000:]}")
        return self

    def status(self):
        import urllib.request
        with urllib.request.urlopen(f"http://{HOST}:{self.status_port}/status", timeout=2) as r:
            return json.loads(r.read())

    def usable(self):
        try:
            return self.status()["usable_edges"] == 1
        except OSError:
            return False

    def vip_path(self):
        """balancerd's check of the VIP's path (PROXY LOCAL), or None when this
        balancerd has none (before 7f757b5 only the SIP port was checked)."""
        checks = self.status()["edges"][0].get("checks")
        if not isinstance(checks, list):
            return None
        return next((c for c in checks if c.get("proxy_local")), None)

    def vip_path_up(self):
        c = self.vip_path()
        return c is None or c["state"] == "up"

    def pids(self):
        return [self.proc.pid]    # its watchdog exists only with a keepalived section

    def stop(self):
        return bl.stop(self.proc)


class Haproxy:
    def __init__(self, workdir, *, backend_port, buffer_kb):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = bl.free_port(HOST)
        self.conf = self.dir / "haproxy.cfg"
        self.conf.write_text(f"""# HAProxy for tests/bench/balancer_proxy.py: TCP mode, one thread,
# the same buffer size per direction as balancerd's vip.buffer_kb.
global
  nbthread 1
  maxconn 8000
  tune.bufsize {buffer_kb * 1024}
  pidfile {self.dir}/haproxy.pid

defaults
  mode tcp
  timeout connect 2s
  timeout client 60s
  timeout server 60s

listen vip
  bind {HOST}:{self.port}
  server backend {HOST}:{backend_port} send-proxy-v2
""")
        self.proc = None

    def start(self):
        check = subprocess.run(["haproxy", "-c", "-f", str(self.conf)], capture_output=True,
                               text=True)
        if check.returncode:
            raise RuntimeError(f"haproxy -c:\n{check.stdout}{check.stderr}")
        self.proc = bl.spawn(["haproxy", "-db", "-f", str(self.conf)],
                             log_path=self.dir / "haproxy.log", cwd=self.dir, cpus=PROXY_CPUS)
        bl.wait_until(lambda: self.proc.poll() is not None or bl.listening(HOST, self.port), 10,
                      "haproxy's listener")
        if self.proc.poll() is not None:
            raise RuntimeError(f"haproxy exited:\n{(self.dir / 'haproxy.log').read_text()[-2000:]}")
        return self

    def pids(self):
        return [self.proc.pid]

    def stop(self):
        return bl.stop(self.proc)


# ---- wrk ----

def wrk(workdir, name, url, *, seconds, conns, threads, close=False, timeout_s=10):
    """One wrk run, pinned to the load CPU; its figures from the Lua done()."""
    lua = workdir / "done.lua"
    if not lua.exists():
        lua.write_text(WRK_LUA)
    cmd = ["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{seconds}s",
           "--timeout", f"{timeout_s}s", "-s", str(lua)]
    if close:
        cmd += ["-H", "Connection: close"]
    cmd.append(url)
    out = workdir / f"{name}.wrk"
    proc = bl.spawn(cmd, log_path=out, cwd=workdir, cpus=LOAD_CPUS)
    try:
        proc.wait(3 * seconds + 30)
    except subprocess.TimeoutExpired:
        bl.stop(proc, 5)
        raise RuntimeError(f"wrk did not end: {out}")
    bl.stop(proc)
    text = out.read_text(errors="replace")
    m = re.search(r"^WRKJSON (.*)$", text, re.M)
    if proc.returncode or not m:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{text[-2000:]}")
    r = json.loads(m.group(1))
    secs = r["duration_us"] / 1e6
    r["rate"] = r["requests"] / secs
    r["mb_s"] = r["bytes"] / secs / 1e6
    r["error_count"] = sum(r["errors"].values())
    return r


def check_path(url, want):
    """One request by curl-less means: wrk's sibling, Python's http.client."""
    import http.client
    from urllib.parse import urlsplit
    u = urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=5)
    try:
        c.request("GET", u.path)
        body = c.getresponse().read()
    finally:
        c.close()
    if want not in body:
        raise RuntimeError(f"{url}: unexpected answer {body[:200]!r}")
    return body


# ---- the bench ----

def run_load(args, workdir, system, load, port, proxy):
    """One measurement, done again (up to --retries times) when processes not
    ours took more than --max-foreign of a CPU meanwhile: the host is shared."""
    tries = []
    for attempt in range(args.retries + 1):
        # Other people's work: what the host's CPUs did, less what ours did.
        pids = [os.getpid(), *bl.descendants(os.getpid()), *softirq_threads()]
        host0, ours0 = host_busy_s(), ours_s(pids)
        r = measure(args, workdir, system, load, port, proxy)
        foreign = (host_busy_s() - host0) - (ours_s(pids) - ours0)
        r["foreign_cpu"] = max(0.0, foreign) / r["wall_s"]
        tries.append(r["foreign_cpu"])
        if r["foreign_cpu"] <= args.max_foreign:
            break
        log(f"  {system} {load}: other processes used {r['foreign_cpu'] * 100:.0f} % of a CPU "
            f"meanwhile{'; again' if attempt < args.retries else '; kept'}")
    r["foreign_tries"] = tries
    return r


def measure(args, workdir, system, load, port, proxy):
    path = "/big" if load == "bulk" else "/small"
    url = f"http://{HOST}:{port}{path}"
    conns, threads = {"keepalive": (args.conns, args.threads), "close": (args.conns, args.threads),
                      "bulk": (args.bulk_conns, 1), "single": (1, 1)}[load]
    seconds = args.single_seconds if load == "single" else args.seconds
    pids = proxy.pids() if proxy else []
    perf = None
    if args.perf and proxy:
        # Profiling runs only: perf's sampling costs the proxy some of its figures.
        perf = subprocess.Popen(["perf", "record", "-g", "-q", "-o",
                                 str(workdir / f"{system}-{load}.perf"), "-p", str(proxy.proc.pid)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
    cpus0 = bl.cpu_stat()
    before, t0 = sum(cpu_ns(p) for p in pids), time.monotonic()
    r = wrk(workdir, f"{system}-{load}", url, seconds=seconds, conns=conns, threads=threads,
            close=(load == "close"))
    wall = time.monotonic() - t0
    cpus1 = bl.cpu_stat()
    if perf:
        perf.send_signal(2)
        try:
            perf.wait(60)
        except subprocess.TimeoutExpired:
            perf.kill()
            perf.wait()
    # Each CPU's busy and stolen share over the run (wrk's start and end included):
    # CPU 1 near 100 % means the load side, not the proxy, set the pace.
    ticks = wall * bl.CLK_TCK
    r["cpu_busy"] = {str(c): round((cpus1[c][0] - cpus0[c][0]) / ticks, 3) for c in cpus1}
    r["cpu_steal"] = {str(c): round((cpus1[c][1] - cpus0[c][1]) / ticks, 3) for c in cpus1}
    if proxy:
        used = sum(cpu_ns(p) for p in pids) - before
        r["proxy_cpu_s"] = used / 1e9
        r["proxy_busy"] = used / 1e9 / (r["duration_us"] / 1e6)
        r["proxy_us_per_req"] = used / 1e3 / max(1, r["requests"])
        r["proxy_us_per_mb"] = used / 1e3 / max(1e-9, r["bytes"] / 1e6)
        if isinstance(proxy, Balancerd):
            # wrk has closed every connection: the proxy must hold none soon after
            # (balancerd lingers up to 5 s for a side whose peer failed).
            t1 = time.monotonic()
            try:
                bl.wait_until(lambda: proxy.status()["proxy"]["active"] == 0, 8,
                              "balancerd's connections closed", interval=0.05)
                r["close_lag_s"] = time.monotonic() - t1
            except RuntimeError:
                pass
            r["active_after"] = proxy.status()["proxy"]["active"]
            if not proxy.vip_path_up():
                raise RuntimeError(f"balancerd's check of the VIP's path went down: "
                                   f"{proxy.vip_path()}: its kept connection to the stub broke "
                                   "and a new one reached nginx; the run is void")
    r["wall_s"] = wall
    return r


def run(args, out):
    pki = bl.make_pki(out / "pki", ["sip.contoso.test", "sip.fabrikam.test"])
    nginx = Nginx(out / "nginx")
    # The health-check target: a real edged, external listener on nginx's address.
    edge = bl.Edged(out / "edged", "edge", pki=pki, internal=(HOST, bl.free_port(HOST)),
                    external=(HOST, bl.free_port(HOST)), partner=(HOST, bl.free_port(HOST)),
                    cpus=LOAD_CPUS).start()
    proxies, stub = {}, None
    if "ours" in args.systems:
        stub = VipPathStub(nginx.pp_port, pki)
        proxies["ours"] = b = Balancerd(out / "balancerd", pki, edge_sip_port=edge.external[1],
                                        backend_port=nginx.pp_port, buffer_kb=args.buffer_kb).start()
        bl.wait_until(b.vip_path_up, 15, "balancerd: the VIP's path up (the stub answering)")
        stub.hand_over()
    nginx.start()
    if "haproxy" in args.systems:
        proxies["haproxy"] = Haproxy(out / "haproxy", backend_port=nginx.pp_port,
                                     buffer_kb=args.buffer_kb).start()
    ports = {"direct": nginx.plain_port, **{k: v.port for k, v in proxies.items()}}
    # Every path answers, and each proxy's PROXY header reaches nginx.
    check_path(f"http://{HOST}:{nginx.plain_port}/small", SMALL.strip())
    for name, p in proxies.items():
        body = check_path(f"http://{HOST}:{p.port}/pp", str(nginx.pp_port).encode())
        if not body.startswith(b"127.0.0.1:"):
            raise RuntimeError(f"{name}: nginx did not read a PROXY header: {body!r}")
        check_path(f"http://{HOST}:{p.port}/small", SMALL.strip())
    runs = []
    results = {"args": vars(args), "machine": machine(), "runs": runs}
    for rep in range(1, args.repeats + 1):
        k = (rep - 1) % len(args.systems)
        order = args.systems[k:] + args.systems[:k]
        for system in order:
            for load in args.loads:
                d = out / f"r{rep}"
                d.mkdir(exist_ok=True)
                r = run_load(args, d, system, load, ports[system], proxies.get(system))
                r.update(system=system, load=load, repeat=rep)
                runs.append(r)
                cpu = (f", proxy {r['proxy_busy'] * 100:.0f} % of a core, "
                       f"{r['proxy_us_per_req']:.1f} us/req") if "proxy_busy" in r else ""
                cpu += (" | CPUs busy " + "/".join(f"{v * 100:.0f}" for v in r["cpu_busy"].values())
                        + " % steal " + "/".join(f"{v * 100:.0f}" for v in r["cpu_steal"].values())
                        + f" %, not ours {r['foreign_cpu'] * 100:.0f} %")
                if r.get("active_after"):
                    cpu += f", {r['active_after']} connections still open in balancerd"
                log(f"repeat {rep} {system:8} {load:9}: {r['rate']:9.0f}/s "
                    f"{r['mb_s']:8.1f} MB/s p50 {r['lat_us']['p50'] / 1000:.3f} ms "
                    f"p99 {r['lat_us']['p99'] / 1000:.3f} ms errors {r['error_count']}{cpu}")
                (out / "results.json").write_text(json.dumps(results, indent=1))
    for name, p in proxies.items():
        if p.proc.poll() is not None:
            raise RuntimeError(f"{name} died during the run")
    if "ours" in proxies:
        results["balancerd_status"] = proxies["ours"].status()
        results["vip_path_stub"] = {"answered": stub.answered, "errors": stub.errors}
    for p in proxies.values():
        p.stop()
    edge.stop()
    nginx.stop()
    (out / "results.json").write_text(json.dumps(results, indent=1))
    return results


def machine():
    def first(cmd):
        r = subprocess.run(cmd, capture_output=True, text=True)
        lines = (r.stdout + r.stderr).splitlines()
        return lines[0].strip() if lines else "?"
    m = {"nproc": os.cpu_count(), "kernel": os.uname().release,
         "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
         "haproxy": first(["haproxy", "-v"]), "nginx": first(["nginx", "-v"]),
         "wrk": first(["wrk", "--version"]).split(" [")[0],
         "loadavg": Path("/proc/loadavg").read_text().split()[0]}
    b = os.environ.get("BALANCERD")
    if b:
        m["balancerd"] = b
        m["balancerd_sha256"] = subprocess.run(["sha256sum", b], capture_output=True,
                                               text=True).stdout.split()[0][:16]
    return m


# ---- the summary ----

def med(xs):
    xs = [x for x in xs if x is not None]
    return bl.median(xs) if xs else None


def summarize(data):
    runs, a, m = data["runs"], data["args"], data.get("machine", {})
    systems = [s for s in SYSTEMS if any(r["system"] == s for r in runs)]

    def vals(system, load, f):
        return [f(r) for r in sorted((r for r in runs if r["system"] == system and r["load"] == load),
                                     key=lambda r: r["repeat"])]

    def cell(xs, digits):
        if not xs:
            return "-"
        if not any(xs):
            return "0 (stalled)"
        return (f"**{med(xs):.{digits}f}** ({min(xs):.{digits}f}-{max(xs):.{digits}f})")

    def ratio(load, f):
        per = []
        for rep in sorted({r["repeat"] for r in runs}):
            got = {r["system"]: f(r) for r in runs if r["load"] == load and r["repeat"] == rep}
            if got.get("ours") and got.get("haproxy"):
                per.append(got["ours"] / got["haproxy"])
        return per

    figures = [
        ("keepalive", "requests/s, keep-alive, small response", lambda r: r["rate"], 0, True),
        ("keepalive", "p50 latency, keep-alive (ms)", lambda r: r["lat_us"]["p50"] / 1000, 3, False),
        ("keepalive", "p99 latency, keep-alive (ms)", lambda r: r["lat_us"]["p99"] / 1000, 3, False),
        ("close", "connections/s (one request each, `Connection: close`)", lambda r: r["rate"], 0, True),
        ("close", "p50 latency, new connection (ms)", lambda r: r["lat_us"]["p50"] / 1000, 3, False),
        ("close", "p99 latency, new connection (ms)", lambda r: r["lat_us"]["p99"] / 1000, 3, False),
        ("bulk", f"bulk MB/s ({BULK_MB} MB file, {a['bulk_conns']} connections)",
         lambda r: r["mb_s"], 0, True),
        ("single", "p50 latency, one connection, one request at a time (ms)",
         lambda r: r["lat_us"]["p50"] / 1000, 3, False),
        ("single", "p99 latency, one connection (ms)", lambda r: r["lat_us"]["p99"] / 1000, 3, False),
        ("single", "requests/s, one connection", lambda r: r["rate"], 0, True),
    ]
    out = [f"## balancerd's VIP proxy against HAProxy ({m.get('date', '?')}, {m.get('haproxy', '?')}, "
           f"{m.get('nginx', '?')}, {m.get('wrk', '?')})", "",
           f"Medians of {a['repeats']} repeats (min-max); ratios: median of the per-repeat "
           f"ratios. Buffers: balancerd vip.buffer_kb = {a['buffer_kb']}, HAProxy tune.bufsize = "
           f"{a['buffer_kb'] * 1024}. wrk {a['seconds']} s per load ({a['single_seconds']} s for one "
           f"connection), {a['conns']} connections on {a['threads']} threads.", "",
           "| figure | " + " | ".join(systems) + " | ours / HAProxy |",
           "|---|" + "---|" * len(systems) + "---|"]
    for load, label, f, digits, _higher in figures:
        if load not in a["loads"]:
            continue
        cells = [cell(vals(s, load, f), digits) for s in systems]
        per = ratio(load, f)
        rc = f"**{med(per):.2f}** ({min(per):.2f}-{max(per):.2f})" if per else "-"
        out.append(f"| {label} | " + " | ".join(cells) + f" | {rc} |")
    for load in a["loads"]:
        if not any("proxy_busy" in r for r in runs if r["load"] == load):
            continue
        cells = []
        key, what = (("proxy_us_per_mb", "MB") if load == "bulk" else
                     ("proxy_us_per_req", "request"))
        stalled = {s for s in systems if any(r["requests"] == 0 for r in runs
                                             if r["system"] == s and r["load"] == load)}
        for s in systems:
            xs = vals(s, load, lambda r: r.get(key))
            xs = [x for x in xs if x is not None]
            cells.append("stalled" if s in stalled else (cell(xs, 2) if xs else ""))
        per = ratio(load, lambda r: r.get(key)) if not stalled else []
        rc = f"{med(per):.2f}" if per else "-"
        out.append(f"| proxy CPU per {what}, {load} (us) | " + " | ".join(cells) + f" | {rc} |")
        cells = []
        for s in systems:
            xs = [x * 100 for x in vals(s, load, lambda r: r.get("proxy_busy")) if x is not None]
            cells.append(cell(xs, 0) if xs else "")
        out.append(f"| proxy busy share of its core, {load} (%) | " + " | ".join(cells) + " | |")
    # Added latency: proxy p50 - direct p50, per repeat, one connection.
    if "single" in a["loads"] and "direct" in systems:
        for s in ("ours", "haproxy"):
            per = []
            for rep in sorted({r["repeat"] for r in runs}):
                got = {r["system"]: r["lat_us"]["p50"] for r in runs
                       if r["load"] == "single" and r["repeat"] == rep}
                if s in got and "direct" in got:
                    per.append(got[s] - got["direct"])
            if per:
                out.append(f"| added latency, {s}: p50 - direct p50, one connection (us) | "
                           + " | ".join("" for _ in systems) +
                           f" | {med(per):.0f} ({min(per):.0f}-{max(per):.0f}) |")
    redone = [r for r in runs if len(r.get("foreign_tries", [])) > 1]
    kept = [r for r in runs if r.get("foreign_cpu", 0) > a.get("max_foreign", 1)]
    out += ["", f"Measurements done again because processes not ours (other people's tests on "
            f"this shared host) used more than {a.get('max_foreign', 0) * 100:.0f} % of a CPU "
            f"meanwhile: {len(redone)} of {len(runs)}"
            + ("; kept although still disturbed: " +
               ", ".join(f"repeat {r['repeat']} {r['system']} {r['load']} "
                         f"({r['foreign_cpu'] * 100:.0f} %)" for r in kept) if kept else "") + "."]
    errs = {s: sum(r["error_count"] for r in runs if r["system"] == s) for s in systems}
    out += ["", "wrk errors over the whole run: " +
            ", ".join(f"{s} {n}" for s, n in errs.items()) + "."]
    lag = [(r["repeat"], r["load"], round(r["close_lag_s"], 1)) for r in runs
           if r.get("close_lag_s", 0) > 1]
    if lag:
        out.append("balancerd took more than 1 s to close its connections after wrk closed its "
                   "own (repeat, load, seconds): " + ", ".join(map(str, lag)) + ".")
    left = [(r["repeat"], r["load"], r["active_after"]) for r in runs if r.get("active_after")]
    if left:
        out.append("balancerd still held connections 8 s after wrk had closed all of its own "
                   "(repeat, load, connections): " + ", ".join(map(str, left)) + ".")
    stalled = sorted({(r["system"], r["load"]) for r in runs if r["requests"] == 0})
    if stalled:
        out.append("No complete response at all (stalled): " +
                   ", ".join(f"{s} {l}" for s, l in stalled) + ".")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--single-seconds", type=int, default=3)
    ap.add_argument("--systems", default="direct,ours,haproxy")
    ap.add_argument("--loads", default=",".join(LOADS))
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bulk-conns", type=int, default=4)
    ap.add_argument("--buffer-kb", type=int, default=64,
                    help="balancerd vip.buffer_kb and HAProxy tune.bufsize / 1024")
    ap.add_argument("--retries", type=int, default=2,
                    help="measurements done again when other processes disturbed them")
    ap.add_argument("--max-foreign", type=float, default=0.10,
                    help="share of a CPU that processes not ours may use during a measurement")
    ap.add_argument("--perf", action="store_true",
                    help="profile each proxy during each load (perf record -g, into the raw "
                         "data as SYSTEM-LOAD.perf; `perf report -i FILE`): slows the proxies")
    ap.add_argument("--summary", help="print the summary again from a results.json, and stop")
    args = ap.parse_args()
    if args.summary:
        print(summarize(json.loads(Path(args.summary).read_text())))
        return 0
    args.systems = [s for s in args.systems.split(",") if s]
    args.loads = [s for s in args.loads.split(",") if s]
    bad = [s for s in args.systems if s not in SYSTEMS] + [x for x in args.loads if x not in LOADS]
    if bad:
        ap.error(f"unknown: {bad}")
    for tool in ("wrk", "nginx", "haproxy"):
        if not shutil.which(tool) and not os.access(f"/usr/sbin/{tool}", os.X_OK):
            print(f"balancer_proxy.py needs {tool} (tools/deps.sh installs it)", file=sys.stderr)
            return 2
    os.environ["PATH"] += ":/usr/sbin"
    out = Path(args.out or tempfile.mkdtemp(prefix="edgepool-balancer-proxy-"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "bin").mkdir(exist_ok=True)
    for name in ("edged", "balancerd"):
        src = os.environ.get(name.upper()) or str(bl.REPO / "build" / name)
        if not os.access(src, os.X_OK):
            print(f"no {name} at {src}: run make, or set {name.upper()}", file=sys.stderr)
            return 2
        dst = out / "bin" / name
        if Path(src).resolve() != dst.resolve():
            shutil.copy(src, dst)
        os.chmod(dst, 0o555)
        os.environ[name.upper()] = str(dst)
    os.sched_setaffinity(0, LOAD_CPUS)
    started = time.monotonic()
    data = run(args, out)
    text = summarize(data) + f"\n\nRaw data: {out}; run time {time.monotonic() - started:.0f} s.\n"
    (out / "summary.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
