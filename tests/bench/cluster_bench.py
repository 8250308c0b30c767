#!/usr/bin/python3
"""EdgePool's gossip cluster against HashiCorp serf, side by side in one run.

  cluster_bench.py [--out DIR] [--repeats 3] [--sizes 5,10,20]
                   [--systems ours,ours-fast,serf] [--settle 5] [--updates 5]
                   [--rest-after 62] [--quiet 30] [--records 100000]
                   [--fast "probe-interval=0.1,..."]
  cluster_bench.py --summary DIR/results.json

For every repeat, every pool size N and every system (taking turns, in an
order that rotates with the repeat), a fresh pool of N processes on loopback,
started 0-1 s apart at random (so that their timers run at unrelated phases):

  1. dissemination: --updates updates, each from another node; the time from
     the origin applying it to the last node applying it. Ours: a store write
     (clu_node_put, key "bench/TAG", value "x"), arrival by the store's change
     callback. serf: a user event (RPC "event", name "bench", payload TAG,
     Coalesce false), arrival by an event handler that appends bash's
     $EPOCHREALTIME to a file per agent. Also the UDP bytes per node per
     update above the at-rest rate;
  2. at rest: bytes sent per node per second over --quiet seconds (30: one
     push-pull period of both, so each node's periodic exchange counts once),
     from --rest-after seconds after the last start (serf's first periodic
     push-pull comes 30-60 s after its start), counted by iptables (a chain
     of our own on OUTPUT, one rule per system's loopback /24 as source and
     as destination, UDP and TCP apart), the same way for both; suspicions
     raised at rest (false ones: nobody is down);
  3. failure detection: kill -9 of one node (a crash: the kernel closes its
     sockets); the time until every other node holds it dead (ours: the
     member change callback; serf: RPC "members", status "failed", polled
     every 50 ms on every survivor). Then SIGSTOP of another (a hung or
     cut-off node: its sockets stay open, nothing refuses a connection), the
     same time, among the N-1 members still live.

Then, ours only: a fresh node joins a node holding --records dialog-shaped
records ("dlg/<36-char call-id>/<16-char tag>", 20-byte values) and the time
until it holds all of them (push-pull), and malloc's in-use bytes and RSS
per record on that node (and on the writer).

Systems: "ours" and "serf" with their LAN defaults (clu_config_lan; serf
-profile=lan), both encrypting (ours always seals; serf gets -encrypt);
"ours-fast": ours with the timings of --fast, to show what reaches the
failure-detection goal and what it costs at rest.

Needs build/bench/clu_bench_node (`make build/bench/clu_bench_node`, or
$CLU_BENCH_NODE), serf (Debian `serf`), and for the bytes: iptables and root.
Markdown summary on stdout, progress on stderr, raw data (per-node logs,
results.json, summary.md) under --out (default: a new folder under $TMPDIR).
Loopback only (127.77.0.0/16, RPC on 127.0.0.1); every wait has a deadline;
every process started is stopped by its pid and the iptables chain removed,
on exit, error or signal.
"""
import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as bl  # noqa: E402

KEY_B64 = "ZWRnZXBvb2wtYmVuY2gtY2x1c3Rlci1rZXktMzJieXQ="   # 32 bytes, both systems
NETS = {"ours": "127.77.1", "ours-fast": "127.77.3", "serf": "127.77.2", "sync": "127.77.4"}
RPC_HOST = "127.0.0.1"
SERF_POLL = 0.05
DEFAULT_FAST = "probe-interval=0.1,probe-timeout=0.05,gossip-interval=0.05"


def log(msg):
    bl.log(f"[{time.strftime('%H:%M:%S')}] {msg}")


