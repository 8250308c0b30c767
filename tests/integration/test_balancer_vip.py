"""Failover of the balancer pair and of the edges under a steady, bounded load,
in network namespaces with real keepalived (see vip_lab.py for the topology).

Each test runs the same load: a legacy partner (fabrikam, which knows contoso
only as the VIP and never resolves it) and a modern partner (litware, which
finds contoso's edges by DNS SRV through the balancers' DNS on the VIP) each
send 60 MESSAGEs at 20/s to contoso's users, retransmitting a MESSAGE that
gets no 200 as a SIP UA does. One fault is injected once the load is well
under way. Then: the VIP moved (or stayed) as it must, the dead edge left the
DNS answers and the proxy's choices, and every MESSAGE was delivered to
contoso's user exactly once (copies that reached the UAS again are
retransmissions it recognizes, RFC 3261 8.2.2.2: counted, not delivered).

Only 198.18.0.0/15 addresses, all made here; everything is removed at the end,
pass or fail. Needs root (network namespaces, keepalived).
"""
import time

import pytest

from edgepool import wait_for
from netlab import can_make_namespaces
from vip_lab import BALANCERS, EDGES, MessageLoad, VipLab

COUNT, RATE = 60, 20


@pytest.fixture(scope="module")
def lab(tmp_path_factory, pki):
    if not can_make_namespaces():
        pytest.skip("network namespaces need root (ip netns add is not permitted)")
    lab = VipLab(tmp_path_factory.mktemp("vip"), pki)
    codes, errors = {}, []
    try:
        lab.build()
        lab.start()
        yield lab
    finally:
        codes, errors = lab.stop()
        errors += [f"left behind: {x}" for x in lab.topo.leftovers()]
    bad = {n: c for n, c in codes.items() if c not in (0, None)}
    assert not bad, f"unclean exits: {bad}"
    assert not errors, errors


def restore(lab):
    """Everything running again, both balancers seeing three usable edges."""
    for e in lab.edges.values():
        if not e.running():
            e.start()
    for h in BALANCERS:
        if not lab.balancers[h].running():
            lab.balancers[h].start()
        if lab.keepalived[h].proc is None:
            lab.keepalived[h].start()
    wait_for(lambda: lab.vip_holder() in BALANCERS, 10, "one VIP holder")
    for h in BALANCERS:
        wait_for(lambda: lab.usable(h) == set(EDGES), 15, f"{h} sees three usable edges")
    wait_for(lambda: lab.dns_pool() == sorted(lab.addr(e) for e in EDGES), 10, "DNS: all edges")


