#!/usr/bin/env python3
"""Idle keep-alive connection memory of a running gw (docs/performance.md).

usage: bench/idle-conns.py PID URL [N]
Opens N (default 5000) keep-alive connections to URL (http://127.0.0.1:PORT/path), sends one request on
each and reads the answer, then holds them idle; prints the gateway's RSS (from /proc/PID/status) before,
while the N connections are open and idle, 2 s and 12 s after they are closed, and the KB per
connection.
Needs `ulimit -n` above N.
"""
import re, socket, sys, time
from urllib.parse import urlsplit

def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))

def main():
    pid, url = int(sys.argv[1]), urlsplit(sys.argv[2])
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 5000
    req = f"GET {url.path or '/'} HTTP/1.1\r\nHost: {url.hostname}\r\n\r\n".encode()
    before = rss_kb(pid)
    conns = []
    for _ in range(n):
        s = socket.create_connection((url.hostname, url.port), timeout=10)
        s.sendall(req)
        conns.append(s)
    for s in conns:  # read each answer (small: one recv is enough for the bench upstreams)
        data = s.recv(65536)
        if not data.startswith(b"HTTP/1.1 200"):
            sys.exit(f"unexpected answer: {data[:80]!r}")
    time.sleep(1)
    idle = rss_kb(pid)
    for s in conns:
        s.close()
    time.sleep(2)
    after = rss_kb(pid)
    time.sleep(10)
    later = rss_kb(pid)
    print(f"rss_before_kb={before} rss_idle_kb={idle} rss_2s_after_close_kb={after} "
          f"rss_12s_after_close_kb={later} kb_per_conn={(idle - before) / n:.1f}")

if __name__ == "__main__":
    main()
