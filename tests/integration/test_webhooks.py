"""Merchant webhooks: PUT/GET/DELETE /v1/webhook and the events payd sends.

- the endpoint is set with a new signing secret, read back without it,
  removed; bad URLs are refused;
- every payment and refund that reaches a final status is POSTed to the
  endpoint, signed (Payd-Signature: t=…,v1=HMAC-SHA256(secret, "t.body")),
  with its event id; a receiver that fails its first answers gets each
  event again, byte for byte, until it answers 2xx, and then never again:
  exactly one accepted delivery per event id;
- events survive kill -9 of payd while the receiver is down;
- an event that cannot be delivered is given up after give_up_s (failed);
- a merchant without an endpoint gets no events;
- unless [webhooks] allow_private is on, an endpoint on a loopback, private
  or link-local address is refused when set, and a delivery that would
  connect to one is not sent (and is sent once it is allowed).
"""
import hashlib
import hmac
import http.server
import json
import threading
import time

from harness import PaydTestCase, unique, wait_until
from test_refunds import paid_order, refund, wait_refund_final

# The receivers listen on loopback, which payd refuses by default.
ENV = {"PAYD_WEBHOOKS_RETRY_BASE_MS": "100", "PAYD_WEBHOOKS_RETRY_MAX_MS": "300",
       "PAYD_WEBHOOKS_TIMEOUT_MS": "2000", "PAYD_WEBHOOKS_ALLOW_PRIVATE": "on"}


