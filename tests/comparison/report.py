"""Writes docs/benchmarks.md and docs/images/bench-*.png from the results of bench.py. Standard library and gnuplot.

Run by bench.py with --docs; can also be run alone on a results file: python3 report.py RESULTS.json DOCS_DIR.
"""

import json
import os
import shutil
import subprocess
import sys

# Targets: reported, never asserted.
TARGET_VS_C_RATE = 0.90  # EchoServer messages/s >= 0.90 x echo_ref
TARGET_VS_C_P99 = 1.2  # EchoServer p99 <= 1.2 x echo_ref
TARGET_VS_C_CPU = 1.15  # EchoServer CPU per message <= 1.15 x echo_ref
TARGET_VS_INBOX = 1.7  # EchoServer messages/s >= 1.7 x InBoxEchoServer
TARGET_IDLE_BYTES = 2048  # RSS per idle connection
HEADLINE_WORKLOADS = ("64x64", "1000x64")


# ---- formatting -----------------------------------------------------------------------------------------------------

def fmt(v, digits=0):
    if v is None:
        return "–"
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def cell(s, digits=0, scale=1.0):
    """median (min–max) of a summary."""
    if not s:
        return "–"
    med, lo, hi = s["median"] * scale, s["min"] * scale, s["max"] * scale
    if s["n"] == 1:
        return fmt(med, digits)
    return f"{fmt(med, digits)} ({fmt(lo, digits)}–{fmt(hi, digits)})"


def split_cell(row):
    """User-space and kernel CPU µs per message, medians: 'u / k'."""
    u, k = row.get("cpu_user_us_per_msg"), row.get("cpu_sys_us_per_msg")
    if not u or not k:
        return "–"
    return f"{u['median']:.2f} / {k['median']:.2f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def rfmt(r):
    return "–" if r is None else f"{r:.2f}×"


def per_msg_bytes(v):
    return "0.0000" if abs(v) < 0.00005 else f"{v:.4f}"


def yes(ok):
    return "no verdict" if ok is None else ("**met**" if ok else "**missed**")


# ---- summaries ------------------------------------------------------------------------------------------------------

