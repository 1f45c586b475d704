#!/usr/bin/env python3
"""Side-by-side benchmark: idgate against a bare nginx proxy hop and Apache + mod_auth_openidc, all logged in
against the same real OpenID Provider (the interop suite's oidc-provider), measured with wrk in one run.

Reports req/s, p50/p99 latency, the servers' own CPU µs per request and peak RSS (medians of the repetitions), with
ratios against nginx-proxy and against the peer, as bench/results/results.md (+ results.json, chart.png when
matplotlib is available). Every logged-in run must answer 200 to every request, with the identity header seen by the
upstream: a redirect counted as success would be a lie.

The session-store section compares idgate logged in on each store topology — cookie, memory, one Redis, Redis
Sentinel (primary + replica + three sentinels) and Redis Cluster (three primaries with a replica each), every Redis
process started here on loopback — and measures Redis memory per session: `INFO memory` `used_memory` on every data
primary before and after writing real sealed sessions through idgate's own Sessions code path
(examples/store_capacity.rs). `--stores` runs that section alone and keeps the last full run's main table.

Usage: bash bench/run.sh [--quick] [--stores] [--duration S] [--reps N] [--soak S] [--idle N]
"""
import argparse
import http.cookiejar
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IDGATE = os.path.join(ROOT, "target", "release", "idgate")
CAPACITY = os.path.join(ROOT, "target", "debug", "examples", "store_capacity")
STORES = ("cookie", "memory", "redis", "sentinel", "cluster")
# Other work on the machine shows here: figures are comparable within one run only.
LOAD_AT_START = os.getloadavg()[0]
INTEROP = os.path.join(ROOT, "tests", "interop")
CLK_TCK = os.sysconf("SC_CLK_TCK")
BODY_1K = "x" * 1024
SAME_REQUEST = "nginx plain reverse proxy, same request (session cookie)"
SECRET = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


class Procs:
    """Started processes, stopped at exit."""

    def __init__(self):
        self.procs = []

    def start(self, args, **kw):
        p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=kw.pop("stderr", subprocess.DEVNULL), start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def stop(self, p):
        try:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout=10)
        except Exception:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except Exception:
                pass
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self):
        for p in list(self.procs):
            self.stop(p)


