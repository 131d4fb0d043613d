"""The "Pipes, streams and TLS" comparison (tests/comparison/run --shapes), and the shapes' part of the smoke test (--quick).

EpollSharp's EchoServer served four ways (callbacks; an async pipe loop with its continuations on the loop or on the
thread pool; a Stream over the pipes) against the servers .NET has in the box (Kestrel with its sockets transport, and the
Socket async loop of InBoxEchoServer, also with DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS=1), on 64 x 64 B,
1,000 x 64 B and 64 x 16 KiB; then TLS: EchoServer --api pipe --tls against InBoxEchoServer --tls (SslStream), loadgen
--tls on 64 x 1 KiB and 1,000 x 1 KiB. Every run is bench.py's pingpong_run (fresh server on core 0, loadgen on core 1,
server CPU from /proc/PID/stat in loadgen's measured window); 3 alternating rounds; medians. Writes only the section
between SHAPES_BEGIN and SHAPES_END of docs/benchmarks.md and docs/images/bench-shapes-*.png.

Called by bench.py (which passes itself as `bench`); standard library, gnuplot for the charts, openssl for the test
certificate.

Before/after in one run: with SHAPES_BASELINE_PUB=DIR in the environment (DIR a publish directory holding an earlier
build's EchoServer/), the servers "callback-base" and "pipe-base" run that build the same way as "callback" and "pipe",
alternating with them in every round (pick them with --servers callback,pipe,callback-base,pipe-base).
"""

import datetime
import json
import os
import shutil
import subprocess
import time

SHAPES_BEGIN = "<!-- shapes:begin (written by tests/comparison/run --shapes) -->"
SHAPES_END = "<!-- shapes:end -->"

# Targets: reported, never asserted.
TARGET_PIPE_VS_CALLBACK = 1.15  # pipe CPU per message at most this times the callback server's
TARGET_PIPE_VS_INBOX = 0.75  # ... and at most this times the best in-box configuration's
TARGET_TLS_VS_INBOX = 0.90  # EpollSharp TLS (pipe) CPU per message at most this times SslStream's

PFX_PASSWORD = "bench-only"
INLINE_ENV = {"DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS": "1"}

PLAIN_KEYS = ("callback", "pipe", "pipe-pool", "stream", "kestrel", "inbox", "inbox-inline", "callback-uring", "pipe-uring",
              "callback-base", "pipe-base")
URING_ENV = {"EPOLLSHARP_IO_URING_COMPLETIONS": "1"}  # the io_uring rows: the completion path, whatever the default
INBOX_KEYS = ("kestrel", "inbox", "inbox-inline")  # what .NET has in the box, for "the best in-box configuration"
TLS_KEYS = ("pipe-tls", "inbox-tls")

COLORS = {"callback": "#1f77b4", "pipe": "#2ca02c", "pipe-pool": "#98df8a", "stream": "#17becf", "kestrel": "#9467bd",
          "inbox": "#ff7f0e", "inbox-inline": "#ffbb78", "pipe-tls": "#2ca02c", "inbox-tls": "#ff7f0e",
          "callback-base": "#aec7e8", "pipe-base": "#bcbd22", "callback-uring": "#393b79", "pipe-uring": "#637939"}
BASELINE_ENV = "SHAPES_BASELINE_PUB"  # an earlier build's publish directory: adds callback-base and pipe-base


def make_certificate(work):
    """A throw-away self-signed P-256 certificate for localhost in a password-protected .pfx (openssl CLI); (path, None)
    or (None, message)."""
    if not shutil.which("openssl"):
        return None, "openssl is not installed (Debian package openssl): no test certificate for the TLS servers"
    key, crt, pfx = (os.path.join(work, n) for n in ("bench-key.pem", "bench-cert.pem", "bench.pfx"))
    steps = [
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key,
         "-out", crt, "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        ["openssl", "pkcs12", "-export", "-inkey", key, "-in", crt, "-out", pfx, "-passout", "pass:" + PFX_PASSWORD],
    ]
    for argv in steps:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            return None, f"{' '.join(argv[:2])} failed: {p.stderr.strip()[:200]}"
    return pfx, None


