"""The io_uring comparison (tests/comparison/run --io-uring).

EchoServer on the io_uring backend with the connection layer's completion path (EPOLLSHARP_IO_URING_COMPLETIONS=1 in its
environment, whatever the library's default), EchoServer on epoll (edge-triggered, as the full run's `epoll`) and the C
reference echo_ref, on 64 x 64 B, 1,000 x 64 B and 64 x 16 KiB: 3 alternating rounds of bench.py's pingpong_run (fresh
server on core 0, loadgen on core 1, server CPU from /proc/PID/stat over loadgen's measured window); then one more round
in which `perf stat -e raw_syscalls:sys_enter,...` counts the server's system calls over the measured window (kept apart
from the CPU figures: the tracepoints cost the traced process a little per call); then the idle test (19,000
connections) and the allocation test (64 x 64 B, 1,000 x 64 B and 64 x 16 KiB) of both EchoServers. Writes only the
section between IOURING_BEGIN and IOURING_END of docs/benchmarks.md and docs/images/bench-io_uring-*.png.

`--servers` also accepts `io_uring-poll` (the io_uring backend with readiness, EPOLLSHARP_IO_URING_COMPLETIONS=0), which
is not measured by default, `io_uring-plain` (the same EchoServer as `io_uring` with registered files switched off,
EPOLLSHARP_IO_URING_FIXED_FILES=0: the operations name descriptors, for a same-build comparison), and, with EPOLLSHARP_BENCH_BASELINE naming another publish directory (holding EchoServer/,
say of the main branch), `io_uring-base`: that build's EchoServer set up as `io_uring`, for a side-by-side comparison of
two builds in one run (its rows are in results.json and the log; the document's tables show the default servers). Called by bench.py (which passes itself as `bench`); standard library, gnuplot for the
charts, perf for the system calls (root, or kernel.perf_event_paranoid <= 1 with access to the tracepoints; without it
the section says so and has no system-call figures).
"""

import datetime
import json
import os
import shutil
import subprocess
import time

IOURING_BEGIN = "<!-- io_uring:begin (written by tests/comparison/run --io-uring) -->"
IOURING_END = "<!-- io_uring:end -->"

# Targets: reported, never asserted.
TARGET_CPU_VS_C = 0.85  # io_uring server CPU per message at most this times echo_ref's
TARGET_SYSCALLS = 0.2  # io_uring system calls per echoed message at 64 connections
# Bytes allocated per message whose size (whichever sign) is below this read as "none": one allocation per message would
# read at least 24 B (the smallest object), one per hundred messages 0.24 B; what a difference of two runs leaves besides
# is the runtime's own background work, a few kilobytes either way, which over the 64 x 16 KiB runs' messages can read
# several hundredths of a byte per message, also negative (a one-off allocation in the shorter run). Below -TARGET_ALLOC
# the reading gets no verdict (see the targets): the two processes' one-offs differed by more than the tolerance, which
# over the 64 x 16 KiB runs (where each backlog chunk rented at the peak is 16 KiB) was seen at -0.66 and -1.39 B/msg.
TARGET_ALLOC = 0.1

# The allocation test's workloads and the messages its long run aims at (at most 30 s).
ALLOC_RUNS = (("64x64", 1_000_000), ("1000x64", 500_000), ("64x16384", 200_000))

COMPLETIONS_ON = {"EPOLLSHARP_IO_URING_COMPLETIONS": "1"}
COMPLETIONS_OFF = {"EPOLLSHARP_IO_URING_COMPLETIONS": "0"}
FIXED_FILES_OFF = {"EPOLLSHARP_IO_URING_COMPLETIONS": "1", "EPOLLSHARP_IO_URING_FIXED_FILES": "0"}
DEFAULT_KEYS = ("io_uring", "epoll", "c")
DOTNET_KEYS = ("io_uring", "epoll", "io_uring-poll", "io_uring-plain", "io_uring-base")

# System calls counted one by one (those a server of this kind makes); the rest is in "other".
SYSCALLS = ("recvfrom", "sendto", "recvmsg", "sendmsg", "io_uring_enter", "epoll_wait", "epoll_pwait", "epoll_ctl",
            "accept4", "futex", "read", "write", "madvise", "mprotect", "membarrier", "mmap", "munmap")