def tree(pid):
    """pid and all its descendants."""
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                children.setdefault(int(fields[1]), []).append(int(d))
            except OSError:
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_ticks(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        except OSError:
            pass
    return total


def peak_rss_kib(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


# === the components ===

def nginx_conf(tmp, name, body):
    d = os.path.join(tmp, name)
    os.makedirs(d, exist_ok=True)
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""daemon off; worker_processes auto; pid {d}/nginx.pid; error_log {d}/error.log error;
events {{ worker_connections 16384; }}
http {{ access_log off; client_body_temp_path {d}/b; proxy_temp_path {d}/p; fastcgi_temp_path {d}/f; uwsgi_temp_path {d}/u;
scgi_temp_path {d}/s; underscores_in_headers on; keepalive_requests 1000000;
{body}
}}
""")
    return ["nginx", "-p", d, "-c", conf]


def start_upstream(procs, tmp, port):
    # Echoes the identity header it received, so a probe can check what the proxies forwarded.
    body = f"""server {{ listen 127.0.0.1:{port} reuseport backlog=4096;
  location / {{ default_type text/plain; add_header X-Seen-User "$http_x_auth_request_user$http_oidc_claim_sub" always; return 200 "{BODY_1K}"; }} }}"""
    p = procs.start(nginx_conf(tmp, "upstream", body))
    wait_port(port)
    return p


def start_nginx_proxy(procs, tmp, port, upstream):
    body = f"""upstream app {{ server 127.0.0.1:{upstream}; keepalive 256; }}
server {{ listen 127.0.0.1:{port} backlog=4096; location / {{ proxy_pass http://app; proxy_http_version 1.1;
  proxy_set_header Connection ""; proxy_set_header Host $host; proxy_set_header X-Forwarded-For $remote_addr; }} }}"""
    p = procs.start(nginx_conf(tmp, "proxy", body))
    wait_port(port)
    return p


def start_op(procs, tmp, port, redirect_uris):
    env = dict(os.environ, PORT=str(port), REDIRECT_URIS=",".join(redirect_uris), KEYS_FILE=os.path.join(tmp, "jwks.json"), ID_TOKEN_TTL="36000")
    p = procs.start(["node", os.path.join(INTEROP, "provider.mjs")], env=env)
    wait_port(port)
    return p


def start_idgate(procs, tmp, port, admin, op_port, upstream, store, redis_url=None, assertion=False):
    conf = os.path.join(tmp, f"idgate-{store}{'-assertion' if assertion else ''}.toml")
    extra = f'redis_url = "{redis_url}"\n' if redis_url else ""
    # The signed identity assertion for the upstream (issue 14), with a key generated at start.
    extra += "[assertion]\nenabled = true\n" if assertion else ""
    with open(conf, "w") as f:
        f.write(f"""[server]
listen = "127.0.0.1:{port}"
max_connections = 20000
[admin]
listen = "127.0.0.1:{admin}"
[upstream]
url = "http://127.0.0.1:{upstream}"
[oidc]
issuer = "http://127.0.0.1:{op_port}"
client_id = "idgate-rs256"
client_secret = "idgate-rs256-secret-that-is-long-enough-for-hs256-keys"
redirect_url = "http://127.0.0.1:{port}/oauth2/callback"
[session]
secret = "{SECRET}"
cookie_secure = false
store = "{'redis' if redis_url else store}"
{extra}[log]
level = "warn"
""")
    p = procs.start([IDGATE, "run", "--config", conf])
    wait_port(admin)
    for _ in range(100):
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=1).status == 200:
                return p
        except Exception:
            time.sleep(0.1)
    raise RuntimeError("idgate never became ready")


def redis_args(port, extra=()):
    return ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", *extra]


def redis_cli(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True, check=True).stdout


def until(what, check, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        try:
            if check():
                return
        except subprocess.CalledProcessError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what}: not within {timeout} s")


def start_sentinel(procs, tmp):
    """A primary, one replica and three sentinels watching them as `mymaster`; returns (url, primary ports, pids)."""
    d = os.path.join(tmp, "sentinel")
    os.makedirs(d, exist_ok=True)
    primary, replica = free_port(), free_port()
    started = [procs.start(redis_args(primary), cwd=d)]
    wait_port(primary)
    started.append(procs.start(redis_args(replica, ["--replicaof", "127.0.0.1", str(primary)]), cwd=d))
    wait_port(replica)
    sentinels = []
    for i in range(3):
        port = free_port()
        conf = os.path.join(d, f"sentinel-{i}.conf")
        with open(conf, "w") as f:
            f.write(f"port {port}\nbind 127.0.0.1\ndir {d}\nsentinel monitor mymaster 127.0.0.1 {primary} 2\n"
                    "sentinel down-after-milliseconds mymaster 5000\n")
        started.append(procs.start(["redis-sentinel", conf], cwd=d))
        wait_port(port)
        sentinels.append(port)
    until("the replica in sync", lambda: "master_link_status:up" in redis_cli(replica, "INFO", "replication"))
    until("the sentinels know each other",
          lambda: all("num-other-sentinels\n2" in redis_cli(p, "SENTINEL", "MASTER", "mymaster") for p in sentinels))
    hosts = ",".join(f"127.0.0.1:{p}" for p in sentinels)
    return f"redis+sentinel://{hosts}/mymaster", [primary], [p.pid for p in started]


def start_cluster(procs, tmp):
    """Three primaries with a replica each (`redis-cli --cluster create`); returns (url, primary ports, pids)."""
    ports = []
    while len(ports) < 6:
        p = free_port()
        if p < 55000 and p not in ports:
            try:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p + 10000))
                ports.append(p)
            except OSError:
                pass
    started = []
    for i, p in enumerate(ports):
        d = os.path.join(tmp, f"cluster-{i}")
        os.makedirs(d, exist_ok=True)
        started += [procs.start(redis_args(p, ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--dir", d]), cwd=d)]
        wait_port(p)
    subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports], "--cluster-replicas", "1",
                    "--cluster-yes"], capture_output=True, check=True)
    until("the cluster ok", lambda: all("cluster_state:ok" in redis_cli(p, "CLUSTER", "INFO") for p in ports))
    primaries = [p for p in ports if "role:master" in redis_cli(p, "INFO", "replication")]
    until("every primary has its replica",
          lambda: all("connected_slaves:1" in redis_cli(p, "INFO", "replication") for p in primaries))
    return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports[:3]), primaries, [p.pid for p in started]


def used_memory(ports):
    """`used_memory` summed over `ports`, less what does not grow with the sessions: the replication backlog (up to
    1 MiB per primary, filled by the first writes) and the client buffers."""
    total = 0
    for p in ports:
        info = dict(l.split(":", 1) for l in redis_cli(p, "INFO", "memory").splitlines() if ":" in l)
        total += int(info["used_memory"]) - sum(int(info[k]) for k in ("mem_replication_backlog", "mem_clients_slaves", "mem_clients_normal"))
    return total


def capacity(topology, url, primaries, n, profile):
    """Redis memory per session: used_memory on every primary before and after writing n sessions."""
    before = used_memory(primaries)
    out = subprocess.run([CAPACITY, url, str(n), profile], capture_output=True, text=True, check=True).stdout
    sizes = json.loads(out.strip().splitlines()[-1])
    delta = used_memory(primaries) - before
    per = delta / n
    r = {"topology": topology, "profile": profile, "sessions": n, "used_memory_delta": delta, "bytes_per_session": per,
         "sessions_per_gib": (1 << 30) / per, **{k: v for k, v in sizes.items() if k.endswith("_bytes")}}
    print(f"capacity {topology:8s} {profile:7s} {n} sessions: {per:.0f} B/session, {r['sessions_per_gib']:,.0f} per GiB "
          f"(ID token {sizes['id_token_bytes']} B)", flush=True)
    return r


def start_apache(procs, tmp, port, op_port, upstream):
    d = os.path.join(tmp, "apache")
    os.makedirs(os.path.join(d, "logs"), exist_ok=True)
    mods = "/usr/lib/apache2/modules"
    conf = os.path.join(d, "httpd.conf")
    with open(conf, "w") as f:
        f.write(f"""ServerRoot {d}
PidFile {d}/httpd.pid
Listen 127.0.0.1:{port}
ServerName 127.0.0.1
ErrorLog {d}/logs/error.log
LogLevel warn
LoadModule mpm_event_module {mods}/mod_mpm_event.so
LoadModule authn_core_module {mods}/mod_authn_core.so
LoadModule authz_core_module {mods}/mod_authz_core.so
LoadModule authz_user_module {mods}/mod_authz_user.so
LoadModule auth_openidc_module {mods}/mod_auth_openidc.so
LoadModule proxy_module {mods}/mod_proxy.so
LoadModule proxy_http_module {mods}/mod_proxy_http.so
User www-data
Group www-data
# Enough workers for every client connection (event MPM).
ServerLimit 8
StartServers 4
ThreadsPerChild 64
MaxRequestWorkers 512
MaxConnectionsPerChild 0
KeepAlive On
MaxKeepAliveRequests 0
KeepAliveTimeout 60
OIDCProviderMetadataURL http://127.0.0.1:{op_port}/.well-known/openid-configuration
OIDCClientID idgate-es256
OIDCClientSecret idgate-es256-secret-that-is-long-enough-for-hs256-keys
OIDCRedirectURI http://127.0.0.1:{port}/redirect_uri
OIDCCryptoPassphrase bench-passphrase-bench-passphrase
OIDCPKCEMethod S256
OIDCScope "openid profile email"
OIDCSessionInactivityTimeout 36000
OIDCSessionMaxDuration 36000
OIDCStripCookies mod_auth_openidc_session mod_auth_openidc_session_chunks mod_auth_openidc_session_0 mod_auth_openidc_session_1
OIDCPassClaimsAs headers
<Location />
  AuthType openid-connect
  Require valid-user
  ProxyPass http://127.0.0.1:{upstream}/ keepalive=On
</Location>
""")
    env = dict(os.environ, APACHE_RUN_DIR=d, APACHE_LOCK_DIR=d, APACHE_LOG_DIR=os.path.join(d, "logs"))
    p = procs.start(["apache2", "-f", conf, "-DFOREGROUND"], env=env)
    wait_port(port)
    return p


# === logging in through the provider's pages ===

class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **kw):
        return None


def login(start_url, own_origin, op_origin, user="alice"):
    """Drives a browser-like login; returns the Cookie header for own_origin."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), NoRedirect())
    opener.addheaders = [("Accept", "text/html")]

    def fetch(url, data=None):
        try:
            r = opener.open(url, data=data.encode() if data else None, timeout=10)
            return r.status, r.headers, r.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read().decode("utf-8", "replace")

    url, data = start_url, None
    for _ in range(30):
        status, headers, body = fetch(url, data)
        data = None
        if status in (301, 302, 303):
            url = urllib.parse.urljoin(url, headers["Location"])
            continue
        if status == 200 and url.startswith(own_origin):
            # Back at the protected site, logged in.
            return "; ".join(f"{c.name}={c.value}" for c in jar if not c.name.startswith("op_"))
        if status != 200 or "<form" not in body:
            raise RuntimeError(f"login through {start_url}: {status} at {url}")
        form = body.split("<form", 1)[1]
        action = urllib.parse.urljoin(url, re.search(r'action="([^"]+)"', form).group(1).replace("&amp;", "&"))
        fields = []
        for inp in re.findall(r"<input[^>]*>", form):
            name = re.search(r'name="([^"]+)"', inp)
            if not name:
                continue
            value = re.search(r'value="([^"]*)"', inp)
            fields.append((name.group(1), {"login": user, "password": "x"}.get(name.group(1), value.group(1) if value else "")))
        url, data = action, urllib.parse.urlencode(fields)
    raise RuntimeError(f"login through {start_url} did not finish")


def probe(url, cookie):
    req = urllib.request.Request(url, headers={"Cookie": cookie, "Accept": "text/html"} if cookie else {"Accept": "text/html"})
    opener = urllib.request.build_opener(NoRedirect())
    try:
        r = opener.open(req, timeout=5)
        return r.status, r.headers.get("X-Seen-User", "")
    except urllib.error.HTTPError as e:
        return e.code, ""


# === measuring ===

def wrk(url, conns, duration, cookie, pids, store_pids=()):
    args = ["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--latency", "-s", os.path.join(ROOT, "bench", "status.lua"), "-H", "Accept: text/html"]
    if cookie:
        args += ["-H", f"Cookie: {cookie}"]
    before, store_before = cpu_ticks(pids), cpu_ticks(store_pids)
    out = subprocess.run(args + [url], capture_output=True, text=True, check=True).stdout
    ticks, store_ticks = cpu_ticks(pids) - before, cpu_ticks(store_pids) - store_before
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    p50 = to_ms(re.search(r"50%\s+([\d.]+\w+)", out).group(1))
    p99 = to_ms(re.search(r"99%\s+([\d.]+\w+)", out).group(1))
    statuses = dict(kv.split("=") for kv in re.search(r"STATUSES (.*)", out).group(1).split(",") if kv)
    errors = re.search(r"Socket errors: (.*)", out)
    cpu_us = ticks / CLK_TCK * 1e6 / max(total, 1)
    store_cpu_us = store_ticks / CLK_TCK * 1e6 / max(total, 1)
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99, "cpu_us": cpu_us, "store_cpu_us": store_cpu_us,
            "statuses": statuses, "requests": total,
            "socket_errors": errors.group(1) if errors else ""}


def to_ms(s):
    n, unit = re.match(r"([\d.]+)(\w+)", s).groups()
    return float(n) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="2 s runs, 1 repetition (a smoke test of the harness)")
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--soak", type=int, default=0, help="also run a soak of this many seconds at 128 connections")
    ap.add_argument("--idle", type=int, default=0, help="also hold this many idle keep-alive connections")
    ap.add_argument("--stores", action="store_true", help="only the session-store section (keeps the main table)")
    args = ap.parse_args()
    if args.quick:
        args.duration, args.reps = 2, 1
    tmp = tempfile.mkdtemp(prefix="idgate-bench-")
    procs = Procs()
    results, caps = [], []
    try:
        ports = {k: free_port() for k in ["upstream", "proxy", "op", "idgate", "admin", "apache", "redis"]}
        start_upstream(procs, tmp, ports["upstream"])
        start_nginx_proxy(procs, tmp, ports["proxy"], ports["upstream"])
        idgate_origin = f"http://127.0.0.1:{ports['idgate']}"
        apache_origin = f"http://127.0.0.1:{ports['apache']}"
        start_op(procs, tmp, ports["op"], [f"{idgate_origin}/oauth2/callback", f"{apache_origin}/redirect_uri"])
        op_origin = f"http://127.0.0.1:{ports['op']}"
        single = procs.start(redis_args(ports["redis"]))
        wait_port(ports["redis"])
        sentinel_url, sentinel_primaries, sentinel_pids = start_sentinel(procs, tmp)
        cluster_url, cluster_primaries, cluster_pids = start_cluster(procs, tmp)
        redis_urls = {"redis": f"redis://127.0.0.1:{ports['redis']}/", "sentinel": sentinel_url, "cluster": cluster_url}
        # Every process of a topology, for the Redis side of a request's CPU cost.
        store_pids = {"redis": [single.pid], "sentinel": sentinel_pids, "cluster": cluster_pids}

        targets = []  # (name, url, cookie, pids, logged_in)
        up = procs.procs[0]
        targets.append(("upstream direct (nginx return 200)", f"http://127.0.0.1:{ports['upstream']}/", None, tree(up.pid), False))
        proxy = procs.procs[1]
        targets.append(("nginx plain reverse proxy", f"http://127.0.0.1:{ports['proxy']}/", None, tree(proxy.pid), False))

        def measure(name, url, cookie, pid_of, logged_in, store_pids=()):
            if logged_in:
                status, seen = probe(url, cookie)
                if status != 200 or not seen:
                    raise RuntimeError(f"{name}: probe got {status} with identity {seen!r}; the run would not be logged in")
            for conns in (32, 128):
                runs = []
                for _ in range(args.reps):
                    r = wrk(url, conns, args.duration, cookie, tree(pid_of()), store_pids)
                    if logged_in and set(r["statuses"]) != {"200"}:
                        raise RuntimeError(f"{name}: not every response was 200: {r['statuses']}")
                    runs.append(r)
                med = {k: statistics.median(r[k] for r in runs) for k in ("rps", "p50_ms", "p99_ms", "cpu_us", "store_cpu_us")}
                med["rss_mib"] = peak_rss_kib(tree(pid_of())) / 1024
                med.update(name=name, conns=conns, statuses=runs[-1]["statuses"], socket_errors=runs[-1]["socket_errors"])
                results.append(med)
                print(f"{name:45s} c={conns:3d} {med['rps']:10.0f} req/s p50 {med['p50_ms']:.2f} ms p99 {med['p99_ms']:.2f} ms "
                      f"cpu {med['cpu_us']:.1f} µs/req rss {med['rss_mib']:.1f} MiB {med['statuses']}", flush=True)

        store_runs = [(store, False) for store in STORES]
        if not args.stores:
            store_runs.insert(1, ("cookie", True))
            for name, url, cookie, pids, logged_in in targets:
                measure(name, url, cookie, lambda p=pids[0]: p, logged_in)
        else:
            # The bare hop, for the ratios.
            name, url, cookie, pids, logged_in = targets[1]
            measure(name, url, cookie, lambda p=pids[0]: p, logged_in)
        for store, assertion in store_runs:
            redis_url = redis_urls.get(store)
            p = start_idgate(procs, tmp, ports["idgate"], ports["admin"], ports["op"], ports["upstream"], store, redis_url,
                             assertion)
            cookie = login(f"{idgate_origin}/oauth2/start?rd=/", idgate_origin, op_origin)
            with_assertion = ", assertion on" if assertion else ""
            measure(f"idgate logged in ({store} sessions{with_assertion})", f"{idgate_origin}/", cookie,
                    lambda p=p: p.pid, True, store_pids.get(store, ()))
            if store == "cookie" and not assertion and not args.stores:
                # The bare hop's cost for the very request idgate gets: the same ~2 KB session cookie, which nginx
                # forwards (idgate strips it).
                measure(SAME_REQUEST, f"http://127.0.0.1:{ports['proxy']}/", cookie, lambda: proxy.pid, False)
                measure("idgate unauthenticated (302)", f"{idgate_origin}/", None, lambda p=p: p.pid, False)
                if args.idle:
                    results.append(idle_connections(ports["idgate"], args.idle, cookie, p.pid))
                if args.soak:
                    results.append(soak(f"{idgate_origin}/", cookie, p.pid, args.soak))
            procs.stop(p)

        if not args.stores:
            apache = start_apache(procs, tmp, ports["apache"], ports["op"], ports["upstream"])
            cookie = login(f"{apache_origin}/", apache_origin, op_origin)
            measure("Apache + mod_auth_openidc logged in", f"{apache_origin}/", cookie, lambda: apache.pid, True)
            measure("Apache + mod_auth_openidc unauthenticated (302)", f"{apache_origin}/", None, lambda: apache.pid, False)

        n = 2000 if args.quick else 20000
        primaries = {"redis": [ports["redis"]], "sentinel": sentinel_primaries, "cluster": cluster_primaries}
        for profile in ("typical", "large"):
            for topology in ("redis", "sentinel", "cluster"):
                caps.append(capacity(topology, redis_urls[topology], primaries[topology], n, profile))
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    report(results, caps, args)