def under_load(lab, fault):
    """Runs the load, calls fault() once a third of it is answered, returns the loads."""
    restore(lab)
    loads = [MessageLoad("legacy", (lab.addr("legacy"), 5060), "fabrikam.test", COUNT, RATE),
             MessageLoad("modern", (lab.addr("modern"), 5060), "litware.test", COUNT, RATE)]
    for load in loads:
        load.start()
    try:
        wait_for(lambda: all(len(load.results) >= COUNT // 3 for load in loads), 30,
                 "the load under way")
        fault()
    finally:
        for load in loads:
            load.join(COUNT / RATE + 60)
            load.stop_early = True
    return loads


def assert_all_delivered_once(lab, loads):
    delivered = lab.uas.delivered()
    for load in loads:
        summary = load.summary()
        assert summary["sent"] == COUNT, summary
        missing = [c for c, r in load.results.items() if r[0] != 200]
        assert not missing, f"{load.name}: no 200 for {missing[:5]} ({summary})"
        lost = [c for c in load.results if c not in delivered]
        assert not lost, f"{load.name}: 200 but never delivered: {lost[:5]}"
        # Each reached the user once; any further copy was a retransmission of a
        # MESSAGE already delivered, which the UAS answered without delivering.
        extra = sum(delivered[c] - 1 for c in load.results)
        assert extra <= summary["retransmitted"], (extra, summary)


def relaying_edges(lab, load):
    """The contoso edges that relayed the load's MESSAGEs, in order (from the top Via)."""
    by_address = {lab.addr(e): e for e in EDGES}
    with lab.uas._lock:
        requests = list(lab.uas.requests)
    edges = []
    for r in requests:
        if r.header("call-id") in load.results:
            host = r.header("via").split()[1].split(":")[0]
            if not edges or edges[-1] != by_address[host]:
                edges.append(by_address[host])
    return edges


def test_kill_balancerd_on_the_master(lab):
    """The VIP moves in under a second; the legacy partner comes back through it to
    the same edge (the affinity table lives in the cluster, shared by both balancers)."""
    moved = {}

    def fault():
        master = lab.vip_holder()
        other = next(h for h in BALANCERS if h != master)
        t0 = time.monotonic()
        lab.balancers[master].proc.kill()
        wait_for(lambda: lab.vip_holder() == other, 5, "the VIP on the other balancer")
        moved["s"] = time.monotonic() - t0
        moved["other"] = other
        lab.balancers[master].proc.wait()
        lab.balancers[master].stop()

    loads = under_load(lab, fault)
    assert moved["s"] < 1.0, moved
    assert_all_delivered_once(lab, loads)
    assert len(relaying_edges(lab, loads[0])) == 1, relaying_edges(lab, loads[0])
    assert lab.bal_status(moved["other"])["proxy"]["affinity_hits"] >= 1


def test_kill_keepalived_on_the_master(lab):
    state = {}

    def fault():
        master = lab.vip_holder()
        other = next(h for h in BALANCERS if h != master)
        state["master"], state["other"] = master, other
        lab.keepalived[master].kill9()
        # The killed one removes nothing: the VIP stays on its eth0 too, and the
        # new master's gratuitous ARPs take the traffic.
        wait_for(lambda: lab.topo.has_address(other, lab.vip), 5, "the VIP on the other balancer")

    loads = under_load(lab, fault)
    assert_all_delivered_once(lab, loads)
    # keepalived back on the old master: it gives up the stale VIP (nopreempt).
    lab.keepalived[state["master"]].start()
    wait_for(lambda: lab.vip_holder() == state["other"], 10, "one VIP holder again")


def test_kill_an_edge(lab):
    out = {}

    def fault():
        master = lab.vip_holder()
        per_edge = lab.bal_status(master)["proxy"]["per_edge"]
        victim = max(per_edge, key=per_edge.get)     # the legacy partner's edge
        out["victim"], out["master"] = victim, master
        t0 = time.monotonic()
        lab.edges[victim].proc.kill()
        wait_for(lambda: lab.addr(victim) not in lab.dns_pool(), 5, "the dead edge out of DNS")
        out["dns_s"] = time.monotonic() - t0
        lab.edges[victim].proc.wait()
        lab.edges[victim].stop()

    queries = lab.partners["modern"].status()["dns"]["queries"]
    loads = under_load(lab, fault)
    assert out["dns_s"] < 2.0, out
    # The modern partner asked the balancers' DNS again (TTL 1 s) and left the dead edge.
    assert lab.partners["modern"].status()["dns"]["queries"] > queries
    victim = out["victim"]
    for h in BALANCERS:
        assert victim not in lab.usable(h)
    assert lab.bal_status(out["master"])["proxy"]["per_edge"][victim] == 0
    assert_all_delivered_once(lab, loads)


def test_stop_and_start_an_edge(lab):
    victim = "edge2"

    def fault():
        lab.edges[victim].stop()
        wait_for(lambda: lab.addr(victim) not in lab.dns_pool(), 5, "the stopped edge out of DNS")
        lab.edges[victim].start()

    loads = under_load(lab, fault)
    wait_for(lambda: lab.addr(victim) in lab.dns_pool(), 10, "the edge back in DNS")
    for h in BALANCERS:
        wait_for(lambda: victim in lab.usable(h), 10, f"{victim} usable on {h}")
    assert_all_delivered_once(lab, loads)
