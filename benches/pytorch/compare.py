#!/usr/bin/env python3
"""Time one training step of `edmips bench step` (ours) and of edmips_torch.py (PyTorch) on the
same configurations, batch sizes and thread counts; print a table of ratios (ours / PyTorch)
and write a JSON file. Run through compare.sh, which prepares the virtual environment.

Each measurement is its own process, one at a time, so its peak RSS (from wait4) is its own.
Besides the wall time, every measurement records the CPU time that other processes used on the
machine meanwhile ("foreign CPU"), from /proc/stat: a large figure means the timing is not
trustworthy (another build was running).
"""

import argparse
from pathlib import Path
import datetime
import hashlib
import json
import os
import platform
import selectors
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))

#: (label, config, batch, input side)
ROWS = [
    ("search R20 b128", "mixres20_w1234a234", 128, 32),
    ("retrain R20 b128", "quantres20_2w2a", 128, 32),
    ("search R18 b8", "mixres18_w1234a234", 8, 224),
    ("retrain R18 b8", "quantres18_2w2a", 8, 224),
    ("search R18 b32", "mixres18_w1234a234", 32, 224),
]

CLK_TCK = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1


def busy_seconds():
    """CPU seconds the whole machine has spent busy (user+nice+system+irq+softirq+steal)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (v + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def foreign_load(sample_s=1.0):
    """Fraction of the machine's CPU used by others over `sample_s` seconds."""
    b0 = busy_seconds()
    time.sleep(sample_s)
    return (busy_seconds() - b0) / (sample_s * NCPU)


def wait_idle(max_wait_s, threshold):
    """Waits (up to max_wait_s) until the others use less than `threshold` of the machine."""
    t0 = time.monotonic()
    load = foreign_load()
    while load > threshold and time.monotonic() - t0 < max_wait_s:
        print(f"  (machine busy: {100 * load:.0f}% CPU used by others; waiting)", flush=True)
        time.sleep(5)
        load = foreign_load()
    return load


def _spawn(cmd, env):
    """fork/exec with wait4, so the rusage (peak RSS, CPU) is exactly this child's."""
    b0 = busy_seconds()
    t0 = time.monotonic()
    r_out, w_out = os.pipe()
    r_err, w_err = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.dup2(w_out, 1)
            os.dup2(w_err, 2)
            for fd in (r_out, w_out, r_err, w_err):
                os.close(fd)
            os.execvpe(cmd[0], cmd, env)
        finally:
            os._exit(127)
    os.close(w_out)
    os.close(w_err)
    out_chunks, err_chunks = [], []
    sel = selectors.DefaultSelector()
    sel.register(r_out, selectors.EVENT_READ, out_chunks)
    sel.register(r_err, selectors.EVENT_READ, err_chunks)
    open_fds = 2
    while open_fds:
        for key, _ in sel.select():
            data = os.read(key.fd, 65536)
            if data:
                key.data.append(data)
            else:
                sel.unregister(key.fd)
                os.close(key.fd)
                open_fds -= 1
    _, status, ru = os.wait4(pid, 0)
    wall = time.monotonic() - t0
    busy = busy_seconds() - b0
    child_cpu = ru.ru_utime + ru.ru_stime
    return {
        "rc": os.waitstatus_to_exitcode(status),
        "stdout": b"".join(out_chunks).decode(),
        "stderr": b"".join(err_chunks).decode(),
        "wall_s": wall,
        "cpu_s": child_cpu,
        "peak_rss_kib": ru.ru_maxrss,
        "foreign_cpu_s": max(0.0, busy - child_cpu),
        "foreign_share": max(0.0, busy - child_cpu) / (wall * NCPU) if wall > 0 else 0.0,
    }


def _last_json(text):
    """The JSON object a command printed (edmips pretty-prints it over several lines)."""
    start = text.find("{")
    return json.loads(text[start:])


def measure(side, cmd, env):
    print(f"  {side}: {' '.join(shlex.quote(c) for c in cmd)}", flush=True)
    r = _spawn(cmd, env)
    if r["rc"] != 0:
        sys.stderr.write(r["stderr"])
        raise SystemExit(f"{side} failed with exit code {r['rc']}")
    res = _last_json(r["stdout"])
    res.update({k: r[k] for k in ("wall_s", "cpu_s", "peak_rss_kib", "foreign_cpu_s", "foreign_share")})
    return res


