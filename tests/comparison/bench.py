#!/usr/bin/env python3
"""Comparison benchmarks of EpollSharp's echo server against the other designs, in one run.

Started by tests/comparison/run (which builds, publishes, raises the descriptor limit and pins this script to the
load generator's core); see that script and docs/benchmarks.md. Standard library only.

Servers: EchoServer on the epoll and managed backends, ThreadedEchoServer, the C reference echo_ref and InBoxEchoServer.
Each run starts a fresh server pinned to core 0 and runs native/loadgen pinned to core 1, samples the server's
/proc/PID/stat (CPU time), VmRSS and Threads during the measured window, stops the server with SIGTERM and checks its
statistics line. Every figure is the median of the runs, which alternate between the servers.
"""

import argparse
import datetime
import json
import math
import os
import platform
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


# ---- the servers and the workloads ----------------------------------------------------------------------------------

class Server:
    def __init__(self, key, name, short, argv, dotnet, pingpong_only=False):
        self.key = key  # identifier in results and chart columns
        self.pingpong_only = pingpong_only  # left out of the idle, allocation and profile tests
        self.name = name  # as the document names it
        self.short = short  # chart legend
        self.argv = argv  # command line; {pub} and {native} are filled in
        self.dotnet = dotnet
        self.unavailable = None  # the server's own message when it cannot start
        self.core = 0  # the core it is pinned to (loadgen and this script are on core 1)
        self.target = None  # for a proxy: the Server it relays to, started (on core 1) for each run; "{target}" in argv
        self.env = None  # extra environment variables of the server process
        self.client_args = []  # extra loadgen arguments (--tls)


def make_servers(pub, native):
    def d(project, *extra):
        return ["dotnet", os.path.join(pub, project, project + ".dll"), "--port", "0", *extra]

    # On epoll both trigger modes are measured: `epoll` edge-triggered (ready connections come in the order their data
    # arrived) and `epoll-level`, in the ping-pong matrix only, level-triggered (the library's default; they come in the
    # order of the previous wait). The managed backend emulates edge mode at a cost per wait, so it runs level-triggered.
    echo = ("--loops", "1", "--idle-timeout", "0")
    return [
        Server("epoll", "EchoServer (EpollSharp, epoll backend, edge-triggered, 1 loop)", "EpollSharp epoll",
               d("EchoServer", "--backend", "epoll", "--trigger", "edge", *echo), True),
        Server("managed", "EchoServer (EpollSharp, managed backend, level-triggered, 1 loop)", "EpollSharp managed",
               d("EchoServer", "--backend", "managed", "--trigger", "level", *echo), True),
        Server("epoll-level", "EchoServer (EpollSharp, epoll backend, level-triggered, 1 loop)", "EpollSharp epoll level",
               d("EchoServer", "--backend", "epoll", "--trigger", "level", *echo), True, pingpong_only=True),
        # io_uring: readiness through poll requests on a ring (docs/backends-io_uring.md); ping-pong matrix only.
        Server("io_uring", "EchoServer (EpollSharp, io_uring backend, edge-triggered, 1 loop)", "EpollSharp io_uring",
               d("EchoServer", "--backend", "io_uring", "--trigger", "edge", *echo), True, pingpong_only=True),
        Server("threads", "ThreadedEchoServer (thread per connection)", "thread per connection",
               d("ThreadedEchoServer"), True),
        Server("c", "echo_ref (C, raw epoll, 1 thread)", "C echo_ref",
               [os.path.join(native, "echo_ref"), "--port", "0"], False),
        Server("inbox", "InBoxEchoServer (.NET async sockets)", ".NET async sockets",
               d("InBoxEchoServer"), True),
    ]


def make_proxy_servers(pub, native):
    """The proxy comparison (--proxy): TcpProxy and InBoxTcpProxy on core 0, each in front of echo_ref, which runs on core
    1 with loadgen; and loadgen straight to echo_ref, placed the same, as the baseline for the latency a proxy adds."""
    def d(project, *extra):
        return ["dotnet", os.path.join(pub, project, project + ".dll"), "--listen", "127.0.0.1:0", "--target", "{target}",
                *extra]

    def ref(key, name):
        r = Server(key, name, "direct to echo_ref", [os.path.join(native, "echo_ref"), "--port", "0"], False)
        r.core = 1
        return r

    proxy = Server("proxy", "TcpProxy (EpollSharp, epoll backend, level-triggered, 1 loop) → echo_ref", "EpollSharp TcpProxy",
                   d("TcpProxy", "--backend", "epoll", "--loops", "1", "--idle-timeout", "0"), True)
    inbox = Server("inbox-proxy", "InBoxTcpProxy (.NET async sockets) → echo_ref", ".NET async proxy",
                   d("InBoxTcpProxy"), True)
    proxy.target = ref("target", "echo_ref as the target")
    inbox.target = ref("target", "echo_ref as the target")
    return [proxy, inbox, ref("direct", "echo_ref, no proxy (C, raw epoll, on loadgen's core)")]


class Workload:
    def __init__(self, connections, size):
        self.connections = connections
        self.size = size
        self.key = f"{connections}x{size}"
        self.label = f"{connections:,} × {size_label(size)}"


def size_label(size):
    return f"{size // 1024} KiB" if size >= 1024 and size % 1024 == 0 else f"{size} B"


FULL_WORKLOADS = [Workload(1, 64), Workload(64, 64), Workload(1000, 64), Workload(10000, 64), Workload(64, 16384)]
QUICK_WORKLOADS = [Workload(64, 64), Workload(1000, 64), Workload(64, 16384)]
PROXY_WORKLOADS = [Workload(64, 64), Workload(1000, 64), Workload(64, 16384)]
QUICK_PROXY_WORKLOADS = [Workload(64, 64)]


# ---- /proc ----------------------------------------------------------------------------------------------------------

