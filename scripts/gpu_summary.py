#!/usr/bin/env python3
"""The summary of a scripts/gpu-check.sh run: reads OUT_DIR/steps.jsonl (one line per step,
written by the shell script) and each step's output, and writes OUT_DIR/summary.json.

    gpu_summary.py OUT_DIR [--budget S] [--started EPOCH] [--device D] [--cuda-bn fused|composed]
    gpu_summary.py --compare-checkpoints A.safetensors B.safetensors   # JSON on stdout; exit 1 if they differ
    gpu_summary.py --self-test                                         # runs on fake results

Standard library only (the GPU machine's Python has PyTorch, but nothing here needs it).

summary.json:
  ok                 true when no step failed or timed out, `extra_*` steps (comparisons) aside;
                     skipped steps are listed apart
  failed / timed_out / skipped     step names
  figures            the headline numbers, flat: "bench_<name>.median_ms", "tests.<step>.passed", ...
  steps[]            every step: name, kind, command, status, rc, wall_s, timeout_s, and `figures`
                     parsed from its output (tests: passed/failed/ignored counts and per-test
                     results; bench: edmips bench step's JSON; search: the epoch records of
                     metrics.jsonl; compare: the checkpoint comparison; pytorch: its JSON and the
                     ratio ours/PyTorch), plus `gpu` (peak memory MiB, mean utilisation %) from
                     the nvidia-smi samples taken during the step
  env                device, EDMIPS_CUDA_BN in effect, the libraries found, the pack manifest
"""

import json
import os
import re
import struct
import sys
import tempfile
import time
from array import array
from datetime import datetime

TEST_LINE = re.compile(r"^test (\S+) \.\.\. (ok|FAILED|ignored)\b(.*)$")
TEST_RESULT = re.compile(r"test result: (\w+)\. (\d+) passed; (\d+) failed; (\d+) ignored")
MEASURE = re.compile(r"(max abs error|max \|d|max \|diff|tolerance|spread|CUDA vs CPU)")


def read(path, limit=4_000_000):
    try:
        with open(path, errors="replace") as f:
            return f.read(limit)
    except OSError:
        return ""


def first_json(text):
    """The first JSON object in `text` (edmips prints pretty JSON; other lines may precede it)."""
    dec = json.JSONDecoder()
    i = text.find("{")
    while i >= 0:
        try:
            return dec.raw_decode(text[i:])[0]
        except ValueError:
            i = text.find("{", i + 1)
    return None


def parse_tests(text):
    tests, totals = {}, {"passed": 0, "failed": 0, "ignored": 0}
    for line in text.splitlines():
        m = TEST_LINE.match(line.strip())
        if m:
            tests[m.group(1)] = m.group(2) + (m.group(3).strip(", ") and " " + m.group(3).strip(", "))
        m = TEST_RESULT.search(line)
        if m:
            totals["passed"] += int(m.group(2))
            totals["failed"] += int(m.group(3))
            totals["ignored"] += int(m.group(4))
    measurements = [l.strip() for l in text.splitlines() if MEASURE.search(l) and not TEST_LINE.match(l.strip())]
    return {
        **totals,
        "failures": sorted(n for n, r in tests.items() if r.startswith("FAILED")),
        "tests": tests,
        "measurements": measurements[:300],
    }


def parse_search(out_dir, step):
    run_dir = os.path.join(out_dir, step.get("run_dir", ""))
    epochs = []
    for line in read(os.path.join(run_dir, "metrics.jsonl")).splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if r.get("kind") == "epoch":
            keys = ("epoch", "train_ce", "train_top1", "val_ce", "val_top1", "val_top5", "bit", "bit_expected",
                    "complexity", "images_per_s", "global_step")
            epochs.append({k: r.get(k) for k in keys})
    fig = {"epochs": epochs}
    if epochs:
        last = epochs[-1]
        fig.update({"last_val_top1": last["val_top1"], "last_train_ce": last["train_ce"], "bit": last["bit"],
                    "images_per_s": last["images_per_s"]})
    text = read(os.path.join(out_dir, step["stdout"])) + read(os.path.join(out_dir, step["stderr"]))
    errors = [l.strip() for l in text.splitlines() if l.startswith("error")]
    if errors:
        fig["errors"] = errors[:20]
    return fig


def gpu_samples(out_dir):
    samples = []
    for line in read(os.path.join(out_dir, "gpu-samples.csv")).splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 3:
            continue
        try:
            ts = datetime.strptime(parts[0], "%Y/%m/%d %H:%M:%S.%f").timestamp()
            samples.append((ts, float(parts[1]), float(parts[2])))
        except ValueError:
            continue
    return samples