def summarize(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    n = len(values)
    med = values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2
    return {"median": med, "min": values[0], "max": values[-1], "n": n}


METRICS = ("messages_per_s", "p50_us", "p99_us", "cpu_util", "cpu_us_per_msg", "cpu_user_us_per_msg",
           "cpu_sys_us_per_msg", "rss_kib", "threads", "loadgen_util",
           "other_core0", "other_core1", "held_in_window")


def table_of(results):
    """{(server, workload): {metric: summary, 'runs': n, 'failed': n}}."""
    groups = {}
    for row in results["rows"]:
        groups.setdefault((row["server"], row["workload"]), []).append(row)
    out = {}
    for key, runs in groups.items():
        # a run disturbed by other work and run again is shown, but not counted
        good = [r for r in runs if r.get("ok") and not r.get("disturbed")]
        out[key] = {m: summarize([r.get(m) for r in good]) for m in METRICS}
        out[key]["runs"] = len(runs)
        out[key]["failed"] = len([r for r in runs if not r.get("ok")])
        out[key]["problems"] = [p for r in runs for p in r.get("problems", [])]
    return out


def med(t, server, wl, metric):
    s = t.get((server, wl), {}).get(metric)
    return s["median"] if s else None


# ---- charts ---------------------------------------------------------------------------------------------------------

COLORS = {"epoll": "#1f77b4", "epoll-level": "#17becf", "managed": "#9467bd", "threads": "#d62728", "c": "#7f7f7f", "inbox": "#ff7f0e"}


def gnuplot(script, work):
    path = os.path.join(work, "chart.gp")
    with open(path, "w") as f:
        f.write(script)
    p = subprocess.run(["gnuplot", path], capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise RuntimeError(f"gnuplot failed: {p.stderr.strip()}")


def bar_chart(results, t, servers, metric, scale, title, ylabel, out, work, log=True):
    dat = os.path.join(work, f"{metric}.dat")
    with open(dat, "w") as f:
        for w in results["workloads"]:
            cols = [f'"{w["label"]}"']
            for s in servers:
                v = t.get((s["key"], w["key"]), {}).get(metric)
                cols += [f"{v[k] * scale:.6g}" for k in ("median", "min", "max")] if v else ["?", "?", "?"]
            f.write(" ".join(cols) + "\n")
    plots = []
    for i, s in enumerate(servers):
        c = 2 + 3 * i
        src = f"'{dat}'" if i == 0 else "''"
        xt = ":xtic(1)" if i == 0 else ""
        plots.append(f"{src} using {c}:{c + 1}:{c + 2}{xt} title '{s['short']}' lc rgb '{COLORS.get(s['key'], '#000000')}'")
    script = f"""set terminal pngcairo size 1000,520 font 'DejaVu Sans,10' noenhanced
set output '{out}'
set datafile missing '?'
set title '{title}'
set ylabel '{ylabel}'
set style data histogram
set style histogram errorbars gap 2 lw 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set key top left horizontal
set grid ytics
set xtics nomirror
{'set logscale y' if log else 'set yrange [0:*]'}
plot {', '.join(plots)}
"""
    gnuplot(script, work)


def idle_chart(results, out, work):
    rows = [r for r in results["idle"] if r.get("rss_per_conn_bytes") is not None]
    if not rows:
        return False
    names = {s["key"]: s["short"] for s in results["servers"]}
    dat = os.path.join(work, "idle.dat")
    with open(dat, "w") as f:
        for r in rows:
            label = names[r["server"]].replace(" ", "\\n", 1)
            if r.get("partial"):
                label += f"\\n(held {r['held_sampled']:,}{', died' if r.get('died') else ''})"
            f.write(f'"{label}" {max(r["rss_per_conn_bytes"], 1):.6g} {r["threads"]} '
                    f'"{COLORS.get(r["server"], "#000000")}"\n')
    n = results["facts"]["idle_connections"]
    script = f"""set terminal pngcairo size 1000,460 font 'DejaVu Sans,10' noenhanced
set output '{out}'
set multiplot layout 1,2 title 'Idle: {n:,} connections held by one server process'
set bmargin 5
set style fill solid 0.85 border -1
set boxwidth 0.6
set grid ytics
set logscale y
set xtics nomirror
set yrange [1:*]
unset key
set title 'Resident memory per connection (bytes, above the 1-connection baseline)'
plot '{dat}' using 0:2:(0.6):xtic(1) with boxes lc rgb '#1f77b4', '' using 0:2:(sprintf('%.0f', $2)) with labels offset 0,1
set title 'Threads while holding them'
set yrange [0.5:*]
plot '{dat}' using 0:3:(0.6):xtic(1) with boxes lc rgb '#d62728', '' using 0:3:(sprintf('%d', $3)) with labels offset 0,1
unset multiplot
"""
    gnuplot(script, work)
    return True


# ---- the document ---------------------------------------------------------------------------------------------------

def write(results, docs):
    facts = results["facts"]
    t = table_of(results)
    servers = results["servers"]
    names = {s["key"]: s["name"] for s in servers}
    avail = [s for s in servers if not s["unavailable"]]
    work = os.path.join(results["facts"].get("work") or "/tmp", "charts")
    os.makedirs(work, exist_ok=True)
    images = os.path.join(docs, "images")
    os.makedirs(images, exist_ok=True)

    charts = []
    chart_error = None
    if shutil.which("gnuplot"):
        try:
            specs = [
                ("bench-throughput.png", "messages_per_s", 1.0, "Echoed messages per second (median; bars: min–max)",
                 "messages/s (log scale)", "Throughput"),
                ("bench-p99.png", "p99_us", 1.0, "99th percentile round-trip latency (median; bars: min–max)",
                 "microseconds (log scale)", "p99 latency"),
                ("bench-cpu-per-message.png", "cpu_us_per_msg", 1.0,
                 "Server CPU time per echoed message (median; bars: min–max)", "microseconds (log scale)",
                 "CPU per message"),
            ]
            for fname, metric, scale, title, ylabel, alt in specs:
                bar_chart(results, t, avail, metric, scale, title, ylabel, os.path.join(images, fname), work)
                charts.append((fname, alt))
            if idle_chart(results, os.path.join(images, "bench-idle.png"), work):
                charts.append(("bench-idle.png", "Idle connections"))
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
            chart_error = str(e)
    else:
        chart_error = "gnuplot is not installed"

    md = []
    w = md.append

    w("# Benchmarks: threads vs epoll, side by side")
    w("")
    w("<!-- Generated by tests/comparison/run from one run of the script; rerun it rather than edit the numbers. -->")
    w("")
    w("One run of `tests/comparison/run` measures these echo servers under the same load, alternating between them, on "
      "the same machine: EpollSharp's `samples/EchoServer` on the epoll backend, edge-triggered (and, in the ping-pong "
      "matrix only, level-triggered, to compare the two modes), and on the managed backend; the thread-per-connection "
      "`samples/ThreadedEchoServer`; the C reference `native/echo/echo_ref` (one thread, raw epoll, edge-triggered: "
      "what one core can do); and `samples/InBoxEchoServer`, the server a C# developer writes without this package "
      "(`Socket.AcceptAsync`, then `await ReceiveAsync`/`SendAsync` per connection on .NET's own socket engine). The "
      "numbers below come from that run; see [Noise](#noise) for how much other work on the machine disturbed it.")
    w("")

    # ---- headline
    w("## Headline")
    w("")
    w("EpollSharp's echo server (epoll backend, one loop) against the C reference and against the in-box .NET server, "
      "medians of the runs. Messages/s and CPU time per message are ratios of EchoServer to the other server; "
      "for p99 latency and CPU per message, lower is better, so a ratio below 1 favours EchoServer.")
    w("")
    w("| workload | EchoServer msg/s | vs C: msg/s | vs C: p99 | vs C: CPU/msg | vs in-box: msg/s | vs in-box: CPU/msg | vs threads: msg/s |")
    w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for wl in results["workloads"]:
        k = wl["key"]
        w(f"| {wl['label']} | {fmt(med(t, 'epoll', k, 'messages_per_s'))} "
          f"| {rfmt(ratio(med(t, 'epoll', k, 'messages_per_s'), med(t, 'c', k, 'messages_per_s')))} "
          f"| {rfmt(ratio(med(t, 'epoll', k, 'p99_us'), med(t, 'c', k, 'p99_us')))} "
          f"| {rfmt(ratio(med(t, 'epoll', k, 'cpu_us_per_msg'), med(t, 'c', k, 'cpu_us_per_msg')))} "
          f"| {rfmt(ratio(med(t, 'epoll', k, 'messages_per_s'), med(t, 'inbox', k, 'messages_per_s')))} "
          f"| {rfmt(ratio(med(t, 'epoll', k, 'cpu_us_per_msg'), med(t, 'inbox', k, 'cpu_us_per_msg')))} "
          f"| {rfmt(ratio(med(t, 'epoll', k, 'messages_per_s'), med(t, 'threads', k, 'messages_per_s')))} |")
    w("")
    verdicts = targets(results, t)
    w("| target (reported, not asserted) | measured | verdict |")
    w("| --- | --- | --- |")
    for v in verdicts:
        w(f"| {v['target']} | {v['measured']} | {yes(v['ok'])} |")
    w("")
    w("What the misses mean and what would close them: [Targets](#targets).")
    w("")

    # ---- machine and method
    w("## The run")
    w("")
    la0, la1 = facts["loadavg_before"], facts["loadavg_after"]
    w(f"- Machine: {facts['nproc']} cores ({facts['cpu_model']}), {fmt(facts.get('mem_mib'))} MiB, {facts['os']}, "
      f"kernel {facts['kernel']}; loopback only.")
    w(f"- .NET SDK {facts['dotnet_sdk']}, runtime {', '.join(facts['dotnet_runtimes']) or 'unknown'}; {facts['cc']}.")
    if facts.get("commit"):
        w(f"- Commit `{facts['commit']}`{' with uncommitted changes' if facts.get('dirty') else ''}, "
          f"{facts.get('started', '')}; the whole run took {facts['elapsed_s'] / 60:.1f} minutes.")
    w(f"- Load average (1, 5, 15 min) before: {la0[0]:.2f}, {la0[1]:.2f}, {la0[2]:.2f}; after: "
      f"{la1[0]:.2f}, {la1[1]:.2f}, {la1[2]:.2f}.")
    w(f"- Descriptor limit (soft, hard): {facts['nofile'][0]:,}, {facts['nofile'][1]:,}.")
    w(f"- Command: `{facts['command']}`")
    w("")
    w("How each figure is made:")
    w("")
    pin = ("the server pinned to core 0 (`taskset -c 0`), the load generator and this script to core 1 (`taskset -c 1`)"
           if facts["pinned"] else "no pinning (fewer than two cores)")
    w(f"- Servers are `dotnet publish -c Release` builds run directly (`dotnet X.dll`, never `dotnet run`) and the "
      f"CMake Release build of `native/`; {pin}. Each run starts a fresh server and stops it with SIGTERM; its "
      "`stats:` line must count every connection and at least the bytes loadgen saw echoed.")
    w(f"- Load: `native/loadgen` (one thread, C, one epoll) with N connections, one message in flight per connection "
      f"(`--inflight 1`), {facts['warmup_s']:g} s warm-up then {facts['duration_s']:g} s measured; it verifies every "
      "byte of the echo and reports messages/s and latency percentiles. Every run must end with zero errors, "
      "mismatches, lost or excess bytes and connect failures; a run that does not is listed and left out of the medians.")
    w(f"- {facts['runs']} runs per server and workload, alternating (every server once, then again); each figure is the "
      "median, with min–max in parentheses.")
    gate = facts.get("quiet_gate")
    if gate and gate.get("budget_s"):
        w(f"- Other work on the machine: before each run the script waits (at most 20 s) until neither core is more "
          f"than 15 % busy, and a run during which other processes took more than 25 % of either core is run once "
          f"more; the first attempt is listed under [Noise](#noise) but left out of the figures. Both within a "
          f"budget of {gate['budget_s']:.0f} s for the whole run, so that it ends in bounded time: this run waited "
          f"before {gate['waits']} runs, ran {gate['reruns']} again, and spent {gate['spent_s']} s of the budget.")
    w("- Server CPU: utime + stime of the whole process from `/proc/PID/stat`, read at the start and the end of a window "
      "inside loadgen's measured period (from 0.2 s after it starts to 0.4 s before it ends; the start is found by "
      "watching the server's descriptor count reach N). CPU per message = CPU seconds in the window / (messages/s × "
      "window). `CPU %` is of one core. RSS (`VmRSS`) and `Threads` come from `/proc/PID/status`, sampled every 0.25 s "
      "in the window; the tables give the largest sample. `loadgen CPU` is the load generator's CPU time in the same "
      "window: near 100 % it, not the server, limits the rate. `others on core 0 / 1` is the share of each core that "
      "other processes took in the window (busy time of the core from `/proc/stat`, including steal, less the "
      "server's on core 0 and loadgen's on core 1; medians): the interference the run suffered.")
    w("- .NET servers run with the runtime's defaults (workstation GC, tiered compilation); pinned to one core, the "
      "runtime sees one processor.")
    w("")
    w("Servers (`{pub}` is the publish directory, `{native}` the CMake build of `native/`):")
    w("")
    w("| server | command | status |")
    w("| --- | --- | --- |")
    for s in servers:
        st = f"unavailable: {s['unavailable']}" if s["unavailable"] else "measured"
        w(f"| {s['name']} | `{' '.join(s['argv'])}` | {st} |")
    w("")

    # ---- results per workload
    w("## Results")
    w("")
    for fname, alt in charts:
        if fname != "bench-idle.png":
            w(f"![{alt}](images/{fname})")
            w("")
    if chart_error:
        w(f"(No charts: {chart_error}.)")
        w("")
    for wl in results["workloads"]:
        k = wl["key"]
        w(f"### {wl['label']} messages, one in flight per connection")
        w("")
        w("| server | msg/s | p50 µs | p99 µs | server CPU % | CPU µs/msg | user / kernel µs/msg | RSS MiB | threads "
          "| loadgen CPU % | others on core 0 / 1 % |")
        w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for s in servers:
            if s["unavailable"]:
                w(f"| {s['name']} | unavailable | | | | | | | | | |")
                continue
            row = t.get((s["key"], k))
            if not row:
                continue
            others = "–"
            if row.get("other_core0"):
                others = f"{fmt(row['other_core0']['median'] * 100)} / " + (
                    fmt(row["other_core1"]["median"] * 100) if row.get("other_core1") else "–")
            w(f"| {s['name']} | {cell(row['messages_per_s'])} | {cell(row['p50_us'])} | {cell(row['p99_us'])} "
              f"| {cell(row['cpu_util'], 0, 100)} | {cell(row['cpu_us_per_msg'], 2)} "
              f"| {split_cell(row)} | {cell(row['rss_kib'], 1, 1 / 1024)} "
              f"| {cell(row['threads'])} | {cell(row['loadgen_util'], 0, 100)} | {others} |")
        held = med(t, "threads", k, "held_in_window")
        threads = med(t, "threads", k, "threads")
        if held is not None and held < wl["connections"]:
            w(f"\nThreadedEchoServer had accepted {fmt(held)} of the {fmt(wl['connections'])} connections (median) "
              "when the measured window began.")
        if threads is not None and threads < wl["connections"]:
            w(f"\nThreadedEchoServer ran at most {fmt(threads)} threads (median of the runs) during the measured window "
              f"of {fmt(wl['connections'])} connections: it had not yet accepted all of them. The others had completed "
              "their handshake in the kernel's listen backlog, so loadgen counted them open and sent, and they waited "
              "there to be accepted, their messages unanswered meanwhile: the accepting thread gets its turn on the "
              "one core among every connection's thread.")
        fails = [(s["name"], p) for s in servers for p in (t.get((s["key"], k)) or {}).get("problems", [])]
        for name, p in fails:
            w(f"\nFailed run, {name}: {p}")
        if any("connect_failures" in p for _, p in fails):
            w(f"\nloadgen gives its connections {max(5.0, wl['connections'] / 500):g} s to open (`--connect-budget`: 5 s, "
              "or 2 ms per connection for thousands). A server that accepts one connection and then starts a thread for "
              "it before accepting the next can take longer than that on a busy machine; the connections it had not "
              "accepted by then count as connect failures, and the run fails.")
        w("")

    # ---- idle
    w("## Idle connections")
    w("")
    n = facts["idle_connections"]
    w(f"Each server holds {n:,} idle connections (loadgen `--mode idle`, {facts['idle_hold_s']:g} s hold, then a "
      "16-byte probe echoed on each). RSS per connection is (RSS while holding them − RSS of the same process holding "
      f"one) / {n - 1:,}: user-space memory only — the kernel's socket buffers are not in any process's RSS. "
      "Threads: at one connection → the most seen while holding them.")
    w("")
    if any(f == "bench-idle.png" for f, _ in charts):
        w("![Idle connections](images/bench-idle.png)")
        w("")
    w("| server | connections held (loadgen) / probes echoed | most held by the server | RSS at 1 → then (MiB) "
      "| RSS per connection | threads | time to accept all |")
    w("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results["idle"]:
        lg = r.get("loadgen") or {}
        w(f"| {names[r['server']]} | {fmt(lg.get('held'))} / {fmt(lg.get('echo_ok'))} | {fmt(r.get('held_sampled'))} "
          f"| {fmt((r.get('base_rss_kib') or 0) / 1024, 1)} → {fmt((r.get('rss_kib') or 0) / 1024, 1)} "
          f"| {fmt(r.get('rss_per_conn_bytes'))} B | {fmt(r.get('base_threads'))} → {fmt(r.get('threads'))} "
          f"| {fmt(r.get('accept_all_s'), 2) + ' s' if r.get('accept_all_s') is not None else '–'} |")
    w("")
    w(f"loadgen opens at most {results['facts'].get('idle_batch', 5000):,} connections per process and gives up on "
      "those not open within 5 s, so the connections come from several loadgen processes, each started once the "
      "server holds the previous ones; all of them are open together for the hold. Where a server did not hold them "
      "all, the RSS and threads are those of the moment it held the most.")
    w("")
    idle = {r["server"]: r for r in results["idle"]}
    notes = []
    if "epoll" in idle:
        notes.append("EchoServer holds no receive buffer for an idle connection (a pooled one is rented only while a "
                     "readable socket is read), so what remains is the socket, the registration, the idle timer and "
                     "the connection object.")
    if "inbox" in idle:
        notes.append("InBoxEchoServer is written the usual way, one 16 KiB buffer per connection for its whole life, "
                     "so most of its memory per connection is that buffer; the rest is the `Socket` and the pending "
                     "`ReceiveAsync` state. Its threads are the runtime's and the thread pool's, whatever the number "
                     "of connections.")
    if "threads" in idle:
        notes.append("ThreadedEchoServer has a thread per connection: the touched pages of each thread's stack, its "
                     "16 KiB buffer and the runtime's per-thread state (each thread reserves a 256 KiB stack, but only "
                     "touched pages count in RSS; the kernel's own per-thread structures do not count at all).")
    if "c" in idle:
        notes.append("echo_ref keeps about 64 bytes per connection in user space; like every server here it "
                     "also costs the kernel its socket buffers, which no process's RSS shows.")
    for n_ in notes:
        w(f"- {n_}")
    w("")
    for r in results["idle"]:
        for p in r.get("problems", []):
            w(f"- {names[r['server']]}: {p}.")
        if r["server"] == "threads" and not r.get("died") and r.get("held_sampled", n) < n:
            mmc = results["facts"].get("max_map_count")
            w(f"  ThreadedEchoServer stops accepting at its connection cap (`--max-connections`; by default the smaller of "
              f"the descriptor limit and (`vm.max_map_count` − 2,048) / 4 = {fmt(((mmc or 0) - 2048) // 4)}): each .NET "
              f"thread takes four memory mappings (its stack and guard page, and the runtime's alternate signal stack "
              f"and its guard page; measured here: {fmt(r.get('maps_per_conn'), 1)} per connection), and past "
              "`vm.max_map_count` creating the next thread fails inside the runtime and the process aborts, losing "
              "every connection it held. The connections over the cap wait in the listen backlog and time out; those it "
              "holds keep echoing.")
        if r.get("died") and r["server"] == "threads":
            mmc = results["facts"].get("max_map_count")
            w(f"  Each .NET thread takes four memory mappings (its stack and guard page, and the runtime's alternate "
              f"signal stack and its guard page; measured here: {fmt(r.get('maps_per_conn'), 1)} per connection), and the "
              f"kernel allows a process `vm.max_map_count` = {fmt(mmc)} of them, so about {fmt((mmc or 0) / 4)} threads. Past that, creating "
              "the next thread fails inside the runtime, and the process aborts instead of refusing the connection; "
              "every connection it held is lost. A thread-per-connection server needs a connection limit below that "
              "(or a raised `vm.max_map_count`) besides the descriptor limit.")
    if any(r.get("problems") for r in results["idle"]):
        w("")

    # ---- allocation
    if results["alloc"]:
        w("## Managed allocation per echoed message")
        w("")
        w("64 connections × 64 B. The servers print `GC.GetTotalAllocatedBytes(true)` at exit, so two fresh servers "
          "run the same load, one briefly (2 s warm-up + 1 s) and one long enough for at least 1,000,000 more "
          "messages; start-up, warm-up and shutdown are the same in both and cancel out: "
          "allocated per message = (allocated_long − allocated_short) / ((bytes_long − bytes_short) / 64), where the "
          "bytes are each server's own count of echoed bytes.")
        w("")
        w("| server | messages (difference) | bytes allocated (difference) | bytes per message |")
        w("| --- | ---: | ---: | ---: |")
        for a in results["alloc"]:
            if a.get("per_message") is None:
                w(f"| {names[a['server']]} | – | – | failed: {a.get('problem')} |")
            else:
                w(f"| {names[a['server']]} | {fmt(a['messages'])} | {fmt(a['allocated'])} | {per_msg_bytes(a['per_message'])} |")
        w("")
        w("The smallest .NET object takes 24 bytes, so one allocation per message would show as at least 24 B per "
          "message (tens of megabytes over these runs). What remains is a few kilobytes either way — the runtime's "
          "own background work (tiered compilation, timers, the thread pool), which differs a little between two "
          "processes and can come out negative — so anything below 0.01 B per message is read as no allocation "
          "per message.")
        w("")

    # ---- profile
    w("## Where the time goes")
    w("")
    write_profile(results, w, names)

    # ---- targets
    w("## Targets")
    w("")
    for v in verdicts:
        w(f"- **{v['target']}** — {yes(v['ok'])}: {v['measured']}.")
    w("")
    for line in analysis(results, t, verdicts):
        w(line)
    w("")

    # ---- noise
    w("## Noise")
    w("")
    w(noise_text(results, t))
    w("")
    w("Every run, in the order of the rounds: messages/s, then the share (%) of core 0 and of core 1 that other "
      "processes took during its measured window; `✗` marks a run that failed its checks.")
    w("")
    w("A run disturbed by other work and run again shows both attempts, the first struck out.")
    w("")
    head = "| workload | server | " + " | ".join(f"run {i + 1}" for i in range(facts["runs"])) + " |"
    w(head)
    w("| --- | --- |" + " ---: |" * facts["runs"])
    for wl in results["workloads"]:
        for s in avail:
            runs = [r for r in results["rows"] if r["server"] == s["key"] and r["workload"] == wl["key"]]

            def one(r):
                text = (fmt(r.get("messages_per_s")) + ("" if r.get("ok") else " ✗")
                        + (f" · {r['other_core0'] * 100:.0f} / {r.get('other_core1', 0) * 100:.0f}"
                           if r.get("other_core0") is not None else ""))
                return f"~~{text}~~" if r.get("disturbed") else text

            rounds = {}
            for i, r in enumerate(runs):
                rounds.setdefault(r.get("round", i + 1), []).append(r)
            cells = [" → ".join(one(r) for r in rs) for _, rs in sorted(rounds.items())]
            cells += [""] * (facts["runs"] - len(cells))
            w(f"| {wl['label']} | {s['short']} | " + " | ".join(cells) + " |")
    w("")

    # ---- reproduce
    w("## Reproduce")
    w("")
    w("```sh")
    w("tests/comparison/run            # full run (about 20 minutes); rewrites this file and docs/images/bench-*.png")
    w("tests/comparison/run --quick    # smoke test (about 1 minute): every server must echo correctly; no document")
    w("tests/comparison/run --proxy    # the TCP proxy section only")
    w("tests/comparison/run --shapes   # the pipes, streams and TLS section only")
    w("tests/comparison/web            # the Kestrel section only (HelloWeb under wrk)")
    w("tests/comparison/run --io-uring # the io_uring section only (io_uring completions, epoll, C; idle, allocation)")
    w("tests/comparison/run --proxy    # the TCP proxy comparison alone (about 13 minutes); rewrites only its section")
    w("```")
    w("")
    w("The script builds `native/` with CMake, publishes the three .NET servers to a temporary directory "
      "(`--publish-dir DIR` reuses a publish), raises `ulimit -n` to the hard limit, installs gnuplot with apt-get "
      "when it is missing (full mode, as root), and keeps its logs and `results.json` in a temporary directory "
      "(`--work DIR` to choose it). Other options: `--runs N`, `--warmup S`, `--duration S`, `--servers epoll,c,...`, "
      "`--workloads 64x64,...`, `--skip idle,alloc,profile`. Run it on an idle machine: anything else on the two cores "
      "moves the numbers.")
    w("")

    text = "\n".join(md)
    # The TCP proxy section comes from its own run (run --proxy): carried over as it is.
    old = read_proxy_section(docs)
    if old:
        text = insert_proxy_section(text, old)
    # So do the sections that other runs write, in this order after the proxy's: the metrics listener's (from
    # MetricsBenchmarks, written by hand), the pipes/streams/TLS one (run --shapes), Kestrel's (tests/comparison/web) and
    # io_uring's (run --io-uring).
    for begin, end in KEPT_SECTIONS:
        kept = read_kept_section(docs, begin, end)
        if kept:
            text = insert_kept_section(text, kept, begin, end)
    with open(os.path.join(docs, "benchmarks.md"), "w") as f:
        f.write(text)


def targets(results, t):
    out = []
    have_c = any((k[0] == "c") for k in t)
    have_inbox = any((k[0] == "inbox") for k in t)
    wls = [w for w in results["workloads"] if w["key"] in HEADLINE_WORKLOADS]
    labels = {w["key"]: w["label"] for w in results["workloads"]}

    def per_wl(metric, other, bound, higher_better):
        parts, oks = [], []
        for wl in wls:
            r = ratio(med(t, "epoll", wl["key"], metric), med(t, other, wl["key"], metric))
            if r is None:
                continue
            ok = r >= bound if higher_better else r <= bound
            oks.append(ok)
            a = t.get(("epoll", wl["key"]), {}).get(metric)
            b = t.get((other, wl["key"]), {}).get(metric)
            overlap = a and b and a["n"] > 1 and b["n"] > 1 and a["min"] <= b["max"] and b["min"] <= a["max"]
            parts.append(f"{rfmt(r)} at {labels[wl['key']]}" + (" (min–max ranges overlap)" if overlap else ""))
        return ("; ".join(parts) or "not measured"), (all(oks) if oks else None)

    if have_c:
        m, ok = per_wl("messages_per_s", "c", TARGET_VS_C_RATE, True)
        out.append({"id": "rate_c", "target": f"EchoServer msg/s ≥ {TARGET_VS_C_RATE:.2f}× echo_ref (64 and 1,000 conns)",
                    "measured": m, "ok": ok})
        m, ok = per_wl("p99_us", "c", TARGET_VS_C_P99, False)
        out.append({"id": "p99_c", "target": f"EchoServer p99 ≤ {TARGET_VS_C_P99:.1f}× echo_ref (64 and 1,000)",
                    "measured": m, "ok": ok})
        m, ok = per_wl("cpu_us_per_msg", "c", TARGET_VS_C_CPU, False)
        out.append({"id": "cpu_c", "target": f"EchoServer CPU/msg ≤ {TARGET_VS_C_CPU:.2f}× echo_ref (64 and 1,000)",
                    "measured": m, "ok": ok})
    if have_inbox:
        m, ok = per_wl("messages_per_s", "inbox", TARGET_VS_INBOX, True)
        out.append({"id": "rate_inbox", "target": f"EchoServer msg/s ≥ {TARGET_VS_INBOX:.1f}× InBoxEchoServer (64 and 1,000)",
                    "measured": m, "ok": ok})
    a = next((a for a in results["alloc"] if a["server"] == "epoll"), None)
    if a:
        if a.get("per_message") is not None:
            # fewer than 1,000,000 messages: reported, but no verdict
            ok = (a["per_message"] < 0.01) if a["messages"] >= 1_000_000 else None
            m = (f"{per_msg_bytes(a['per_message'])} B/msg ({fmt(a['allocated'])} B over {fmt(a['messages'])} messages"
                 + ("" if a["messages"] >= 1_000_000 else "; fewer than 1,000,000 messages, so no verdict") + ")")
        else:
            ok, m = None, f"not measured: {a.get('problem')}"
        out.append({"id": "alloc", "target": "EchoServer managed bytes allocated per echoed message = 0",
                    "measured": m, "ok": ok})
    idle = next((r for r in results["idle"] if r["server"] == "epoll"), None)
    if idle:
        n = idle["connections"]
        lg = idle.get("loadgen") or {}
        per = idle.get("rss_per_conn_bytes")
        held = lg.get("held") == n and lg.get("echo_ok") == n
        # Constant: no thread comes with the connections. The runtime's own background threads (tiered compilation,
        # the thread pool's) may still end or start meanwhile, so the count may dip by one or two.
        const = idle.get("threads") is not None and idle.get("base_threads") is not None \
            and idle["threads"] <= idle["base_threads"]
        ok = held and const and per is not None and per < TARGET_IDLE_BYTES
        lo, hi = idle.get("threads_min"), idle.get("threads")
        span = fmt(hi) if lo == hi else f"{fmt(lo)}–{fmt(hi)}"
        m = (f"held {fmt(lg.get('held'))}/{n:,}, probes echoed {fmt(lg.get('echo_ok'))}; threads "
             f"{fmt(idle.get('base_threads'))} at one connection, {span} while holding {n:,}; {fmt(per)} B of RSS "
             "per connection")
        out.append({"id": "idle", "target": f"EchoServer holds {n:,} idle connections, constant threads, "
                    f"< {TARGET_IDLE_BYTES // 1024} KiB RSS each", "measured": m, "ok": ok})
    return out


def short_names(results):
    return {s["key"]: s["short"] for s in results["servers"]}


def per_msg(p, *names):
    c = p.get("counters") or {}
    m = p.get("messages") or 0
    if not m or not any(n in c for n in names):
        return None
    return sum(c.get(n, 0) for n in names) / m


def write_profile(results, w, names):
    tools = results["facts"].get("profile_tools") or {}
    perf = [p for p in results["profiles"] if p.get("tool") == "perf" and p.get("counters")]
    straced = [p for p in results["profiles"] if p.get("tool") == "strace" and p.get("strace")]
    short = short_names(results)
    for p in results["profiles"]:
        if p.get("problem"):
            w(f"Profile of {names[p['server']]} failed: {p['problem']}")
            w("")
    if perf:
        hw = tools.get("counters")
        w("Each server once more under 64 connections × 64 B, profiled inside loadgen's measured period (after a 3 s "
          "warm-up): first `perf stat` for 2.5 s — system calls counted by the kernel's tracepoints "
          "(`raw_syscalls:sys_enter`, `syscalls:sys_enter_*`), CPU time (`task-clock`) and context switches, for the "
          "whole process — then `perf record -e cpu-clock` for 2.5 s (1,999 samples/s; .NET servers started with "
          "`DOTNET_PerfMapEnabled=1` so that JIT-compiled methods have names). "
          + ("" if hw else "`perf stat -e instructions` does not work on this machine (no hardware counters in the "
             "virtual machine), so there are no instruction or cycle counts; the software clock and the tracepoints "
             "do work, and unlike `strace` they do not stop the process at every system call. ")
          + "Messages in the window = send calls: each server answers a 64-byte message with exactly one `sendto`.")
        w("")
        w("Per echoed message:")
        w("")
        w("| | " + " | ".join(short[p["server"]] for p in perf) + " |")
        w("| --- |" + " ---: |" * len(perf))
        rows = [("CPU time (µs, task-clock)", lambda p: (p["counters"].get("task-clock", 0) * 1000 / p["messages"])
                 if p.get("messages") and "task-clock" in p["counters"] else None, 2),
                ("system calls, all", lambda p: per_msg(p, "all syscalls"), 2),
                ("`recvfrom` + `recvmsg` (reads)", lambda p: per_msg(p, "recvfrom", "recvmsg"), 2),
                ("`sendto` + `sendmsg` (sends)", lambda p: per_msg(p, "sendto", "sendmsg"), 2),
                ("`epoll_wait` + `epoll_pwait`", lambda p: per_msg(p, "epoll_wait", "epoll_pwait"), 3),
                ("`epoll_ctl`", lambda p: per_msg(p, "epoll_ctl"), 3),
                ("`futex`", lambda p: per_msg(p, "futex"), 3),
                ("`sched_yield`", lambda p: per_msg(p, "sched_yield"), 3),
                ("context switches", lambda p: per_msg(p, "context-switches"), 3)]
        if hw:
            rows += [("instructions", lambda p: per_msg(p, "instructions"), 0),
                     ("cycles", lambda p: per_msg(p, "cycles"), 0)]
        for label, f, digits in rows:
            w(f"| {label} | " + " | ".join(fmt(f(p), digits) for p in perf) + " |")
        w("| messages in the window | " + " | ".join(fmt(p["messages"]) for p in perf) + " |")
        w("")
        regions = []
        for p in perf:
            for r in (p.get("regions") or {}):
                if r not in regions:
                    regions.append(r)
        if regions:
            order = ["kernel", ".NET code (JIT and ready-to-run)", ".NET runtime (VM, JIT compiler, GC)",
                     "libc and native libraries", "the program itself", "unknown"]
            regions.sort(key=lambda r: order.index(r) if r in order else 99)
            w("Where the CPU time goes (share of the `cpu-clock` samples of the whole process):")
            w("")
            w("| code | " + " | ".join(short[p["server"]] for p in perf) + " |")
            w("| --- |" + " ---: |" * len(perf))
            for r in regions:
                w(f"| {r} | " + " | ".join(fmt((p.get("regions") or {}).get(r), 1) + " %" if (p.get("regions") or {}).get(r)
                                             else "–" for p in perf) + " |")
            w("")
            for key in ("epoll", "inbox", "threads"):
                p = next((p for p in perf if p["server"] == key and p.get("functions")), None)
                if not p:
                    continue
                user = [f for f in p["functions"] if f["region"] != "kernel"][:10]
                kern = [f for f in p["functions"] if f["region"] == "kernel"][:5]
                w(f"{names[key]}: the busiest functions outside the kernel, and in it (share of all its samples):")
                w("")
                w("| function | where | share |")
                w("| --- | --- | ---: |")
                for f in user + kern:
                    w(f"| `{f['symbol']}` | {f['dso'] if f['region'] != 'kernel' else 'kernel'} | {f['pct']:.1f} % |")
                w("")
    elif straced:
        w("`perf` is not usable here, so the profile is `strace -c -f` attached to each server (all its threads) while "
          "loadgen runs 64 connections × 64 B for 3 s without warm-up. strace stops the process at every system call, "
          "so the server runs many times slower than normal; the counts per message are distorted too (a slow server "
          "finds the next message already there when it reads again, and more events per `epoll_wait`).")
        w("")
        keys = []
        for p in straced:
            for r in p["strace"]:
                if r["syscall"] not in keys and r["calls"] / max(p["messages"] or 1, 1) >= 0.005:
                    keys.append(r["syscall"])
        w("| system call per message | " + " | ".join(short[p["server"]] for p in straced) + " |")
        w("| --- |" + " ---: |" * len(straced))
        for k in keys:
            cells = []
            for p in straced:
                r = next((r for r in p["strace"] if r["syscall"] == k), None)
                m = max(p["messages"] or 1, 1)
                cells.append("–" if not r else f"{r['calls'] / m:.2f}" + (f" ({r['errors'] / m:.2f} failed)" if r["errors"] else ""))
            w(f"| `{k}` | " + " | ".join(cells) + " |")
        w("")
    else:
        w("(No profile in this run.)")
        w("")


def profile_of(results, key):
    return next((p for p in results["profiles"] if p["server"] == key and p.get("counters")), None)


def analysis(results, t, verdicts):
    """The explanation of the targets, from the numbers of this run."""
    out = []
    v = {x["id"]: x for x in verdicts}
    short = short_names(results)
    labels = {w["key"]: w["label"] for w in results["workloads"]}
    heads = [wl for wl in HEADLINE_WORKLOADS if wl in labels]

    def pct(x):
        return "–" if x is None else f"{x * 100:.0f} %"

    busy = []
    for wl in heads:
        busy.append(f"at {labels[wl]}, echo_ref used {pct(med(t, 'c', wl, 'cpu_util'))} of its core, EchoServer "
                    f"{pct(med(t, 'epoll', wl, 'cpu_util'))}, the in-box server {pct(med(t, 'inbox', wl, 'cpu_util'))}, "
                    f"and loadgen {pct(med(t, 'c', wl, 'loadgen_util'))} of its own core while driving echo_ref")
    out.append("**Who limits the rate.** With one message in flight per connection, each round trip needs the server "
               "and loadgen in turn, each on its own core: " + "; ".join(busy) + ". A process below 100 % of its core "
               "was waiting — for the other side, or for the core itself when other work on the machine took it — so "
               "messages/s measure the pair and the machine as much as the server, and move with the load average "
               "(see [Noise](#noise)). CPU time per message is the steadier comparison of the servers themselves.")
    out.append("")

    pe, pc, pi, pt = (profile_of(results, k) for k in ("epoll", "c", "inbox", "threads"))
    if pe and pc:
        def user_share(p):
            r = p.get("regions") or {}
            return sum(v for k, v in r.items() if k != "kernel")

        def task_clock_us(p):
            c = p.get("counters") or {}
            return c["task-clock"] * 1000 / p["messages"] if p.get("messages") and "task-clock" in c else None

        cpu_e, cpu_c = task_clock_us(pe), task_clock_us(pc)
        reads_e, reads_c = per_msg(pe, "recvfrom", "recvmsg"), per_msg(pc, "recvfrom", "recvmsg")
        waits_e, waits_c = per_msg(pe, "epoll_wait", "epoll_pwait"), per_msg(pc, "epoll_wait", "epoll_pwait")
        out.append(
            f"**Kernel crossings.** Per echoed message EchoServer made {fmt(per_msg(pe, 'all syscalls'), 2)} system calls "
            f"and echo_ref {fmt(per_msg(pc, 'all syscalls'), 2)}: {fmt(reads_e, 2)} vs {fmt(reads_c, 2)} reads, one send "
            f"each, {fmt(waits_e, 3)} vs {fmt(waits_c, 3)} `epoll_wait` (one wait returns the readiness of dozens of "
            "connections). echo_ref is edge-triggered and reads every socket until `EAGAIN`, so its second read per "
            "message is one that fails; EchoServer, edge-triggered as well, stops at a short read instead: it leaves "
            "nothing behind (data that arrives later is a new edge), so it saves that call."
            + (f" The in-box server made {fmt(per_msg(pi, 'all syscalls'), 2)} per message, among them "
               f"{fmt(per_msg(pi, 'sched_yield'), 2)} `sched_yield` and {fmt(per_msg(pi, 'context-switches'), 2)} "
               "context switches: .NET's socket engine receives readiness on its own epoll thread and runs every "
               "continuation on the thread pool, whose workers spin (`sched_yield`) and park between items."
               if pi else "")
            + (f" The thread-per-connection server made {fmt(per_msg(pt, 'context-switches'), 2)} context switches per "
               "message: each message wakes the connection's own thread." if pt else ""))
        out.append("")
        top = [f for f in (pe.get("functions") or []) if f["region"] != "kernel"][:4]
        out.append(
            f"**Where EchoServer's CPU goes.** {fmt((pe.get('regions') or {}).get('kernel'), 1)} % of its samples are "
            f"in the kernel (echo_ref: {fmt((pc.get('regions') or {}).get('kernel'), 1)} %): on loopback, the send of "
            "one side runs the TCP receive path of the other, so most of each echo is the kernel's TCP work, the same "
            f"for every server. Outside the kernel EchoServer spends {fmt(user_share(pe), 1)} % (echo_ref "
            f"{fmt(user_share(pc), 1)} %), led by "
            + ", ".join(f"`{f['symbol']}` ({f['pct']:.1f} %)" for f in top) + "."
            + (f" In the profile's own window the CPU time per message (`task-clock` / sends) was "
               f"{fmt(cpu_e, 2)} µs for EchoServer and {fmt(cpu_c, 2)} µs for echo_ref ({rfmt(ratio(cpu_e, cpu_c))}); "
               "compare with the matrix's figure to see how much of a CPU-per-message difference is noise."
               if cpu_e and cpu_c else ""))
        out.append("")
    split = []
    for wl in heads:
        ue, ke = med(t, "epoll", wl, "cpu_user_us_per_msg"), med(t, "epoll", wl, "cpu_sys_us_per_msg")
        uc, kc = med(t, "c", wl, "cpu_user_us_per_msg"), med(t, "c", wl, "cpu_sys_us_per_msg")
        if None not in (ue, ke, uc, kc):
            split.append((labels[wl], ue, ke, uc, kc))
    if split:
        out.append(
            "**User space and kernel.** The matrix splits each server's CPU time per message into user space (`utime`) "
            "and kernel (`stime`), medians: "
            + "; ".join(f"at {lab}, EchoServer {fmt(ue, 2)} µs in user space and {fmt(ke, 2)} µs in the kernel, "
                        f"echo_ref {fmt(uc, 2)} and {fmt(kc, 2)}" for lab, ue, ke, uc, kc in split)
            + ". The user-space part is each program's own work per message — for EchoServer the loop, the "
            "connection and the .NET runtime around them: "
            + ", ".join(f"{fmt(ue - uc, 2)} µs more than echo_ref's at {lab}" for lab, ue, ke, uc, kc in split)
            + ". The kernel part is the TCP work of the echo, which the kernel does alike for both programs (they "
            "make the same calls, EchoServer one read fewer per message); a difference there ("
            + ", ".join(f"{'+' if ke >= kc else '−'}{fmt(abs(ke - kc), 2)} µs for EchoServer at {lab}"
                        for lab, ue, ke, uc, kc in split)
            + ") comes with the machine's fast and slow runs (see [Noise](#noise)) rather than with the programs, as "
            "EchoServer asks the kernel for less, not more; the user-space difference is the one that belongs to "
            "EchoServer.")
        out.append("")
    lv = [(labels[wl], med(t, "epoll-level", wl, "p99_us"), med(t, "epoll", wl, "p99_us"),
           med(t, "epoll-level", wl, "cpu_us_per_msg"), med(t, "epoll", wl, "cpu_us_per_msg"))
          for wl in heads if med(t, "epoll-level", wl, "p99_us") and med(t, "epoll", wl, "p99_us")]
    if lv:
        out.append(
            "**Level or edge.** EchoServer runs edge-triggered on epoll in this matrix (`--trigger edge`); the same server "
            "level-triggered (`--trigger level`, the library's default) measured, medians: "
            + "; ".join(f"at {lab}, p99 {fmt(pl)} µs level-triggered against {fmt(pe_)} µs edge-triggered "
                        f"({rfmt(ratio(pl, pe_))}), CPU per message {fmt(cl, 2)} against {fmt(ce, 2)} µs "
                        f"({rfmt(ratio(cl, ce))})" for lab, pl, pe_, cl, ce in lv)
            + ". Both modes read once per small message (the connection stops at a short read either way) and make the "
            "same system calls; what differs is the order in which epoll hands over ready connections: edge-triggered, "
            "in the order their data arrived; level-triggered, a connection it has reported stays in its ready list "
            "and comes round again in the order of the previous batch. Which order gives the shorter tail depends on "
            "the workload, and differences of this size are within this machine's spread between runs (see "
            "[Noise](#noise)): measure your own workload before choosing. The library's default stays level-triggered "
            "because every backend has it natively (the managed backend only emulates edge mode, at a cost per wait); "
            "`ConnectionOptions.TriggerMode` selects edge mode.")
        out.append("")
    if v.get("cpu_c", {}).get("ok") is False or v.get("rate_c", {}).get("ok") is False:
        out.append(
            "**EchoServer against echo_ref: why it misses, and the work that would close the gap.** The kernel's TCP "
            "work per message is the same for both servers (and EchoServer makes one system call fewer); what it adds "
            "is user-space work per event (see *User space and kernel* above for how much): the loop's dispatch (token → registration, generation check, callback) and "
            "the connection's read pass (renting and returning a pooled 16 KiB buffer, a timestamp for the idle "
            "timeout). Receives and sends already go straight to `recv`/`send` through the library's own "
            "`LibraryImport` calls on Linux, not through `Socket`/`SocketPal`/`libSystem.Native`. What is left, in "
            "order of expected gain: (1) rent the receive buffer once per loop iteration (or keep one per loop) "
            "instead of once per read pass; (2) take the idle-timeout timestamp from one clock read per loop "
            "iteration instead of a `Stopwatch.GetTimestamp()` on every read and every write (two per echo; "
            "`__vdso_clock_gettime` in the profile). User space is under a tenth of EchoServer's samples, so "
            "neither can move CPU per message by more than a few percent; the rest of a miss is the kernel part, "
            "which moves with the machine (above). Where a miss is in messages/s or latency, compare the CPU "
            "columns: a server below 100 % of its core was not the bottleneck.")
        out.append("")
    if v.get("p99_c", {}).get("ok") is False:
        out.append(
            "**Tail latency.** With one message in flight per connection and every server busy, p99 follows the time a "
            "server takes to go round all its ready connections, so it moves with CPU per message — and with the "
            "machine's fast and slow runs (see [Noise](#noise)) — and with the order in which the connections are "
            "served (see *Level or edge*). A .NET process also has threads of its own (tiered compilation, the GC, "
            "timers) that share the loop thread's core when the process is pinned to one core; echo_ref has none. "
            "Work that would close it: the CPU-per-message work above; keeping the runtime's background work off the "
            "loop's core (a second core for the process, or `DOTNET_TieredCompilation` settings); and more runs per "
            "figure on this machine, so that medians do not depend on the fast and slow runs.")
        out.append("")
    if v.get("rate_inbox", {}).get("ok") is False:
        out.append(
            "**Against the in-box server.** .NET's socket engine is itself built on epoll; its cost is the hand-off "
            "from its epoll thread to the thread pool on every completion (the `sched_yield`, `futex` and context "
            "switches above), which shows in CPU time per message (headline table) rather than in messages/s as long "
            "as neither server uses its whole core. The 1.7× target assumes the servers are the bottleneck; with one "
            "message in flight per connection and a single-threaded loadgen on one core, the round trip through "
            "loadgen bounds both. Work that would show (and close) it: a workload that saturates the server core "
            "(`--inflight` above 1, or loadgen on more cores than the server), and on EchoServer's side the "
            "CPU-per-message work above.")
        out.append("")
    if v.get("idle", {}).get("ok") is False:
        out.append("**Idle.** A miss there is connections the server did not hold (loadgen's `held` and `echo_ok`), "
                   "a thread count that changed, or more than 2 KiB of RSS per connection; the idle table says which.")
        out.append("")
    if v.get("alloc", {}).get("ok") is False:
        out.append("**Allocation.** A steady-state allocation per message means the echo path allocates; "
                   "`AllocationTests` in `tests/EpollSharp.Tests` measures the loop thread alone and would show where.")
        out.append("")
    return out


def noise_text(results, t):
    facts = results["facts"]
    spreads = []
    for (s, wl), row in t.items():
        m = row.get("messages_per_s")
        if m and m["n"] > 1 and m["median"]:
            spreads.append(((m["max"] - m["min"]) / m["median"], s, wl))
    spreads.sort()
    la0, la1 = facts["loadavg_before"][0], facts["loadavg_after"][0]
    text = (f"The machine has {facts['nproc']} cores and was shared with other work: the 1-minute load average was "
            f"{la0:.2f} before the run and {la1:.2f} after it (on {facts['nproc']} cores, anything above about 2 means "
            "processes were waiting for a core). Other processes on core 0 take time from the server and on core 1 from "
            "loadgen; a server with many runnable threads (the thread-per-connection server at 1,000 and 10,000 "
            "connections) also gets a larger share of a contended core than a one-thread server, since the scheduler "
            "shares a core between threads, not processes. The load average counts runnable threads, so it also "
            "counts this benchmark's own: loadgen and the server add one or two, but the thread-per-connection server "
            "at 1,000 and 10,000 connections adds hundreds or thousands while it runs, and the 1-minute average keeps "
            "some of that for the runs after it. ")
    others = sorted(r["other_core0"] for r in results["rows"] if r.get("other_core0") is not None)
    others1 = sorted(r["other_core1"] for r in results["rows"] if r.get("other_core1") is not None)
    if others:
        text += (f"A steadier measure of the interference: during the measured windows, other processes took "
                 f"{others[len(others) // 2] * 100:.0f} % of the server's core at the median and "
                 f"{others[-1] * 100:.0f} % at worst"
                 + (f", and {others1[len(others1) // 2] * 100:.0f} % (worst {others1[-1] * 100:.0f} %) of loadgen's"
                    if others1 else "") + ". ")
    if spreads:
        med_spread = spreads[len(spreads) // 2][0]
        worst = spreads[-1]
        text += (f"Across the servers and workloads, the spread of messages/s between the runs of one figure "
                 f"((max − min) / median) was {med_spread * 100:.0f} % at the median and {worst[0] * 100:.0f} % at "
                 f"worst ({worst[1]}, {worst[2]}). Differences smaller than that spread are not findings. CPU time per "
                 "message depends less on the share of the core a process gets than messages/s and latency do")
        cpu = sorted(((r["cpu_us_per_msg"]["max"] - r["cpu_us_per_msg"]["min"]) / r["cpu_us_per_msg"]["median"], s, wl)
                     for (s, wl), r in t.items()
                     if r.get("cpu_us_per_msg") and r["cpu_us_per_msg"]["n"] > 1 and r["cpu_us_per_msg"]["median"])
        if cpu:
            text += (f", but it moves too: its spread was {cpu[len(cpu) // 2][0] * 100:.0f} % at the median and "
                     f"{cpu[-1][0] * 100:.0f} % at worst ({cpu[-1][1]}, {cpu[-1][2]}). Where other processes took next "
                     "to nothing from the cores, that is the machine itself — a virtual machine whose host runs the "
                     "same work faster or slower from one run to the next — and it shows as runs of one server falling "
                     "into a fast and a slow group (the table below). A ratio between two servers is then decided as "
                     "much by which group each server's median run fell into as by the servers.")
        else:
            text += "."
    return text


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        write(json.load(f), sys.argv[2])


# ---- the TCP proxy section (tests/comparison/run --proxy) -----------------------------------------------------------

PROXY_BEGIN = "<!-- proxy:begin (written by tests/comparison/run --proxy) -->"
PROXY_END = "<!-- proxy:end -->"


METRICS_BEGIN = "<!-- metrics:begin (written by hand from tests/EpollSharp.Benchmarks MetricsBenchmarks) -->"
METRICS_END = "<!-- metrics:end -->"

# Sections of docs/benchmarks.md that a full run carries over unchanged (each is written by another command).
KEPT_SECTIONS = [
    (METRICS_BEGIN, METRICS_END),
    ("<!-- shapes:begin (written by tests/comparison/run --shapes) -->", "<!-- shapes:end -->"),
    ("<!-- web:begin (written by tests/comparison/web) -->", "<!-- web:end -->"),
    ("<!-- io_uring:begin (written by tests/comparison/run --io-uring) -->", "<!-- io_uring:end -->"),
]


def read_kept_section(docs, begin, end):
    """The block between begin and end in docs/benchmarks.md, markers included; None when absent."""
    try:
        with open(os.path.join(docs, "benchmarks.md")) as f:
            text = f.read()
    except OSError:
        return None
    i, j = text.find(begin), text.find(end)
    return text[i:j + len(end)] if i >= 0 and j > i else None


def insert_kept_section(text, block, begin, end):
    """Replaces the block in text, or puts it before "## Reproduce" (at the end without one)."""
    i, j = text.find(begin), text.find(end)
    if i >= 0 and j > i:
        return text[:i] + block + text[j + len(end):]
    k = text.find("\n## Reproduce")
    if k < 0:
        return text.rstrip("\n") + "\n\n" + block + "\n"
    return text[:k + 1] + block + "\n\n" + text[k + 1:]


def read_proxy_section(docs):
    try:
        with open(os.path.join(docs, "benchmarks.md")) as f:
            text = f.read()
    except OSError:
        return None
    i, j = text.find(PROXY_BEGIN), text.find(PROXY_END)
    return text[i:j + len(PROXY_END)] if i >= 0 and j > i else None


def insert_proxy_section(text, block):
    """Replaces the block in text, or puts it before "## Reproduce" (at the end without one)."""
    i, j = text.find(PROXY_BEGIN), text.find(PROXY_END)
    if i >= 0 and j > i:
        return text[:i] + block + text[j + len(PROXY_END):]
    k = text.find("\n## Reproduce")
    if k < 0:
        return text.rstrip("\n") + "\n\n" + block + "\n"
    return text[:k + 1] + block + "\n\n" + text[k + 1:]


def write_proxy_section(section, docs):
    path = os.path.join(docs, "benchmarks.md")
    with open(path) as f:
        text = f.read()
    block = PROXY_BEGIN + "\n" + section.rstrip("\n") + "\n" + PROXY_END
    with open(path, "w") as f:
        f.write(insert_proxy_section(text, block))


PROXY_TARGET = 0.6  # the proxy's CPU per relayed message at most this times the in-box proxy's


def proxy_section(results):
    """The "TCP proxy" section of docs/benchmarks.md, in Markdown."""
    t = table_of(results)
    f = results["facts"]
    names = {s["key"]: s["name"] for s in results["servers"]}
    wls = results["workloads"]
    md = []
    w = md.append
    w("## TCP proxy")
    w("")
    w("`samples/TcpProxy` (EpollSharp, one loop, epoll, level-triggered) and `samples/InBoxTcpProxy` (the same proxy on "
      "`Socket` async APIs: an accept loop, `ConnectAsync`, two `ReceiveAsync`/`SendAsync` copy loops per session with "
      "pooled 16 KiB buffers) in front of the C reference server `echo_ref`, against loadgen straight to `echo_ref`. "
      "The proxy runs on core 0; `echo_ref` and loadgen share core 1, in the proxied runs and in the direct one alike. "
      "A message is one ping-pong: loadgen's message goes through the proxy to `echo_ref` and its echo comes back "
      "through the proxy, so the proxy relays it twice (once each way). CPU per message is the proxy process's "
      "CPU time (user + system, all threads, from `/proc/PID/stat`) over loadgen's measured window divided by the "
      "messages; p99 added is the median proxied p99 minus the median direct p99. Medians of "
      f"{f['runs']} alternating runs of {f['warmup_s']:g} s warm-up + {f['duration_s']:g} s, measured on "
      f"{f.get('started', '?')} (commit `{f.get('commit', '?')}`{', with uncommitted changes' if f.get('dirty') else ''}).")
    w("")
    w(f"Command: `{f.get('command', 'tests/comparison/run --proxy')}` (about 13 minutes; it rewrites only this section, "
      "between its markers; `--no-docs` for none; `--runs`, `--warmup`, `--duration`, `--servers proxy,inbox-proxy,direct` "
      "and `--workloads` as for the echo servers).")
    w("")
    w("| workload | path | messages/s | p50 µs | p99 µs | p99 added µs | proxy CPU µs/msg (user + sys) | CPU vs in-box | proxy RSS MiB | threads |")
    w("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    verdicts = []
    for wl in wls:
        k = wl["key"]
        direct_p99 = med(t, "direct", k, "p99_us")
        inbox_cpu = med(t, "inbox-proxy", k, "cpu_us_per_msg")
        for key in ("proxy", "inbox-proxy", "direct"):
            if (key, k) not in t:
                continue
            row = t[(key, k)]
            mps, p50, p99 = med(t, key, k, "messages_per_s"), med(t, key, k, "p50_us"), med(t, key, k, "p99_us")
            cpu, cu, cs = (med(t, key, k, m) for m in ("cpu_us_per_msg", "cpu_user_us_per_msg", "cpu_sys_us_per_msg"))
            added = f"{p99 - direct_p99:,.0f}" if key != "direct" and p99 is not None and direct_p99 is not None else "–"
            if key == "direct":
                cpu_text, vs = "– (no proxy)", "–"
            else:
                cpu_text = f"{cpu:.2f} ({cu:.2f} + {cs:.2f})" if cpu is not None else "–"
                vs = f"{cpu / inbox_cpu:.2f}x" if cpu is not None and inbox_cpu else "–"
            rss = med(t, key, k, "rss_kib")
            thr = med(t, key, k, "threads")
            failed = f" ({row['failed']} of {row['runs']} runs failed)" if row["failed"] else ""
            w(f"| {wl['label']} | {names.get(key, key)}{failed} | {fmt(mps)} | {fmt(p50)} | {fmt(p99)} | {added} | "
              f"{cpu_text} | {vs} | {'–' if key == 'direct' or rss is None else f'{rss / 1024:.1f}'} | "
              f"{'–' if key == 'direct' or thr is None else fmt(thr)} |")
        pc = med(t, "proxy", k, "cpu_us_per_msg")
        if pc is not None and inbox_cpu:
            verdicts.append((wl["label"], pc / inbox_cpu))
    w("")
    w("CPU per message of each run (µs, proxy process), in run order:")
    w("")
    w("| workload | EpollSharp TcpProxy | in-box proxy | ratio per round |")
    w("| --- | --- | --- | --- |")
    for wl in wls:
        k = wl["key"]
        runs = {}
        for r in results["rows"]:
            if r["workload"] == k and r["server"] in ("proxy", "inbox-proxy"):
                runs.setdefault(r["server"], {})[r.get("round")] = r
        rounds = sorted(set(runs.get("proxy", {})) | set(runs.get("inbox-proxy", {})), key=lambda x: x or 0)

        def v(key, rd):
            r = runs.get(key, {}).get(rd)
            return r.get("cpu_us_per_msg") if r and r.get("ok") else None
        a = ", ".join(fmt(v("proxy", rd), 2) for rd in rounds)
        b = ", ".join(fmt(v("inbox-proxy", rd), 2) for rd in rounds)
        ratios = ", ".join((f"{v('proxy', rd) / v('inbox-proxy', rd):.2f}" if v("proxy", rd) and v("inbox-proxy", rd) else "–")
                           for rd in rounds)
        w(f"| {wl['label']} | {a} | {b} | {ratios} |")
    w("")
    allocs = [a for a in results.get("alloc", []) if a.get("per_message") is not None]
    if allocs:
        w("Managed allocation per relayed message, measured as for the echo servers (a short and a long run from fresh "
          "processes; the difference of their `allocated=` over the difference of their messages): " +
          "; ".join(f"{names.get(a['server'], a['server'])}: {a['allocated']:,} B over {a['messages']:,.0f} messages = "
                    f"**{a['per_message']:.4f} B/message**" for a in allocs) +
          (", i.e. none per message (a difference of a few KB either way is start-up and shutdown noise)."
           if all(abs(a["per_message"]) < 0.01 for a in allocs) else "."))
        w("")
    if verdicts:
        met = all(r <= PROXY_TARGET for _, r in verdicts)
        w(f"Target: the proxy's CPU per relayed message at most {PROXY_TARGET}x the in-box proxy's: "
          + ", ".join(f"{label} {r:.2f}x" for label, r in verdicts) + f" (ratios of the medians): {yes(met)}"
          + (" on every workload." if met else " on " + ", ".join(l for l, r in verdicts if r > PROXY_TARGET) + "."))
        w("")
    return "\n".join(md) + "\n"