def cpu_split(pid):
    """(utime, stime) of the whole process (all its threads, live and exited), in clock ticks: user space and kernel."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[11]), int(rest[12])  # fields 14 and 15 of proc(5)


def cpu_ticks(pid):
    """utime + stime of the whole process (all its threads, live and exited), in clock ticks."""
    return sum(cpu_split(pid))


def core_busy():
    """{core: busy ticks} from /proc/stat: user, nice, system, irq, softirq and steal (time the hypervisor gave away)."""
    busy = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                v = line.split()
                busy[int(v[0][3:])] = sum(int(x) for x in (v[1], v[2], v[3], v[6], v[7], v[8]))
    return busy


def status(pid):
    """(VmRSS in KiB, Threads) of a process."""
    rss = threads = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return rss, threads


def map_count(pid):
    with open(f"/proc/{pid}/maps", "rb") as f:
        return sum(1 for _ in f)


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


# ---- processes ------------------------------------------------------------------------------------------------------

class Context:
    def __init__(self, args):
        self.args = args
        self.pin = (os.cpu_count() or 1) >= 2
        self.loadgen = os.path.join(args.native, "loadgen")
        self.work = args.work
        self.seq = 0

    def server_cmd(self, server, argv=None):
        return (["taskset", "-c", str(server.core)] if self.pin else []) + (argv or server.argv)

    def client_cmd(self, argv):
        return (["taskset", "-c", "1"] if self.pin else []) + argv

    def next_log(self, what):
        self.seq += 1
        return os.path.join(self.work, f"{self.seq:03d}-{what}")


class RunningServer:
    def __init__(self, proc, port, line, err_path):
        self.proc = proc
        self.pid = proc.pid
        self.port = port
        self.line = line
        self.err_path = err_path
        self.target_rs = None


def read_line(fd, deadline, buf):
    """Reads from fd until a newline or the deadline; returns (line or None, rest of the buffer)."""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            return None, buf
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            return None, buf
        buf += chunk
    line, _, rest = buf.partition(b"\n")
    return line.decode(errors="replace"), rest


def start_server(ctx, server, timeout=20.0, env=None):
    """Starts a server and waits for its 'listening on HOST:PORT' line. Returns (RunningServer, None) or (None, message).
    A proxy's target is started first (RunningServer.target_rs), and stopped with it by stop_server."""
    target_rs, argv = None, None
    env = env or server.env
    if server.target is not None:
        target_rs, message = start_server(ctx, server.target, timeout)
        if target_rs is None:
            return None, f"its target did not start: {message}"
        argv = [a.replace("{target}", f"127.0.0.1:{target_rs.port}") for a in server.argv]
    err_path = ctx.next_log(server.key) + ".stderr"
    err = open(err_path, "wb")
    proc = subprocess.Popen(ctx.server_cmd(server, argv), stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                            env={**os.environ, **env} if env else None)
    err.close()
    line, rest = read_line(proc.stdout.fileno(), time.monotonic() + timeout, b"")
    m = re.match(r"^listening on (\S+):(\d+) backend=(\S+) loops=(\d+)(?: \w+=\S+)*$", line or "")  # api=pipe tls=on ...
    if not m:
        if proc.poll() is None:
            proc.kill()
        rc = proc.wait()
        with open(err_path, errors="replace") as f:
            message = " ".join(f.read().split())[:300]
        if target_rs is not None:
            stop_server(target_rs)
        return None, f"exit code {rc}: {message or line or 'no output'}"
    rs = RunningServer(proc, int(m.group(2)), line, err_path)
    rs.stdout_rest = rest
    rs.target_rs = target_rs
    return rs, None


def stop_server(rs, timeout=25.0):
    """SIGTERM, bounded wait (SIGKILL after the timeout). Returns a dict with rc, the stats line's numbers, and a problem."""
    result = {"rc": None, "stats": None, "problem": None}
    if rs.proc.poll() is None:
        rs.proc.send_signal(signal.SIGTERM)
    try:
        rs.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        rs.proc.kill()
        rs.proc.wait()
        result["problem"] = f"still running {timeout:.0f} s after SIGTERM (killed)"
    result["rc"] = rs.proc.returncode
    out = (rs.stdout_rest + rs.proc.stdout.read()).decode(errors="replace")
    rs.proc.stdout.close()
    # "stats: connections=N bytes=B [allocated=A]" (echo servers), or the proxies' "stats: connections=N
    # bytes_to_target=T bytes_to_client=C connect_failures=F resets_passed=R allocated=A" (bytes: what reached the clients)
    m = re.search(r"^stats: ((?:\w+=\d+ ?)+)$", out, re.M)
    fields = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(1))} if m else {}
    if "connections" in fields and ("bytes" in fields or "bytes_to_client" in fields):
        result["stats"] = {"connections": fields["connections"], "bytes": fields.get("bytes", fields.get("bytes_to_client")),
                           "allocated": fields.get("allocated"), "fields": fields}
    elif not result["problem"]:
        result["problem"] = "no stats line"
    if rs.proc.returncode != 0 and not result["problem"]:
        result["problem"] = f"exit code {rs.proc.returncode} after SIGTERM"
    if result["stats"] and not result["problem"]:
        bad = {k: v for k, v in result["stats"]["fields"].items() if k in ("connect_failures", "resets_passed") and v}
        if bad:
            result["problem"] = "stats: " + ", ".join(f"{k}={v}" for k, v in bad.items())
    if rs.target_rs is not None:
        t = stop_server(rs.target_rs)
        result["target_stats"] = t["stats"]
        if t["problem"] and not result["problem"]:
            result["problem"] = "its target: " + t["problem"]
    return result


