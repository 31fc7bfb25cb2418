#!/usr/bin/env python3
"""API conformance: starts a real `wharf serve` on a free port with a fresh data dir, seeds a
vendor, a published feed and a subscription, then runs schemathesis over the served
/openapi.json as an anonymous caller, a vendor admin and a subscriber. Fails on any 5xx or
any response that breaks its documented schema."""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

# Outbound connections go to this machine only, whatever a URL in the run names.
LOOPBACK_ONLY = '["127.0.0.0/8", "::1"]'

PASSWORD = "correct horse battery"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base, method, path, body=None, token=None):
    req = urllib.request.Request(base + path, method=method)
    if body is not None:
        req.data = json.dumps(body).encode()
        req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=10) as res:
        return json.loads(res.read() or b"null")


def wait_ready(base, proc):
    for _ in range(300):
        if proc.poll() is not None:
            sys.exit(f"wharf exited early with {proc.returncode}")
        try:
            call(base, "GET", "/readyz")
            return
        except OSError:
            time.sleep(0.1)
    sys.exit("wharf did not become ready")


def seed(base):
    call(base, "POST", "/v1/vendors", {"name": "Acme", "admin_email": "ops@acme.example", "admin_password": PASSWORD})
    vendor = call(base, "POST", "/v1/auth/token", {"email": "ops@acme.example", "password": PASSWORD})["access_token"]
    source = call(base, "POST", "/v1/sources", {"name": "ticks", "kind": "push"}, vendor)["id"]
    plan = {"id": "pro", "name": "Pro", "currency": "usd", "monthly_fee": "49.00", "included_deliveries": 10000,
            "tiers": [{"up_to": 100000, "unit_price": "0.0010"}, {"up_to": None, "unit_price": "0.0005"}]}
    feed = call(base, "POST", "/v1/feeds", {"name": "Trades", "source_id": source, "plans": [plan], "status": "published",
                                             "pipeline": {"rules": [{"type": "filter", "expr": "record.px > 1.0"}]}}, vendor)["id"]
    call(base, "POST", "/v1/subscribers", {"name": "Bob", "email": "bob@fund.example", "password": PASSWORD})
    subscriber = call(base, "POST", "/v1/auth/token", {"email": "bob@fund.example", "password": PASSWORD})["access_token"]
    call(base, "POST", "/v1/subscriptions", {"feed_id": feed, "plan_id": "pro", "channel": {"type": "pull"}}, subscriber)
    return vendor, subscriber


def main():
    binary, venv = sys.argv[1], sys.argv[2]
    examples = os.environ.get("WHARF_CONFORMANCE_EXAMPLES", "25")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as data:
        env = dict(os.environ, WHARF_LOG="warn", WHARF_EGRESS_ALLOW=LOOPBACK_ONLY)
        proc = subprocess.Popen([binary, "serve", "--data-dir", data, "--listen", f"127.0.0.1:{port}"], env=env,
                                stdout=subprocess.DEVNULL)
        try:
            wait_ready(base, proc)
            vendor, subscriber = seed(base)
            failed = False
            for who, token in [("anonymous", None), ("vendor admin", vendor), ("subscriber", subscriber)]:
                print(f"== schemathesis as {who}", flush=True)
                cmd = [f"{venv}/bin/schemathesis", "run", f"{base}/openapi.json",
                       "--checks", "not_a_server_error,response_schema_conformance,content_type_conformance",
                       "--max-examples", examples, "--seed", "1", "--workers", "1", "--no-color",
                       "--suppress-health-check", "all", "--phases", "examples,coverage,fuzzing"]
                if token:
                    cmd += ["-H", f"Authorization: Bearer {token}"]
                hooks = dict(os.environ, SCHEMATHESIS_HOOKS="schemathesis_hooks",
                             PYTHONPATH=os.path.dirname(os.path.abspath(__file__)))
                if subprocess.run(cmd, env=hooks).returncode != 0:
                    failed = True
            if proc.poll() is not None:
                sys.exit("wharf crashed during the conformance run")
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
