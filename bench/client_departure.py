#!/usr/bin/env python3
"""Time from a client closing to sluice closing the upstream request.

A client sends GET through sluice to an origin that never answers, waits
WAIT seconds, closes; the figure is the time until the origin's socket
reads EOF (sluice cancelled the upstream request). Without the departure
watcher that is the response timeout (60 s here).

  bench/client_departure.py [WAIT_SECONDS] [SLUICE_BINARY] [RUNS]
"""
import re
import socket
import subprocess
import sys
import time

wait = float(sys.argv[1]) if len(sys.argv) > 1 else 0.2
binary = sys.argv[2] if len(sys.argv) > 2 else "target/release/sluice"
runs = int(sys.argv[3]) if len(sys.argv) > 3 else 20

sl = subprocess.Popen(
    [binary, "--listen", "127.0.0.1:0", "--admin", "off", "--data-dir", ":memory:",
     "--response-timeout", "60s"],
    stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
try:
    line = ""
    deadline = time.monotonic() + 20
    while "sluice listening" not in line:
        if time.monotonic() > deadline:
            sys.exit("sluice did not start")
        line = sl.stderr.readline()
    port = int(re.search(r"proxy=127\.0\.0\.1:(\d+)", line).group(1))
    origin = socket.socket()
    origin.bind(("127.0.0.1", 0))
    origin.listen(64)
    origin.settimeout(10)
    oport = origin.getsockname()[1]
    took = []
    for _ in range(runs):
        c = socket.create_connection(("127.0.0.1", port), timeout=10)
        c.sendall(f"GET http://127.0.0.1:{oport}/w HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        up, _ = origin.accept()
        up.settimeout(70)
        up.recv(4096)
        time.sleep(wait)
        t = time.monotonic()
        c.close()
        up.recv(1)
        took.append((time.monotonic() - t) * 1000)
        up.close()
    took.sort()
    print("client closed after %.0f ms -> upstream closed: min %.1f ms, median %.1f ms, max %.1f ms (%d runs)"
          % (wait * 1000, took[0], took[len(took) // 2], took[-1], len(took)))
finally:
    sl.terminate()
    sl.wait(10)
