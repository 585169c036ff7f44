#!/usr/bin/env python3
"""Prints "requests_per_second p99_ms" from wrk --latency output (errors make it fail)."""
import re
import sys

text = open(sys.argv[1]).read()
rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
if not rps or not p99:
    sys.exit(f"cannot read wrk output {sys.argv[1]}:\n{text}")
if re.search(r"Non-2xx or 3xx responses|Socket errors", text):
    sys.exit(f"wrk saw errors in {sys.argv[1]}:\n{text}")
scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
print(f"{float(rps.group(1)):.0f} {float(p99.group(1)) * scale:.3f}")
