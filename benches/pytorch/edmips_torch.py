#!/usr/bin/env python3
"""A PyTorch baseline of EdMIPS, for speed comparisons with the Rust `edmips` only.

Written from the project's specification (shared/spec/edmips.md, sections 1-5) and, for the
CIFAR ResNet-20 which is our own addition, from `edmips inspect`; NOT from the reference EdMIPS
code. It is not used in CI and makes no claim of bit parity beyond the quantizer recipes.

Networks (registered names as in `edmips list --kind config`):
  mixres18_w1234a234  ImageNet ResNet-18, search mode (MixActivConv2d, shared weight)
  quantres18_2w2a     ImageNet ResNet-18, fixed w2/a2 (QuantActivConv2d)
  mixres20_w1234a234  CIFAR ResNet-20, search mode
  quantres20_2w2a     CIFAR ResNet-20, fixed w2/a2

Sub-commands:
  bench   time training steps (the figure `compare.py` puts beside `edmips bench step`)
  check   compare layers, sizes and the initial complexity with `edmips inspect --json`,
          and the quantizers with shared/golden (when present)
"""

import argparse
from pathlib import Path
import json
import math
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------
# §1 Quantizers
# ---------------------------------------------------------------------------------------------

#: Gaussian weight step, in units of the weight's std (spec §1.1).
GAUSS_STEP = {1: 1.596, 2: 0.996, 3: 0.586, 4: 0.336}
#: HWGQ activation step (spec §1.1).
HWGQ_STEP = {1: 0.799, 2: 0.538, 3: 0.3217, 4: 0.185}


def _f32(v):
    """A Python float rounded to float32 (what a float32 kernel sees of a scalar)."""
    return float(torch.tensor(v, dtype=torch.float32))


class _HWGQ(torch.autograd.Function):
    """HWGQ, bit < 32 (spec §1.2): y = round_half_even(clamp(x, 0, thr) / s) * s, with the
    straight-through gradient masked by the closed interval 0 <= x <= thr (decision D1)."""

    @staticmethod
    def forward(ctx, x, step, thr):
        ctx.save_for_backward(x)
        ctx.thr = thr
        return torch.round(x.clamp(0.0, thr) / step) * step

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        mask = (x >= 0) & (x <= ctx.thr)
        return g * mask, None, None