def gpu_during(samples, step):
    t0 = step.get("started") or 0
    t1 = t0 + (step.get("wall_s") or 0) + 1
    s = [x for x in samples if t0 - 0.5 <= x[0] <= t1]
    if not s:
        return None
    return {"samples": len(s), "peak_memory_mib": max(x[1] for x in s),
            "mean_utilization_pct": round(sum(x[2] for x in s) / len(s), 1)}


# ---- safetensors ------------------------------------------------------------------------

def load_safetensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    header.pop("__metadata__", None)
    return {k: (v["dtype"], v["shape"], data[v["data_offsets"][0]:v["data_offsets"][1]]) for k, v in header.items()}


def compare_checkpoints(a, b):
    ta, tb = load_safetensors(a), load_safetensors(b)
    names = sorted(set(ta) | set(tb))
    res = {"a": a, "b": b, "tensors": len(names), "identical": 0, "differing": [], "missing": [],
           "max_abs_diff": 0.0}
    for n in names:
        if n not in ta or n not in tb:
            res["missing"].append(n)
            continue
        (da, sa, ba), (db, sb, bb) = ta[n], tb[n]
        if ba == bb and sa == sb:
            res["identical"] += 1
            continue
        d = None
        if da == db == "F32" and len(ba) == len(bb):
            xa, xb = array("f"), array("f")
            xa.frombytes(ba)
            xb.frombytes(bb)
            d = max(abs(x - y) for x, y in zip(xa, xb))
            res["max_abs_diff"] = max(res["max_abs_diff"], d)
        res["differing"].append({"name": n, "max_abs_diff": d})
    res["bitwise_equal"] = not res["differing"] and not res["missing"]
    res["differing"] = res["differing"][:50]
    return res


# ---- summary ----------------------------------------------------------------------------

def summarize(out_dir, budget=None, started=None, device=None, cuda_bn=None):
    steps = []
    for line in read(os.path.join(out_dir, "steps.jsonl")).splitlines():
        try:
            steps.append(json.loads(line))
        except ValueError as e:
            steps.append({"name": "?", "status": "unparsable", "line": line, "error": str(e)})
    samples = gpu_samples(out_dir)
    benches = {}
    flat = {}
    for s in steps:
        kind, name = s.get("kind"), s.get("name", "?")
        stdout = read(os.path.join(out_dir, s.get("stdout", ""))) if s.get("stdout") else ""
        fig = None
        if s.get("status") == "skipped":
            pass
        elif kind == "tests":
            fig = parse_tests(stdout)
            for k in ("passed", "failed", "ignored"):
                flat[f"tests.{name}.{k}"] = fig[k]
        elif kind in ("bench", "pytorch"):
            fig = first_json(stdout)
            if fig and "median_ms" in fig:
                flat[f"{name}.median_ms"] = fig["median_ms"]
                flat[f"{name}.images_per_s"] = fig.get("images_per_s")
                if kind == "bench":
                    benches[(fig.get("config"), fig.get("batch"), name.startswith("bench_"))] = fig
        elif kind == "search":
            fig = parse_search(out_dir, s)
            if "last_val_top1" in fig:
                flat[f"{name}.val_top1"] = fig["last_val_top1"]
                flat[f"{name}.images_per_s"] = fig["images_per_s"]
        elif kind == "compare":
            fig = first_json(stdout)
            if fig:
                flat[f"{name}.bitwise_equal"] = fig.get("bitwise_equal")
                flat[f"{name}.max_abs_diff"] = fig.get("max_abs_diff")
        elif kind == "env":
            m = re.search(r"^name, driver_version.*\n(.+)$", stdout, re.M)
            if m:
                fig = {"gpu": m.group(1).strip()}
        if fig is not None:
            s["figures"] = fig
        g = gpu_during(samples, s) if s.get("status") != "skipped" else None
        if g:
            s["gpu"] = g
            flat[f"{name}.peak_memory_mib"] = g["peak_memory_mib"]
    for s in steps:  # ours / PyTorch
        f = s.get("figures") or {}
        if s.get("kind") == "pytorch" and "median_ms" in f:
            ours = benches.get((f.get("config"), f.get("batch"), True))
            if ours and f["median_ms"]:
                f["ours_median_ms"] = ours["median_ms"]
                f["ratio_ours_over_pytorch"] = round(ours["median_ms"] / f["median_ms"], 3)
                flat[f"{s['name']}.ratio_ours_over_pytorch"] = f["ratio_ours_over_pytorch"]
    by = lambda st: [s["name"] for s in steps if s.get("status") == st]
    manifest = None
    try:
        with open(os.path.join(out_dir, "pack-manifest.json")) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        pass
    summary = {
        "schema": 1,
        "ok": bool(steps) and not [n for n in by("failed") + by("timeout") if not n.startswith("extra_")],
        "failed": by("failed"),
        "timed_out": by("timeout"),
        "skipped": by("skipped"),
        "passed": by("ok"),
        "started": started,
        "finished": int(time.time()),
        "wall_s": (int(time.time()) - int(started)) if started else None,
        "budget_s": budget,
        "env": {"device": device, "EDMIPS_CUDA_BN": cuda_bn,
                "libraries": read(os.path.join(out_dir, "libs.txt")).split(), "pack": manifest},
        "figures": flat,
        "steps": steps,
    }
    tmp = os.path.join(out_dir, ".summary.json.tmp")
    with open(tmp, "w") as f:
        json.dump(summary, f, indent=2)
    os.replace(tmp, os.path.join(out_dir, "summary.json"))
    return summary