# The breakdown's columns: (calls, heading); "–" where none of the calls was counted. The runtime's memory calls are
# mostly the garbage collector's (a collection suspends the threads with membarrier, and decommits and protects pages).
CALL_COLUMNS = (("recvfrom", "recv"), ("sendto", "send"), ("io_uring_enter", "io_uring_enter"),
                ("epoll_wait|epoll_pwait", "epoll_wait"), ("futex", "futex"),
                ("madvise|mprotect|membarrier|mmap|munmap", "madvise, mprotect, membarrier, mmap, munmap"))

COLORS = {"io_uring": "#2ca02c", "io_uring-poll": "#98df8a", "io_uring-plain": "#17becf", "epoll": "#1f77b4", "c": "#7f7f7f", "io_uring-base": "#bcbd22"}


def make_servers(bench, pub, native):
    def d(*extra, root=pub):
        return ["dotnet", os.path.join(root, "EchoServer", "EchoServer.dll"), "--port", "0", *extra,
                "--trigger", "edge", "--loops", "1", "--idle-timeout", "0"]

    S = bench.Server
    servers = [
        S("io_uring", "EchoServer (EpollSharp, io_uring backend, completion path, 1 loop)", "EpollSharp io_uring",
          d("--backend", "io_uring"), True),
        S("epoll", "EchoServer (EpollSharp, epoll backend, edge-triggered, 1 loop)", "EpollSharp epoll",
          d("--backend", "epoll"), True),
        S("c", "echo_ref (C, raw epoll, 1 thread)", "C echo_ref", [os.path.join(native, "echo_ref"), "--port", "0"], False),
        S("io_uring-poll", "EchoServer (EpollSharp, io_uring backend, readiness, edge-triggered, 1 loop)",
          "EpollSharp io_uring readiness", d("--backend", "io_uring"), True),
    ]
    plain = S("io_uring-plain", "EchoServer (EpollSharp, io_uring backend, completion path, no registered files, 1 loop)",
              "EpollSharp io_uring (descriptors)", d("--backend", "io_uring"), True)
    servers.append(plain)
    servers[0].env = COMPLETIONS_ON
    servers[3].env = COMPLETIONS_OFF
    plain.env = FIXED_FILES_OFF
    baseline = os.environ.get("EPOLLSHARP_BENCH_BASELINE")
    if baseline:
        base = S("io_uring-base", f"EchoServer of the baseline build in {baseline} (io_uring backend, completion path, 1 loop)",
                 "EpollSharp io_uring (baseline)", d("--backend", "io_uring", root=baseline), True)
        base.env = COMPLETIONS_ON
        servers.append(base)
    return servers


def workloads(bench):
    W = bench.Workload
    return [W(64, 64), W(1000, 64), W(64, 16384)]


def perf_events(bench):
    """The perf stat events for the system-call round, or (None, why not)."""
    if not shutil.which("perf"):
        return None, "perf is not installed (Debian package linux-perf)"
    tdir = bench.tracing_dir()
    if tdir is None or not bench.perf_works("stat", "-e", "raw_syscalls:sys_enter", "true"):
        return None, ("perf cannot count the system-call tracepoints here (they need root, or "
                      "kernel.perf_event_paranoid <= 1 and read access to /sys/kernel/tracing)")
    events = ["raw_syscalls:sys_enter"] + [f"syscalls:sys_enter_{n}" for n in SYSCALLS
                                           if os.path.isdir(os.path.join(tdir, "events", "syscalls", f"sys_enter_{n}"))]
    return events + ["context-switches", "task-clock"], None