class _HWGQFull(torch.autograd.Function):
    """HWGQ, bit >= 32: ReLU whose gradient passes at x = 0 (spec §1.2)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0.0)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (x >= 0), None


def hwgq(x, bit):
    if bit >= 32:
        return _HWGQFull.apply(x)
    s = HWGQ_STEP[bit]
    thr = s * (2**bit - 1)  # f64, as the spec; the kernels round both to f32
    return _HWGQ.apply(x, _f32(s), _f32(thr))


class _GaussQ(torch.autograd.Function):
    """Gaussian mid-rise quantizer with a given step (spec §1.3):
    y = clamp((round_half_even(W/step + 0.5) - 0.5) * step, -thr, thr); identity gradient."""

    @staticmethod
    def forward(ctx, w, step, thr):
        return ((torch.round(w / step + 0.5) - 0.5) * step).clamp(-thr, thr)

    @staticmethod
    def backward(ctx, g):
        return g, None, None


def gauss_quantize_step(w, bit, step):
    """`step` already scaled by the std (f64); thr = (2^(bit-1) - 0.5) * step."""
    thr = (2 ** (bit - 1) - 0.5) * step
    return _GaussQ.apply(w, _f32(step), _f32(thr))


def weight_std(w):
    """Unbiased, detached std of the whole tensor, as a Python float (spec §1.3)."""
    return w.detach().std().item()


def gauss_quantize(w, bit):
    return gauss_quantize_step(w, bit, GAUSS_STEP[bit] * weight_std(w))


# ---------------------------------------------------------------------------------------------
# §1.5, §2, §3 Quantized convolutions
# ---------------------------------------------------------------------------------------------


class _SizedConv(nn.Module):
    """Common part: the conv weight, and the f32 buffers written at every forward (§3.1)."""

    def __init__(self, cin, cout, kernel, stride, padding):
        super().__init__()
        self.cin, self.cout, self.kernel, self.stride, self.padding = cin, cout, kernel, stride, padding
        self.param_size = cin * cout * kernel * kernel * 1e-6
        self.filter_size = self.param_size / stride**2
        self.register_buffer("size_product", torch.zeros((), dtype=torch.float32))
        self.register_buffer("memory_size", torch.zeros((), dtype=torch.float32))
        self.input_hw = None

    def _record(self, x):
        h, w = x.shape[2], x.shape[3]
        self.input_hw = (h, w)
        self.size_product.fill_(self.filter_size * h * w)
        self.memory_size.fill_(self.cin * h * w * 1e-3)


class QuantActivConv2d(_SizedConv):
    """Fixed precision: y = conv2d(HWGQ_abit(x), Q_wbit(W)), no bias (spec §1.5)."""

    def __init__(self, cin, cout, wbit, abit, kernel, stride=1, padding=0):
        super().__init__(cin, cout, kernel, stride, padding)
        if wbit not in GAUSS_STEP:
            raise KeyError(wbit)  # as the reference (D7): full-precision weights unsupported
        self.wbit, self.abit = wbit, abit
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, bias=False)

    def forward(self, x):
        self._record(x)
        xq = hwgq(x, self.abit)
        wq = gauss_quantize(self.conv.weight, self.wbit)
        return F.conv2d(xq, wq, None, self.stride, self.padding)


class MixActivConv2d(_SizedConv):
    """Search relaxation with a shared weight (spec §2): one convolution of
    x_hat = sum_i p_i HWGQ_{a_i}(x) and W_hat = sum_j q_j Gauss_{w_j}(W)."""

    def __init__(self, cin, cout, kernel, stride=1, padding=0, wbits=(1, 2, 3, 4), abits=(2, 3, 4)):
        super().__init__(cin, cout, kernel, stride, padding)
        assert all(0 < b < 32 for b in list(wbits) + list(abits))
        self.wbits, self.abits = list(wbits), list(abits)
        self.alpha_activ = nn.Parameter(torch.full((len(self.abits),), 0.01))
        self.alpha_weight = nn.Parameter(torch.full((len(self.wbits),), 0.01))
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, bias=False)
        self.register_buffer("abit_t", torch.tensor(self.abits, dtype=torch.float32), persistent=False)
        self.register_buffer("wbit_t", torch.tensor(self.wbits, dtype=torch.float32), persistent=False)

    def forward(self, x):
        self._record(x)
        p = F.softmax(self.alpha_activ, dim=0)
        xhat = None
        for i, bit in enumerate(self.abits):
            t = hwgq(x, bit) * p[i]
            xhat = t if xhat is None else xhat + t
        w = self.conv.weight
        sigma = weight_std(w)
        q = F.softmax(self.alpha_weight, dim=0)
        what = None
        for j, bit in enumerate(self.wbits):
            t = gauss_quantize_step(w, bit, GAUSS_STEP[bit] * sigma) * q[j]
            what = t if what is None else what + t
        return F.conv2d(xhat, what, None, self.stride, self.padding)

    def complexity(self):
        """size_product * E[abit] * E[wbit] (spec §3.2); size_product is a constant."""
        ea = (F.softmax(self.alpha_activ, dim=0) * self.abit_t).sum()
        ew = (F.softmax(self.alpha_weight, dim=0) * self.wbit_t).sum()
        return self.size_product.item() * ea * ew


# ---------------------------------------------------------------------------------------------
# §4.2 ResNets (ImageNet ResNet-18) and the CIFAR ResNet-20 of `edmips`
# ---------------------------------------------------------------------------------------------


def conv_factory(mode, wbit=2, abit=2, wbits=(1, 2, 3, 4), abits=(2, 3, 4)):
    """A `make(cin, cout, kernel, stride, padding)` for the searchable convs of one network."""
    if mode == "search":
        return lambda ci, co, k, s, p: MixActivConv2d(ci, co, k, s, p, wbits=wbits, abits=abits)
    if mode == "fixed":
        return lambda ci, co, k, s, p: QuantActivConv2d(ci, co, wbit, abit, k, s, p)
    raise ValueError(mode)


class BasicBlock(nn.Module):
    """bn0 -> conv1 -> bn1 -> conv2 -> bn2 (+ downsample of bn0(x), or the raw x); no ReLU."""

    def __init__(self, make, inplanes, planes, stride):
        super().__init__()
        self.bn0 = nn.BatchNorm2d(inplanes)
        self.conv1 = make(inplanes, planes, 3, stride, 1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = make(planes, planes, 3, 1, 1)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(make(inplanes, planes, 1, stride, 0), nn.BatchNorm2d(planes))

    def forward(self, x):
        y = self.bn0(x)
        o = self.bn1(self.conv1(y))
        o = self.bn2(self.conv2(o))
        residual = self.downsample(y) if self.downsample is not None else x
        return o + residual


def _stage(make, inplanes, planes, blocks, stride):
    layers = [BasicBlock(make, inplanes, planes, stride)]
    layers += [BasicBlock(make, planes, planes, 1) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def _he_fan_out(model):
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class _QuantNet(nn.Module):
    def quant_layers(self):
        return [m for m in self.modules() if isinstance(m, _SizedConv)]

    def complexity_loss(self):
        """(sum_l size_product_l E_a,l E_w,l) / size_product_0 (spec §3.2, decision D3)."""
        layers = [m for m in self.modules() if isinstance(m, MixActivConv2d)]
        total = None
        for m in layers:
            c = m.complexity()
            total = c if total is None else total + c
        return total / layers[0].size_product.item()


class ResNet18(_QuantNet):
    """ImageNet ResNet-18 (spec §4.2): conv1 7x7/2 -> maxpool 3/2 -> bn1 (no ReLU), four
    stages of BasicBlocks [2,2,2,2], head ReLU -> AvgPool2d(7) -> fc."""

    def __init__(self, make, num_classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = _stage(make, 64, 64, 2, 1)
        self.layer2 = _stage(make, 64, 128, 2, 2)
        self.layer3 = _stage(make, 128, 256, 2, 2)
        self.layer4 = _stage(make, 256, 512, 2, 2)
        self.relu = nn.ReLU()
        self.avgpool = nn.AvgPool2d(7)
        self.fc = nn.Linear(512, num_classes)
        _he_fan_out(self)

    def forward(self, x):
        x = self.bn1(self.maxpool(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.relu(x)
        assert x.shape[2] == 7 and x.shape[3] == 7, "ResNet-18 needs a 224 input"
        x = self.avgpool(x)
        return self.fc(torch.flatten(x, 1))


class ResNet20(_QuantNet):
    """CIFAR ResNet-20 as `edmips` builds it: conv1 3x3 16 -> bn1 (no ReLU), three stages of
    three BasicBlocks (16/32/64 planes, strides 1/2/2), head head_bn -> ReLU -> global
    average pool -> fc."""

    def __init__(self, make, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = _stage(make, 16, 16, 3, 1)
        self.layer2 = _stage(make, 16, 32, 3, 2)
        self.layer3 = _stage(make, 32, 64, 3, 2)
        self.head_bn = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(64, num_classes)
        _he_fan_out(self)

    def forward(self, x):
        x = self.bn1(self.conv1(x))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.relu(self.head_bn(x))
        x = F.adaptive_avg_pool2d(x, 1)
        return self.fc(torch.flatten(x, 1))


#: name -> (network class, mode, input size, classes)
CONFIGS = {
    "mixres18_w1234a234": (ResNet18, "search", 224, 1000),
    "quantres18_2w2a": (ResNet18, "fixed", 224, 1000),
    "mixres20_w1234a234": (ResNet20, "search", 32, 10),
    "quantres20_2w2a": (ResNet20, "fixed", 32, 10),
}


def build(config):
    cls, mode, size, classes = CONFIGS[config]
    return cls(conv_factory(mode), classes), mode, size, classes


# ---------------------------------------------------------------------------------------------
# §5 One training step
# ---------------------------------------------------------------------------------------------

#: The complexity weight of a bench step (as `edmips bench step` uses when a config has none).
BENCH_CD = 1e-3


class StepRunner:
    """Search: SGD(weights, lr 0.1) + SGD(alphas, lra 0.01), both momentum 0.9, wd 1e-4, loss
    CE + cd * complexity_loss. Fixed: one SGD(all parameters, lr 0.1, momentum 0.9, wd 1e-4)."""

    def __init__(self, config, batch, seed=0, cd=BENCH_CD):
        torch.manual_seed(seed)
        self.model, self.mode, size, classes = build(config)
        self.model.train()
        self.cd = cd
        named = list(self.model.named_parameters())
        if self.mode == "search":
            weights = [p for n, p in named if "alpha" not in n]
            alphas = [p for n, p in named if "alpha" in n]
            self.optims = [
                torch.optim.SGD(weights, lr=0.1, momentum=0.9, weight_decay=1e-4),
                torch.optim.SGD(alphas, lr=0.01, momentum=0.9, weight_decay=1e-4),
            ]
        else:
            self.optims = [torch.optim.SGD([p for _, p in named], lr=0.1, momentum=0.9, weight_decay=1e-4)]
        self.x = torch.randn(batch, 3, size, size)
        self.y = torch.arange(batch) % classes

    def step(self):
        out = self.model(self.x)
        loss = F.cross_entropy(out, self.y)
        if self.mode == "search" and self.cd != 0:
            loss = loss + self.cd * self.model.complexity_loss()
        for o in self.optims:
            o.zero_grad(set_to_none=True)
        loss.backward()
        for o in self.optims:
            o.step()
        return loss.item()


def bench(config, batch, iters, warmup, threads):
    # The peak so far is what importing torch (and its CUDA libraries, in the PyPI build) costs.
    import_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if threads:
        torch.set_num_threads(threads)
    runner = StepRunner(config, batch)
    times = []
    for i in range(warmup + iters):
        t0 = time.perf_counter()
        loss = runner.step()
        dt = (time.perf_counter() - t0) * 1e3
        if i >= warmup:
            times.append(dt)
        if not math.isfinite(loss):
            raise SystemExit(f"non-finite loss {loss} at step {i}")
    times.sort()
    median = times[len(times) // 2] if times else 0.0
    return {
        "config": config,
        "kind": "search" if runner.mode == "search" else "train",
        "batch": batch,
        "iters": iters,
        "warmup": warmup,
        "threads": torch.get_num_threads(),
        "median_ms": median,
        "min_ms": times[0] if times else 0.0,
        "max_ms": times[-1] if times else 0.0,
        "mean_ms": statistics.fmean(times) if times else 0.0,
        "images_per_s": batch / (median / 1e3) if median > 0 else 0.0,
        "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "import_rss_kib": import_rss,
        "torch": torch.__version__,
        "torch_cuda_build": torch.version.cuda,
        "device": "cpu",
    }


# ---------------------------------------------------------------------------------------------
# check: against `edmips inspect --json` and shared/golden
# ---------------------------------------------------------------------------------------------


def _close(a, b, rel=1e-5):
    return abs(a - b) <= rel * max(abs(a), abs(b), 1e-30)


def check_against_inspect(config, inspect):
    """Returns a list of failure messages (empty: all agree)."""
    model, mode, size, _ = build(config)
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 3, size, size))
    names = {id(m): n for n, m in model.named_modules()}
    layers = model.quant_layers()
    theirs = inspect["layers"]
    fails = []
    if len(layers) != len(theirs) or len(layers) != inspect["totals"]["layers"]:
        fails.append(f"{config}: {len(layers)} quantized layers, edmips has {len(theirs)}")
    for m, t in zip(layers, theirs):
        name = names[id(m)]
        pad = [m.padding] * 4
        mine = (name, m.cin, m.cout, [m.kernel] * 2, m.stride, pad, list(m.input_hw))
        ref = (t["name"], t["in_channels"], t["out_channels"], t["kernel"], t["stride"], t["padding"], t["input_hw"])
        if mine != ref:
            fails.append(f"{config}: layer {t['index']}: {mine} != {ref}")
        for key, v in (("size_product", m.size_product.item()), ("memory_size", m.memory_size.item()),
                       ("param_size", m.param_size)):
            if not _close(v, t[key]):
                fails.append(f"{config}: layer {t['index']} {name} {key} {v} != {t[key]}")
        if mode == "fixed" and (m.wbit, m.abit) != (t.get("wbit"), t.get("abit")):
            fails.append(f"{config}: layer {t['index']} bits {(m.wbit, m.abit)} != {(t.get('wbit'), t.get('abit'))}")
    params_q = sum(m.conv.weight.numel() for m in layers) * 1e-6
    if not _close(params_q, inspect["totals"]["param_size"]):
        fails.append(f"{config}: quantized conv parameters {params_q} M != {inspect['totals']['param_size']} M")
    if mode == "search":
        with torch.no_grad():
            c = model.complexity_loss().item()
        ref = inspect["totals"]["complexity_loss_at_init"]
        if not _close(c, ref):
            fails.append(f"{config}: complexity at init {c} != {ref}")
        n_alpha = sum(p.numel() for n, p in model.named_parameters() if "alpha" in n)
        if n_alpha != 7 * len(layers):
            fails.append(f"{config}: {n_alpha} logits, expected {7 * len(layers)}")
    total = sum(p.numel() for n, p in model.named_parameters() if "alpha" not in n)
    print(f"{config}: {len(layers)} quantized layers, quantized conv weights {params_q:.6f} M, "
          f"all weights {total} (logits excluded)"
          + (f", complexity at init {model.complexity_loss().item():.8g}" if mode == "search" else ""))
    return fails


def _t(d):
    return torch.tensor(d["data"], dtype=torch.float64).to(torch.float32).reshape(d["shape"])


def check_golden(golden_dir):
    """Bit-exact checks of the two quantizers (forward and straight-through gradient)."""
    fails = []
    path = os.path.join(golden_dir, "hwgq.json")
    if os.path.exists(path):
        with open(path) as f:
            cases = json.load(f)["cases"]
        for c in cases:
            x = torch.tensor(c["x"], dtype=torch.float64).to(torch.float32).requires_grad_()
            g = torch.tensor(c["g"], dtype=torch.float64).to(torch.float32)
            y = hwgq(x, c["bit"])
            y.backward(g)
            ey = torch.tensor(c["y"], dtype=torch.float64).to(torch.float32)
            eg = torch.tensor(c["grad_x"], dtype=torch.float64).to(torch.float32)
            if not torch.equal(y.detach(), ey) or not torch.equal(x.grad, eg):
                fails.append(f"hwgq bit {c['bit']}: not bit-exact")
        print(f"golden hwgq: {len(cases)} cases checked")
    path = os.path.join(golden_dir, "gauss_weight.json")
    if os.path.exists(path):
        with open(path) as f:
            d = json.load(f)
        w = _t(d["W"]).requires_grad_()
        g = _t(d["G"])
        for c in d["per_bit"]:
            w.grad = None
            y = gauss_quantize(w, c["bit"])
            y.backward(g)
            if not torch.equal(y.detach(), _t(c["y"])) or not torch.equal(w.grad, g):
                fails.append(f"gauss bit {c['bit']}: not bit-exact")
        print(f"golden gauss_weight: {len(d['per_bit'])} bits checked")
    return fails


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench", help="time training steps")
    b.add_argument("-a", "--arch", required=True, choices=sorted(CONFIGS))
    b.add_argument("-b", "--batch-size", type=int, default=8)
    b.add_argument("--iters", type=int, default=3)
    b.add_argument("--warmup", type=int, default=1)
    b.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    b.add_argument("--json", action="store_true")
    c = sub.add_parser("check", help="compare with `edmips inspect --json` and shared/golden")
    c.add_argument("--edmips", default=os.environ.get("EDMIPS", str(Path(__file__).resolve().parents[2] / "target" / "release" / "edmips")))
    c.add_argument("--golden", default=os.environ.get("EDMIPS_GOLDEN", "/work/shared/golden"))
    args = ap.parse_args(argv)

    if args.cmd == "bench":
        r = bench(args.arch, args.batch_size, args.iters, args.warmup, args.threads)
        if args.json:
            print(json.dumps(r))
        else:
            print(f"{r['config']} b{r['batch']} T{r['threads']}: median {r['median_ms']:.1f} ms "
                  f"({r['images_per_s']:.1f} img/s), peak RSS {r['peak_rss_kib'] / 1024:.0f} MiB")
        return 0

    import subprocess

    fails = []
    for config in sorted(CONFIGS):
        out = subprocess.run([args.edmips, "inspect", "-a", config, "--json"], check=True,
                             capture_output=True, text=True).stdout
        fails += check_against_inspect(config, json.loads(out))
    fails += check_golden(args.golden)
    for f in fails:
        print("FAIL", f)
    print("check: " + ("ok" if not fails else f"{len(fails)} failures"))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