def verify(secret, header, body, now=None):
    """What a merchant does (docs/API.md, "Webhooks"): parse t and v1,
    refuse a timestamp more than 300 s away, compare the HMAC."""
    parts = dict(p.split("=", 1) for p in header.split(","))
    t = parts["t"]
    if abs(int(t) - (now or time.time())) > 300:
        return False
    want = hmac.new(secret.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(want, parts["v1"])


class WebhookReceiver:
    """A merchant's endpoint on a free loopback port. `status` is what it
    answers (changeable); the first `fail_first` requests of each event id
    get 500 whatever it is. Records every request."""

    def __init__(self, fail_first=0, status=200):
        self.fail_first = fail_first
        self.status = status
        self.secret = None
        self.requests = []
        self.lock = threading.Lock()
        rec = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                eid = self.headers.get("Payd-Event-Id")
                with rec.lock:
                    seen = sum(1 for r in rec.requests if r["event_id"] == eid)
                    status = 500 if seen < rec.fail_first else rec.status
                    rec.requests.append({
                        "event_id": eid, "body": body, "status": status,
                        "verified": rec.secret is not None and verify(
                            rec.secret, self.headers.get("Payd-Signature") or "t=0,v1=", body)})
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/hooks/payd" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def received(self):
        with self.lock:
            return list(self.requests)

    def accepted(self):
        """event id -> the requests answered 2xx."""
        out = {}
        for r in self.received():
            if 200 <= r["status"] < 300:
                out.setdefault(r["event_id"], []).append(r)
        return out

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class WebhooksTest(PaydTestCase):
    shared_server = False

    def setUp(self):
        super().setUp()
        self.rec = None

    def receiver(self, **kw):
        self.rec = WebhookReceiver(**kw)
        self.addCleanup(self.rec.close)
        return self.rec

    def register(self, s, rec):
        r = s.request("PUT", "/v1/webhook", {"url": rec.url})
        body = self.assertStatus(r, 200)
        rec.secret = body["secret"]
        return body

    def test_endpoint_api(self):
        s = self.start_server(env=ENV)
        self.assertError(s.request("GET", "/v1/webhook"), 404, "not_found", "resource_missing")
        for bad in ["ftp://x", "http://", "not a url", "http://a b", 7, "h" * 3000]:
            r = s.request("PUT", "/v1/webhook", {"url": bad})
            self.assertError(r, 400, "invalid_request_error", "url_invalid", "url")
        self.assertError(s.request("PUT", "/v1/webhook", {}), 400, "invalid_request_error",
                         "parameter_missing", "url")
        first = self.assertStatus(s.request("PUT", "/v1/webhook",
                                            {"url": "https://shop.example/hooks"}), 200)
        self.assertTrue(first["secret"].startswith("whsec_") and len(first["secret"]) == 38)
        got = self.assertStatus(s.request("GET", "/v1/webhook"), 200)
        self.assertEqual(got["url"], "https://shop.example/hooks")
        self.assertNotIn("secret", got)
        second = self.assertStatus(s.request("PUT", "/v1/webhook",
                                             {"url": "https://shop.example/hooks"}), 200)
        self.assertNotEqual(second["secret"], first["secret"])  # a PUT rotates it
        self.assertEqual(self.assertStatus(s.request("DELETE", "/v1/webhook"), 200),
                         {"deleted": True})
        self.assertEqual(s.request("GET", "/v1/webhook").status, 404)
        self.assertEqual(s.request("DELETE", "/v1/webhook").status, 404)
        # Another merchant's endpoint is its own.
        other = s.add_merchant(unique("m"))
        self.assertEqual(s.request("GET", "/v1/webhook", key=other).status, 404)

    def test_each_event_delivered_once_after_failures(self):
        s = self.start_server(env=ENV)
        rec = self.receiver(fail_first=2)
        self.register(s, rec)
        order, p = paid_order(s, 1000)
        declined = s.wait_payment_final(
            s.pay(s.create_order(amount=300)["id"], "declined").body["id"])
        rf = self.assertStatus(refund(s, p["id"], 250), 202)
        wait_refund_final(s, rf["id"])
        want = {"evt_" + p["id"]: ("payment.succeeded", p["id"]),
                "evt_" + declined["id"]: ("payment.failed", declined["id"]),
                "evt_" + rf["id"]: ("refund.succeeded", rf["id"])}
        wait_until(lambda: set(want) <= set(rec.accepted()), what="three events accepted")
        time.sleep(1.0)  # nothing more may come
        accepted = rec.accepted()
        self.assertEqual(set(accepted), set(want))
        for eid, (etype, oid) in want.items():
            self.assertEqual(len(accepted[eid]), 1, eid)
            tries = [r for r in rec.received() if r["event_id"] == eid]
            self.assertEqual(len(tries), 3, eid)  # two refused, one accepted
            self.assertTrue(all(t["verified"] for t in tries), tries)
            self.assertEqual(len({t["body"] for t in tries}), 1)  # the same body every time
            ev = json.loads(tries[0]["body"])
            self.assertEqual((ev["id"], ev["type"], ev["data"]["id"]), (eid, etype, oid))
        self.assertEqual(json.loads(accepted["evt_" + p["id"]][0]["body"])["data"]["status"],
                         "succeeded")
        states = dict(s.db_rows("SELECT id, state FROM events")[0])
        self.assertEqual({states[e] for e in want}, {"delivered"})

    def test_survives_kill9_while_receiver_down(self):
        s = self.start_server(env=ENV)
        rec = self.receiver(status=503)
        self.register(s, rec)
        _, p = paid_order(s, 1000)
        wait_until(lambda: len(rec.received()) >= 1, what="a first attempt")
        s.kill9()
        s.restart()
        rec.status = 200
        eid = "evt_" + p["id"]
        wait_until(lambda: eid in rec.accepted(), what="delivery after the restart")
        self.assertEqual(len(rec.accepted()[eid]), 1)

    def test_given_up_after_give_up_s(self):
        s = self.start_server(env=dict(ENV, PAYD_WEBHOOKS_GIVE_UP_S="1"))
        rec = self.receiver(status=500)
        self.register(s, rec)
        _, p = paid_order(s, 1000)
        eid = "evt_" + p["id"]
        wait_until(lambda: s.db_rows("SELECT state FROM events WHERE id = ?", (eid,))[0]
                   == [("failed",)], what="the event to be given up")
        n = len(rec.received())
        self.assertGreaterEqual(n, 2)
        time.sleep(0.8)
        self.assertEqual(len(rec.received()), n)  # no attempt after giving up
        self.assertIn('"event":"webhook_failed"', s.stderr_text())

    def test_private_addresses_refused_by_default(self):
        s = self.start_server(env=dict(ENV, PAYD_WEBHOOKS_ALLOW_PRIVATE="off"))
        rec = self.receiver()
        port = rec.server.server_address[1]
        for url, kind in [(rec.url, "loopback"),
                          ("http://localhost:%d/hooks" % port, "loopback"),
                          ("http://2130706433:%d/" % port, "loopback"),  # 127.0.0.1
                          ("http://[::1]:%d/" % port, "loopback"),
                          ("http://10.1.2.3/hooks", "private"),
                          ("http://169.254.169.254/latest/meta-data", "link-local")]:
            r = s.request("PUT", "/v1/webhook", {"url": url})
            err = self.assertError(r, 400, "invalid_request_error", "url_not_allowed", "url")
            self.assertIn(kind, err["message"], url)
        self.assertEqual(s.request("GET", "/v1/webhook").status, 404)  # nothing was set
        # An endpoint set while allowed, then the server restarted without:
        # the sender connects, sees a loopback address and sends nothing.
        s.env["PAYD_WEBHOOKS_ALLOW_PRIVATE"] = "on"
        s.restart()
        self.register(s, rec)
        s.env["PAYD_WEBHOOKS_ALLOW_PRIVATE"] = "off"
        s.restart()
        _, p = paid_order(s, 1000)
        eid = "evt_" + p["id"]
        wait_until(lambda: "allow_private is off" in s.stderr_text(),
                   what="a refused delivery in the log")
        self.assertIn("is loopback", s.stderr_text())
        self.assertEqual(rec.received(), [])
        self.assertEqual(s.db_rows("SELECT state FROM events WHERE id = ?", (eid,))[0],
                         [("pending",)])
        # Allowed again: the same event is delivered, once.
        s.env["PAYD_WEBHOOKS_ALLOW_PRIVATE"] = "on"
        s.restart()
        wait_until(lambda: eid in rec.accepted(), what="delivery once allowed")
        self.assertEqual(len(rec.accepted()[eid]), 1)

    def test_no_endpoint_no_events(self):
        s = self.start_server(env=ENV)
        paid_order(s, 1000)
        self.assertEqual(s.db_scalar("SELECT count(*) FROM events"), 0)


if __name__ == "__main__":
    import unittest
    unittest.main()