def free_port(host):
    """A port free on host for TCP and UDP now, never handed out twice in this run."""
    for _ in range(1000):
        t, u = socket.socket(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            t.bind((host, 0))
            port = t.getsockname()[1]
            u.bind((host, port))
        except OSError:
            continue
        finally:
            t.close()
            u.close()
        if port not in bl._given:
            bl._given.add(port)
            return port
    raise RuntimeError(f"no free port on {host}")


def median(xs):
    xs = [x for x in xs if x is not None]
    return bl.median(xs) if xs else None


# ---- msgpack, as much as serf's RPC needs ----

def mp_pack(o):
    if o is None:
        return b"\xc0"
    if o is True or o is False:
        return b"\xc3" if o else b"\xc2"
    if isinstance(o, int):
        if 0 <= o < 128:
            return bytes([o])
        if 0 <= o < 1 << 32:
            return b"\xce" + struct.pack(">I", o)
        return b"\xd3" + struct.pack(">q", o)
    if isinstance(o, str):
        b = o.encode()
        if len(b) < 32:
            return bytes([0xa0 | len(b)]) + b
        return b"\xdb" + struct.pack(">I", len(b)) + b
    if isinstance(o, (bytes, bytearray)):
        return b"\xc6" + struct.pack(">I", len(o)) + bytes(o)
    if isinstance(o, dict):
        return (b"\xdf" + struct.pack(">I", len(o)) +
                b"".join(mp_pack(k) + mp_pack(v) for k, v in o.items()))
    if isinstance(o, (list, tuple)):
        return b"\xdd" + struct.pack(">I", len(o)) + b"".join(mp_pack(x) for x in o)
    raise TypeError(f"msgpack: {type(o)}")


class MpReader:
    """Decodes msgpack values one at a time from a socket."""

    def __init__(self, sock):
        self.sock, self.buf = sock, b""

    def _take(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("serf RPC closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _u(self, fmt):
        size = struct.calcsize(fmt)
        return struct.unpack(fmt, self._take(size))[0]

    def _str(self, n):
        b = self._take(n)
        try:
            return b.decode()
        except UnicodeDecodeError:
            return b

    def value(self):
        t = self._take(1)[0]
        if t <= 0x7f:
            return t
        if t >= 0xe0:
            return t - 0x100
        if 0x80 <= t <= 0x8f:
            return self._map(t & 0x0f)
        if 0x90 <= t <= 0x9f:
            return [self.value() for _ in range(t & 0x0f)]
        if 0xa0 <= t <= 0xbf:
            return self._str(t & 0x1f)
        simple = {0xc0: None, 0xc2: False, 0xc3: True}
        if t in simple:
            return simple[t]
        if t in (0xc4, 0xc5, 0xc6):
            return self._take(self._u({0xc4: ">B", 0xc5: ">H", 0xc6: ">I"}[t]))
        if t in (0xd9, 0xda, 0xdb):
            return self._str(self._u({0xd9: ">B", 0xda: ">H", 0xdb: ">I"}[t]))
        ints = {0xcc: ">B", 0xcd: ">H", 0xce: ">I", 0xcf: ">Q", 0xd0: ">b", 0xd1: ">h",
                0xd2: ">i", 0xd3: ">q", 0xca: ">f", 0xcb: ">d"}
        if t in ints:
            return self._u(ints[t])
        if t in (0xdc, 0xdd):
            return [self.value() for _ in range(self._u(">H" if t == 0xdc else ">I"))]
        if t in (0xde, 0xdf):
            return self._map(self._u(">H" if t == 0xde else ">I"))
        if 0xd4 <= t <= 0xd8:                      # fixext: type byte + 1..16 bytes
            return self._take(1 + (1 << (t - 0xd4)))
        if t in (0xc7, 0xc8, 0xc9):
            n = self._u({0xc7: ">B", 0xc8: ">H", 0xc9: ">I"}[t])
            return self._take(1 + n)
        raise ValueError(f"msgpack: type byte {t:#x}")

    def _map(self, n):
        out = {}
        for _ in range(n):
            k = self.value()
            out[k] = self.value()
        return out


class SerfRPC:
    """serf's agent RPC (msgpack over TCP): handshake, members, event."""

    def __init__(self, host, port, timeout=5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.reader = MpReader(self.sock)
        self.seq = 0
        self.call("handshake", {"Version": 1})

    def call(self, command, body=None, has_reply_body=False):
        self.seq += 1
        msg = mp_pack({"Command": command, "Seq": self.seq})
        if body is not None:
            msg += mp_pack(body)
        self.sock.sendall(msg)
        header = self.reader.value()
        if header.get("Seq") != self.seq:
            raise RuntimeError(f"serf RPC: answer to seq {header.get('Seq')}, wanted {self.seq}")
        if header.get("Error"):
            raise RuntimeError(f"serf RPC {command}: {header['Error']}")
        return self.reader.value() if has_reply_body else None

    def members(self):
        """{name: status}"""
        body = self.call("members", None, True)
        return {m["Name"]: m["Status"] for m in body.get("Members", [])}

    def event(self, name, payload):
        self.call("event", {"Name": name, "Payload": payload.encode(), "Coalesce": False})

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# ---- bytes on the wire: iptables counters on loopback ----

class Wire:
    """A chain of our own, jumped to from OUTPUT for loopback traffic, with
    one counting rule per (system subnet, source/destination, protocol).
    Every packet a node sends on loopback goes through OUTPUT once; a packet
    matched as source is not counted again as destination (RETURN)."""

    def __init__(self, chain, nets):
        self.chain, self.nets, self.ok, self.why = chain, nets, False, ""
        if not shutil.which("iptables"):
            self.why = "no iptables (Debian package `iptables`)"
            return
        if os.geteuid() != 0:
            self.why = "not root"
            return
        try:
            self.remove()
            self._ipt("-N", chain)
            for net in nets.values():
                for proto in ("udp", "tcp"):
                    self._ipt("-A", chain, "-s", f"{net}.0/24", "-p", proto, "-j", "RETURN")
                    self._ipt("-A", chain, "-d", f"{net}.0/24", "-p", proto, "-j", "RETURN")
            self._ipt("-I", "OUTPUT", "-o", "lo", "-j", chain)
            self.ok = True
        except (subprocess.CalledProcessError, OSError) as e:
            self.why = f"iptables failed: {e}"
            self.remove()

    @staticmethod
    def _ipt(*args, check=True):
        return subprocess.run(["iptables", "-w", "5", *args], check=check, capture_output=True,
                              text=True, timeout=20)

    def read(self):
        """{system: {"udp": (packets, bytes), "tcp": (packets, bytes)}}, or None."""
        if not self.ok:
            return None
        out = {s: {"udp": [0, 0], "tcp": [0, 0]} for s in self.nets}
        text = self._ipt("-L", self.chain, "-v", "-n", "-x").stdout
        for line in text.splitlines():
            f = line.split()
            if len(f) < 9 or not f[0].isdigit():
                continue
            proto = {"17": "udp", "6": "tcp", "udp": "udp", "tcp": "tcp"}.get(f[3])
            for system, net in self.nets.items():
                if proto and (f[7].startswith(net + ".") or f[8].startswith(net + ".")):
                    out[system][proto][0] += int(f[0])
                    out[system][proto][1] += int(f[1])
        return out

    def remove(self):
        """Deletes the jump and the chain if they exist (ours by name only)."""
        if not shutil.which("iptables"):
            return
        for _ in range(10):
            if self._ipt("-D", "OUTPUT", "-o", "lo", "-j", self.chain, check=False).returncode:
                break
        self._ipt("-F", self.chain, check=False)
        self._ipt("-X", self.chain, check=False)
        self.ok = False


# ---- our nodes: clu_bench_node processes ----

def node_binary():
    path = os.environ.get("CLU_BENCH_NODE") or str(bl.REPO / "build" / "bench" / "clu_bench_node")
    if not os.access(path, os.X_OK):
        raise SystemExit(f"no clu_bench_node at {path}: run `make build/bench/clu_bench_node`")
    return os.path.abspath(path)


class OurNode:
    """One clu_bench_node: commands on stdin, event lines read by a thread."""

    def __init__(self, binary, workdir, name, addr, seed=None, options=(), expect=None):
        self.name, self.addr = name, addr
        cmd = [binary, "--name", name, "--bind", f"{addr[0]}:{addr[1]}", "--key", KEY_B64]
        if seed:
            cmd += ["--seed", f"{seed[0]}:{seed[1]}"]
        if expect:
            cmd += ["--expect", str(expect)]
        for opt in options:
            k, v = opt.split("=", 1)
            cmd += [f"--{k}", v]
        self.log_path = Path(workdir) / f"{name}.log"
        self.err = open(Path(workdir) / f"{name}.stderr", "wb")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.err, text=True, bufsize=1)
        self.err.close()
        self.proc.extra_pids, self.proc.name_hint = [], "clu_bench_node"
        bl._started.append(self.proc)
        self.lines = []
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        with open(self.log_path, "w") as f:
            for line in self.proc.stdout:
                f.write(line)
                with self.cond:
                    self.lines.append(line.split())
                    self.cond.notify_all()
        with self.cond:
            self.lines.append(["eof"])
            self.cond.notify_all()

    def send(self, cmd):
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()

    def find(self, pred, start=0):
        with self.cond:
            for f in self.lines[start:]:
                if pred(f):
                    return f
        return None

    def wait(self, pred, timeout, what, start=0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for f in self.lines[start:]:
                    if pred(f):
                        return f
                    if f[0] == "eof":
                        raise RuntimeError(f"{self.name} exited while waiting for {what}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"{self.name}: timed out after {timeout} s waiting for {what}")
                self.cond.wait(left)

    def mark(self):
        with self.cond:
            return len(self.lines)

    def stats(self, timeout=10):
        at = self.mark()
        self.send("stats")
        f = self.wait(lambda f: f[0] == "stats", timeout, "stats", at)
        d = {f[i]: int(f[i + 1]) for i in range(1, len(f) - 1, 2)}
        d["t"] = float(f[-1])
        return d

    def hit(self, sig):
        """kill -9 (waited for) or SIGSTOP; returns the time just before."""
        t = time.time()
        os.kill(self.proc.pid, sig)
        if sig == signal.SIGKILL:
            self.proc.wait(10)
        else:
            self.frozen = True
        return t

    def stop(self):
        if getattr(self, "frozen", False) and self.proc.poll() is None:
            self.proc.kill()   # stopped: it would not read "quit" nor handle SIGTERM
        if self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.stdin.close()
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired, ValueError):
                pass
        bl.stop(self.proc, 5)


def start_gap(i):
    """Nodes start at random times, 0-1 s apart, so that their timers (probe
    every 1 s, gossip every 0.2 s) run at unrelated phases, as in a real pool;
    started back to back, a pool's gossip rounds are nearly simultaneous."""
    if i:
        time.sleep(random.uniform(0.0, 1.0))


class OurPool:
    """N clu_bench_node processes on NET.1.. NET.N, all seeded by the first."""

    def __init__(self, binary, workdir, net, n, options):
        self.nodes = []
        seed = None
        for i in range(n):
            start_gap(i)
            addr = (f"{net}.{i + 1}", free_port(f"{net}.{i + 1}"))
            node = OurNode(binary, workdir, f"n{i + 1}", addr, seed, options)
            node.wait(lambda f: f[0] == "ready", 10, "ready")
            self.nodes.append(node)
            seed = seed or addr
        self.last_start = time.monotonic()

    def converged(self, timeout):
        n = len(self.nodes)
        bl.wait_until(lambda: all(nd.stats()["alive"] == n for nd in self.nodes), timeout,
                      f"{n} nodes to see each other", interval=0.1)

    def suspicions(self, start_marks):
        """Members that went suspect (or worse) since the marks: (seen by, member, state)."""
        out = []
        for nd, at in zip(self.nodes, start_marks):
            with nd.cond:
                for f in nd.lines[at:]:
                    if f[0] == "member" and f[2] in ("suspect", "dead"):
                        out.append((nd.name, f[1], f[2]))
        return out

    def marks(self):
        return [nd.mark() for nd in self.nodes]

    def app_bytes(self):
        """Sum over live nodes of the node's own UDP counters."""
        tot = {"packets_out": 0, "bytes_out": 0}
        for nd in self.nodes:
            if nd.proc.poll() is None:
                s = nd.stats()
                tot["packets_out"] += s["packets_out"]
                tot["bytes_out"] += s["bytes_out"]
        return tot

    def update(self, origin, tag, timeout):
        """A store write on nodes[origin]; (seconds from its own apply to the last node's, [each])."""
        key = f"bench/{tag}"
        marks = self.marks()
        self.nodes[origin].send(f"put {key} x")
        times = []
        for nd, at in zip(self.nodes, marks):
            f = nd.wait(lambda f: f[0] == "record" and f[1] == key, timeout, f"record {key}", at)
            times.append(float(f[2]))
        t0 = times[origin]
        return max(times) - t0, [t - t0 for t in times]

    def fail(self, victim, sig, timeout, gone=()):
        """Signals nodes[victim]; seconds until each other live node holds it dead."""
        marks = self.marks()
        t_kill = self.nodes[victim].hit(sig)
        name = self.nodes[victim].name
        dead, suspect = [], []
        for i, (nd, at) in enumerate(zip(self.nodes, marks)):
            if i == victim or i in gone:
                continue
            f = nd.wait(lambda f: f[0] == "member" and f[1] == name and f[2] in ("dead", "left"),
                        max(1.0, t_kill + timeout - time.time()), f"{name} dead", at)
            dead.append(float(f[4]) - t_kill)
            s = nd.find(lambda f: f[0] == "member" and f[1] == name and f[2] == "suspect", at)
            if s:
                suspect.append(float(s[4]) - t_kill)
        return {"all": max(dead), "first": min(dead), "each": dead,
                "first_suspect": min(suspect) if suspect else None}

    def stop(self):
        for nd in self.nodes:
            nd.stop()


# ---- serf agents ----

# serf user-event handler: when this agent got the event (bash's clock, no
# fork for it), and its payload, appended to a file per agent.
HANDLER = """#!/bin/bash
t=$EPOCHREALTIME
read -r p
echo "$t $p" >> "@DIR@/events-$SERF_SELF_NAME.log"
"""


class SerfAgent:
    def __init__(self, workdir, name, addr, seed=None):
        self.name, self.addr, self.dir = name, addr, Path(workdir)
        self.rpc_port = free_port(RPC_HOST)
        handler = self.dir / "handler.sh"
        if not handler.exists():
            handler.write_text(HANDLER.replace("@DIR@", str(self.dir)))
            handler.chmod(0o755)
        self.events = self.dir / f"events-{name}.log"
        cmd = ["serf", "agent", f"-node={name}", f"-bind={addr[0]}:{addr[1]}",
               f"-rpc-addr={RPC_HOST}:{self.rpc_port}", f"-encrypt={KEY_B64}",
               "-profile=lan", "-log-level=info", f"-event-handler=user:bench={handler}"]
        if seed:
            cmd.append(f"-join={seed[0]}:{seed[1]}")
        self.log_path = self.dir / f"{name}.log"
        self.proc = bl.spawn(cmd, log_path=self.log_path, cwd=self.dir)
        self.rpc = None
        try:
            bl.wait_until(lambda: self.proc.poll() is not None or bl.listening(RPC_HOST, self.rpc_port),
                          20, f"serf {name} RPC")
            if self.proc.poll() is not None:
                raise RuntimeError(f"serf {name} exited:\n{self.log_path.read_text()[-1500:]}")
            self.rpc = SerfRPC(RPC_HOST, self.rpc_port)
        except BaseException:
            bl.stop(self.proc, 5)
            raise

    def suspect_lines(self):
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return len(re.findall(r"memberlist: (Suspect|Marking .* as failed)", text))

    def arrivals(self):
        """{payload: time}"""
        out = {}
        if self.events.exists():
            for line in self.events.read_text().splitlines():
                f = line.split()
                if len(f) == 2:
                    out.setdefault(f[1], float(f[0]))
        return out

    def hit(self, sig):
        t = time.time()
        os.kill(self.proc.pid, sig)
        if sig == signal.SIGKILL:
            self.proc.wait(10)
        else:
            self.frozen = True
        return t

    def stop(self):
        if self.rpc:
            self.rpc.close()
        if getattr(self, "frozen", False) and self.proc.poll() is None:
            self.proc.kill()
        bl.stop(self.proc, 5)


class SerfPool:
    def __init__(self, workdir, net, n):
        self.nodes = []
        seed = None
        for i in range(n):
            start_gap(i)
            addr = (f"{net}.{i + 1}", free_port(f"{net}.{i + 1}"))
            self.nodes.append(SerfAgent(workdir, f"s{i + 1}", addr, seed))
            seed = seed or addr
        self.last_start = time.monotonic()

    def converged(self, timeout):
        n = len(self.nodes)

        def ok():
            for a in self.nodes:
                ms = a.rpc.members()
                if sum(1 for s in ms.values() if s == "alive") != n:
                    return False
            return True
        bl.wait_until(ok, timeout, f"{n} serf agents to see each other", interval=0.1)

    def marks(self):
        return [a.suspect_lines() for a in self.nodes]

    def suspicions(self, start_marks):
        return [(a.name, "?", "suspect") for a, m in zip(self.nodes, start_marks)
                for _ in range(a.suspect_lines() - m)]

    def update(self, origin, tag, timeout):
        payload = tag
        self.nodes[origin].rpc.event("bench", payload)
        got = bl.wait_until(lambda: (lambda t: t if all(x is not None for x in t) else None)(
            [a.arrivals().get(payload) for a in self.nodes]), timeout, f"serf event {payload}")
        t0 = got[origin]
        return max(got) - t0, [t - t0 for t in got]

    def fail(self, victim, sig, timeout, gone=()):
        name = self.nodes[victim].name
        t_kill = self.nodes[victim].hit(sig)
        others = [a for i, a in enumerate(self.nodes) if i != victim and i not in gone]
        seen = {}
        deadline = time.monotonic() + timeout
        # Poll every survivor; the time is that of the poll that first saw "failed".
        while len(seen) < len(others):
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {timeout} s waiting for {name} to fail "
                                   f"on every agent ({len(seen)} of {len(others)})")
            for a in others:
                if a.name in seen:
                    continue
                t = time.time()
                if a.rpc.members().get(name) in ("failed", "left"):
                    seen[a.name] = t - t_kill
            time.sleep(SERF_POLL)
        dead = list(seen.values())
        return {"all": max(dead), "first": min(dead), "each": dead, "first_suspect": None}

    def app_bytes(self):
        return None

    def stop(self):
        for a in self.nodes:
            a.stop()


# ---- one pool, one system ----

def cpu_seconds(pids):
    return bl.cpu_ticks(pids) / bl.CLK_TCK


def run_pool(system, n, rep, args, wire, workdir):
    d = workdir / f"r{rep + 1}-n{n}-{system}"
    d.mkdir(parents=True, exist_ok=True)
    res = {"system": system, "n": n, "repeat": rep + 1, "dir": str(d)}
    t_start = time.monotonic()
    if system == "serf":
        pool = SerfPool(d, NETS[system], n)
    else:
        opts = args.fast if system == "ours-fast" else []
        pool = OurPool(args.binary, d, NETS[system], n, opts)
    try:
        pool.converged(60)
        res["converge_s"] = time.monotonic() - t_start
        time.sleep(args.settle)        # the join news dies down: a measurement, not readiness

        # 1. dissemination
        w0, t0 = wire.read(), time.monotonic()
        res["update_s"], res["update_each"] = [], []
        for i in range(args.updates):
            total, each = pool.update(i % n, f"r{rep + 1}n{n}u{i}-{random.randrange(1 << 30)}", 15)
            res["update_s"].append(total)
            res["update_each"].append(each)
            time.sleep(0.5)
        t1 = time.monotonic()
        w1 = wire.read()
        res["update_median_s"] = median(res["update_s"])

        # 2. at rest, from rest_after s after the last start (both systems
        # push-pull every 30 s, serf's first periodic one 30-60 s after its
        # start): a window of one push-pull period holds each node's once.
        time.sleep(max(0.0, pool.last_start + args.rest_after - time.monotonic()))
        pids = [x.proc.pid for x in pool.nodes]
        marks = pool.marks()
        app0, r0, c0, q0 = pool.app_bytes(), wire.read(), cpu_seconds(pids), time.monotonic()
        time.sleep(args.quiet)
        q1 = time.monotonic()
        r1, c1, app1 = wire.read(), cpu_seconds(pids), pool.app_bytes()
        secs = q1 - q0
        res["rest_s"] = secs
        res["rest_cpu_pct_per_node"] = 100 * (c1 - c0) / secs / n
        if r0 and r1:
            for proto in ("udp", "tcp"):
                pk = r1[system][proto][0] - r0[system][proto][0]
                by = r1[system][proto][1] - r0[system][proto][1]
                res[f"rest_{proto}_Bps_per_node"] = by / secs / n
                res[f"rest_{proto}_pps_per_node"] = pk / secs / n
            res["rest_Bps_per_node"] = res["rest_udp_Bps_per_node"] + res["rest_tcp_Bps_per_node"]
        if app0 and app1:
            res["rest_app_udp_Bps_per_node"] = (app1["bytes_out"] - app0["bytes_out"]) / secs / n
            res["rest_app_udp_pps_per_node"] = (app1["packets_out"] - app0["packets_out"]) / secs / n
        res["rest_suspicions"] = pool.suspicions(marks)
        if w0 and w1 and "rest_udp_Bps_per_node" in res:
            extra = (w1[system]["udp"][1] - w0[system]["udp"][1]) / n - \
                res["rest_udp_Bps_per_node"] * (t1 - t0)
            res["update_udp_bytes_per_node"] = extra / args.updates

        # 3. failure detection: kill -9 of the last node (a crash: its
        # sockets close), then SIGSTOP of the one before (a hung or cut-off
        # node: nothing closes, nothing refuses), with N-1 live members.
        res["failure"] = pool.fail(n - 1, signal.SIGKILL, args.fail_timeout)
        res["fail_all_s"] = res["failure"]["all"]
        res["fail_first_s"] = res["failure"]["first"]
        res["fail_first_suspect_s"] = res["failure"]["first_suspect"]
        if n >= 4:
            res["stop_failure"] = pool.fail(n - 2, signal.SIGSTOP, args.fail_timeout, gone=(n - 1,))
            res["stop_all_s"] = res["stop_failure"]["all"]
            res["stop_first_s"] = res["stop_failure"]["first"]
            res["stop_first_suspect_s"] = res["stop_failure"]["first_suspect"]
    except Exception as e:
        res["error"] = f"{type(e).__name__}: {e}"
        log(f"  {system} N={n}: {res['error']}")
    finally:
        pool.stop()
    return res


def run_sync(rep, args, workdir):
    """Ours: a writer with --records records, then a fresh node joins it."""
    d = workdir / f"r{rep + 1}-sync"
    d.mkdir(parents=True, exist_ok=True)
    net = NETS["sync"]
    res = {"repeat": rep + 1, "records": args.records}
    a = b = None
    try:
        a_addr = (f"{net}.1", free_port(f"{net}.1"))
        a = OurNode(args.binary, d, "writer", a_addr)
        a.wait(lambda f: f[0] == "ready", 10, "ready")
        before = a.stats()
        at = a.mark()
        a.send(f"fill {args.records} 20")
        f = a.wait(lambda f: f[0] == "filled", args.fill_timeout, "fill", at)
        if f[2] != "0":
            raise RuntimeError(f"fill failed: {' '.join(f)}")
        res["fill_s"] = float(f[3])
        after = a.stats()
        res["writer_heap_per_record"] = (after["heap_bytes"] - before["heap_bytes"]) / args.records
        res["writer_rss_per_record"] = (after["rss_kb"] - before["rss_kb"]) * 1024 / args.records
        cpu_a0 = cpu_seconds([a.proc.pid])

        b_addr = (f"{net}.2", free_port(f"{net}.2"))
        b = OurNode(args.binary, d, "fresh", b_addr, a_addr, expect=args.records)
        # "ready" is printed before the node's loop first runs: nothing has arrived yet.
        ready = b.wait(lambda f: f[0] == "ready", 10, "ready")
        s = b.wait(lambda f: f[0] == "synced", args.sync_timeout, "synced")
        res["sync_s"] = float(s[2]) - float(ready[2])
        # The exchange ends with the last batch; give the stream a moment to be freed.
        time.sleep(1.0)
        st = b.stats()
        res["fresh_stats"] = st
        res["writer_cpu_during_sync_s"] = cpu_seconds([a.proc.pid]) - cpu_a0

        # The baseline: an empty node of the same binary, alone.
        c = OurNode(args.binary, d, "empty", (f"{net}.3", free_port(f"{net}.3")))
        try:
            c.wait(lambda f: f[0] == "ready", 10, "ready")
            empty = c.stats()
        finally:
            c.stop()
        res["empty_stats"] = empty
        res["heap_per_record"] = (st["heap_bytes"] - empty["heap_bytes"]) / args.records
        res["rss_per_record"] = (st["rss_kb"] - empty["rss_kb"]) * 1024 / args.records
    except Exception as e:
        res["error"] = f"{type(e).__name__}: {e}"
        log(f"  sync: {res['error']}")
    finally:
        for x in (b, a):
            if x:
                x.stop()
    return res


# ---- summary ----

def fmt(x, nd=2):
    if x is None:
        return "n/a"
    return f"{x:.{nd}f}"


def cell(runs, key, nd=2, scale=1.0):
    vals = [r.get(key) for r in runs]
    vals = [v * scale if v is not None else None for v in vals]
    m = median(vals)
    return f"**{fmt(m, nd)}** ({', '.join(fmt(v, nd) for v in vals)})"


def ratio_cell(ours, serf, key):
    """Median of the per-repeat ratios ours/serf."""
    rs = []
    for o, s in zip(ours, serf):
        a, b = o.get(key), s.get(key)
        rs.append(a / b if a is not None and b not in (None, 0) else None)
    return f"**{fmt(median(rs), 2)}** ({', '.join(fmt(r, 2) for r in rs)})"


def summary(result):
    runs, syncs, args = result["runs"], result["sync"], result["args"]
    systems, sizes = args["systems"], args["sizes"]
    m = result["machine"]
    lines = [f"## Gossip cluster against serf ({m['date']}, {m['nproc']} CPUs, {m['model']})", ""]
    lines.append(f"serf {result['serf_version']}; ours: clu_bench_node ({result['node_sha']}); "
                 f"ours-fast: {','.join(args['fast'])}; {args['repeats']} repeats; "
                 f"at rest {args['quiet']} s from {args['rest_after']} s after the last start; "
                 f"{args['updates']} updates per pool; bytes by iptables: "
                 f"{'yes' if result['wire'] else 'no (' + result['wire_why'] + ')'}.")
    lines.append("")

    def by(system, n):
        return sorted([r for r in runs if r["system"] == system and r["n"] == n],
                      key=lambda r: r["repeat"])

    figures = [
        ("kill -9: failure known to every other member (s)", "fail_all_s", 2, 1.0),
        ("kill -9: failure known to the first member (s)", "fail_first_s", 2, 1.0),
        ("kill -9: first suspicion (s, ours only)", "fail_first_suspect_s", 2, 1.0),
        ("SIGSTOP, N-1 live: failure known to every other member (s)", "stop_all_s", 2, 1.0),
        ("SIGSTOP, N-1 live: first suspicion (s, ours only)", "stop_first_suspect_s", 2, 1.0),
        ("update reaching every member, median of the updates (ms)", "update_median_s", 1, 1000.0),
        ("bytes sent per node per second at rest, UDP+TCP (iptables)", "rest_Bps_per_node", 0, 1.0),
        ("  of which UDP", "rest_udp_Bps_per_node", 0, 1.0),
        ("  of which TCP (push-pull)", "rest_tcp_Bps_per_node", 0, 1.0),
        ("packets per node per second at rest, UDP", "rest_udp_pps_per_node", 2, 1.0),
        ("UDP bytes per node per update, over the at-rest rate", "update_udp_bytes_per_node", 0, 1.0),
        ("CPU per node at rest (%)", "rest_cpu_pct_per_node", 2, 1.0),
    ]
    for n in sizes:
        lines.append(f"### N = {n}")
        lines.append("")
        lines.append("| figure | " + " | ".join(systems) + " | ours / serf" +
                     (" | ours-fast / serf" if "ours-fast" in systems and "serf" in systems else "") + " |")
        lines.append("|---|" + "---|" * len(systems) + "---|" +
                     ("---|" if "ours-fast" in systems and "serf" in systems else ""))
        for label, key, nd, scale in figures:
            row = [cell(by(s, n), key, nd, scale) for s in systems]
            if "ours" in systems and "serf" in systems:
                row.append(ratio_cell(by("ours", n), by("serf", n), key))
            else:
                row.append("")
            if "ours-fast" in systems and "serf" in systems:
                row.append(ratio_cell(by("ours-fast", n), by("serf", n), key))
            lines.append(f"| {label} | " + " | ".join(row) + " |")
        row = [", ".join(str(len(r.get("rest_suspicions", []))) for r in by(s, n))
               for s in systems]
        row.append("")
        if "ours-fast" in systems and "serf" in systems:
            row.append("")
        lines.append("| suspicions at rest, per repeat (false: nobody was down) | " +
                     " | ".join(row) + " |")
        errs = [f"{r['system']} repeat {r['repeat']}: {r['error']}" for s in systems
                for r in by(s, n) if r.get("error")]
        lines.append("")
        for e in errs:
            lines.append(f"- error: {e}")
        if errs:
            lines.append("")
    if syncs:
        lines.append(f"### Ours: {args['records']} records to a fresh node (push-pull join)")
        lines.append("")
        lines.append("| figure | median (runs) | goal |")
        lines.append("|---|---|---|")
        lines.append(f"| time from the fresh node's start to all records held (s) | "
                     f"{cell(syncs, 'sync_s', 3)} | < 2 s |")
        lines.append(f"| malloc in-use bytes per record, fresh node (vs an empty node) | "
                     f"{cell(syncs, 'heap_per_record', 0)} | < 512 |")
        lines.append(f"| RSS bytes per record, fresh node (vs an empty node) | "
                     f"{cell(syncs, 'rss_per_record', 0)} | < 512 |")
        lines.append(f"| malloc in-use bytes per record, writer (store + gossip queue) | "
                     f"{cell(syncs, 'writer_heap_per_record', 0)} | |")
        lines.append(f"| writer: time to write the records, clu_node_put in a loop (s) | "
                     f"{cell(syncs, 'fill_s', 2)} | |")
        lines.append(f"| writer CPU from the fresh node's start to the measurement (s) | "
                     f"{cell(syncs, 'writer_cpu_during_sync_s', 2)} | |")
        for r in syncs:
            if r.get("error"):
                lines.append(f"\n- error: sync repeat {r['repeat']}: {r['error']}")
        lines.append("")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", default="5,10,20")
    ap.add_argument("--systems", default="ours,ours-fast,serf")
    ap.add_argument("--quiet", type=float, default=30.0,
                    help="seconds at rest measured (30: one push-pull period)")
    ap.add_argument("--rest-after", type=float, default=62.0,
                    help="the rest window opens this long after the last node started")
    ap.add_argument("--settle", type=float, default=5.0,
                    help="seconds after convergence before the updates")
    ap.add_argument("--updates", type=int, default=5)
    ap.add_argument("--records", type=int, default=100000)
    ap.add_argument("--fast", default=DEFAULT_FAST,
                    help="ours-fast's clu_bench_node options, NAME=VALUE,...")
    ap.add_argument("--fail-timeout", type=float, default=60.0)
    ap.add_argument("--fill-timeout", type=float, default=300.0)
    ap.add_argument("--sync-timeout", type=float, default=60.0)
    ap.add_argument("--chain", default=f"EPCLU{os.getpid()}", help="iptables chain to create")
    ap.add_argument("--summary", help="print the summary again from a results.json, and stop")
    args = ap.parse_args()
    if args.summary:
        print(summary(json.loads(Path(args.summary).read_text())), end="")
        return
    args.sizes = [int(x) for x in args.sizes.split(",")]
    args.systems = args.systems.split(",")
    args.fast = [x for x in args.fast.split(",") if x]
    for s in args.systems:
        if s not in ("ours", "ours-fast", "serf"):
            raise SystemExit(f"unknown system {s}")
    if any(s.startswith("ours") for s in args.systems) or args.records:
        args.binary = node_binary()
    if "serf" in args.systems and not shutil.which("serf"):
        raise SystemExit("no serf: apt-get install serf")
    if args.out:
        workdir = Path(args.out)
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        workdir = Path(tempfile.mkdtemp(prefix="edgepool-bench-cluster-"))
    workdir = workdir.resolve()
    # A copy of the driver: a rebuild during the run must not split it between two binaries.
    if hasattr(args, "binary"):
        copy = workdir / "clu_bench_node"
        shutil.copy2(args.binary, copy)
        args.binary = str(copy)
    log(f"raw results: {workdir}")

    wire = Wire(args.chain, NETS)
    if not wire.ok:
        log(f"bytes on the wire not measured: {wire.why}")
    import atexit
    atexit.register(wire.remove)
    serf_version = "?"
    if shutil.which("serf"):
        serf_version = subprocess.run(["serf", "version"], capture_output=True,
                                      text=True).stdout.split("\n")[0].strip()
        deb = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "serf"], capture_output=True,
                             text=True).stdout.strip()
        if deb:
            serf_version += f" (Debian serf {deb})"
    sha = "?"
    if hasattr(args, "binary"):
        import hashlib
        sha = hashlib.sha256(Path(args.binary).read_bytes()).hexdigest()[:16]
    result = {"machine": bl_machine(), "serf_version": serf_version, "node_sha": sha,
              "wire": wire.ok, "wire_why": wire.why,
              "args": {k: v for k, v in vars(args).items() if k not in ("summary",)},
              "runs": [], "sync": []}
    started = time.monotonic()
    try:
        for rep in range(args.repeats):
            for n in args.sizes:
                order = args.systems[rep % len(args.systems):] + args.systems[:rep % len(args.systems)]
                for system in order:
                    log(f"repeat {rep + 1}/{args.repeats}, N={n}, {system}")
                    r = run_pool(system, n, rep, args, wire, workdir)
                    log(f"  converge {fmt(r.get('converge_s'))} s, update {fmt(r.get('update_median_s'), 3)} s, "
                        f"failure {fmt(r.get('fail_all_s'))} s, rest {fmt(r.get('rest_Bps_per_node'), 0)} B/s/node, "
                        f"suspicions at rest {len(r.get('rest_suspicions', []))}")
                    result["runs"].append(r)
                    (workdir / "results.json").write_text(json.dumps(result, indent=1))
            if args.records:
                log(f"repeat {rep + 1}/{args.repeats}: {args.records} records to a fresh node")
                s = run_sync(rep, args, workdir)
                log(f"  sync {fmt(s.get('sync_s'), 3)} s, {fmt(s.get('heap_per_record'), 0)} B/record heap, "
                    f"{fmt(s.get('rss_per_record'), 0)} B/record RSS, fill {fmt(s.get('fill_s'))} s")
                result["sync"].append(s)
                (workdir / "results.json").write_text(json.dumps(result, indent=1))
    finally:
        wire.remove()
        bl.stop_all()
    result["elapsed_s"] = time.monotonic() - started
    (workdir / "results.json").write_text(json.dumps(result, indent=1))
    text = summary(result)
    (workdir / "summary.md").write_text(text)
    print(text, end="", flush=True)
    log(f"raw results: {workdir}")


def bl_machine():
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {"nproc": os.cpu_count(), "model": model, "kernel": os.uname().release,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "loadavg": Path("/proc/loadavg").read_text().split()[0]}


if __name__ == "__main__":
    main()
