"""POST /v1/notify/{channel}: a remote channel's signed notifications.

- paysim's own notifications finish a payment and a refund whose answers
  and queries never come back (the only way left to learn the outcome),
  exactly once at paysim, with the ledger balanced; paysim records them
  delivered (payd answered `success`);
- forged (wrong secret), unsigned, malformed and stale notifications are
  refused 401 and change nothing;
- the same signed message twice is a replay: refused, nothing changes; the
  channel's resend (a new timestamp) is answered success again;
- a notification for a number payd never sent is 404, one whose amount
  differs is 409, and neither changes anything;
- a notification and the worker converge: the payment succeeds once
  whichever comes first;
- only http channels take notifications.
"""
import json
import time

import harness
from harness import PaydTestCase, wait_until
from paysim import SECRET, Paysim, sign
from test_refunds import ledger_check, refund, wait_refund_final

ENV = {"PAYD_BREAKER_MIN_CALLS": "1000000", "PAYD_WORKER_RETRY_BASE_MS": "50",
       "PAYD_WORKER_RETRY_MAX_MS": "300"}


class NotifyTest(PaydTestCase):
    shared_server = False

    def start_pair(self, notify=True):
        """paysim, and payd with channel psp on it (paysim told to notify
        payd when notify)."""
        port = harness.free_port()
        url = "http://127.0.0.1:%d/v1/notify/psp" % port
        self.paysim = Paysim(notify_delays="0.2,0.5,1,1,1")
        self.addCleanup(self.paysim.cleanup)
        self.paysim.start()
        config = ("[channel.psp]\ntype = http\nurl = http://127.0.0.1:%d\nsecret = %s\n"
                  "timeout_ms = 400\n" % (self.paysim.port, SECRET))
        if notify:
            config += "notify_url = %s\n" % url
        s = self.start_server(config=config, env=ENV, fast=False, start=False)
        s.start(port=port)
        return s

    def pay(self, s, amount=1000):
        order = s.create_order(amount=amount)
        r = s.pay(order["id"], "ok", channel="psp")
        self.assertEqual(r.status, 202, r)
        return r.body

    def payment(self, s, pid):
        return s.request("GET", "/v1/payments/" + pid).body

    def notice(self, payment, trade_no="pt_test", amount=None, **extra):
        body = {"notify_id": "pn_%d" % time.monotonic_ns(), "event": "charge.succeeded",
                "out_trade_no": payment["serial_no"], "trade_no": trade_no,
                "amount": payment["amount"] if amount is None else amount,
                "currency": payment["currency"], "status": "succeeded",
                "time": "2026-11-29T00:00:00.000Z"}
        body.update(extra)
        return json.dumps(body, separators=(",", ":")).encode()

    def send(self, s, raw, ts=None, secret=SECRET, channel="psp", headers=None):
        ts = int(time.time()) if ts is None else ts
        h = {"Paysim-Timestamp": str(ts), "Paysim-Signature": sign(secret, ts, raw),
             "Content-Type": "application/json"}
        if headers is not None:
            h = headers
        return harness.http_request(s.port, "POST", "/v1/notify/" + channel, raw, h)

    def finished_by_notice(self, s, key, value):
        """payd logged that a notification finished this payment or refund."""
        for line in s.stderr_text().splitlines():
            if line.startswith("{"):
                e = json.loads(line)
                if e.get(key) == value and e.get("via") == "notification":
                    return True
        return False

    def hung_payment(self, s):
        """A payment charged at paysim whose answer and queries never come."""
        self.paysim.set_faults({"scope": ["charge", "query"], "hang_rate": 1})
        p = self.pay(s)
        wait_until(lambda: self.paysim.charges_of(p["serial_no"]), what="the charge")
        return p

    def test_paysim_notification_finishes_what_no_answer_could(self):
        s = self.start_pair()
        p = self.hung_payment(s)
        done = s.wait_payment_final(p["id"])
        self.assertEqual(done["status"], "succeeded", done)
        charges = self.paysim.charges_of(p["serial_no"])
        self.assertEqual(len(charges), 1, charges)
        self.assertEqual(done["channel_txn_id"], charges[0]["trade_no"])
        self.assertEqual(s.get_order(p["order_id"]).body["status"], "paid")
        self.assertTrue(self.finished_by_notice(s, "payment_id", p["id"]))

        # A refund whose every answer is lost: only the notification tells.
        self.paysim.set_faults({"scope": ["refund"], "lost_answer_rate": 1})
        rf = self.assertStatus(refund(s, p["id"], 400), 202)
        done_rf = wait_refund_final(s, rf["id"])
        self.assertEqual(done_rf["status"], "succeeded", done_rf)
        rows = [x for x in self.paysim.journal()["refunds"]
                if x["out_refund_no"] == rf["refund_no"]]
        self.assertEqual(len(rows), 1, rows)
        self.assertEqual(done_rf["channel_refund_id"], rows[0]["refund_id"])
        self.assertTrue(self.finished_by_notice(s, "refund_id", rf["id"]))
        ledger_check(self, s)

        def delivered():
            notes = self.paysim.notifications()["notifications"]
            mine = [n for n in notes if n.get("out_trade_no") == p["serial_no"]]
            return len(mine) == 2 and all(n["state"] == "delivered" for n in mine) and mine
        wait_until(delivered, what="paysim to record both notifications delivered")

    def test_forged_stale_malformed_change_nothing(self):
        s = self.start_pair(notify=False)
        p = self.hung_payment(s)
        raw = self.notice(p)
        cases = [
            (self.send(s, raw, secret="wrong"), "signature_invalid"),
            (self.send(s, raw, ts=int(time.time()) - 301), "timestamp_stale"),
            (self.send(s, raw, ts=int(time.time()) + 301), "timestamp_stale"),
            (self.send(s, raw, headers={"Content-Type": "application/json"}),
             "signature_missing"),
            (self.send(s, raw, headers={"Paysim-Timestamp": str(int(time.time())),
                                        "Paysim-Signature": "zz"}), "signature_invalid"),
        ]
        for r, code in cases:
            self.assertError(r, 401, "authentication_error", code)
        # Signed, but not a notification of a success.
        for bad, param in [(self.notice(p, status="closed"), "status"),
                           (self.notice(p, event="charge.refunded"), "event"),
                           (self.notice(p, amount="1000"), "amount"),
                           (b"[1,2]", None)]:
            self.assertError(self.send(s, bad), 400, "invalid_request_error",
                             "notification_invalid", param)
        # Signed and well-formed, but not ours or not matching.
        other = dict(p, serial_no="99999999999999999999999")
        self.assertError(self.send(s, self.notice(other)), 404, "not_found",
                         "resource_missing", "out_trade_no")
        self.assertError(self.send(s, self.notice(p, amount=999)), 409, "conflict",
                         "notification_mismatch")
        time.sleep(0.3)
        self.assertEqual(self.payment(s, p["id"])["status"], "processing")
        # Nothing recorded, no money moved.
        self.assertEqual(s.db_scalar("SELECT count(*) FROM channel_notifications"), 0)
        self.assertEqual(s.db_scalar("SELECT count(*) FROM ledger_entries WHERE transfer_id = ?",
                                     (p["id"],)), 0)

    def test_replay_refused_resend_accepted(self):
        s = self.start_pair(notify=False)
        p = self.hung_payment(s)
        raw = self.notice(p, trade_no="pt_first")
        ts = int(time.time())
        first = self.send(s, raw, ts=ts)
        self.assertEqual((first.status, first.raw.strip()), (200, b"success"), first)
        self.assertEqual(self.payment(s, p["id"])["status"], "succeeded")
        replay = self.send(s, raw, ts=ts)
        self.assertError(replay, 409, "conflict", "notification_replayed")
        # The channel's resend of the same event: a new timestamp, success again.
        resend = self.send(s, raw, ts=ts - 1)
        self.assertEqual((resend.status, resend.raw.strip()), (200, b"success"), resend)
        done = self.payment(s, p["id"])
        self.assertEqual((done["status"], done["channel_txn_id"]), ("succeeded", "pt_first"))
        # One ledger transfer for the payment, however many notices.
        self.assertEqual(s.db_scalar("SELECT count(*) FROM ledger_entries WHERE transfer_id = ?",
                                     (p["id"],)), 2)
        ledger_check(self, s)

    def test_notification_and_worker_converge(self):
        s = self.start_pair(notify=True)
        # No fault: the worker's answer and paysim's notification race.
        pays = [self.pay(s) for _ in range(20)]
        for p in pays:
            self.assertEqual(s.wait_payment_final(p["id"])["status"], "succeeded")
        journal = self.paysim.journal()
        for p in pays:
            self.assertEqual(len(self.paysim.charges_of(p["serial_no"], journal)), 1)
        wait_until(lambda: all(n["state"] == "delivered"
                               for n in self.paysim.notifications()["notifications"]),
                   what="every notification delivered")
        for p in pays:
            self.assertEqual(s.db_scalar(
                "SELECT count(*) FROM ledger_entries WHERE transfer_id = ?", (p["id"],)), 2)
        ledger_check(self, s)

    def test_only_http_channels(self):
        s = self.start_pair(notify=False)
        r = self.send(s, b"{}", channel="sandbox")
        self.assertError(r, 404, "not_found", "route_not_found")
        r = self.send(s, b"{}", channel="nope")
        self.assertError(r, 404, "not_found", "route_not_found")


if __name__ == "__main__":
    import unittest
    unittest.main()