def make_servers(bench, pub, pfx):
    def d(project, *extra):
        return ["dotnet", os.path.join(pub, project, project + ".dll"), "--port", "0", *extra]

    # The EchoServer shapes differ only in --api and --pipe-continuations: one loop, epoll, the library's default
    # (level-triggered) trigger mode.
    echo = ("--backend", "epoll", "--loops", "1", "--idle-timeout", "0")
    S = bench.Server
    servers = [
        S("callback", "EchoServer --api callback (EpollSharp callbacks on the loop)", "EpollSharp callbacks",
          d("EchoServer", *echo), True),
        S("pipe", "EchoServer --api pipe (EpollSharp pipes, continuations on the loop)", "EpollSharp pipe",
          d("EchoServer", *echo, "--api", "pipe"), True),
        S("pipe-pool", "EchoServer --api pipe --pipe-continuations pool (EpollSharp pipes, continuations on the thread pool)",
          "EpollSharp pipe (pool)", d("EchoServer", *echo, "--api", "pipe", "--pipe-continuations", "pool"), True),
        S("stream", "EchoServer --api stream (EpollSharp Stream over the pipes, on the loop)", "EpollSharp stream",
          d("EchoServer", *echo, "--api", "stream"), True),
        S("kestrel", "KestrelEchoServer (Kestrel, sockets transport, connection-middleware pipe echo)", "Kestrel",
          d("KestrelEchoServer"), True),
        S("inbox", "InBoxEchoServer (Socket async loop)", ".NET async sockets", d("InBoxEchoServer"), True),
        S("inbox-inline", "InBoxEchoServer with DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS=1", ".NET sockets, inline",
          d("InBoxEchoServer"), True),
    ]
    servers[-1].env = INLINE_ENV
    # The same two EchoServer shapes on the io_uring backend (completion path): what the pipe costs where the loop makes
    # the fewest system calls. Left out (unavailable) where io_uring is.
    uring = ("--backend", "io_uring", "--loops", "1", "--idle-timeout", "0")
    servers += [
        S("callback-uring", "EchoServer --api callback --backend io_uring (EpollSharp callbacks, io_uring completion path)",
          "callbacks, io_uring", d("EchoServer", *uring), True),
        S("pipe-uring", "EchoServer --api pipe --backend io_uring (EpollSharp pipes on the loop, io_uring completion path)",
          "pipe, io_uring", d("EchoServer", *uring, "--api", "pipe"), True),
    ]
    servers[-1].env = URING_ENV
    servers[-2].env = URING_ENV
    base = os.environ.get(BASELINE_ENV)
    if base:
        def b(*extra):
            return ["dotnet", os.path.join(base, "EchoServer", "EchoServer.dll"), "--port", "0", *extra]
        servers += [
            S("callback-base", f"EchoServer --api callback, baseline build ({base})", "callbacks (baseline)", b(*echo), True),
            S("pipe-base", f"EchoServer --api pipe, baseline build ({base})", "pipe (baseline)", b(*echo, "--api", "pipe"),
              True),
        ]
    tls = [
        S("pipe-tls", "EchoServer --api pipe --tls (EpollSharp TLS on the pipe layer, on the loop)", "EpollSharp pipe TLS",
          d("EchoServer", *echo, "--api", "pipe", "--tls", pfx or "", "--tls-password", PFX_PASSWORD), True),
        S("inbox-tls", "InBoxEchoServer --tls (SslStream over NetworkStream)", ".NET SslStream",
          d("InBoxEchoServer", "--tls", pfx or "", "--tls-password", PFX_PASSWORD), True),
    ]
    for s in tls:
        s.client_args = ["--tls"]
    return servers, tls


def workloads(bench):
    W = bench.Workload
    return [W(64, 64), W(1000, 64), W(64, 16384)], [W(64, 1024), W(1000, 1024)]


def quick_rows(bench, ctx, args, warmup, duration, log):
    """The smoke test's shapes pass: one short 64 x 64 B run through EchoServer --api pipe and KestrelEchoServer, and
    64 x 1 KiB with loadgen --tls through EchoServer --api pipe --tls and InBoxEchoServer --tls: checked byte for byte."""
    pfx, problem = make_certificate(args.work)
    plain, tls = make_servers(bench, args.pub, pfx)
    runs = [(s, bench.Workload(64, 64)) for s in plain if s.key in ("pipe", "kestrel")]
    runs += [(s, bench.Workload(64, 1024)) for s in tls]
    rows = []
    for s, wl in runs:
        if s.key in TLS_KEYS and pfx is None:
            row = {"server": s.key, "workload": wl.key, "problems": [problem], "ok": False}
        else:
            row = bench.pingpong_run(ctx, s, wl, warmup, duration)
        row["round"] = 1
        rows.append(row)
        log(f"  {wl.key:>9} run 1 {s.key:>7}: {bench.describe_row(row)}")
    return rows, [s for s, _ in runs]


