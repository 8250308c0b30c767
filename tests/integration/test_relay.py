"""Calls cross the federation through two edges, with sipp on both sides.

sipp (TCP) -> edge A internal -> mutual TLS -> edge B external -> sipp (TCP),
and back, for MESSAGE, INVITE/ACK/BYE, CANCEL and SUBSCRIBE/NOTIFY.
"""
from edgepool import Sipp, run_uac, wait_for

CALLS = 10


def relay(tmp_path, scenario, src, dst, calls=CALLS, rate=20):
    uas = Sipp(tmp_path, f"uas_{scenario}.xml", local=dst.peer, calls=calls).start()
    try:
        code, ok, failed = run_uac(tmp_path, f"uac_{scenario}.xml", local=src.peer,
                                   remote=src.internal, calls=calls, rate=rate,
                                   extra=src.keys(dst))
        uas_code, uas_ok, _ = uas.wait(30)
    finally:
        uas.stop()
    logs = "\n".join(o.edge.log()[-2000:] for o in (src, dst) if o.edge)
    assert (code, ok, failed) == (0, calls, 0), f"uac: exit {code}, {ok} ok, {failed} failed\n{logs}"
    assert (uas_code, uas_ok) == (0, calls), f"uas: exit {uas_code}, {uas_ok} ok"


def test_message_contoso_to_fabrikam(orgs, tmp_path):
    contoso, fabrikam = orgs
    before = contoso.edge.status()["requests_forwarded"]
    relay(tmp_path, "message", contoso, fabrikam)
    assert contoso.edge.status()["requests_forwarded"] - before == CALLS


def test_message_fabrikam_to_contoso(orgs, tmp_path):
    contoso, fabrikam = orgs
    relay(tmp_path, "message", fabrikam, contoso)


def test_invite_ack_bye(orgs, tmp_path):
    contoso, fabrikam = orgs
    relay(tmp_path, "invite", contoso, fabrikam)


def test_invite_ack_bye_fabrikam_to_contoso(orgs, tmp_path):
    contoso, fabrikam = orgs
    relay(tmp_path, "invite", fabrikam, contoso)


def test_cancel(orgs, tmp_path):
    contoso, fabrikam = orgs
    relay(tmp_path, "cancel", contoso, fabrikam)


def test_subscribe_notify(orgs, tmp_path):
    contoso, fabrikam = orgs
    relay(tmp_path, "subscribe", contoso, fabrikam)


def test_transactions_settle(orgs):
    """Nothing is left pending once the calls are over: INVITE transactions
    that ended in a 2xx linger for Timer L/M (32 s, RFC 6026), then go."""
    for org in orgs:
        wait_for(lambda: org.edge.status()["transactions"] == 0, 40,
                 f"{org.domain}'s transactions to settle")