def idle_connections(port, n, cookie, pid):
    socks, ok = [], 0
    req = f"GET / HTTP/1.1\r\nHost: x\r\nAccept: text/html\r\nCookie: {cookie}\r\n\r\n".encode()
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(req)
        socks.append(s)
    for s in socks:
        s.settimeout(10)
        if s.recv(64).startswith(b"HTTP/1.1 200"):
            ok += 1
    rss = peak_rss_kib([pid]) / 1024
    for s in socks:
        s.close()
    print(f"idle keep-alive connections: {ok}/{n} answered 200 and held; peak RSS {rss:.1f} MiB", flush=True)
    return {"name": f"{n} idle keep-alive connections", "ok": ok, "n": n, "rss_mib": rss}


def soak(url, cookie, pid, seconds):
    samples = []
    proc = subprocess.Popen(["wrk", "-t1", "-c128", f"-d{seconds}s", "-s", os.path.join(ROOT, "bench", "status.lua"),
                             "-H", "Accept: text/html", "-H", f"Cookie: {cookie}", url], stdout=subprocess.PIPE, text=True)
    start = time.time()
    while proc.poll() is None:
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
        samples.append((time.time() - start, rss / 1024))
        time.sleep(5)
    out = proc.stdout.read()
    statuses = re.search(r"STATUSES (.*)", out).group(1)
    half = len(samples) // 2
    first, second = statistics.mean(s[1] for s in samples[:half]), statistics.mean(s[1] for s in samples[half:])
    print(f"soak {seconds}s: statuses {statuses}; RSS first half {first:.1f} MiB, second half {second:.1f} MiB", flush=True)
    return {"name": f"soak {seconds}s at 128 connections", "statuses": statuses, "rss_first_mib": first, "rss_second_mib": second}