def print_table(summary):
    print(f"{'step':<42} {'status':<8} {'wall s':>7}  figures")
    for s in summary["steps"]:
        f = s.get("figures") or {}
        if s.get("kind") == "tests" and f:
            brief = f"{f['passed']} passed, {f['failed']} failed, {f['ignored']} ignored" + (
                f" ({', '.join(f['failures'])})" if f["failures"] else "")
        elif "median_ms" in f:
            brief = f"median {f['median_ms']:.1f} ms, {f.get('images_per_s', 0):.0f} img/s" + (
                f", ours/PyTorch {f['ratio_ours_over_pytorch']}" if "ratio_ours_over_pytorch" in f else "")
        elif "last_val_top1" in f:
            brief = f"val top-1 {f['last_val_top1']:.2f}%, bit {f['bit']:.3f}, {f['images_per_s']:.0f} img/s"
        elif "bitwise_equal" in f:
            brief = f"bitwise equal: {f['bitwise_equal']} (max |diff| {f['max_abs_diff']:g})"
        else:
            brief = ""
        if s.get("gpu"):
            brief += f" [peak {s['gpu']['peak_memory_mib']:.0f} MiB, {s['gpu']['mean_utilization_pct']}% util]"
        print(f"{s.get('name', '?'):<42} {s.get('status', '?'):<8} {s.get('wall_s', 0):>7}  {brief}")
    print(f"ok: {summary['ok']}; failed: {summary['failed']}; timed out: {summary['timed_out']}; "
          f"skipped: {summary['skipped']}")


# ---- self-test on fake results ------------------------------------------------------------

def write_safetensors(path, tensors):
    header, blobs, off = {"__metadata__": {"x": "y"}}, b"", 0
    for name, vals in tensors.items():
        b = array("f", vals).tobytes()
        header[name] = {"dtype": "F32", "shape": [len(vals)], "data_offsets": [off, off + len(b)]}
        blobs += b
        off += len(b)
    h = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + blobs)


