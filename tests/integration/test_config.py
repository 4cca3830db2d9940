"""
Configuration: INI file, PAYD_<SECTION>_<KEY> environment, flags; bad
configurations stop start-up with a message naming the key.
"""

import json
import os
import subprocess
import unittest

import harness
from harness import START_DEADLINE_S, PaydTestCase, free_port, port_refuses, unique


def padded_order(size):
    body = json.dumps({"merchant_order_no": unique("cfg"), "amount": 1,
                       "currency": "CNY"}).encode()
    assert len(body) <= size
    return body[:-1] + b" " * (size - len(body)) + b"}"


class ConfigRefusedTest(PaydTestCase):
    shared_server = False

    def assertRefused(self, config=None, env=None, names=(), args=None, listen=True):
        s = self.start_server(start=False, config=config, env=env, args=args, listen=listen)
        proc = s.spawn()
        try:
            rc = proc.wait(START_DEADLINE_S)
        except subprocess.TimeoutExpired:
            self.fail("payd kept running with config %r env %r" % (config, env))
        self.assertNotEqual(rc, 0, "exit status")
        msg = (s.stderr_text() + s.stdout_text()).lower()
        for n in names:
            self.assertIn(n.lower(), msg, "the message does not name %r:\n%s" % (n, msg))
        return msg

    def test_unknown_key(self):
        self.assertRefused("[server]\nbogus_key = 1\n", names=["bogus_key"])

    def test_unknown_key_in_known_section(self):
        self.assertRefused("[worker]\nthreads = 4\nretries = 3\n", names=["retries"])

    def test_unknown_section(self):
        self.assertRefused("[nosuch]\nx = 1\n", names=["nosuch"])

    def test_bad_value_not_a_number(self):
        self.assertRefused("[server]\nmax_body_bytes = abc\n", names=["max_body_bytes"])

    def test_bad_value_trailing_garbage(self):
        self.assertRefused("[server]\nmax_body_bytes = 12kb\n", names=["max_body_bytes"])

    def test_bad_value_negative(self):
        self.assertRefused("[server]\nmax_body_bytes = -5\n", names=["max_body_bytes"])

    def test_bad_value_overflow(self):
        self.assertRefused("[worker]\nretry_base_ms = 99999999999999999999999\n",
                           names=["retry_base_ms"])

    def test_bad_enum_value(self):
        self.assertRefused("[log]\nlevel = loud\n", names=["level"])

    def test_bad_channel_value(self):
        self.assertRefused("[channel.sandbox]\ntimeout_ms = soon\n", names=["timeout_ms"])

    def test_bad_env_value(self):
        self.assertRefused(env={"PAYD_SERVER_MAX_BODY_BYTES": "abc"}, names=["max_body_bytes"])

    def test_bad_listen(self):
        # No --listen flag: the file's value is the one in force.
        self.assertRefused("[server]\nlisten = not-an-address\n", names=["listen"], listen=False)
        self.assertRefused(env={"PAYD_SERVER_LISTEN": "127.0.0.1:99999"}, names=["listen"],
                           listen=False)

    def test_missing_config_file(self):
        path = "/nonexistent/payd-%s.ini" % unique("x")
        self.assertRefused(args=["--config", path], names=[path])


class ConfigPrecedenceTest(PaydTestCase):
    shared_server = False

    def test_env_max_body_bytes(self):
        s = self.start_server(env={"PAYD_SERVER_MAX_BODY_BYTES": "2048"})
        r = s.request("POST", "/v1/orders", padded_order(2049))
        self.assertError(r, 413, "invalid_request_error", "body_too_large")
        self.assertStatus(s.request("POST", "/v1/orders", padded_order(2048)), 201)

    def test_env_beats_file(self):
        s = self.start_server(config="[server]\nmax_body_bytes = 1024\n",
                              env={"PAYD_SERVER_MAX_BODY_BYTES": "4096"})
        self.assertStatus(s.request("POST", "/v1/orders", padded_order(3000)), 201)
        r = s.request("POST", "/v1/orders", padded_order(4097))
        self.assertError(r, 413, "invalid_request_error", "body_too_large")

    def test_file_listen_used(self):
        p1 = free_port()
        s = self.start_server(start=False, config="[server]\nlisten = 127.0.0.1:%d\n" % p1,
                              listen=False)
        s.start(port=p1)
        self.assertEqual(s.request("GET", "/healthz", key=None).body, {"status": "ok"})

    def test_env_listen_beats_file(self):
        p1, p2 = free_port(), free_port()
        s = self.start_server(start=False, config="[server]\nlisten = 127.0.0.1:%d\n" % p1,
                              env={"PAYD_SERVER_LISTEN": "127.0.0.1:%d" % p2}, listen=False)
        s.start(port=p2)
        self.assertTrue(port_refuses(p1))

    def test_listen_flag_beats_env_and_file(self):
        p1, p2 = free_port(), free_port()
        s = self.start_server(start=False, config="[server]\nlisten = 127.0.0.1:%d\n" % p1,
                              env={"PAYD_SERVER_LISTEN": "127.0.0.1:%d" % p2})
        s.start()           # --listen 127.0.0.1:<another free port>
        self.assertNotIn(s.port, (p1, p2))
        self.assertEqual(s.request("GET", "/healthz", key=None).status, 200)
        self.assertTrue(port_refuses(p1))
        self.assertTrue(port_refuses(p2))

    def test_data_dir_flag_beats_file_and_env(self):
        s = self.start_server(start=False)
        d_file = os.path.join(s.tmp, "from-file")
        d_env = os.path.join(s.tmp, "from-env")
        s.config_path = os.path.join(s.tmp, "payd.ini")
        with open(s.config_path, "w") as f:
            f.write("[server]\ndata_dir = %s\n" % d_file)
        s.env["PAYD_SERVER_DATA_DIR"] = d_env
        s.start()
        self.assertTrue(os.path.exists(os.path.join(s.data_dir, "demo.key")))
        self.assertFalse(os.path.exists(os.path.join(d_file, "demo.key")))
        self.assertFalse(os.path.exists(os.path.join(d_env, "demo.key")))
        self.assertEqual(s.request("GET", "/v1/balance").status, 200)

    def test_file_data_dir_used(self):
        s = self.start_server(start=False, pass_data_dir=False)
        s.config_path = os.path.join(s.tmp, "payd.ini")
        with open(s.config_path, "w") as f:
            f.write("[server]\ndata_dir = %s\n" % s.data_dir)
        s.start()
        self.assertTrue(os.path.exists(os.path.join(s.data_dir, "demo.key")))
        if harness.STORE == "sqlite":
            self.assertTrue(os.path.exists(s.db_path))
        self.assertEqual(s.request("GET", "/v1/balance").status, 200)

    def test_full_valid_config_accepted(self):
        config = """[server]
max_body_bytes = 65536
http_threads = 2

[store]
max_batch = 256
queue_capacity = 4096

[worker]
threads = 8
lease_ms = 30000
max_attempts = 3
retry_base_ms = 50
retry_max_ms = 1000

[idempotency]
ttl_s = 86400
purge_interval_s = 60

[log]
format = text
level = warn

[channel.sandbox]
type = sandbox
timeout_ms = 300
"""
        s = self.start_server(config=config, fast=False)
        o = s.create_order()
        r = s.pay(o["id"], "unknown")
        self.assertStatus(r, 202)
        self.assertEqual(s.wait_payment_final(r.body["id"])["status"], "succeeded")


if __name__ == "__main__":
    unittest.main()
