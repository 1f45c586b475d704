#!/usr/bin/env python3
"""Where a logged-in request's time goes: idgate (cookie sessions) and the bare nginx hop side by side on one
upstream, logged in against the interop provider as bench/run.py does, then a `perf` profile of idgate under the
same load.

Prints, for each of nginx-proxy and idgate at 32 and 128 connections, req/s and CPU µs per request split into user
and system time (medians of the repetitions), their ratios, and then idgate's hottest symbols by self time grouped
by the component they belong to (kernel, hyper, tokio, idgate, allocator, ...). Quicker than bench/run.py (one
store, no peers): the tool for measuring one change against the last, not for README's figures.

Usage: bash bench/run.sh builds what this needs; then python3 bench/profile.py [--duration S] [--reps N] [--no-perf]
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import shutil

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the harness's process, login and wrk helpers)

# Symbol prefixes → the component a sample is charged to; first match wins.
COMPONENTS = [
    ("kernel", re.compile(r"^\[k\]|^(__|do_|tcp_|ip_|sock_|sys_|entry_|syscall|ep_|skb|__x64|native_|_raw_spin|"
                          r"copy_|rep_movs|loopback|net_|dev_|nf_|__netif|process_backlog|release_sock|lock_sock)")),
    ("hyper", re.compile(r"hyper::")),
    ("h2", re.compile(r"^h2::")),
    ("tokio", re.compile(r"tokio::|mio::")),
    ("http/httparse", re.compile(r"^(http::|httparse::)")),
    ("allocator", re.compile(r"mi_|mimalloc|_mi_|malloc|free|realloc")),
    ("crypto", re.compile(r"aws_lc|aes_|gcm_|sha256|CRYPTO_|ChaCha|poly1305", re.I)),
    ("tracing", re.compile(r"tracing")),
    ("idgate", re.compile(r"idgate::")),
    ("libc", re.compile(r"^(mem|str|__mem|__str|pthread_|__libc|_int_)")),
]


def cpu_split(pids):
    """(user, system) clock ticks of `pids`."""
    user = system = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            user += int(fields[11])
            system += int(fields[12])
        except (FileNotFoundError, ProcessLookupError, IndexError):
            pass
    return user, system


def measure(url, conns, duration, cookie, pids):
    before = cpu_split(pids)
    r = run.wrk(url, conns, duration, cookie, pids)
    after = cpu_split(pids)
    n = max(r["requests"], 1)
    r["user_us"] = (after[0] - before[0]) / run.CLK_TCK * 1e6 / n
    r["sys_us"] = (after[1] - before[1]) / run.CLK_TCK * 1e6 / n
    return r


def profile(pid, url, cookie, duration, tmp):
    data = os.path.join(tmp, "perf.data")
    rec = subprocess.Popen(["perf", "record", "-F", "1999", "-p", str(pid), "-o", data, "--", "sleep", str(duration)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run.wrk(url, 32, duration, cookie, [pid])
    rec.wait()
    out = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "symbol", "--stdio", "-q",
                          "--percent-limit", "0.01"], capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\[.\])\s+(.*)", line)
        if m:
            rows.append((float(m.group(1)), m.group(2), m.group(3).strip()))
    by = {}
    for pct, kind, sym in rows:
        name = "kernel" if kind == "[k]" else next((c for c, rx in COMPONENTS if rx.search(sym)), "other")
        by[name] = by.get(name, 0.0) + pct
    print("\nidgate under wrk -c32, share of samples by component:")
    for name, pct in sorted(by.items(), key=lambda kv: -kv[1]):
        print(f"  {name:14s} {pct:5.1f} %")
    print("\nhottest user-space symbols (self):")
    for pct, kind, sym in [r for r in rows if r[1] != "[k]"][:30]:
        print(f"  {pct:5.2f} %  {sym[:150]}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=4)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-perf", action="store_true", help="measure only, no profile")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="idgate-profile-")
    procs = run.Procs()
    try:
        ports = {k: run.free_port() for k in ["upstream", "proxy", "op", "idgate", "admin"]}
        run.start_upstream(procs, tmp, ports["upstream"])
        proxy = run.start_nginx_proxy(procs, tmp, ports["proxy"], ports["upstream"])
        origin = f"http://127.0.0.1:{ports['idgate']}"
        run.start_op(procs, tmp, ports["op"], [f"{origin}/oauth2/callback"])
        idgate = run.start_idgate(procs, tmp, ports["idgate"], ports["admin"], ports["op"], ports["upstream"], "cookie")
        cookie = run.login(f"{origin}/oauth2/start?rd=/", origin, f"http://127.0.0.1:{ports['op']}")
        status, seen = run.probe(f"{origin}/", cookie)
        if status != 200 or not seen:
            raise RuntimeError(f"probe got {status} with identity {seen!r}: not logged in")
        targets = [("nginx proxy", f"http://127.0.0.1:{ports['proxy']}/", run.tree(proxy.pid)),
                   ("idgate", f"{origin}/", [idgate.pid])]
        table = {}
        for conns in (32, 128):
            for _ in range(args.reps):
                # Interleaved, so a change in the machine's load falls on both.
                for name, url, pids in targets:
                    r = measure(url, conns, args.duration, cookie, pids)
                    if name == "idgate" and set(r["statuses"]) != {"200"}:
                        raise RuntimeError(f"not every response was 200: {r['statuses']}")
                    table.setdefault((name, conns), []).append(r)
        print(f"{'':12s} {'conns':>5s} {'req/s':>9s} {'user µs':>8s} {'sys µs':>7s} {'cpu µs':>7s} {'p99 ms':>7s}")
        med = {}
        for (name, conns), runs in sorted(table.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            m = {k: statistics.median(r[k] for r in runs) for k in ("rps", "user_us", "sys_us", "cpu_us", "p99_ms")}
            med[(name, conns)] = m
            print(f"{name:12s} {conns:5d} {m['rps']:9.0f} {m['user_us']:8.1f} {m['sys_us']:7.1f} {m['cpu_us']:7.1f} "
                  f"{m['p99_ms']:7.2f}")
        for conns in (32, 128):
            i, n = med[("idgate", conns)], med[("nginx proxy", conns)]
            print(f"ratio c={conns}: throughput {i['rps'] / n['rps']:.2f}x  cpu {i['cpu_us'] / n['cpu_us']:.2f}x  "
                  f"user {i['user_us'] / n['user_us']:.2f}x  p99 {i['p99_ms'] / n['p99_ms']:.2f}x")
        if not args.no_perf:
            profile(idgate.pid, f"{origin}/", cookie, args.duration, tmp)
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