def self_test():
    d = tempfile.mkdtemp(prefix="gpu-summary-test-")
    os.makedirs(os.path.join(d, "steps"))
    os.makedirs(os.path.join(d, "runs", "search2"))
    now = int(time.time())
    outs = {
        "cuda_kernels": "running 3 tests\ntest nvrtc_compiles_every_kernel ... ok\n"
                        "test batch_norm_cuda_matches_cpu ... FAILED\ntest hwgq_mixture_cuda_matches_cpu ... ignored, no GPU\n"
                        "batch norm (fused) y: max |diff|/(1+|cpu|) 1e-7\n"
                        "test result: FAILED. 1 passed; 1 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.1s\n",
        "bench_a": "{\n  \"config\": \"mixres20_w1234a234\",\n  \"batch\": 256,\n  \"median_ms\": 50.0,\n  \"images_per_s\": 5120.0\n}\n",
        "pytorch_a": '{"config": "mixres20_w1234a234", "batch": 256, "median_ms": 40.0, "images_per_s": 6400.0}\n',
        "resume": json.dumps({"bitwise_equal": True, "max_abs_diff": 0.0}),
        "search2": "",
    }
    kinds = {"cuda_kernels": "tests", "bench_a": "bench", "pytorch_a": "pytorch", "resume": "compare", "search2": "search"}
    with open(os.path.join(d, "steps.jsonl"), "w") as f:
        for n, text in outs.items():
            with open(os.path.join(d, "steps", n + ".out"), "w") as g:
                g.write(text)
            open(os.path.join(d, "steps", n + ".err"), "w").close()
            st = "failed" if n == "cuda_kernels" else "ok"
            extra = ', "run_dir": "runs/search2"' if n == "search2" else ""
            f.write(f'{{"name": "{n}", "kind": "{kinds[n]}", "command": "x \\"y\\"", "status": "{st}", "rc": 0, '
                    f'"wall_s": 1.5, "timeout_s": 10, "started": {now}, "stdout": "steps/{n}.out", '
                    f'"stderr": "steps/{n}.err"{extra}}}\n')
        f.write('{"name": "late", "kind": "bench", "command": "z", "status": "skipped", "rc": 200, "wall_s": 0, '
                f'"timeout_s": 0, "started": {now}, "stdout": "steps/late.out", "stderr": "steps/late.err"}}\n')
    with open(os.path.join(d, "runs", "search2", "metrics.jsonl"), "w") as f:
        f.write('{"kind": "step", "epoch": 0}\n')
        f.write('{"kind": "epoch", "epoch": 1, "train_ce": 2.0, "train_top1": 20.0, "val_ce": 1.9, "val_top1": 25.5, '
                '"val_top5": 70.0, "bit": 2.1, "bit_expected": 2.7, "images_per_s": 9000.0}\n')
    stamp = datetime.fromtimestamp(now).strftime("%Y/%m/%d %H:%M:%S.%f")[:-3]
    with open(os.path.join(d, "gpu-samples.csv"), "w") as f:
        f.write(f"{stamp}, 1000, 50\n{stamp}, 3000, 100\n")
    s = summarize(d, budget=480, started=now - 5, device="cuda", cuda_bn="composed")
    with open(os.path.join(d, "summary.json")) as f:
        assert json.load(f) == json.loads(json.dumps(s))
    assert s["ok"] is False and s["failed"] == ["cuda_kernels"] and s["skipped"] == ["late"], s
    k = s["steps"][0]["figures"]
    assert (k["passed"], k["failed"], k["ignored"], k["failures"]) == (1, 1, 1, ["batch_norm_cuda_matches_cpu"]), k
    assert k["measurements"] == ["batch norm (fused) y: max |diff|/(1+|cpu|) 1e-7"], k
    assert s["figures"]["bench_a.median_ms"] == 50.0
    assert s["figures"]["pytorch_a.ratio_ours_over_pytorch"] == 1.25
    assert s["figures"]["search2.val_top1"] == 25.5
    assert s["figures"]["resume.bitwise_equal"] is True
    assert s["steps"][0]["gpu"]["peak_memory_mib"] == 3000.0, s["steps"][0]
    assert s["steps"][0]["command"] == 'x "y"'
    a, b, c = (os.path.join(d, n) for n in ("a.st", "b.st", "c.st"))
    write_safetensors(a, {"w": [1.0, 2.0], "v": [3.0]})
    write_safetensors(b, {"w": [1.0, 2.0], "v": [3.0]})
    write_safetensors(c, {"w": [1.0, 2.5], "v": [3.0]})
    assert compare_checkpoints(a, b)["bitwise_equal"]
    r = compare_checkpoints(a, c)
    assert not r["bitwise_equal"] and r["max_abs_diff"] == 0.5 and r["identical"] == 1, r
    print_table(s)
    print(f"self-test ok ({d})")


def main(argv):
    if argv[:1] == ["--self-test"]:
        self_test()
        return 0
    if argv[:1] == ["--compare-checkpoints"] and len(argv) == 3:
        r = compare_checkpoints(argv[1], argv[2])
        print(json.dumps(r, indent=2))
        return 0 if r["bitwise_equal"] else 1
    if not argv or argv[0].startswith("-"):
        print(__doc__, file=sys.stderr)
        return 2
    out_dir, opts = argv[0], {}
    rest = argv[1:]
    while rest:
        key, val, rest = rest[0].lstrip("-").replace("-", "_"), rest[1] if len(rest) > 1 else None, rest[2:]
        opts[key] = val
    s = summarize(out_dir, budget=int(opts["budget"]) if opts.get("budget") else None,
                  started=int(opts["started"]) if opts.get("started") else None,
                  device=opts.get("device"), cuda_bn=opts.get("cuda_bn"))
    print_table(s)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