def run(bench, ctx, args):
    """The --shapes run: returns the process exit code."""
    log = bench.log
    warmup = args.warmup if args.warmup is not None else 3.0
    duration = args.duration if args.duration is not None else 6.0
    runs = args.runs or 3
    os.makedirs(args.work, exist_ok=True)
    pfx, cert_problem = make_certificate(args.work)
    plain, tls = make_servers(bench, args.pub, pfx)
    plain_wls, tls_wls = workloads(bench)
    if args.servers:
        wanted = args.servers.split(",")
        plain = [s for s in plain if s.key in wanted]
        tls = [s for s in tls if s.key in wanted]
    if args.workloads:
        wanted = args.workloads.split(",")
        plain_wls = [w for w in plain_wls if w.key in wanted]
        tls_wls = [w for w in tls_wls if w.key in wanted]

    t_start = time.time()
    facts = {"shapes": True, "warmup_s": warmup, "duration_s": duration, "runs": runs, "pinned": ctx.pin,
             "command": args.command, "work": args.work, "loadavg_before": os.getloadavg(),
             "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    facts.update(bench.machine_facts())
    if args.meta:
        with open(args.meta) as f:
            facts.update(json.load(f))
    log(f"pipes, streams and TLS: {runs} round(s) of {warmup:g} s warm-up + {duration:g} s per server and workload; "
        f"load average {facts['loadavg_before'][0]:.2f}")

    for s in plain + tls:
        if s.key in TLS_KEYS and pfx is None:
            s.unavailable = cert_problem
        else:
            rs, message = bench.start_server(ctx, s)
            if rs is None:
                s.unavailable = message
            else:
                bench.stop_server(rs)
        if s.unavailable:
            log(f"  {s.key}: unavailable ({s.unavailable})")

    gate = bench.QuietGate(args.quiet_budget)
    rows = []
    for group, wls in ((plain, plain_wls), (tls, tls_wls)):
        active = [s for s in group if not s.unavailable]
        for wl in wls:
            for r in range(runs):
                for s in active:
                    for attempt in (1, 2):
                        gate.wait()
                        row = bench.pingpong_run(ctx, s, wl, warmup, duration)
                        row["round"] = r + 1
                        rows.append(row)
                        log(f"  {wl.key:>9} run {r + 1} {s.key:>12}: {bench.describe_row(row)}")
                        if attempt == 1 and row.get("ok") and bench.disturbed(row) and gate.retry(warmup + duration + 3):
                            row["disturbed"] = True
                            log(f"  {'':>9} disturbed by other work: once more")
                            continue
                        break
    facts["quiet_gate"] = gate.report()
    facts["loadavg_after"] = os.getloadavg()
    facts["elapsed_s"] = round(time.time() - t_start)
    results = {"facts": facts,
               "servers": [{"key": s.key, "name": s.name, "short": s.short, "argv": s.argv, "unavailable": s.unavailable}
                           for s in plain + tls],
               "workloads": [{"key": w.key, "label": w.label, "connections": w.connections, "size": w.size}
                             for w in plain_wls],
               "tls_workloads": [{"key": w.key, "label": w.label, "connections": w.connections, "size": w.size}
                                 for w in tls_wls],
               "rows": rows}
    with open(os.path.join(args.work, "results.json"), "w") as f:
        json.dump(results, f, indent=1)

    failed = [r for r in rows if not r.get("ok")]
    for r in failed:
        log(f"FAILED: {r['server']} {r['workload']}: " + "; ".join(r["problems"]))
    log(f"finished in {facts['elapsed_s']} s; load average {facts['loadavg_after'][0]:.2f}; "
        f"results in {os.path.join(args.work, 'results.json')}")

    import report  # tests/comparison/report.py
    text = section(report, results, args.docs)
    with open(os.path.join(args.work, "shapes.md"), "w") as f:
        f.write(text)
    log(text)
    if args.docs:
        write_section(text, args.docs)
        log(f"wrote the pipes, streams and TLS section of {os.path.join(args.docs, 'benchmarks.md')}")
    print(f"bench: {len(rows) - len(failed)} passed, {len(failed)} failed", flush=True)
    # A measurement: its failures are findings written into the document.
    return 1 if failed and not args.docs else 0


# ---- the document -------------------------------------------------------------------------------------------------

def write_section(text, docs):
    path = os.path.join(docs, "benchmarks.md")
    with open(path) as f:
        doc = f.read()
    block = SHAPES_BEGIN + "\n" + text.rstrip("\n") + "\n" + SHAPES_END
    i, j = doc.find(SHAPES_BEGIN), doc.find(SHAPES_END)
    if i >= 0 and j > i:
        doc = doc[:i] + block + doc[j + len(SHAPES_END):]
    else:
        k = doc.find("\n## Reproduce")
        doc = doc.rstrip("\n") + "\n\n" + block + "\n" if k < 0 else doc[:k + 1] + block + "\n\n" + doc[k + 1:]
    with open(path, "w") as f:
        f.write(doc)


def charts(report, results, t, docs):
    """The section's charts: [(file, alt)], or an explanation of why there are none."""
    if not docs:
        return [], None
    if not shutil.which("gnuplot"):
        return [], "gnuplot is not installed"
    report.COLORS.update(COLORS)
    work = os.path.join(results["facts"].get("work") or "/tmp", "charts-shapes")
    os.makedirs(work, exist_ok=True)
    images = os.path.join(docs, "images")
    os.makedirs(images, exist_ok=True)
    avail = {s["key"]: s for s in results["servers"] if not s["unavailable"]}
    plain = [avail[k] for k in PLAIN_KEYS if k in avail]
    tls = [avail[k] for k in TLS_KEYS if k in avail]
    out = []
    try:
        specs = [
            (plain, results["workloads"], "bench-shapes-cpu.png", "cpu_us_per_msg",
             "Server CPU time per echoed message (median; bars: min–max)", "microseconds", False, "CPU per message"),
            (plain, results["workloads"], "bench-shapes-throughput.png", "messages_per_s",
             "Echoed messages per second (median; bars: min–max)", "messages/s (log scale)", True, "Throughput"),
            (tls, results["tls_workloads"], "bench-shapes-tls.png", "cpu_us_per_msg",
             "TLS: server CPU time per echoed message (median; bars: min–max)", "microseconds", False, "TLS CPU per message"),
        ]
        for servers, wls, fname, metric, title, ylabel, log, alt in specs:
            if servers and wls:
                report.bar_chart({"workloads": wls}, t, servers, metric, 1.0, title, ylabel, os.path.join(images, fname),
                                 work, log=log)
                out.append((fname, alt))
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        return out, str(e)
    return out, None


def section(report, results, docs):
    """The "Pipes, streams and TLS" section of docs/benchmarks.md, in Markdown (charts written when docs is given)."""
    t = report.table_of(results)
    f = results["facts"]
    med = report.med
    names = {s["key"]: s["name"] for s in results["servers"]}
    short = {s["key"]: s["short"] for s in results["servers"]}
    unavailable = {s["key"]: s["unavailable"] for s in results["servers"] if s["unavailable"]}
    made, chart_error = charts(report, results, t, docs)
    md = []
    w = md.append
    w("## Pipes, streams and TLS")
    w("")
    w("The same echo served in the shapes EpollSharp offers — callbacks on the loop, an `async` pipe application "
      "(`PipeConnectionHandler`) with its continuations on the loop or on the thread pool, a `Stream` over the pipes "
      "(`PipeConnection.AsStream()`) — against what .NET has in the box: Kestrel with its default sockets transport "
      "and a connection-middleware pipe echo (`samples/KestrelEchoServer`), and `samples/InBoxEchoServer`'s "
      "`Socket` async loop, also with `DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS=1` (its continuations on .NET's epoll "
      "thread instead of the thread pool). Then TLS: `EchoServer --api pipe --tls` (EpollSharp's TLS on the pipe layer, "
      "`SslStream` inside, continuations on the loop) against `InBoxEchoServer --tls` (`SslStream` over `NetworkStream`), "
      "with `loadgen --tls` (OpenSSL, non-blocking on its epoll loop; the handshakes happen while connecting and are not "
      "in the latencies; every decrypted byte is checked). Each server runs alone on core 0, loadgen on core 1; the "
      "EchoServer shapes differ only in `--api` and `--pipe-continuations` (one loop, epoll, level-triggered), but for "
      "two rows of callbacks and pipes on the io_uring backend (`--backend io_uring`, its completion path). CPU per "
      "message is the server process's CPU time (user + system, all threads, `/proc/PID/stat`) over loadgen's measured "
      f"window divided by the messages echoed in it. Medians of {f['runs']} alternating rounds of {f['warmup_s']:g} s "
      f"warm-up + {f['duration_s']:g} s, measured on {f.get('started', '?')} (commit `{f.get('commit', '?')}`"
      f"{', with uncommitted changes' if f.get('dirty') else ''}).")
    w("")
    w(f"Command: `{f.get('command', 'tests/comparison/run --shapes')}` (about 20 minutes; it rewrites only this section, "
      "between its markers, and `docs/images/bench-shapes-*.png`; `--no-docs` for none; `--runs`, `--warmup`, "
      "`--duration`, `--servers callback,pipe,...` and `--workloads` as for the echo servers).")
    w("")
    if unavailable:
        w("Not measured: " + "; ".join(f"{names.get(k, k)}: {v}" for k, v in unavailable.items()) + ".")
        w("")
    for fname, alt in made:
        w(f"![{alt}](images/{fname})")
        w("")
    if chart_error:
        w(f"(No charts: {chart_error}.)")
        w("")

    def table(keys, wls, baseline, baseline_name):
        w(f"| workload | server | messages/s | p50 µs | p99 µs | CPU µs/msg (user + sys) | CPU vs {baseline_name} | threads |")
        w("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for wl in wls:
            k = wl["key"]
            base = med(t, baseline, k, "cpu_us_per_msg")
            for key in keys:
                if (key, k) not in t:
                    continue
                row = t[(key, k)]
                cpu, cu, cs = (med(t, key, k, m) for m in ("cpu_us_per_msg", "cpu_user_us_per_msg", "cpu_sys_us_per_msg"))
                cpu_text = f"{cpu:.2f} ({cu:.2f} + {cs:.2f})" if cpu is not None and cu is not None and cs is not None else "–"
                vs = f"{cpu / base:.2f}×" if cpu is not None and base else "–"
                failed = f" ({row['failed']} of {row['runs']} runs failed)" if row["failed"] else ""
                w(f"| {wl['label']} | {names.get(key, key)}{failed} | {report.fmt(med(t, key, k, 'messages_per_s'))} | "
                  f"{report.fmt(med(t, key, k, 'p50_us'))} | {report.fmt(med(t, key, k, 'p99_us'))} | {cpu_text} | {vs} | "
                  f"{report.fmt(med(t, key, k, 'threads'))} |")
        w("")

    w("### Plain TCP")
    w("")
    table(PLAIN_KEYS, results["workloads"], "callback", "callbacks")

    # the per-round view of the figures the targets compare
    def per_round(keys, wls):
        w("| workload | " + " | ".join(short.get(k, k) for k in keys) + " |")
        w("| --- |" + " --- |" * len(keys))
        for wl in wls:
            cells = []
            for key in keys:
                vals = [r.get("cpu_us_per_msg") if r.get("ok") else None for r in
                        sorted((r for r in results["rows"] if r["server"] == key and r["workload"] == wl["key"]),
                               key=lambda r: r.get("round") or 0)]
                cells.append(", ".join(report.fmt(v, 2) for v in vals) or "–")
            w(f"| {wl['label']} | " + " | ".join(cells) + " |")
        w("")

    w("CPU µs per message of each run, in run order (a run disturbed by other work and run again shows twice):")
    w("")
    per_round(("callback", "pipe", "stream", "kestrel", "inbox", "inbox-inline")
              + tuple(k for k in ("callback-uring", "pipe-uring", "callback-base", "pipe-base") if k in names),
              results["workloads"])

    w("### TLS")
    w("")
    table(TLS_KEYS, results["tls_workloads"], "inbox-tls", "SslStream")
    w("CPU µs per message of each run, in run order:")
    w("")
    per_round(TLS_KEYS, results["tls_workloads"])

    # ---- targets
    w("### Targets")
    w("")
    lines = []
    for wl in results["workloads"]:
        k = wl["key"]
        pipe, cb = med(t, "pipe", k, "cpu_us_per_msg"), med(t, "callback", k, "cpu_us_per_msg")
        inbox = [(med(t, key, k, "cpu_us_per_msg"), key) for key in INBOX_KEYS if med(t, key, k, "cpu_us_per_msg")]
        best = min(inbox) if inbox else None
        parts = []
        if pipe is not None and cb:
            r = pipe / cb
            parts.append(f"pipe / callbacks {r:.2f}× (target ≤ {TARGET_PIPE_VS_CALLBACK}×: "
                         f"{'**met**' if r <= TARGET_PIPE_VS_CALLBACK else '**not met**'})")
        if pipe is not None and best:
            r = pipe / best[0]
            parts.append(f"pipe / best in-box ({short[best[1]]}, {best[0]:.2f} µs) {r:.2f}× (target ≤ {TARGET_PIPE_VS_INBOX}×: "
                         f"{'**met**' if r <= TARGET_PIPE_VS_INBOX else '**not met**'})")
        # On io_uring (reported beside the targets, which are about the epoll rows above).
        pu, cu = med(t, "pipe-uring", k, "cpu_us_per_msg"), med(t, "callback-uring", k, "cpu_us_per_msg")
        if pu is not None and cu:
            parts.append(f"on io_uring, pipe / callbacks {pu / cu:.2f}×")
        if pu is not None and best:
            parts.append(f"on io_uring, pipe / best in-box {pu / best[0]:.2f}×")
        if parts:
            lines.append(f"- {wl['label']}: " + "; ".join(parts) + ".")
    for wl in results["tls_workloads"]:
        k = wl["key"]
        a, b = med(t, "pipe-tls", k, "cpu_us_per_msg"), med(t, "inbox-tls", k, "cpu_us_per_msg")
        if a is not None and b:
            r = a / b
            lines.append(f"- TLS, {wl['label']}: EpollSharp pipe TLS / SslStream {r:.2f}× (target ≤ {TARGET_TLS_VS_INBOX}×: "
                         f"{'**met**' if r <= TARGET_TLS_VS_INBOX else '**not met**'}).")
    w("Server CPU per message, ratios of the medians. The targets: the pipe shape at most "
      f"{TARGET_PIPE_VS_CALLBACK}× the callbacks' CPU per message and at most {TARGET_PIPE_VS_INBOX}× the best in-box "
      "configuration's (the lowest of Kestrel, the in-box async loop and the same with inline completions); "
      f"EpollSharp's TLS at most {TARGET_TLS_VS_INBOX}× `SslStream`'s over `NetworkStream`. They are reported, never "
      "asserted, and the harness is not tuned to meet them.")
    w("")
    md.extend(lines)
    w("")

    # ---- noise
    others = sorted(r["other_core0"] for r in results["rows"] if r.get("other_core0") is not None)
    others1 = sorted(r["other_core1"] for r in results["rows"] if r.get("other_core1") is not None)
    la0, la1 = f["loadavg_before"][0], f["loadavg_after"][0]
    noise = (f"Noise: the machine ({f.get('nproc', '?')} cores, {f.get('cpu_model', '?')}) was shared with other work "
             f"(builds and tests of other changes) during this run: the 1-minute load average was {la0:.2f} before and "
             f"{la1:.2f} after.")
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
    noise += (" Messages/s and latency depend on the share of the core a server gets; CPU per message much less, so it is "
              "the figure to compare — but it moves too (the per-run tables above show by how much), and a difference "
              "within that spread is not a finding.")
    w(noise)
    w("")
    failed = [r for r in results["rows"] if not r.get("ok")]
    if failed:
        w("Failed runs (left out of the medians): " + "; ".join(
            f"{short.get(r['server'], r['server'])}, {r['workload']}, round {r.get('round')}: " + "; ".join(r["problems"])
            + (f" (other processes took {r['other_core0'] * 100:.0f} % of the server's core)" if r.get("other_core0") is not None else "")
            for r in failed) + ".")
        w("")
    return "\n".join(md) + "\n"


if __name__ == "__main__":
    # python3 shapes.py RESULTS.json [DOCS_DIR]: the section again from a results file (charts and docs with DOCS_DIR).
    import sys
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import report
    with open(sys.argv[1]) as f:
        res = json.load(f)
    out = section(report, res, sys.argv[2] if len(sys.argv) > 2 else None)
    if len(sys.argv) > 2:
        write_section(out, sys.argv[2])
    print(out)
