#!/usr/bin/env python3
"""Runs README.md's walkthrough verbatim (the shell block between the walkthrough markers)
against a fresh `wharf serve`, only pointing $WHARF at the test server's port. Fails if any
command fails or if the expected objects were not created."""

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

# Outbound connections go to this machine only, whatever a URL in the run names.
LOOPBACK_ONLY = '["127.0.0.0/8", "::1"]'


def main():
    binary = sys.argv[1]
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    block = re.search(r"<!-- walkthrough:start -->\s*```sh\n(.*?)```\s*<!-- walkthrough:end -->", readme, re.S)
    if not block:
        sys.exit("README.md has no walkthrough block")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = block.group(1).replace("WHARF=http://127.0.0.1:8080", f"WHARF=http://127.0.0.1:{port}", 1)
    with tempfile.TemporaryDirectory() as data:
        proc = subprocess.Popen([binary, "serve", "--data-dir", data, "--listen", f"127.0.0.1:{port}"],
                                env=dict(os.environ, WHARF_LOG="warn", WHARF_EGRESS_ALLOW=LOOPBACK_ONLY), stdout=subprocess.DEVNULL)
        try:
            for _ in range(300):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1)
                    break
                except OSError:
                    time.sleep(0.1)
            run = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True)
            sys.stdout.write(run.stdout)
            sys.stderr.write(run.stderr)
            if run.returncode != 0:
                sys.exit(f"the README walkthrough failed with exit code {run.returncode}")
            out = run.stdout
            for expected in ['"status": "active"', '"rules[0].expr"',
                             '"name": "Large trades"', '"accepted": 2', '"symbol": "AAPL"',
                             '"usd": 202.5']:
                if expected not in out:
                    sys.exit(f"the walkthrough output lacks {expected}")
            print("walkthrough: 1 passed, 0 failed")
        finally:
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    main()