class Loadgen:
    """native/loadgen in the background, with its resource usage collected at exit."""

    def __init__(self, ctx, args, budget):
        self.out_path = ctx.next_log("loadgen") + ".out"
        self.err_path = self.out_path[:-4] + ".stderr"
        self.argv = [ctx.loadgen, *args, "--json"]
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(ctx.client_cmd(self.argv), stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        self.started = time.monotonic()
        self.deadline = self.started + budget
        self.rc = None
        self.cpu_s = None
        self.wall_s = None

    def traffic_started(self, deadline):
        """Waits for loadgen's --progress line (its connect phase is over, traffic starts); returns the time, or None."""
        while time.monotonic() < deadline:
            try:
                with open(self.err_path, errors="replace") as f:
                    if " starts" in f.read():
                        return time.monotonic()
            except OSError:
                pass
            if not self.running():
                return None
            time.sleep(0.02)
        return None

    def running(self):
        if self.rc is not None:
            return False
        pid, st, ru = os.wait4(self.proc.pid, os.WNOHANG)
        if pid == 0:
            return True
        self._finished(st, ru)
        return False

    def _finished(self, st, ru):
        self.rc = os.waitstatus_to_exitcode(st)
        self.proc.returncode = self.rc
        self.cpu_s = ru.ru_utime + ru.ru_stime
        self.wall_s = time.monotonic() - self.started

    def wait(self):
        """Waits (bounded) and returns loadgen's JSON result, or None."""
        while self.running():
            if time.monotonic() > self.deadline:
                self.proc.kill()
                _, st, ru = os.wait4(self.proc.pid, 0)
                self._finished(st, ru)
                break
            time.sleep(0.05)
        try:
            with open(self.out_path) as f:
                return json.loads(f.read().strip().splitlines()[-1])
        except (ValueError, IndexError):
            return None

    def stderr(self):
        with open(self.err_path, errors="replace") as f:
            return " ".join(f.read().split())[:300]


def sleep_until(t):
    left = t - time.monotonic()
    if left > 0:
        time.sleep(left)


def wait_for_connections(pid, base_fds, n, deadline, loadgen=None):
    """Polls the server's descriptor count until n more than base are open; returns the time, or None."""
    while time.monotonic() < deadline:
        try:
            if fd_count(pid) - base_fds >= n:
                return time.monotonic()
        except OSError:
            return None
        if loadgen is not None and not loadgen.running():
            return None
        time.sleep(0.02)
    return None


PINGPONG_CHECKS = ("errors", "mismatches", "lost_bytes", "excess_bytes", "connect_failures")


# ---- one pingpong run -----------------------------------------------------------------------------------------------

def connect_budget(connections):
    """Seconds loadgen gets to open its connections (--connect-budget): 5, or 2 ms per connection for thousands."""
    return max(5.0, connections / 500)


def pingpong_run(ctx, server, wl, warmup, duration, perf_events=None):
    """One ping-pong run on a fresh server. With perf_events (perf stat event names), `perf stat -p PID` counts them over
    the measured window as well (row["perf"]: {event: count}, named as parse_perf_stat names them; row["perf_window_s"])."""
    row = {"server": server.key, "workload": wl.key, "connections": wl.connections, "size": wl.size,
           "warmup_s": warmup, "duration_s": duration, "problems": [], "loadavg": os.getloadavg()[0]}
    rs, message = start_server(ctx, server)
    if rs is None:
        row["problems"].append(f"did not start: {message}")
        return row
    try:
        base_fds = fd_count(rs.pid)
        # loadgen's time for opening every connection: its default 5 s, longer for thousands (a thread-per-connection
        # server starts a thread before it accepts the next one).
        budget = connect_budget(wl.connections)
        lg = Loadgen(ctx, ["--port", str(rs.port), "--connections", str(wl.connections), "--size", str(wl.size),
                           "--warmup", str(warmup), "--duration", str(duration), "--connect-budget", f"{budget:g}",
                           "--progress", *server.client_args],
                     budget + warmup + duration + 15)
        # loadgen's warm-up starts once all its connections are open (its --progress line says when). A connection is
        # open once the kernel completed its handshake, which the listen backlog does before the server accepts it: a
        # server that accepts slowly may hold fewer than N even in the measured window (recorded as held_in_window).
        t_conn = lg.traffic_started(lg.started + budget + 3)
        if t_conn is None:
            row["window_note"] = f"loadgen did not report its connections open within {budget + 3:g} s: window from its start"
            t_conn = lg.started
        row["connect_s"] = round(t_conn - lg.started, 3)
        w0, w1 = t_conn + warmup + 0.2, t_conn + warmup + duration - 0.4
        sleep_until(w0)
        if lg.running():
            try:
                row["held_in_window"] = fd_count(rs.pid) - base_fds
            except OSError:
                pass
            u0, k0 = cpu_split(rs.pid)
            c0, t0 = u0 + k0, time.monotonic()
            b0 = core_busy()
            try:
                l0 = cpu_ticks(lg.proc.pid)
            except OSError:
                l0 = None
            tg0 = cpu_ticks(rs.target_rs.pid) if rs.target_rs else 0  # a proxy's target, on core 1
            rss, thr = [], []
            perf = PerfWindow(ctx, server, rs, perf_events, wl.size) if perf_events else None
            while time.monotonic() < w1 and lg.running():
                r, t = status(rs.pid)
                rss.append(r)
                thr.append(t)
                time.sleep(min(0.25, max(0.0, w1 - time.monotonic())))
            u1, k1 = cpu_split(rs.pid)
            c1, t1 = u1 + k1, time.monotonic()
            b1 = core_busy()
            if perf is not None:
                perf.finish(row)
            try:
                l1 = cpu_ticks(lg.proc.pid)
            except OSError:
                l1 = None
            tg1 = cpu_ticks(rs.target_rs.pid) if rs.target_rs else 0
            if rs.target_rs:
                row["target_cpu_s"] = (tg1 - tg0) / CLK_TCK
            row["window_s"] = round(t1 - t0, 3)
            # What other processes took from each core meanwhile: the server runs on core 0, loadgen (and this
            # script, whose sampling is a few milliseconds) on core 1.
            ticks = (t1 - t0) * CLK_TCK
            if ctx.pin and 0 in b0 and 1 in b0:
                own = {0: 0, 1: tg1 - tg0}
                own[server.core] += c1 - c0
                row["other_core0"] = max(0.0, (b1[0] - b0[0] - own[0]) / ticks)
                if l0 is not None and l1 is not None:
                    row["other_core1"] = max(0.0, (b1[1] - b0[1] - own[1] - (l1 - l0)) / ticks)
            if l0 is not None and l1 is not None:
                row["loadgen_window_util"] = (l1 - l0) / ticks
            row["cpu_s"] = (c1 - c0) / CLK_TCK
            row["cpu_user_s"], row["cpu_sys_s"] = (u1 - u0) / CLK_TCK, (k1 - k0) / CLK_TCK
            row["cpu_util"] = row["cpu_s"] / (t1 - t0)
            if rss:
                row["rss_kib"] = max(rss)
                row["threads"] = max(thr)
        result = lg.wait()
        row["loadgen_rc"] = lg.rc
        if row.get("loadgen_window_util") is not None:
            row["loadgen_util"] = row["loadgen_window_util"]
        elif lg.cpu_s is not None and lg.wall_s:
            row["loadgen_util"] = lg.cpu_s / lg.wall_s
        if result is None:
            row["problems"].append(f"loadgen gave no result (exit {lg.rc}): {lg.stderr()}")
        else:
            row["loadgen"] = result
            for k in ("messages_per_s", "p50_us", "p99_us", "p999_us", "max_us"):
                row[k] = result.get(k)
            bad = {k: result.get(k) for k in PINGPONG_CHECKS if result.get(k)}
            if bad or lg.rc != 0:
                row["problems"].append(f"loadgen exit {lg.rc}: " + ", ".join(f"{k}={v}" for k, v in bad.items())
                                       + (f" ({lg.stderr()})" if lg.stderr() else ""))
            if not result.get("messages"):
                row["problems"].append("no message echoed in the measured period")
            if "cpu_s" in row and result.get("messages_per_s"):
                row["cpu_us_per_msg"] = row["cpu_util"] / result["messages_per_s"] * 1e6
                per_msg = 1e6 / (result["messages_per_s"] * row["window_s"])
                row["cpu_user_us_per_msg"] = row["cpu_user_s"] * per_msg
                row["cpu_sys_us_per_msg"] = row["cpu_sys_s"] * per_msg
    finally:
        stop = stop_server(rs)
    row["server_rc"] = stop["rc"]
    row["stats"] = stop["stats"]
    if stop["problem"]:
        row["problems"].append("server: " + stop["problem"])
    if stop["stats"] and row.get("loadgen"):
        if stop["stats"]["connections"] < wl.connections:
            row["problems"].append(f"server counted {stop['stats']['connections']} connections, expected {wl.connections}")
        if stop["stats"]["bytes"] < row["loadgen"]["messages"] * wl.size:
            row["problems"].append(f"server counted {stop['stats']['bytes']} bytes echoed, fewer than loadgen's "
                                   f"{row['loadgen']['messages']} messages of {wl.size} B")
    row["ok"] = not row["problems"]
    return row


class PerfWindow:
    """`perf stat -p PID` over the rest of a run's measured window, with the messages the server received meanwhile.
    perf starts with its events disabled (-D -1) and is switched on and off through its control FIFO (--control), each
    switch acknowledged, so that the counted period is known to a few milliseconds; the messages are the bytes the
    server's sockets received (ss: tcpi_bytes_received, summed over the server's connections) in that period, divided by
    the message size. In ping-pong every received message is echoed once, whatever the server's I/O path."""

    def __init__(self, ctx, server, rs, events, size):
        self.ctx, self.rs, self.size = ctx, rs, size
        base = ctx.next_log("perf-" + server.key)
        self.out, ctl, ack = base + ".stat", base + ".ctl", base + ".ack"
        os.mkfifo(ctl)
        os.mkfifo(ack)
        # O_RDWR: opening a FIFO so never blocks, whether perf has opened its end yet or not
        self.ctl, self.ack = os.open(ctl, os.O_RDWR), os.open(ack, os.O_RDWR)
        self.proc = subprocess.Popen(ctx.client_cmd(["perf", "stat", "-x,", "-o", self.out, "-e", ",".join(events),
                                                     "-D", "-1", "--control", f"fifo:{ctl},{ack}", "-p", str(rs.pid)]),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.problem = None
        self.t_on = self._switch("enable")
        self.b0 = self._bytes()

    def _switch(self, command):
        """Sends enable or disable; returns the time of the acknowledgement, or None (perf did not answer in 15 s)."""
        os.write(self.ctl, (command + "\n").encode())
        ready, _, _ = select.select([self.ack], [], [], 15)
        if not ready:
            self.problem = self.problem or f"perf stat did not acknowledge '{command}'"
            return None
        os.read(self.ack, 64)
        return time.monotonic()

    def _bytes(self):
        """(time in the middle of the snapshot, bytes received by the server's established connections), or None."""
        t0 = time.monotonic()
        try:
            p = subprocess.run(self.ctx.client_cmd(["ss", "-tinH", "state", "established", f"( sport = :{self.rs.port} )"]),
                               capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired) as e:
            self.problem = self.problem or f"ss: {e}"
            return None
        t1 = time.monotonic()
        return (t0 + t1) / 2, sum(int(b) for b in re.findall(r"bytes_received:(\d+)", p.stdout))

    def finish(self, row):
        b1 = self._bytes()
        t_off = self._switch("disable")
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.ctl)
        os.close(self.ack)
        if self.problem is None and (self.t_on is None or t_off is None or not self.b0 or not b1 or b1[0] <= self.b0[0]):
            self.problem = "perf stat or ss gave no window"
        if self.problem:
            row["problems"].append(self.problem)
            return
        try:
            with open(self.out, errors="replace") as f:
                row["perf"] = parse_perf_stat(f.read())
        except OSError as e:
            row["problems"].append(f"perf stat: {e}")
            return
        # the rate between the two snapshots, over the period perf counted
        row["perf_window_s"] = t_off - self.t_on
        rate = (b1[1] - self.b0[1]) / self.size / (b1[0] - self.b0[0])
        row["perf_messages"] = rate * row["perf_window_s"]


# ---- idle -----------------------------------------------------------------------------------------------------------

IDLE_BATCH = 5000  # connections per loadgen process in the idle test


def idle_run(ctx, server, n, hold):
    """Holds n idle connections on a fresh server. loadgen gives up on connections not open within 5 s, and a server
    that accepts slowly (a thread per connection) needs longer for 19,000, so the connections come from loadgen
    processes of at most IDLE_BATCH each, each started once the server holds the ones before; their hold times are
    staggered so that all are open together for the last `hold` seconds."""
    row = {"server": server.key, "connections": n, "hold_s": hold, "problems": []}
    rs, message = start_server(ctx, server)
    if rs is None:
        row["problems"].append(f"did not start: {message}")
        return row
    lgs = []
    try:
        base_fds = fd_count(rs.pid)
        # the baseline: the same server holding one idle connection
        lg = Loadgen(ctx, ["--port", str(rs.port), "--mode", "idle", "--connections", "1", "--duration", "1.5"], 15)
        t = wait_for_connections(rs.pid, base_fds, 1, lg.started + 6, lg)
        if t is not None:
            sleep_until(t + 0.7)
            row["base_rss_kib"], row["base_threads"] = status(rs.pid)
        result = lg.wait()
        if not result or lg.rc != 0 or result.get("echo_ok") != 1:
            row["problems"].append(f"baseline idle run failed (exit {lg.rc}): {result or lg.stderr()}")
        sleep_until(time.monotonic() + 0.3)
        base_fds = fd_count(rs.pid)
        base_maps = map_count(rs.pid)

        k = max(1, math.ceil(n / IDLE_BATCH))
        sizes = [n // k + (1 if i < n % k else 0) for i in range(k)]
        stagger = 6.5  # seconds per later batch: loadgen's 5 s connect budget, and some
        t_start = time.monotonic()
        t_all, peak, dead = None, None, False

        def sample():
            """(rss KiB, threads, connections held) now, or None once the server has died."""
            nonlocal peak, dead
            try:
                r, th = status(rs.pid)
                held = fd_count(rs.pid) - base_fds
            except OSError:
                r = 0
            if r == 0 or rs.proc.poll() is not None:  # gone, or a zombie
                dead = True
                return None
            smp = (r, th, held)
            if peak is None or held > peak[2] or (held == peak[2] and r > peak[0]):
                peak = smp
            return smp

        complete = True
        for i, size in enumerate(sizes):
            # A batch that could not open all its connections in time does not stop the test: the next batches go on
            # until the server holds what it can (or fails).
            smp = sample()
            if smp is None:
                break
            target = smp[2] + size
            duration = (k - 1 - i) * stagger + hold
            lg = Loadgen(ctx, ["--port", str(rs.port), "--mode", "idle", "--connections", str(size),
                               "--duration", f"{duration:g}"], duration + 20)
            lgs.append(lg)
            t_all = None
            while time.monotonic() < lg.started + stagger:
                smp = sample()
                if smp is None:
                    break
                if smp[2] >= target:
                    t_all = time.monotonic()
                    break
                if not lg.running():
                    break
                time.sleep(0.1)
            complete = complete and t_all is not None
            if i == 0 and t_all is not None and smp and smp[2] > 0:
                # memory mappings per connection (the kernel's vm.max_map_count bounds them per process)
                row["maps_per_conn"] = (map_count(rs.pid) - base_maps) / smp[2]
            if dead:
                break
        if not complete:
            t_all = None
        row["batches"] = len(lgs)
        rss, thr, held = [], [], []
        if t_all is not None:
            row["accept_all_s"] = round(t_all - t_start, 3)
            sleep_until(t_all + min(1.0, hold / 3))
            while time.monotonic() < t_all + hold - 0.3 and all(lg.running() for lg in lgs):
                smp = sample()
                if smp is None:
                    break
                rss.append(smp[0])
                thr.append(smp[1])
                held.append(smp[2])
                time.sleep(0.25)
        else:
            # Not all held: follow the server until the last loadgen has given up on the rest.
            while not dead and time.monotonic() < lgs[-1].started + 6 and lgs[-1].running():
                sample()
                time.sleep(0.25)
        if rss:
            row["rss_kib"], row["threads"], row["threads_min"] = max(rss), max(thr), min(thr)
            row["held_sampled"] = min(held)
        elif peak:
            # the most connections the server was seen holding, and its memory and threads then
            row["rss_kib"], row["threads"], row["threads_min"], row["held_sampled"] = peak[0], peak[1], peak[1], peak[2]
            row["partial"] = True
        if dead or rs.proc.poll() is not None:
            with open(rs.err_path, errors="replace") as f:
                err = " ".join(f.read().split())[:200]
            row["died"] = err or f"exit code {rs.proc.poll()}"
            row["problems"].append(f"the server died while accepting, at about {peak[2] if peak else 0:,} connections "
                                   f"({row['died']})")
        elif t_all is None:
            row["problems"].append(f"the server did not hold {n:,} connections (loadgen connects for 5 s per batch of "
                                   f"{IDLE_BATCH:,})")
        results = [lg.wait() for lg in lgs]
        total = {f: sum((r or {}).get(f, 0) for r in results) for f in ("held", "echo_ok", "echo_failed",
                                                                          "connect_failures")}
        row["loadgen"] = total
        if any(r is None for r in results) or total["echo_ok"] != n or total["held"] != n:
            row["problems"].append("idle run: " + ", ".join(f"{f}={v:,}" for f, v in total.items()))
        if "rss_kib" in row and "base_rss_kib" in row and row.get("held_sampled", 0) > 1:
            row["rss_per_conn_bytes"] = (row["rss_kib"] - row["base_rss_kib"]) * 1024 / (row["held_sampled"] - 1)
    finally:
        for lg in lgs:
            if lg.running():
                lg.wait()
        stop = stop_server(rs)
    row["stats"] = stop["stats"]
    if stop["problem"]:
        row["problems"].append("server: " + stop["problem"])
    row["ok"] = not row["problems"]
    return row


# ---- allocation per message -----------------------------------------------------------------------------------------

def alloc_test(ctx, server, connections, size, target_messages, max_long_s):
    """Managed bytes allocated per echoed message in steady state: two runs with the same connections, a short one and a
    long one, from fresh servers; (allocated_long - allocated_short) / (messages_long - messages_short), where messages
    are the server's own echoed bytes / size, so warm-up, start-up and shutdown cancel out."""
    wl = Workload(connections, size)
    short = pingpong_run(ctx, server, wl, 2, 1)
    out = {"server": server.key, "short": short}
    if not short.get("ok") or not short.get("messages_per_s"):
        out["problem"] = "short run failed: " + "; ".join(short["problems"])
        return out
    # sized for half the short run's rate: the rate of one run on a shared machine is no promise for the next
    long_s = min(max_long_s, max(5, math.ceil(target_messages * 2 / short["messages_per_s"]) + 1))
    long = pingpong_run(ctx, server, wl, 2, long_s)
    out["long"] = long
    if not long.get("ok"):
        out["problem"] = "long run failed: " + "; ".join(long["problems"])
        return out
    s, l = short["stats"], long["stats"]
    msgs = (l["bytes"] - s["bytes"]) / size
    out["messages"] = msgs
    out["allocated"] = l["allocated"] - s["allocated"]
    out["per_message"] = out["allocated"] / msgs if msgs > 0 else None
    return out


# ---- profile --------------------------------------------------------------------------------------------------------

SYSCALLS = ("recvfrom", "sendto", "recvmsg", "sendmsg", "epoll_wait", "epoll_pwait", "epoll_ctl", "futex",
            "sched_yield", "read", "write", "poll", "ppoll")


def tracing_dir():
    for d in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
        if os.path.isdir(os.path.join(d, "events", "syscalls")):
            return d
    return None


def perf_works(*argv):
    try:
        p = subprocess.run(["perf", *argv], capture_output=True, text=True, timeout=30, cwd="/tmp")
    except (OSError, subprocess.TimeoutExpired):
        return False
    return p.returncode == 0 and "<not supported>" not in p.stderr and "<not counted>" not in p.stderr


def profile_tools():
    """What profiling works here: {'counters': hardware instructions/cycles, 'perf': software sampling and syscall
    tracepoints}. Without perf's software events the profile falls back to strace -c -f."""
    if not shutil.which("perf"):
        return {"counters": False, "perf": False}
    counters = perf_works("stat", "-e", "instructions", "true")
    sw = (tracing_dir() is not None and perf_works("stat", "-e", "raw_syscalls:sys_enter", "true")
          and perf_works("record", "-q", "-e", "cpu-clock", "-o", "/dev/null", "true"))
    return {"counters": counters, "perf": sw}


def profile_run(ctx, server, wl, tools, warmup=3.0):
    """Profiles a server under load, inside loadgen's measured period: with perf, syscall counts from the kernel's
    tracepoints (which do not slow the process down) and CPU samples by code region (kernel, JIT-compiled .NET code,
    runtime, native libraries) and by function; without perf, strace -c -f over a run without warm-up."""
    out = {"server": server.key}
    use_perf = tools["perf"]
    out["tool"] = "perf" if use_perf else "strace"
    env = {"DOTNET_PerfMapEnabled": "1", "DOTNET_EnableWriteXorExecute": "0"} if (use_perf and server.dotnet) else None
    rs, message = start_server(ctx, server, env=env)
    if rs is None:
        out["problem"] = message
        return out
    base = ctx.next_log("profile-" + server.key)
    try:
        base_fds = fd_count(rs.pid)
        if use_perf:
            window = 2.5
            lg = Loadgen(ctx, ["--port", str(rs.port), "--connections", str(wl.connections), "--size", str(wl.size),
                               "--warmup", str(warmup), "--duration", str(2 * window + 2)], warmup + 2 * window + 20)
            t_conn = wait_for_connections(rs.pid, base_fds, wl.connections, lg.started + 8, lg) or lg.started
            sleep_until(t_conn + warmup + 0.3)
            tdir = tracing_dir()
            events = ["raw_syscalls:sys_enter"] + [f"syscalls:sys_enter_{n}" for n in SYSCALLS
                                                   if os.path.isdir(os.path.join(tdir, "events", "syscalls",
                                                                                 f"sys_enter_{n}"))]
            events += ["task-clock", "context-switches"] + (["instructions", "cycles"] if tools["counters"] else [])
            t0 = time.monotonic()
            subprocess.run(ctx.client_cmd(["perf", "stat", "-x,", "-o", base + ".stat", "-e", ",".join(events),
                                           "-p", str(rs.pid), "--", "sleep", str(window)]),
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
            out["stat_window_s"] = time.monotonic() - t0
            subprocess.run(ctx.client_cmd(["perf", "record", "-q", "-e", "cpu-clock", "-F", "1999", "-p", str(rs.pid),
                                           "-o", base + ".data", "--", "sleep", str(window)]),
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
            result = lg.wait()
            out["loadgen"] = result
            if not result or not result.get("messages_per_s"):
                out["problem"] = "loadgen gave no rate"
                return out
            with open(base + ".stat", errors="replace") as f:
                out["counters"] = parse_perf_stat(f.read())
            # Messages echoed in perf stat's window: every server answers a 64-byte message with exactly one send call
            # (the kernel takes 64 bytes whole), so the send calls count them; loadgen's average rate would not match
            # the window on a busy machine.
            c = out["counters"]
            out["messages"] = sum(c.get(k, 0) for k in ("sendto", "sendmsg")) or result["messages_per_s"] * window
        else:
            cmd = ["strace", "-c", "-f", "-p", str(rs.pid), "-o", base + ".strace"]
            tracer = subprocess.Popen(ctx.client_cmd(cmd), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
            time.sleep(1.0)  # attached to every thread
            lg = Loadgen(ctx, ["--port", str(rs.port), "--connections", str(wl.connections), "--size", str(wl.size),
                               "--warmup", "0", "--duration", "3"], 20)
            result = lg.wait()
            tracer.send_signal(signal.SIGINT)
            try:
                tracer.wait(15)
            except subprocess.TimeoutExpired:
                tracer.kill()
                tracer.wait()
            out["loadgen"] = result
            # every message completed while traced (no warm-up): the measured ones, plus at most one per connection
            out["messages"] = result["messages"] if result else None
            with open(base + ".strace", errors="replace") as f:
                out["strace"] = parse_strace(f.read())
    finally:
        stop_server(rs)
    if use_perf:
        out["regions"], out["functions"] = perf_report(base + ".data", rs.pid)
        for f in (f"/tmp/perf-{rs.pid}.map", f"/tmp/perfinfo-{rs.pid}.map"):
            try:
                os.remove(f)
            except OSError:
                pass
    return out


def parse_perf_stat(text):
    counters = {}
    for line in text.splitlines():
        parts = line.split(",")
        if len(parts) >= 3 and parts[0] and parts[0][0].isdigit():
            name = parts[2].replace("syscalls:sys_enter_", "").replace("raw_syscalls:sys_enter", "all syscalls")
            try:
                counters[name] = float(parts[0])
            except ValueError:
                pass
    return counters


def region_of(dso):
    if dso.startswith("[kernel"):
        return "kernel"
    if dso.startswith("[JIT]") or dso.startswith("perf-") or dso.startswith("memfd:") or dso.endswith(".dll"):
        return ".NET code (JIT and ready-to-run)"
    if dso.startswith("libcoreclr") or dso.startswith("libclrjit") or dso.startswith("libclrgc"):
        return ".NET runtime (VM, JIT compiler, GC)"
    if dso.startswith("lib") or dso.startswith("ld-linux") or dso == "[vdso]":
        return "libc and native libraries"
    return "the program itself" if dso not in ("[unknown]",) else "unknown"


def short_symbol(sym):
    """'instance void [EpollSharp] EpollSharp.EventLoop::Dispatch(uint64,...)[OptimizedTier1]' -> 'EpollSharp.EventLoop::Dispatch'."""
    s = re.sub(r"\[(OptimizedTier1|Optimized|Tier0|Tier1|QuickJitted|OSR|PreJIT|Instrumented[^\]]*)\]$", "", sym)
    s = s.split("(", 1)[0]
    s = re.sub(r"^(instance |static )?", "", s)
    if "::" in s:
        head, _, method = s.rpartition("::")
        head = head.split(" ")[-1]
        s = f"{head}::{method}"
    return s.strip()[:110]


def perf_report(data, pid):
    """(share of samples by region, top functions) from a perf.data file."""
    regions, functions = {}, []
    try:
        p = subprocess.run(["perf", "report", "-i", data, "--stdio", "-q", "--sort", "dso,sym"], capture_output=True,
                           text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return regions, functions
    for line in p.stdout.splitlines():
        m = re.match(r"^\s*([\d.]+)%\s+(.+?)\s{2,}\[([.kj])\]\s+(.*)$", line)
        if not m:
            continue
        pct, dso, kind, sym = float(m.group(1)), m.group(2).strip(), m.group(3), m.group(4).strip()
        region = "kernel" if kind == "k" else region_of(dso)
        regions[region] = regions.get(region, 0.0) + pct
        functions.append({"pct": pct, "region": region, "dso": dso, "symbol": short_symbol(sym)})
    return regions, functions


def parse_strace(text):
    rows = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 5 and re.match(r"^[\d.]+$", parts[0]) and parts[-1] != "total":
            calls = int(parts[3])
            errors = int(parts[4]) if len(parts) == 6 else 0
            rows.append({"syscall": parts[-1], "pct_time": float(parts[0]), "seconds": float(parts[1]),
                         "calls": calls, "errors": errors})
    return rows


# ---- other work on the machine --------------------------------------------------------------------------------------

DISTURBED = 0.25  # a run during which other processes took more than this share of either core is run again
QUIET = 0.15  # both cores below this share busy over a second: quiet enough to start a run


def disturbed(row):
    return max(row.get("other_core0") or 0, row.get("other_core1") or 0) > DISTURBED


class QuietGate:
    """Before a run, waits (at most 20 s) until both cores are quiet; reruns disturbed runs; all within a budget of
    seconds for the whole benchmark, so that a machine that never quiets down still finishes in bounded time."""

    def __init__(self, budget):
        self.budget = budget
        self.spent = 0.0
        self.waits = 0
        self.reruns = 0

    def _busy(self, seconds=1.0):
        b0 = core_busy()
        time.sleep(seconds)
        b1 = core_busy()
        return max((b1[c] - b0[c]) / (seconds * CLK_TCK) for c in b0)

    def wait(self):
        if self.budget <= 0 or self.spent >= self.budget:
            return
        t0 = time.monotonic()
        waited = False
        while self._busy() > QUIET and time.monotonic() - t0 < 20 and self.spent + (time.monotonic() - t0) < self.budget:
            waited = True
        self.spent += time.monotonic() - t0
        self.waits += waited

    def retry(self, cost):
        if self.spent + cost > self.budget:
            return False
        self.spent += cost
        self.reruns += 1
        return True

    def report(self):
        return {"budget_s": self.budget, "spent_s": round(self.spent), "waits": self.waits, "reruns": self.reruns}


# ---- statistics -----------------------------------------------------------------------------------------------------

def summarize(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


METRICS = ("messages_per_s", "p50_us", "p99_us", "cpu_util", "cpu_us_per_msg", "cpu_user_us_per_msg",
           "cpu_sys_us_per_msg", "rss_kib", "threads", "loadgen_util", "other_core0", "other_core1")


# ---- main -----------------------------------------------------------------------------------------------------------

def log(msg):
    print(msg, flush=True)


def describe_row(row):
    if row.get("problems") and not row.get("loadgen"):
        return "; ".join(row["problems"])
    parts = []
    if row.get("messages_per_s") is not None:
        parts.append(f"{row['messages_per_s']:>10,.0f} msg/s  p99 {row['p99_us']:>9,.1f} us")
    if row.get("cpu_us_per_msg") is not None:
        parts.append(f"cpu {row['cpu_util'] * 100:5.1f}% {row['cpu_us_per_msg']:6.2f} us/msg")
    if row.get("rss_kib") is not None:
        parts.append(f"rss {row['rss_kib'] / 1024:7.1f} MiB thr {row['threads']}")
    if row.get("loadgen_util") is not None:
        parts.append(f"loadgen {row['loadgen_util'] * 100:3.0f}%")
    if row.get("other_core0") is not None:
        parts.append(f"others {row['other_core0'] * 100:3.0f}%/{row.get('other_core1', 0) * 100:3.0f}%")
    text = "  ".join(parts)
    if row["problems"]:
        text += "  FAILED: " + "; ".join(row["problems"])
    return text


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke test: short runs, 1 run each, correctness checks only")
    ap.add_argument("--proxy", action="store_true",
                    help="the TCP proxy comparison only: TcpProxy and InBoxTcpProxy in front of echo_ref, and direct")
    ap.add_argument("--shapes", action="store_true",
                    help="the pipes, streams and TLS comparison only (tests/comparison/shapes.py)")
    ap.add_argument("--io-uring", action="store_true",
                    help="the io_uring comparison only (tests/comparison/iouring.py): io_uring completions, epoll, C")
    ap.add_argument("--pub", required=True, help="directory with the published servers (one folder per project)")
    ap.add_argument("--native", required=True, help="directory with echo_ref and loadgen")
    ap.add_argument("--work", required=True, help="directory for logs and results.json")
    ap.add_argument("--docs", help="repository docs/ directory to write benchmarks.md and images/bench-*.png to")
    ap.add_argument("--warmup", type=float)
    ap.add_argument("--duration", type=float)
    ap.add_argument("--runs", type=int)
    ap.add_argument("--idle-connections", type=int)
    ap.add_argument("--servers", help="comma-separated subset of epoll,managed,epoll-level,io_uring,threads,c,inbox")
    ap.add_argument("--workloads", help="comma-separated subset such as 64x64,1000x64")
    ap.add_argument("--quiet-budget", type=float, default=300,
                    help="seconds the full run may spend waiting for quiet cores and rerunning disturbed runs")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: idle,alloc,profile (--io-uring: idle,alloc,syscalls)")
    ap.add_argument("--command", default="tests/comparison/run", help="the command line, as the document shows it")
    ap.add_argument("--meta", help="JSON file with facts about the build (commit, versions) for the document")
    args = ap.parse_args()

    quick = args.quick
    warmup = args.warmup if args.warmup is not None else (0.5 if quick else 4.0)
    duration = args.duration if args.duration is not None else (1.5 if quick else 10.0)
    runs = args.runs or (1 if quick else 3)
    idle_n = args.idle_connections or (1000 if quick else 19000)
    idle_hold = 1.5 if quick else 5.0
    skip = set(filter(None, args.skip.split(",")))
    if quick:
        skip |= {"alloc", "profile"}
    if args.proxy:
        skip |= {"idle", "profile"}
    os.makedirs(args.work, exist_ok=True)
    ctx = Context(args)
    if args.shapes and not quick:
        import shapes  # tests/comparison/shapes.py
        return shapes.run(sys.modules[__name__], ctx, args)
    if args.io_uring and not quick:
        import iouring  # tests/comparison/iouring.py
        return iouring.run(sys.modules[__name__], ctx, args)

    servers = make_proxy_servers(args.pub, args.native) if args.proxy else make_servers(args.pub, args.native)
    if args.servers:
        wanted = args.servers.split(",")
        servers = [s for s in servers if s.key in wanted]
    if args.proxy:
        workloads = QUICK_PROXY_WORKLOADS if quick else PROXY_WORKLOADS
    else:
        workloads = QUICK_WORKLOADS if quick else FULL_WORKLOADS
    if args.workloads:
        wanted = args.workloads.split(",")
        workloads = [w for w in FULL_WORKLOADS if w.key in wanted]
    # The smoke test checks the two proxies as well (one short run each, 64 x 64 B through them to echo_ref).
    extra_quick = []
    if quick and not args.proxy and not args.servers:
        extra_quick = [s for s in make_proxy_servers(args.pub, args.native) if s.target is not None]

    started = time.time()
    facts = {"quick": quick, "warmup_s": warmup, "duration_s": duration, "runs": runs, "pinned": ctx.pin,
             "idle_connections": idle_n, "idle_hold_s": idle_hold, "command": args.command, "work": args.work,
             "loadavg_before": os.getloadavg(), "started": datetime.datetime.now(datetime.timezone.utc).isoformat(
                 timespec="seconds"), "nofile": open_files_limit()}
    facts.update(machine_facts())
    facts["idle_batch"] = IDLE_BATCH
    facts["proxy"] = args.proxy
    if args.meta:
        with open(args.meta) as f:
            facts.update(json.load(f))
    log(f"comparison benchmarks ({'quick' if quick else 'full'}{', proxy' if args.proxy else ''}): {runs} run(s) of {warmup:g} s warm-up + "
        f"{duration:g} s per server and workload; load average {facts['loadavg_before'][0]:.2f}")

    # A server that cannot start (the managed backend before it is merged) is recorded once with its message.
    for s in servers:
        rs, message = start_server(ctx, s)
        if rs is None:
            s.unavailable = message
            log(f"  {s.key}: unavailable ({message})")
        else:
            stop_server(rs)
    active = [s for s in servers if not s.unavailable]

    rows = []
    # Other work on the machine: the full run waits (a little) for both cores to be quiet before each run, and runs
    # again, once, a run during which other processes took more than DISTURBED of a core; within a time budget.
    gate = QuietGate(args.quiet_budget if not quick else 0)
    for wl in workloads:
        for r in range(runs):
            for s in active:
                for attempt in (1, 2):
                    gate.wait()
                    row = pingpong_run(ctx, s, wl, warmup, duration)
                    row["round"] = r + 1
                    rows.append(row)
                    log(f"  {wl.key:>9} run {r + 1} {s.key:>7}: {describe_row(row)}")
                    if attempt == 1 and row.get("ok") and disturbed(row) and gate.retry(warmup + duration + 3):
                        row["disturbed"] = True
                        log(f"  {'':>9} disturbed by other work: once more")
                        continue
                    break
    for s in extra_quick:
        for wl in QUICK_PROXY_WORKLOADS:
            row = pingpong_run(ctx, s, wl, warmup, duration)
            row["round"] = 1
            rows.append(row)
            log(f"  {wl.key:>9} run 1 {s.key:>7}: {describe_row(row)}")
    if quick and not args.proxy and not args.servers:
        # and the shapes: EchoServer --api pipe, KestrelEchoServer, and the TLS pair through loadgen --tls
        import shapes  # tests/comparison/shapes.py
        shape_rows, shape_servers = shapes.quick_rows(sys.modules[__name__], ctx, args, warmup, duration, log)
        rows += shape_rows
        extra_quick += shape_servers
    facts["quiet_gate"] = gate.report()

    idle_rows = []
    if "idle" not in skip:
        for s in active:
            if s.key == "managed" or s.pingpong_only:
                continue
            row = idle_run(ctx, s, idle_n, idle_hold)
            idle_rows.append(row)
            per = row.get("rss_per_conn_bytes")
            log(f"  idle {idle_n} {s.key:>7}: " + (f"rss {row.get('base_rss_kib', 0) / 1024:.1f} -> "
                                                   f"{row.get('rss_kib', 0) / 1024:.1f} MiB, "
                                                   f"{per:,.0f} B/conn, threads {row.get('base_threads')} -> "
                                                   f"{row.get('threads')}" if per is not None else "")
                + ("  FAILED: " + "; ".join(row["problems"]) if row["problems"] else ""))

    allocs = []
    if "alloc" not in skip:
        for s in active:
            if not s.dotnet or s.pingpong_only:
                continue
            target = 1_000_000
            a = alloc_test(ctx, s, 64, 64, target, 60 if s.key in ("epoll", "proxy") else 25)
            allocs.append(a)
            if a.get("per_message") is not None:
                log(f"  alloc {s.key:>7}: {a['allocated']:,} B over {a['messages']:,.0f} messages = "
                    f"{a['per_message']:.4f} B/msg")
            else:
                log(f"  alloc {s.key:>7}: {a.get('problem')}")

    profiles = []
    if "profile" not in skip:
        tools = profile_tools()
        facts["profile_tools"] = tools
        if tools["perf"] or shutil.which("strace"):
            for s in active:
                if s.pingpong_only:
                    continue
                p = profile_run(ctx, s, Workload(64, 64), tools)
                profiles.append(p)
                log(f"  profile {s.key:>7} ({p['tool']}): {p.get('messages') or 0:,.0f} messages"
                    + (f", {p['problem']}" if p.get("problem") else ""))

    facts["loadavg_after"] = os.getloadavg()
    facts["elapsed_s"] = round(time.time() - started)
    results = {"facts": facts, "servers": [{"key": s.key, "name": s.name, "short": s.short, "argv": s.argv,
                                            "unavailable": s.unavailable} for s in servers + extra_quick],
               "workloads": [{"key": w.key, "label": w.label, "connections": w.connections, "size": w.size}
                             for w in workloads],
               "rows": rows, "idle": idle_rows, "alloc": allocs, "profiles": profiles}
    with open(os.path.join(args.work, "results.json"), "w") as f:
        json.dump(results, f, indent=1)

    failed = [r for r in rows + idle_rows if not r.get("ok")]
    passed = len(rows) + len(idle_rows) - len(failed)
    for r in failed:
        what = r.get("workload") or f"idle {r['connections']}"
        log(f"FAILED: {r['server']} {what}: " + "; ".join(r["problems"]))
    log(f"finished in {facts['elapsed_s']} s; load average {facts['loadavg_after'][0]:.2f}; "
        f"results in {os.path.join(args.work, 'results.json')}")

    if args.proxy:
        import report  # tests/comparison/report.py
        section = report.proxy_section(results)
        with open(os.path.join(args.work, "proxy.md"), "w") as f:
            f.write(section)
        log(section)
        if args.docs:
            report.write_proxy_section(section, args.docs)
            log(f"wrote the TCP proxy section of {os.path.join(args.docs, 'benchmarks.md')}")
    elif args.docs:
        import report  # tests/comparison/report.py
        report.write(results, args.docs)
        log(f"wrote {os.path.join(args.docs, 'benchmarks.md')} and {os.path.join(args.docs, 'images')}/bench-*.png")

    print(f"bench: {passed} passed, {len(failed)} failed", flush=True)
    # The smoke test is a check; the full run is a measurement, whose failures are findings written into the document.
    return 1 if failed and (quick or not args.docs) else 0


def open_files_limit():
    import resource
    return list(resource.getrlimit(resource.RLIMIT_NOFILE))


def machine_facts():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = None
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    os_name = "Linux"
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    os_name = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass

    def cmd(*argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return "unknown"

    runtimes = [l.split()[1] for l in cmd("dotnet", "--list-runtimes").splitlines() if l.startswith("Microsoft.NETCore.App ")]
    def sysctl(path):
        try:
            with open(path) as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    return {"max_map_count": sysctl("/proc/sys/vm/max_map_count"), "pid_max": sysctl("/proc/sys/kernel/pid_max"),
            "nproc": os.cpu_count(), "cpu_model": model, "kernel": platform.release(), "os": os_name,
            "mem_mib": mem, "dotnet_sdk": cmd("dotnet", "--version"), "dotnet_runtimes": runtimes,
            "cc": cmd("cc", "--version").splitlines()[0] if cmd("cc", "--version") else "unknown"}


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.exit(main())