def run(bench, ctx, args):
    """The --io-uring run: returns the process exit code."""
    log = bench.log
    warmup = args.warmup if args.warmup is not None else 3.0
    duration = args.duration if args.duration is not None else 6.0
    runs = args.runs or 3
    idle_n = args.idle_connections or 19000
    idle_hold = 5.0
    skip = set(filter(None, args.skip.split(",")))
    os.makedirs(args.work, exist_ok=True)
    everything = make_servers(bench, args.pub, args.native)
    wanted = args.servers.split(",") if args.servers else DEFAULT_KEYS
    servers = [s for s in everything if s.key in wanted]
    wls = workloads(bench)
    if args.workloads:
        wls = [w for w in wls if w.key in args.workloads.split(",")]

    t_start = time.time()
    facts = {"io_uring": True, "warmup_s": warmup, "duration_s": duration, "runs": runs, "pinned": ctx.pin,
             "idle_connections": idle_n, "idle_hold_s": idle_hold, "command": args.command, "work": args.work,
             "loadavg_before": os.getloadavg(),
             "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    facts.update(bench.machine_facts())
    if args.meta:
        with open(args.meta) as f:
            facts.update(json.load(f))
    log(f"io_uring: {runs} round(s) of {warmup:g} s warm-up + {duration:g} s per server and workload; "
        f"load average {facts['loadavg_before'][0]:.2f}")

    for s in servers:
        rs, message = bench.start_server(ctx, s)
        if rs is None:
            s.unavailable = message
            log(f"  {s.key}: unavailable ({message})")
        else:
            bench.stop_server(rs)
    active = [s for s in servers if not s.unavailable]

    gate = bench.QuietGate(args.quiet_budget)
    rows = []
    for wl in wls:
        for r in range(runs):
            for s in active:
                for attempt in (1, 2):
                    gate.wait()
                    row = bench.pingpong_run(ctx, s, wl, warmup, duration)
                    row["round"] = r + 1
                    rows.append(row)
                    log(f"  {wl.key:>9} run {r + 1} {s.key:>13}: {bench.describe_row(row)}")
                    if attempt == 1 and row.get("ok") and bench.disturbed(row) and gate.retry(warmup + duration + 3):
                        row["disturbed"] = True
                        log(f"  {'':>9} disturbed by other work: once more")
                        continue
                    break
    facts["quiet_gate"] = gate.report()

    # System calls: one more round with perf stat attached over the measured window.
    syscall_rows = []
    events, why = (None, "skipped (--skip syscalls)") if "syscalls" in skip else perf_events(bench)
    facts["syscalls_tool"] = "perf" if events else None
    facts["syscalls_missing"] = why
    if events:
        for wl in wls:
            for s in active:
                gate.wait()
                row = bench.pingpong_run(ctx, s, wl, warmup, duration, perf_events=events)
                row["round"] = "syscalls"
                per = syscalls_per_message(row)
                if per:
                    row["syscalls_per_msg"] = per
                syscall_rows.append(row)
                log(f"  {wl.key:>9} syscalls {s.key:>13}: " + (
                    ", ".join(f"{k} {v:.3f}" for k, v in per.items() if v >= 0.0005) + " per message" if per else
                    "no counts: " + "; ".join(row["problems"])))
    else:
        log(f"  system calls: not counted ({why})")

    idle_rows = []
    if "idle" not in skip:
        for s in active:
            if not s.dotnet:
                continue
            row = bench.idle_run(ctx, s, idle_n, idle_hold)
            idle_rows.append(row)
            per = row.get("rss_per_conn_bytes")
            log(f"  idle {idle_n} {s.key:>13}: " + (f"rss {row.get('base_rss_kib', 0) / 1024:.1f} -> "
                                                    f"{row.get('rss_kib', 0) / 1024:.1f} MiB, {per:,.0f} B/conn, threads "
                                                    f"{row.get('base_threads')} -> {row.get('threads')}"
                                                    if per is not None else "")
                + ("  FAILED: " + "; ".join(row["problems"]) if row["problems"] else ""))

    allocs = []
    if "alloc" not in skip:
        for wl, target in ALLOC_RUNS:
            if args.workloads and wl not in args.workloads.split(","):
                continue
            conns, size = (int(x) for x in wl.split("x"))
            for s in active:
                if not s.dotnet:
                    continue
                a = bench.alloc_test(ctx, s, conns, size, target, 30)
                a["workload"], a["connections"], a["size"] = wl, conns, size
                allocs.append(a)
                if a.get("per_message") is not None:
                    log(f"  alloc {wl:>9} {s.key:>13}: {a['allocated']:,} B over {a['messages']:,.0f} messages = "
                        f"{a['per_message']:.4f} B/msg")
                else:
                    log(f"  alloc {wl:>9} {s.key:>13}: {a.get('problem')}")

    facts["loadavg_after"] = os.getloadavg()
    facts["elapsed_s"] = round(time.time() - t_start)
    results = {"facts": facts,
               "servers": [{"key": s.key, "name": s.name, "short": s.short, "argv": s.argv, "env": s.env,
                            "unavailable": s.unavailable} for s in servers],
               "workloads": [{"key": w.key, "label": w.label, "connections": w.connections, "size": w.size} for w in wls],
               "rows": rows, "syscall_rows": syscall_rows, "idle": idle_rows, "alloc": allocs}
    with open(os.path.join(args.work, "results.json"), "w") as f:
        json.dump(results, f, indent=1)

    failed = [r for r in rows + syscall_rows + idle_rows if not r.get("ok")]
    for r in failed:
        log(f"FAILED: {r['server']} {r.get('workload') or 'idle'}: " + "; ".join(r["problems"]))
    log(f"finished in {facts['elapsed_s']} s; load average {facts['loadavg_after'][0]:.2f}; "
        f"results in {os.path.join(args.work, 'results.json')}")

    import report  # tests/comparison/report.py
    text = section(report, results, args.docs)
    with open(os.path.join(args.work, "io_uring.md"), "w") as f:
        f.write(text)
    log(text)
    if args.docs:
        write_section(text, args.docs)
        log(f"wrote the io_uring section of {os.path.join(args.docs, 'benchmarks.md')}")
    total = len(rows) + len(syscall_rows) + len(idle_rows)
    print(f"bench: {total - len(failed)} passed, {len(failed)} failed", flush=True)
    # A measurement: its failures are findings written into the document.
    return 1 if failed and not args.docs else 0


def syscalls_per_message(row):
    """{name: calls per echoed message} over perf stat's window (bench.PerfWindow: the messages are the bytes the server
    received in that window / the message size); "all" is every system call, "other" what the named ones leave."""
    c, msgs = row.get("perf"), row.get("perf_messages")
    if not c or not msgs or "all syscalls" not in c:
        return None
    out = {"all": c["all syscalls"] / msgs}
    named = 0.0
    for n in SYSCALLS:
        if n in c:
            out[n] = c[n] / msgs
            named += c[n]
    out["other"] = max(0.0, c["all syscalls"] - named) / msgs
    if "context-switches" in c:
        out["context-switches"] = c["context-switches"] / msgs
    return out


def per_msg(report, v):
    """Bytes per message: four decimals near zero (the reading of "none"), whole bytes above one."""
    return f"{v:,.0f}" if abs(v) >= 1 else report.per_msg_bytes(v)


def alloc_label(a):
    size = a["size"]
    return f"{a.get('connections', 64):,} × " + (f"{size // 1024} KiB" if size >= 1024 else f"{size} B")


# ---- the document -------------------------------------------------------------------------------------------------

def write_section(text, docs):
    path = os.path.join(docs, "benchmarks.md")
    with open(path) as f:
        doc = f.read()
    block = IOURING_BEGIN + "\n" + text.rstrip("\n") + "\n" + IOURING_END
    i, j = doc.find(IOURING_BEGIN), doc.find(IOURING_END)
    if i >= 0 and j > i:
        doc = doc[:i] + block + doc[j + len(IOURING_END):]
    else:
        k = doc.find("\n## Reproduce")
        doc = doc.rstrip("\n") + "\n\n" + block + "\n" if k < 0 else doc[:k + 1] + block + "\n\n" + doc[k + 1:]
    with open(path, "w") as f:
        f.write(doc)


def syscall_table(report, results):
    """{(server, workload): {"syscalls_per_msg": summary, "context_switches_per_msg": summary}} of the syscall round."""
    out = {}
    for r in results.get("syscall_rows", []):
        per = r.get("syscalls_per_msg")
        if not r.get("ok") or not per:
            continue
        d = out.setdefault((r["server"], r["workload"]), {"rows": []})
        d["rows"].append(per)
    for key, d in out.items():
        d["syscalls_per_msg"] = report.summarize([p["all"] for p in d["rows"]])
        d["context_switches_per_msg"] = report.summarize([p.get("context-switches") for p in d["rows"]])
    return out


def charts(report, results, t, st, docs):
    """The section's charts: [(file, alt)], and an explanation when some could not be made."""
    if not docs:
        return [], None
    if not shutil.which("gnuplot"):
        return [], "gnuplot is not installed"
    report.COLORS.update(COLORS)
    work = os.path.join(results["facts"].get("work") or "/tmp", "charts-io_uring")
    os.makedirs(work, exist_ok=True)
    images = os.path.join(docs, "images")
    os.makedirs(images, exist_ok=True)
    avail = {s["key"]: s for s in results["servers"] if not s["unavailable"]}
    keys = [k for k in ("io_uring", "io_uring-poll", "epoll", "c") if k in avail]
    servers = [avail[k] for k in keys]
    out = []
    try:
        specs = [
            (t, "bench-io_uring-cpu.png", "cpu_us_per_msg", "Server CPU time per echoed message (median; bars: min–max)",
             "microseconds", False, "io_uring: CPU per message"),
            (t, "bench-io_uring-p99.png", "p99_us", "p99 round-trip latency (median; bars: min–max)",
             "microseconds (log scale)", True, "io_uring: p99 latency"),
            (st, "bench-io_uring-syscalls.png", "syscalls_per_msg",
             "Server system calls per echoed message (perf stat, one run)", "system calls per message", False,
             "io_uring: system calls per message"),
        ]
        for table, fname, metric, title, ylabel, log, alt in specs:
            if servers and any(table.get((s["key"], w["key"]), {}).get(metric) for s in servers
                               for w in results["workloads"]):
                report.bar_chart(results, table, servers, metric, 1.0, title, ylabel, os.path.join(images, fname), work,
                                 log=log)
                out.append((fname, alt))
        if results.get("idle"):
            idle = {"idle": results["idle"], "servers": results["servers"], "facts": results["facts"]}
            if report.idle_chart(idle, os.path.join(images, "bench-io_uring-idle.png"), work):
                out.append(("bench-io_uring-idle.png", "io_uring: idle connections"))
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        return out, str(e)
    return out, None


def section(report, results, docs):
    """The io_uring section of docs/benchmarks.md, in Markdown (charts written when docs is given)."""
    t = report.table_of(results)
    st = syscall_table(report, results)
    f = results["facts"]
    med = report.med
    fmt = report.fmt
    names = {s["key"]: s["name"] for s in results["servers"]}
    short = {s["key"]: s["short"] for s in results["servers"]}
    unavailable = {s["key"]: s["unavailable"] for s in results["servers"] if s["unavailable"]}
    keys = [k for k in ("io_uring", "io_uring-poll", "epoll", "c") if k in names and k not in unavailable]
    made, chart_error = charts(report, results, t, st, docs)
    wls = results["workloads"]
    md = []
    w = md.append
    w("## io_uring")
    w("")
    w("EchoServer on the io_uring backend with the connection layer's completion path (multishot receives into the "
      "loop's provided buffer ring, sends as `IORING_OP_SEND` or `IORING_OP_SENDMSG` submitted with the next wait; see "
      "[io_uring](backends-io_uring.md); switched on with `EPOLLSHARP_IO_URING_COMPLETIONS=1` in the server's "
      "environment, whatever the library's default), against the same EchoServer on epoll and the C reference server "
      "`echo_ref` (raw epoll). All three run one loop (one thread for I/O) on core 0, edge-triggered where that applies; "
      "loadgen runs on core 1. CPU per message is the server process's CPU time (user + system, all threads — io_uring's "
      "kernel workers are threads of the process — from `/proc/PID/stat`) over loadgen's measured window divided by the "
      f"messages echoed in it. Medians of {f['runs']} alternating rounds of {f['warmup_s']:g} s warm-up + "
      f"{f['duration_s']:g} s, measured on {f.get('started', '?')} (commit `{f.get('commit', '?')}`"
      f"{', with uncommitted changes' if f.get('dirty') else ''}; Linux {f.get('kernel', '?')}).")
    w("")
    w("System calls per message come from one more round in which `perf stat -e raw_syscalls:sys_enter,"
      "syscalls:sys_enter_*,context-switches -p PID` counts the server's system calls (every thread) during the measured "
      "window: perf starts with its events off and is switched on and off through its control FIFO, and the messages "
      "of that period are the bytes the server's connections received (`ss -ti`, `bytes_received`) over it, divided "
      "by the message size. That round is not in the CPU figures (a traced system call costs a little more). The "
      "counts hardly depend on noise, unlike the times. `perf` with the tracepoints needs root (or "
      "`kernel.perf_event_paranoid` ≤ 1 and access to `/sys/kernel/tracing`).")
    w("")
    w(f"Command: `{f.get('command', 'tests/comparison/run --io-uring')}` (about 15 minutes; it rewrites only this section, "
      "between its markers, and `docs/images/bench-io_uring-*.png`; `--no-docs` for none; `--runs`, `--warmup`, "
      "`--duration`, `--workloads`, `--idle-connections`, `--skip idle,alloc,syscalls`, and `--servers "
      "io_uring,epoll,c,io_uring-poll` — the last is the io_uring backend with readiness, not measured by default).")
    w("")
    if unavailable:
        w("Not measured: " + "; ".join(f"{names.get(k, k)}: {v}" for k, v in unavailable.items()) + ".")
        w("")
    for fname, alt in made:
        w(f"![{alt}](images/{fname})")
        w("")
    if chart_error:
        w(f"(Some charts are missing: {chart_error}.)")
        w("")

    # ---- ping-pong
    w("| workload | server | messages/s | p50 µs | p99 µs | CPU µs/msg (user + sys) | CPU vs C | system calls/msg | "
      "context switches/msg |")
    w("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for wl in wls:
        k = wl["key"]
        base = med(t, "c", k, "cpu_us_per_msg")
        for key in keys:
            if (key, k) not in t:
                continue
            row = t[(key, k)]
            cpu, cu, cs = (med(t, key, k, m) for m in ("cpu_us_per_msg", "cpu_user_us_per_msg", "cpu_sys_us_per_msg"))
            cpu_text = f"{cpu:.2f} ({cu:.2f} + {cs:.2f})" if cpu is not None and cu is not None and cs is not None else "–"
            vs = f"{cpu / base:.2f}×" if cpu is not None and base else "–"
            sc = med(st, key, k, "syscalls_per_msg")
            cw = med(st, key, k, "context_switches_per_msg")
            failed = f" ({row['failed']} of {row['runs']} runs failed)" if row["failed"] else ""
            w(f"| {wl['label']} | {names.get(key, key)}{failed} | {fmt(med(t, key, k, 'messages_per_s'))} | "
              f"{fmt(med(t, key, k, 'p50_us'))} | {fmt(med(t, key, k, 'p99_us'))} | {cpu_text} | {vs} | "
              f"{'–' if sc is None else f'{sc:.3f}'} | {'–' if cw is None else f'{cw:.3f}'} |")
    w("")

    w("CPU µs per message of each run, in run order (a run disturbed by other work and run again shows twice), and "
      "io_uring's ratio to C per round:")
    w("")
    w("| workload | " + " | ".join(short.get(k, k) for k in keys) + " | io_uring ÷ C per round |")
    w("| --- |" + " --- |" * (len(keys) + 1))
    for wl in wls:
        cells = []
        by_round = {}
        for key in keys:
            runs = sorted((r for r in results["rows"] if r["server"] == key and r["workload"] == wl["key"]),
                          key=lambda r: r.get("round") or 0)
            for r in runs:
                if r.get("ok") and not r.get("disturbed"):
                    by_round.setdefault(r.get("round"), {})[key] = r.get("cpu_us_per_msg")
            cells.append(", ".join(fmt(r.get("cpu_us_per_msg") if r.get("ok") else None, 2) for r in runs) or "–")
        ratios = ", ".join(f"{v['io_uring'] / v['c']:.2f}" if v.get("io_uring") and v.get("c") else "–"
                           for _, v in sorted(by_round.items()))
        w(f"| {wl['label']} | " + " | ".join(cells) + f" | {ratios or '–'} |")
    w("")

    # ---- system calls
    if st:
        w("### System calls per echoed message")
        w("")
        w("By call, from the same `perf stat` round (calls per echoed message; `other` is every call not named here):")
        w("")
        w("| workload | server | all | " + " | ".join(label for _, label in CALL_COLUMNS) + " | other |")
        w("| --- | --- | ---: |" + " ---: |" * (len(CALL_COLUMNS) + 1))
        for wl in wls:
            for key in keys:
                d = st.get((key, wl["key"]))
                if not d:
                    continue
                p = d["rows"][0]
                cols = []
                for names_, _ in CALL_COLUMNS:
                    counted = [n for n in names_.split("|") if n in p]
                    cols.append(f"{sum(p[n] for n in counted):.3f}" if counted else "–")
                others = p["other"] + sum(p.get(n, 0.0) for n in ("recvmsg", "sendmsg", "epoll_ctl", "accept4", "read",
                                                                  "write"))
                w(f"| {wl['label']} | {short.get(key, key)} | {p['all']:.3f} | " + " | ".join(cols) + f" | {others:.3f} |")
        w("")
        io = [st.get(("io_uring", wl["key"])) for wl in wls]
        io = [d["rows"][0] for d in io if d]
        if io:
            rw = max(p.get("recvfrom", 0) + p.get("sendto", 0) + p.get("recvmsg", 0) + p.get("sendmsg", 0) for p in io)
            if rw < 0.05:
                w(f"The io_uring server made no socket read or write call of its own (at most {rw:.3f} `recv`/`send` "
                  "per message): its receives and sends went through the ring, so the completion path was on.")
            else:
                w(f"**The io_uring server still made {rw:.2f} socket read or write calls per message: the completion "
                  "path was not (or not always) in use** (a kernel older than 6.1, or a failed buffer-ring "
                  "registration; see [io_uring](backends-io_uring.md)).")
            w("")
    else:
        w(f"System calls were not counted: {f.get('syscalls_missing') or 'no result'}.")
        w("")

    # ---- idle
    idle = results.get("idle") or []
    if idle:
        w("### Idle connections")
        w("")
        w(f"Each EchoServer holds {f['idle_connections']:,} idle connections (as in [Idle connections](#idle-connections): "
          "loadgen `--mode idle`, a 5 s hold, then a 16-byte probe echoed on each); RSS per connection is (RSS while "
          f"holding them − RSS of the same process holding one) / {f['idle_connections'] - 1:,}.")
        w("")
        w("| server | connections held (loadgen) / probes echoed | RSS at 1 → then (MiB) | RSS per connection | "
          "threads | time to accept all |")
        w("| --- | ---: | ---: | ---: | ---: | ---: |")
        for r in idle:
            lg = r.get("loadgen") or {}
            per = r.get("rss_per_conn_bytes")
            accept = "–" if r.get("accept_all_s") is None else f"{r['accept_all_s']:.2f} s"
            w(f"| {names.get(r['server'], r['server'])} | {fmt(lg.get('held'))} / {fmt(lg.get('echo_ok'))} | "
              f"{(r.get('base_rss_kib') or 0) / 1024:.1f} → {(r.get('rss_kib') or 0) / 1024:.1f} | "
              f"{'–' if per is None else f'{per:,.0f} B'} | {r.get('base_threads', '–')} → {r.get('threads', '–')} | "
              f"{accept} |")
        w("")
        for r in idle:
            for p in r.get("problems", []):
                w(f"- {names.get(r['server'], r['server'])}: {p}")
        if any(r.get("problems") for r in idle):
            w("")

    # ---- allocation
    allocs = results.get("alloc") or []
    if allocs:
        w("### Managed allocation per echoed message")
        w("")
        w("As in [Managed allocation per echoed message](#managed-allocation-per-echoed-message): a short and a long run "
          "from fresh servers, (allocated_long − allocated_short) / (messages_long − messages_short), from each server's "
          "`GC.GetTotalAllocatedBytes(true)` and its own count of echoed bytes.")
        w("")
        w("| workload | server | messages (difference) | bytes allocated (difference) | bytes per message |")
        w("| --- | --- | ---: | ---: | ---: |")
        for a in allocs:
            label = alloc_label(a)
            if a.get("per_message") is None:
                w(f"| {label} | {names.get(a['server'], a['server'])} | – | – | failed: {a.get('problem')} |")
            else:
                w(f"| {label} | {names.get(a['server'], a['server'])} | {a['messages']:,.0f} | "
                  f"{a['allocated']:,} | {per_msg(report, a['per_message'])} |")
        w("")
        big = [a for a in allocs if a["server"] == "io_uring" and (a.get("per_message") or 0) > 100]
        if big:
            w("The io_uring server allocates per message here ("
              + ", ".join(f"{alloc_label(a)}: {a['per_message']:,.0f} B" for a in big) + "). The known cause: on the "
              "completion path every `Write` goes into the connection's backlog (`SendQueue`), whose 16 KiB chunks come "
              "from `ArrayPool<byte>.Shared` and stay rented until the send completes, so a loop has about one chunk "
              "rented per connection with a send in flight; the shared pool keeps by default 32 arrays of a size "
              "per core (plus one per thread), and each rent past them allocates a new 16 KiB array (the readiness path sends "
              "straight from the handler's span and queues only what the kernel did not take). With the pool's "
              "capacity raised (`DOTNET_SYSTEM_BUFFERS_SHAREDARRAYPOOL_MAXARRAYSPERPARTITION=4096`) the same server "
              "allocated nothing per message in a trial; the fix belongs in the library (a pool of backlog chunks that "
              "keeps as many as are in flight, as `PipeBlockPool` does for the pipes).")
            w("")

    # ---- targets
    w("### Targets")
    w("")
    w(f"Reported, never asserted: io_uring's CPU per message at most {TARGET_CPU_VS_C}× `echo_ref`'s; at most "
      f"{TARGET_SYSCALLS} system calls per message at 64 connections; no allocation per message (a reading below "
      f"{TARGET_ALLOC} B per message, whichever sign: one allocation per message would read at least 24 B, one per "
      "hundred messages 0.24 B; the difference of two runs leaves a few hundredths of a byte either way at 64 B, see the "
      "allocation section above. A reading below the negative tolerance gets no verdict: allocation per message cannot "
      "be negative, so it is the shorter run's one-off allocations outweighing the longer run's, such as more 16 KiB "
      "backlog chunks rented at once at its peak, worth up to about a byte per message over the 64 × 16 KiB runs); RSS "
      "per idle connection no higher than epoll's.")
    w("")

    def verdict(ok):
        return "**met**" if ok else "**not met**"

    for wl in wls:
        k = wl["key"]
        a, c = med(t, "io_uring", k, "cpu_us_per_msg"), med(t, "c", k, "cpu_us_per_msg")
        if a is not None and c:
            e = med(t, "epoll", k, "cpu_us_per_msg")
            w(f"- CPU, {wl['label']}: io_uring {a:.2f} µs, C {c:.2f} µs: {a / c:.2f}× (target ≤ {TARGET_CPU_VS_C}×: "
              f"{verdict(a / c <= TARGET_CPU_VS_C)})" + (f"; epoll {e / c:.2f}× C." if e else "."))
    for wl in wls:
        if wl["connections"] != 64:
            continue
        sc = med(st, "io_uring", wl["key"], "syscalls_per_msg")
        if sc is not None:
            w(f"- System calls, {wl['label']}: io_uring {sc:.3f} per message (target ≤ {TARGET_SYSCALLS}: "
              f"{verdict(sc <= TARGET_SYSCALLS)}); epoll {fmt(med(st, 'epoll', wl['key'], 'syscalls_per_msg'), 3)}, "
              f"C {fmt(med(st, 'c', wl['key'], 'syscalls_per_msg'), 3)}.")
    for a in allocs:
        if a["server"] == "io_uring" and a.get("per_message") is not None:
            v = a["per_message"]
            if v <= -TARGET_ALLOC:
                # Allocation per message cannot read negative: the shorter run's one-off allocations (how many backlog
                # chunks were rented at once at the peak, say) outweighed the longer run's. Not a finding either way.
                judged = (f"no verdict: the shorter run allocated {-a['allocated']:,} B more than the longer one, "
                          "one-off allocations that differ between the two processes, not allocation per message")
            else:
                judged = verdict(v < TARGET_ALLOC)
            w(f"- Allocation, {alloc_label(a)}: "
              f"io_uring {per_msg(report, v)} B per message (target: none, a reading below {TARGET_ALLOC} B "
              f"whichever sign: {judged}).")
    per = {r["server"]: r.get("rss_per_conn_bytes") for r in idle}
    if per.get("io_uring") is not None and per.get("epoll") is not None:
        w(f"- Idle, {f['idle_connections']:,} connections: io_uring {per['io_uring']:,.0f} B per connection, epoll "
          f"{per['epoll']:,.0f} B (target: no higher: {verdict(per['io_uring'] <= per['epoll'])}; two single runs, a "
          "difference of a few tens of bytes is within their noise).")
    w("")

    # ---- noise
    others = sorted(r["other_core0"] for r in results["rows"] if r.get("other_core0") is not None)
    others1 = sorted(r["other_core1"] for r in results["rows"] if r.get("other_core1") is not None)
    la0, la1 = f["loadavg_before"][0], f["loadavg_after"][0]
    noise = (f"Noise: the machine ({f.get('nproc', '?')} cores, {f.get('cpu_model', '?')}) was shared with other work "
             f"during this run: the 1-minute load average was {la0:.2f} before and {la1:.2f} after.")
    if others:
        noise += (f" In the measured windows other processes took {others[len(others) // 2] * 100:.0f} % of the server's "
                  f"core at the median and {others[-1] * 100:.0f} % at worst")
        if others1:
            noise += f", and {others1[len(others1) // 2] * 100:.0f} % (worst {others1[-1] * 100:.0f} %) of loadgen's"
        noise += "."
    gate = f.get("quiet_gate") or {}
    if gate:
        noise += (f" Runs waited for quiet cores {gate.get('waits', 0)} times and {gate.get('reruns', 0)} disturbed runs "
                  "were run again.")
    noise += (" Times and rates move with the share of the core a server gets; the system-call and allocation counts "
              "hardly do. A CPU difference within the per-round spread above is not a finding.")
    w(noise)
    w("")
    failed = [r for r in results["rows"] + results.get("syscall_rows", []) if not r.get("ok")]
    if failed:
        w("Failed runs (left out of the medians): " + "; ".join(
            f"{short.get(r['server'], r['server'])}, {r['workload']}, round {r.get('round')}: " + "; ".join(r["problems"])
            for r in failed) + ".")
        w("")
    return "\n".join(md) + "\n"


if __name__ == "__main__":
    # python3 iouring.py RESULTS.json [DOCS_DIR]: the section again from a results file (charts and docs with DOCS_DIR).
    import sys
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import report
    with open(sys.argv[1]) as f:
        res = json.load(f)
    out = section(report, res, sys.argv[2] if len(sys.argv) > 2 else None)
    if len(sys.argv) > 2:
        write_section(out, sys.argv[2])
    print(out)