def measure_quiet(args, side, cmd, env):
    """measure() on an idle machine; measured again (up to --retry-busy times) when other
    processes took more than --idle-threshold of the CPUs meanwhile. Keeps the quietest try."""
    tries = []
    deadline = time.monotonic() + args.wait_idle  # one waiting budget for all the tries
    for _ in range(1 + args.retry_busy):
        load = wait_idle(max(0.0, deadline - time.monotonic()), args.idle_threshold)
        r = measure(side, cmd, env)
        r["load_before"] = load
        tries.append(r)
        if r["foreign_share"] <= args.idle_threshold:
            break
        print(f"  ({side}: others took {100 * r['foreign_share']:.0f}% of the CPUs meanwhile; measuring again)",
              flush=True)
    best = min(tries, key=lambda r: r["foreign_share"])
    best["tries"] = len(tries)
    best["discarded"] = [{k: r[k] for k in ("median_ms", "foreign_share")} for r in tries if r is not best]
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--edmips", default=os.environ.get("EDMIPS", str(Path(__file__).resolve().parents[2] / "target" / "release" / "edmips")))
    ap.add_argument("--python", default=sys.executable, help="the Python with torch")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--t1-only-small", action="store_true",
                    help="run T=1 only for the ResNet-20 rows (the ResNet-18 rows at T=1 are slow)")
    ap.add_argument("--rows", default="", help="comma-separated row indices (0-based) to run; default all")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--wait-idle", type=float, default=300.0,
                    help="wait up to this many seconds in all (per measurement, its retries included) for the machine to be idle")
    ap.add_argument("--idle-threshold", type=float, default=0.15,
                    help="'idle': others use less than this fraction of all CPUs")
    ap.add_argument("--retry-busy", type=int, default=1,
                    help="measure again (this many times at most) when the machine was busy meanwhile")
    ap.add_argument("--pairs", type=int, default=1,
                    help="measure each row this many times, ours and PyTorch alternating (ours first in odd "
                         "pairs, PyTorch first in even ones); the row's ratio is the median of the pairs' ratios")
    ap.add_argument("--out", default=os.path.join(HERE, f"results-{datetime.date.today().isoformat()}.json"))
    args = ap.parse_args()

    # Time a private copy of the binary, so that a rebuild during the run cannot swap it.
    # Wait while it is missing or freshly written (a build may still be linking it).
    for _ in range(30):
        ok = os.path.exists(args.edmips) and time.time() - os.path.getmtime(args.edmips) > 60
        if ok and subprocess.run([args.edmips, "--version"], capture_output=True).returncode == 0:
            break
        print(f"  ({args.edmips} missing or being rebuilt; waiting a minute)", flush=True)
        time.sleep(60)
    else:
        raise SystemExit(f"{args.edmips}: no stable binary")
    edmips_rev = subprocess.run(["git", "-C", os.path.dirname(os.path.abspath(args.edmips)), "rev-parse", "HEAD"],
                                capture_output=True, text=True).stdout.strip()
    snapdir = tempfile.mkdtemp(prefix="edmips-compare-")
    edmips = os.path.join(snapdir, "edmips")
    shutil.copy2(args.edmips, edmips)
    with open(edmips, "rb") as f:
        edmips_sha = hashlib.sha256(f.read()).hexdigest()

    threads = [int(t) for t in args.threads.split(",") if t]
    rows = [ROWS[int(i)] for i in args.rows.split(",")] if args.rows else ROWS
    torch_py = os.path.join(HERE, "edmips_torch.py")

    results = []
    for label, config, batch, size in rows:
        for t in threads:
            if t == 1 and args.t1_only_small and size != 32:
                continue
            print(f"[{label}, T={t}]", flush=True)
            base = dict(os.environ)
            for k in ("RAYON_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
                base.pop(k, None)
            common = ["--iters", str(args.iters), "--warmup", str(args.warmup), "--json"]

            ours_env = dict(base, RAYON_NUM_THREADS=str(t), OMP_NUM_THREADS=str(t))
            ours_cmd = [edmips, "bench", "step", "-a", config, "-b", str(batch)] + common
            torch_env = dict(base, OMP_NUM_THREADS=str(t), MKL_NUM_THREADS=str(t), PYTHONWARNINGS="ignore")
            torch_cmd = [args.python, torch_py, "bench", "-a", config, "-b", str(batch), "--threads", str(t)] + common
            pairs = []
            for k in range(max(1, args.pairs)):
                if k % 2 == 0:
                    ours = measure_quiet(args, "ours", ours_cmd, ours_env)
                    theirs = measure_quiet(args, "torch", torch_cmd, torch_env)
                else:
                    theirs = measure_quiet(args, "torch", torch_cmd, torch_env)
                    ours = measure_quiet(args, "ours", ours_cmd, ours_env)
                pairs.append((ours, theirs))
            # The pair whose ratio is the median (the lower middle one for an even count) stands
            # for the row; every pair is kept.
            by_ratio = sorted(pairs, key=lambda p: p[0]["median_ms"] / p[1]["median_ms"])
            ours, theirs = by_ratio[(len(by_ratio) - 1) // 2]

            row = {
                "label": label, "config": config, "batch": batch, "input": size, "threads": t,
                "ours": ours, "torch": theirs,
                "time_ratio": ours["median_ms"] / theirs["median_ms"],
                "rss_ratio": ours["peak_rss_kib"] / theirs["peak_rss_kib"],
                "pair_ratios": [o["median_ms"] / p["median_ms"] for o, p in pairs],
                "pairs": [{"ours": o, "torch": p} for o, p in pairs] if len(pairs) > 1 else [],
            }
            results.append(row)
            print(f"  -> ours {ours['median_ms']:.1f} ms, torch {theirs['median_ms']:.1f} ms, "
                  f"ratio {row['time_ratio']:.2f}; RSS {ours['peak_rss_kib'] / 1024:.0f} / "
                  f"{theirs['peak_rss_kib'] / 1024:.0f} MiB"
                  + (f"; pair ratios {' '.join(f'{x:.2f}' for x in row['pair_ratios'])}" if len(pairs) > 1 else ""),
                  flush=True)

    print()
    head = (f"{'row':<18} {'T':>2} {'ours ms':>10} {'torch ms':>10} {'ours/torch':>10} "
            f"{'ours RSS':>9} {'torch RSS':>9} {'(import)':>9} {'RSS ratio':>9} {'foreign%':>9}")
    print(head)
    print("-" * len(head))
    for r in results:
        o, p = r["ours"], r["torch"]
        foreign = 100 * max(o["foreign_share"], p["foreign_share"])
        print(f"{r['label']:<18} {r['threads']:>2} {o['median_ms']:>10.1f} {p['median_ms']:>10.1f} "
              f"{r['time_ratio']:>10.2f} {o['peak_rss_kib'] / 1024:>7.0f}Mi {p['peak_rss_kib'] / 1024:>7.0f}Mi "
              f"{p.get('import_rss_kib', 0) / 1024:>7.0f}Mi {r['rss_ratio']:>9.2f} {foreign:>8.0f}%")
    if args.pairs > 1:
        print(f"each row: the median pair of {args.pairs} (ours and PyTorch alternating); pair ratios:")
        for r in results:
            print(f"  {r['label']:<18} T{r['threads']}: {' '.join(f'{x:.2f}' for x in r['pair_ratios'])}")
    print("times: median of", args.iters, "steps after", args.warmup, "warm-up; RSS: peak of the whole process;",
          "(import): torch's RSS right after import, part of its peak;",
          "foreign%: the largest share of all CPUs used by other processes during the two runs")

    meta = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "host": {"cpus": NCPU, "machine": platform.machine(), "python": platform.python_version(),
                 "cpu_model": _cpu_model()},
        "edmips": {"binary": args.edmips, "binary_mtime": _mtime(edmips),
                   "binary_sha256": edmips_sha, "repo_head": edmips_rev,
                   "note": "repo_head is the HEAD of the binary's repository when the run began; the binary may come from an uncommitted tree"},
        "torch": results[0]["torch"].get("torch") if results else None,
        "torch_cuda_build": results[0]["torch"].get("torch_cuda_build") if results else None,
        "iters": args.iters, "warmup": args.warmup, "threads": threads,
        "t1_only_small": args.t1_only_small, "pairs": args.pairs,
    }
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "rows": results}, f, indent=1)
    print("wrote", args.out)
    shutil.rmtree(snapdir, ignore_errors=True)


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _mtime(path):
    try:
        return datetime.datetime.fromtimestamp(os.path.getmtime(path)).isoformat(timespec="seconds")
    except OSError:
        return None


if __name__ == "__main__":
    main()
