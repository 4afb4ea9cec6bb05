"""PyTorch reference of the harness's MoCo training step, timed the same way as `moco bench step`.

The step (MoCo v2 on CIFAR-sized input, official order of facebookresearch/moco):
    q = normalize(f_q(x_q)); θk ← m θk + (1-m) θq;
    k = normalize(unshuffle(f_k(shuffle(x_k)))) without grad;
    logits = [q·k, q·queue] / τ; loss = CE(logits, 0); backward; SGD (momentum, wd) on θq;
    enqueue k.
f_q / f_k: ResNet-18 with the CIFAR stem (3x3 s1 conv, no max-pool) at a given width, the MLP
head (feat → feat → dim), SplitBatchNorm as the official CIFAR demo writes it (one
F.batch_norm over the (N/G, G·C, H, W) view: the fastest way PyTorch offers).

Prints one JSON object (and writes it with --json): step median seconds, img/s, peak RSS, and with
--ops a per-op breakdown (seconds per training step, summed over the network's layers):
conv_fwd, conv_grad_input, conv_grad_weight, bn (train forward + backward), head (forward +
backward), ema, queue (logits against the queue, forward + backward, and the enqueue).

    bench/.venv/bin/python bench/torch_step.py --batch 64 --width 64 --k 4096 --ops
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class SplitBatchNorm(nn.BatchNorm2d):
    """The official CIFAR demo's SplitBatchNorm (train mode): G groups of images, one call."""

    def __init__(self, c: int, splits: int):
        super().__init__(c)
        self.splits = splits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = self.splits
        if not self.training or g == 1:
            return super().forward(x)
        rm = self.running_mean.repeat(g)
        rv = self.running_var.repeat(g)
        y = F.batch_norm(
            x.view(-1, c * g, h, w), rm, rv, self.weight.repeat(g), self.bias.repeat(g), True, self.momentum, self.eps
        ).view(n, c, h, w)
        self.running_mean.data.copy_(rm.view(g, c).mean(0))
        self.running_var.data.copy_(rv.view(g, c).mean(0))
        return y


class BasicBlock(nn.Module):
    def __init__(self, cin: int, planes: int, stride: int, splits: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = SplitBatchNorm(planes, splits)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = SplitBatchNorm(planes, splits)
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, planes, 1, stride, bias=False), SplitBatchNorm(planes, splits)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        s = x if self.downsample is None else self.downsample(x)
        return F.relu(y + s)


class Encoder(nn.Module):
    """ResNet-18, CIFAR stem, MLP head; torchvision's attribute names."""

    def __init__(self, width: int, dim: int, splits: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = SplitBatchNorm(width, splits)
        layers, cin = [], width
        for i, planes in enumerate([width, 2 * width, 4 * width, 8 * width]):
            stride = 1 if i == 0 else 2
            layers.append(nn.Sequential(BasicBlock(cin, planes, stride, splits), BasicBlock(planes, planes, 1, splits)))
            cin = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.fc = nn.Sequential(nn.Linear(cin, cin), nn.ReLU(), nn.Linear(cin, dim))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class MoCo:
    def __init__(self, a: argparse.Namespace):
        torch.manual_seed(a.seed)
        self.dev = torch.device(a.device)
        self.q = Encoder(a.width, a.dim, a.bn_splits).train().to(self.dev)
        self.k = Encoder(a.width, a.dim, a.bn_splits).train().to(self.dev)
        for pq, pk in zip(self.q.parameters(), self.k.parameters()):
            pk.data.copy_(pq.data)
            pk.requires_grad = False
        self.queue = F.normalize(torch.randn(a.dim, a.k, device=self.dev), dim=0)
        self.ptr = 0
        self.m, self.tau = a.momentum, a.tau
        self.opt = torch.optim.SGD(self.q.parameters(), lr=0.06, momentum=0.9, weight_decay=5e-4)

    @torch.no_grad()
    def ema(self) -> None:
        qs, ks = list(self.q.parameters()), list(self.k.parameters())
        torch._foreach_mul_(ks, self.m)
        torch._foreach_add_(ks, qs, alpha=1 - self.m)

    @torch.no_grad()
    def enqueue(self, k: torch.Tensor) -> None:
        n, kk = k.shape[0], self.queue.shape[1]
        self.queue[:, self.ptr : self.ptr + n] = k.T
        self.ptr = (self.ptr + n) % kk

    def step(self, xq: torch.Tensor, xk: torch.Tensor) -> float:
        q = F.normalize(self.q(xq), dim=1)
        self.ema()
        with torch.no_grad():
            perm = torch.randperm(xk.shape[0], device=self.dev)
            k = F.normalize(self.k(xk[perm]), dim=1)[torch.argsort(perm)]
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ self.queue], 1) / self.tau
        loss = F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=self.dev))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.enqueue(k)
        return loss.item()


def sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def median_time(f, warmup: int, reps: int) -> float:
    for _ in range(warmup):
        f()
    sync()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        sync()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def conv_shapes(enc: Encoder, batch: int) -> list[tuple[nn.Conv2d, tuple[int, ...]]]:
    """Every conv of the encoder with its input shape at this batch size (one traced forward)."""
    shapes: list[tuple[nn.Conv2d, tuple[int, ...]]] = []
    hooks = [
        m.register_forward_hook(lambda mod, inp, out: shapes.append((mod, tuple(inp[0].shape))))
        for m in enc.modules()
        if isinstance(m, nn.Conv2d)
    ]
    with torch.no_grad():
        enc(torch.randn(batch, 3, 32, 32))
    for h in hooks:
        h.remove()
    return shapes


def op_breakdown(moco: MoCo, a: argparse.Namespace) -> dict[str, float]:
    """Seconds per training step of each op class, as the step uses them: the query encoder's
    convs run forward + both backward passes, the key encoder's forward only; every BN likewise."""
    n, reps = a.batch, a.op_reps
    ops = dict.fromkeys(["conv_fwd", "conv_grad_input", "conv_grad_weight", "bn", "head", "ema", "queue"], 0.0)
    for conv, shape in conv_shapes(moco.q, n):
        x = torch.randn(shape)
        w = conv.weight.detach().clone()
        s, p = conv.stride, conv.padding
        y = F.conv2d(x, w, None, s, p)
        gy = torch.randn_like(y)
        # 2 forwards per step (query and key encoder), one backward.
        ops["conv_fwd"] += 2 * median_time(lambda: F.conv2d(x, w, None, s, p), 1, reps)
        if shape[1] != 3:  # the stem's input (the image) needs no gradient
            ops["conv_grad_input"] += median_time(
                lambda: torch.nn.grad.conv2d_input(x.shape, w, gy, s, p), 1, reps
            )
        ops["conv_grad_weight"] += median_time(lambda: torch.nn.grad.conv2d_weight(x, w.shape, gy, s, p), 1, reps)
        # The BN after this conv: train forward + backward (query), train forward (key).
        bn = SplitBatchNorm(y.shape[1], a.bn_splits).train()
        yy = y.clone().requires_grad_(True)

        def bn_fb() -> None:  # as `moco bench step`: backward from sum(y * gy)
            (bn(yy) * gy).sum().backward()

        def bn_f() -> None:
            with torch.no_grad():
                bn(yy)

        ops["bn"] += median_time(bn_fb, 1, reps) + median_time(bn_f, 1, reps)
    feat = moco.q.fc[0].in_features
    h = torch.randn(n, feat, requires_grad=True)
    head = moco.q.fc

    def head_fb() -> None:
        head(h).sum().backward()

    ops["head"] = median_time(head_fb, 1, reps)
    ops["ema"] = median_time(moco.ema, 1, reps)
    q = F.normalize(torch.randn(n, a.dim), dim=1).requires_grad_(True)
    k = F.normalize(torch.randn(n, a.dim), dim=1)

    def queue_op() -> None:
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ moco.queue], 1) / moco.tau
        F.cross_entropy(logits, torch.zeros(n, dtype=torch.long)).backward()
        moco.enqueue(k)

    ops["queue"] = median_time(queue_op, 1, reps)
    return ops


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--k", type=int, default=4096)
    ap.add_argument("--tau", type=float, default=0.2)
    ap.add_argument("--momentum", type=float, default=0.99)
    ap.add_argument("--bn-splits", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--op-reps", type=int, default=3)
    ap.add_argument("--ops", action="store_true", help="also time the per-op breakdown")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    ap.add_argument("--json", help="write the result here too")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.batch % a.bn_splits or a.k % a.batch:
        sys.exit(f"batch {a.batch} must divide by bn-splits {a.bn_splits} and divide K {a.k}")
    if a.ops and a.device != "cpu":
        sys.exit("--ops times CPU ops; run it with --device cpu")
    moco = MoCo(a)
    xq, xk = (torch.randn(a.batch, 3, 32, 32, device=moco.dev) for _ in range(2))
    step_s = median_time(lambda: moco.step(xq, xk), a.warmup, a.steps)
    out = {
        "impl": "pytorch",
        "version": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch": a.batch,
        "width": a.width,
        "k": a.k,
        "bn_splits": a.bn_splits,
        "steps": a.steps,
        "step_s": step_s,
        "img_per_s": a.batch / step_s,
        "peak_rss_mb": peak_rss_mb(),
        "device": a.device,
    }
    if a.device.startswith("cuda"):
        out["gpu"] = torch.cuda.get_device_name(moco.dev)
        out["gpu_max_allocated_mb"] = torch.cuda.max_memory_allocated(moco.dev) / 2**20
    if a.ops:
        out["ops"] = op_breakdown(moco, a)
    text = json.dumps(out, indent=1)
    print(text)
    if a.json:
        with open(a.json + ".tmp", "w") as f:
            f.write(text + "\n")
        import os

        os.replace(a.json + ".tmp", a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