STORE_SECTION = "## Session stores"


def store_section(measured, by, caps, args):
    """The request cost per store topology and Redis memory per session."""
    lines = ["", STORE_SECTION, "", measured + " idgate logged in with each session store, the same request (one "
             "browser's session). CPU is idgate's process tree, then every process of the Redis topology (Sentinel: "
             "primary, replica, three sentinels; Cluster: three primaries, three replicas), all on this machine over "
             "loopback; \"added\" is the total over cookie sessions at the same connection count.", "",
             "| store | conns | req/s | p50 ms | p99 ms | idgate CPU µs/req | Redis CPU µs/req | added µs/req vs cookie | req/s vs nginx proxy |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for store in STORES:
        for conns in (32, 128):
            r = by[(f"idgate logged in ({store} sessions)", conns)]
            base = by[("idgate logged in (cookie sessions)", conns)]
            proxy = by[("nginx plain reverse proxy", conns)]
            added = r["cpu_us"] + r["store_cpu_us"] - base["cpu_us"] - base["store_cpu_us"]
            redis_cpu = f"{r['store_cpu_us']:.1f}" if store in ("redis", "sentinel", "cluster") else "—"
            lines.append(f"| {store} | {conns} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['cpu_us']:.1f} | "
                         f"{redis_cpu} | {added:+.1f} | {r['rps'] / proxy['rps']:.2f}× |")
    lines += ["", "Redis memory per session: sessions written through idgate's own `Sessions::save` (sealed, each another "
              "user's: the session key and its `sub` and `sid` logout indexes, with their expiries) by "
              "examples/store_capacity.rs; `used_memory` (INFO memory) summed over the primaries, after minus before, "
              "less the replication backlog and client buffers (fixed, not per session). "
              "Each replica holds one more copy. `typical`: an RS256 ID token with profile, email, 5 groups and 3 "
              "roles, and an opaque refresh token; `large`: 40 groups, a JWT refresh token and the access token kept "
              "for `forward_access_token`.", "",
              "| topology | profile | sessions | ID token B | refresh token B | access token B | Redis bytes/session | sessions per GiB |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for c in caps:
        lines.append(f"| {c['topology']} | {c['profile']} | {c['sessions']} | {c['id_token_bytes']} | {c['refresh_token_bytes']} | "
                     f"{c['access_token_bytes']} | {c['bytes_per_session']:.0f} | {c['sessions_per_gib']:,.0f} |")
    return lines


def report(results, caps, args):
    out = os.path.join(ROOT, "bench", "results")
    os.makedirs(out, exist_ok=True)
    measured = (f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores (load average {LOAD_AT_START:.1f} "
                f"at the start); wrk -t1, {args.duration}s runs, median of {args.reps}{' (--quick)' if args.quick else ''}.")
    rows = [r for r in results if "rps" in r]
    by = {(r["name"], r["conns"]): r for r in rows}
    if args.stores:
        # The main table stays the last full run's.
        with open(os.path.join(out, "results.md")) as f:
            lines = f.read().split(f"\n{STORE_SECTION}")[0].rstrip("\n").split("\n")
    else:
        with open(os.path.join(out, "results.json"), "w") as f:
            json.dump(results, f, indent=2)
        lines = [measured, "",
                 "| target | conns | req/s | p50 ms | p99 ms | CPU µs/req | peak RSS MiB | req/s vs nginx proxy | req/s vs nginx, same request | req/s vs peer |",
                 "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            proxy = by.get(("nginx plain reverse proxy", r["conns"]))
            peer_name = "Apache + mod_auth_openidc unauthenticated (302)" if "302" in r["name"] else "Apache + mod_auth_openidc logged in"
            peer = by.get((peer_name, r["conns"]))
            same = by.get((SAME_REQUEST, r["conns"])) if r["name"].startswith("idgate logged in") else None
            vs = lambda base: f"{r['rps'] / base['rps']:.2f}×" if base else "—"
            lines.append(f"| {r['name']} | {r['conns']} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['cpu_us']:.1f} | {r['rss_mib']:.1f} | {vs(proxy)} | {vs(same)} | {vs(peer)} |")
        for r in results:
            if "rps" not in r:
                lines.append("")
                lines.append(f"- {r['name']}: " + ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items() if k != "name"))
    lines += store_section(measured, by, caps, args)
    with open(os.path.join(out, "stores.json"), "w") as f:
        json.dump({"measured": measured, "requests": [by[(f"idgate logged in ({s} sessions)", c)] for s in STORES for c in (32, 128)],
                   "capacity": caps}, f, indent=2)
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(text)
    print(text)
    if args.stores:
        return
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(11, 5))
        names = sorted({r["name"] for r in rows}, key=lambda n: [r["name"] for r in rows].index(n))
        for i, conns in enumerate((32, 128)):
            vals = [by.get((n, conns), {}).get("rps", 0) for n in names]
            ax.barh([y + i * 0.4 for y in range(len(names))], vals, height=0.4, label=f"{conns} connections")
        ax.set_yticks([y + 0.2 for y in range(len(names))], names)
        ax.invert_yaxis()
        ax.set_xlabel("requests per second (higher is better)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(ROOT, "bench", "results", "chart.png"), dpi=100)
    except ImportError:
        print("matplotlib not installed: no chart (pip install matplotlib)")


if __name__ == "__main__":
    sys.exit(main())
