"""Golden fixture for the Rust MoCo implementation: two training steps of MoCo.

This script is a small, self-contained PyTorch reference of Algorithm 1 of the
paper "Momentum Contrast for Unsupervised Visual Representation Learning"
(He et al., CVPR 2020), following the order of operations of the official
implementation (facebookresearch/moco, ``moco/builder.py``):

    q = normalize(f_q(x_q))                        # queries, grad flows
    θk = m θk + (1 - m) θq                         # momentum (EMA) update
    k = normalize(unshuffle(f_k(shuffle(x_k))))    # keys, no grad, Shuffle BN
    logits = [q·k, q·queue] / τ ; loss = CE(logits, 0)
    loss.backward(); SGD step on θq
    enqueue(k)

The encoder is a tiny torchvision-style ResNet-18 (CIFAR stem: 3x3 conv, no
max-pool; width 4, i.e. planes 4/8/16/32) with a 2-layer MLP head, and every
BatchNorm is a "SplitBatchNorm" with G = 2 groups of contiguous images (it
emulates per-GPU BN on one device). No torchvision dependency: the modules are
built here with torchvision's attribute names, so ``state_dict()`` keys are
exactly torchvision's (``conv1.weight``, ``layer2.0.downsample.1.running_var``,
``fc.0.weight``, ...).

It writes ``tests/fixtures/golden_moco_step.safetensors`` containing

    init.encoder_q.<name>, init.encoder_k.<name>   every state_dict entry
    init.queue (C, K), init.queue_ptr int64 [1]
    step{1,2}.x_q, step{1,2}.x_k (N, 3, 16, 16), step{1,2}.perm int64 (N,)
    expected.loss (2,), expected.logits1 (N, 1+K)
    expected.encoder_q.<name>, expected.encoder_k.<name>   after two steps
    expected.queue (C, K), expected.queue_ptr int64 [1]   after two steps

plus string metadata (tau, m, lr, sgd_momentum, weight_decay, bn_splits, ...).

It also writes ``tests/fixtures/golden_moco_symmetric.safetensors``: two steps of the
symmetric loss of the official CIFAR demo (facebookresearch/moco, colab
``moco_cifar10_demo``, ``ModelMoCo.forward`` with ``symmetric=True``) under the cosine
key-momentum schedule (solo-learn's ``MomentumUpdater.update_tau``)::

    m_t = m_final - (m_final - m) (1 + cos(pi t / T)) / 2   # t = 0, 1; T = 2: m = 0.9, 0.95
    θk = m_t θk + (1 - m_t) θq                              # once per step, before the keys
    loss_12, q1, k2 = contrastive_loss(x_1, x_2)            # k2 with Shuffle BN (perm_k2)
    loss_21, q2, k1 = contrastive_loss(x_2, x_1)            # k1 with Shuffle BN (perm_k1)
    loss = loss_12 + loss_21                                # both against the same queue
    enqueue(cat([k1, k2]))                                  # 2N keys at once
    loss.backward(); SGD step on θq

with K = 24 (a multiple of 2N = 8, so the pointer ends at 16 and the queue still holds
initial keys). Its tensors: ``init.*`` as above, ``step{1,2}.x_1``, ``step{1,2}.x_2``,
``step{1,2}.perm_k2``, ``step{1,2}.perm_k1``, ``expected.loss`` (2,) (the sums),
``expected.loss_12``, ``expected.loss_21``, ``expected.acc1`` (2,) (the mean of the two
terms' (1+K)-way top-1), ``expected.encoder_q.*``, ``expected.encoder_k.*``,
``expected.queue``, ``expected.queue_ptr``; metadata adds ``m_final``,
``momentum_schedule``, ``total_steps``, ``m_step1``, ``m_step2``, ``symmetric``.
``num_batches_tracked`` entries are int64 scalars (shape []) as in PyTorch;
everything else is float32.

Regenerate (CPU only, deterministic; needs ``pip install torch safetensors numpy``),
from the repository root:

    /path/to/venv/bin/python scripts/golden_moco_step.py                    # both fixtures
    /path/to/venv/bin/python scripts/golden_moco_step.py --symmetric-only   # the second only

(Another torch version reproduces the first fixture's inputs and initial state exactly and
its expected tensors to ~1e-6, not byte for byte; ``--symmetric-only`` leaves it alone.)
"""

from __future__ import annotations

import json
import math
import os
import struct
import sys
from collections import OrderedDict

import numpy as np  # noqa: F401  (safetensors.torch uses numpy; keep the dependency explicit)
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save

# ---------------------------------------------------------------------------
# Hyper-parameters (see the brief / Rust test).
# ---------------------------------------------------------------------------
SEED = 20200313
N = 4  # batch size
# Input is (N, 3, IMG, IMG). Note on float32 conditioning: with IMG = 8, layer4 is 1x1, so
# each BN group there normalises only N/G * 1 * 1 = 2 values per channel; some groups then
# have a variance near eps and the BN backward amplifies float32 rounding, so two correct
# float32 implementations can disagree visibly on the updated encoder_q (the step-1 loss
# and logits1 stay close, ~1e-4). IMG = 16 (layer4 2x2) brings agreement to ~1e-6, so the
# fixture uses 16.
IMG = 16
K = 8  # queue length
DIM = 8  # feature dimension C
TAU = 0.2  # softmax temperature τ
EMA_M = 0.99  # momentum of the key-encoder update
LR = 0.1
SGD_MOMENTUM = 0.9
WEIGHT_DECAY = 1e-4
BN_SPLITS = 2  # G: BatchNorm groups
BN_EPS = 1e-5
BN_MOMENTUM = 0.1  # running = (1 - 0.1) * running + 0.1 * batch
WIDTH = 4  # planes of layer1; layer2..4 use 2x, 4x, 8x
PERMS = ([2, 0, 3, 1], [1, 3, 0, 2])  # Shuffle-BN permutations of step 1 and step 2

OUT_PATH = os.path.join("tests", "fixtures", "golden_moco_step.safetensors")

# The symmetric fixture (its own generator, so the first fixture is unchanged).
SYM_SEED = SEED + 1
SYM_K = 24  # a multiple of 2N: both key batches are enqueued at once
SYM_M_BASE = 0.9  # moco.momentum: m at the first step
SYM_M_FINAL = 1.0  # moco.momentum_final: m at step T
SYM_TOTAL_STEPS = 2  # T: the two steps use m = 0.9 and 0.95
# Shuffle-BN permutations of each step's two key forwards: (k2 = f_k(x_2), k1 = f_k(x_1)).
SYM_PERMS = (([2, 0, 3, 1], [1, 2, 3, 0]), ([1, 3, 0, 2], [0, 3, 2, 1]))
SYM_OUT_PATH = os.path.join("tests", "fixtures", "golden_moco_symmetric.safetensors")


# ---------------------------------------------------------------------------
# SplitBatchNorm with explicit ops.
# ---------------------------------------------------------------------------
class SplitBatchNorm2d(nn.Module):
    """BatchNorm2d whose train-mode statistics are computed per group of images.

    Input (N, C, H, W) is viewed as (G, N/G, C, H, W): group g holds the
    contiguous images g*N/G .. (g+1)*N/G - 1. Each group is normalised with its
    own per-channel mean and biased variance over (N/G, H, W). Running stats move
    towards the average over groups of the group mean and of the unbiased group
    variance; ``num_batches_tracked`` is incremented once per forward call.
    With G = 1 this is exactly ``nn.BatchNorm2d`` in train mode.
    """

    def __init__(self, num_features: int, num_splits: int = BN_SPLITS):
        super().__init__()
        self.num_features = num_features
        self.num_splits = num_splits
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert self.training, "this fixture only uses train-mode BN"
        n, c, h, w = x.shape
        g = self.num_splits
        assert n % g == 0
        xg = x.reshape(g, n // g, c, h, w)  # (G, N/G, C, H, W)
        mean = xg.mean(dim=(1, 3, 4), keepdim=True)  # (G, 1, C, 1, 1)
        xc = xg - mean  # (G, N/G, C, H, W)
        var = (xc * xc).mean(dim=(1, 3, 4), keepdim=True)  # biased, (G, 1, C, 1, 1)
        y = xc / torch.sqrt(var + BN_EPS)
        y = y * self.weight.view(1, 1, c, 1, 1) + self.bias.view(1, 1, c, 1, 1)

        # Running statistics: no gradient, average over groups.
        with torch.no_grad():
            m = (n // g) * h * w  # elements per (group, channel)
            batch_mean = mean.reshape(g, c).mean(0)  # (C,)
            batch_var = (var.reshape(g, c) * (m / (m - 1))).mean(0)  # (C,) unbiased
            self.running_mean.mul_(1 - BN_MOMENTUM).add_(BN_MOMENTUM * batch_mean)
            self.running_var.mul_(1 - BN_MOMENTUM).add_(BN_MOMENTUM * batch_var)
            self.num_batches_tracked.add_(1)
        return y.reshape(n, c, h, w)


def check_split_bn_against_torch() -> None:
    """With G = 1, SplitBatchNorm2d must equal F.batch_norm(training=True):
    output, input/weight/bias gradients and running statistics."""
    gen = torch.Generator().manual_seed(1234)
    c = 5
    x = torch.randn(6, c, 3, 4, generator=gen)
    weight = 1 + 0.1 * torch.randn(c, generator=gen)
    bias = 0.1 * torch.randn(c, generator=gen)
    rm = 0.1 * torch.randn(c, generator=gen)
    rv = 1 + 0.1 * torch.rand(c, generator=gen)

    bn = SplitBatchNorm2d(c, num_splits=1).train()
    with torch.no_grad():
        bn.weight.copy_(weight)
        bn.bias.copy_(bias)
        bn.running_mean.copy_(rm)
        bn.running_var.copy_(rv)
    x1 = x.clone().requires_grad_(True)
    y1 = bn(x1)

    ref_rm, ref_rv = rm.clone(), rv.clone()
    w2, b2 = weight.clone().requires_grad_(True), bias.clone().requires_grad_(True)
    x2 = x.clone().requires_grad_(True)
    y2 = F.batch_norm(x2, ref_rm, ref_rv, w2, b2, training=True, momentum=BN_MOMENTUM, eps=BN_EPS)

    upstream = torch.randn(y1.shape, generator=gen)
    (y1 * upstream).sum().backward()
    (y2 * upstream).sum().backward()

    tol = dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(y1, y2, **tol)
    torch.testing.assert_close(x1.grad, x2.grad, **tol)
    torch.testing.assert_close(bn.weight.grad, w2.grad, **tol)
    torch.testing.assert_close(bn.bias.grad, b2.grad, **tol)
    torch.testing.assert_close(bn.running_mean, ref_rm, **tol)
    torch.testing.assert_close(bn.running_var, ref_rv, **tol)
    assert int(bn.num_batches_tracked) == 1

    # With G = 2 the groups are the contiguous halves of the batch: each half must
    # match F.batch_norm on that half alone, and the running stats must be the
    # average of the two per-half updates (the update is linear in the batch stats).
    bn2 = SplitBatchNorm2d(c, num_splits=2).train()
    with torch.no_grad():
        bn2.weight.copy_(weight)
        bn2.bias.copy_(bias)
        bn2.running_mean.copy_(rm)
        bn2.running_var.copy_(rv)
        y_split = bn2(x)
        halves, rms, rvs = [], [], []
        for xh in x.chunk(2, dim=0):  # images 0..2 and 3..5
            r_m, r_v = rm.clone(), rv.clone()
            halves.append(F.batch_norm(xh, r_m, r_v, weight, bias, training=True, momentum=BN_MOMENTUM, eps=BN_EPS))
            rms.append(r_m)
            rvs.append(r_v)
    torch.testing.assert_close(y_split, torch.cat(halves, dim=0), **tol)
    torch.testing.assert_close(bn2.running_mean, torch.stack(rms).mean(0), **tol)
    torch.testing.assert_close(bn2.running_var, torch.stack(rvs).mean(0), **tol)


# ---------------------------------------------------------------------------
# ResNet-18 (CIFAR stem, width 4) with torchvision attribute names.
# ---------------------------------------------------------------------------
def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = conv3x3(cin, planes, stride)
        self.bn1 = SplitBatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = conv3x3(planes, planes, 1)
        self.bn2 = SplitBatchNorm2d(planes)
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, planes, kernel_size=1, stride=stride, bias=False),  # downsample.0
                SplitBatchNorm2d(planes),  # downsample.1
            )
        else:
            self.downsample = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNet18Cifar(nn.Module):
    def __init__(self, width: int = WIDTH, dim: int = DIM):
        super().__init__()
        self.conv1 = conv3x3(3, width, 1)  # CIFAR stem, no max-pool
        self.bn1 = SplitBatchNorm2d(width)
        self.relu = nn.ReLU()
        cin = width
        for i, mult in enumerate((1, 2, 4, 8), start=1):
            planes = width * mult
            stride = 1 if i == 1 else 2
            layer = nn.Sequential(BasicBlock(cin, planes, stride), BasicBlock(planes, planes, 1))
            setattr(self, f"layer{i}", layer)
            cin = planes
        feat = cin  # 8 * width = 32
        self.fc = nn.Sequential(nn.Linear(feat, feat), nn.ReLU(), nn.Linear(feat, dim))  # fc.0, fc.2

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, H, W) -> (N, DIM)
        x = self.relu(self.bn1(self.conv1(x)))  # (N, 4, 8, 8)
        x = self.layer1(x)  # (N, 4, 8, 8)
        x = self.layer2(x)  # (N, 8, 4, 4)
        x = self.layer3(x)  # (N, 16, 2, 2)
        x = self.layer4(x)  # (N, 32, 1, 1)
        x = x.mean(dim=(2, 3))  # global average pool, (N, 32)
        return self.fc(x)  # (N, DIM)


@torch.no_grad()
def init_encoder_q(model: nn.Module, gen: torch.Generator) -> None:
    """Deterministic init in state_dict order (one generator for everything)."""
    modules = dict(model.named_modules())
    for name, t in model.state_dict(keep_vars=True).items():
        owner, leaf = name.rsplit(".", 1)
        mod = modules[owner]
        if isinstance(mod, nn.Conv2d):  # kaiming normal, fan_out
            out_c, _, kh, kw = t.shape
            t.copy_(torch.randn(t.shape, generator=gen) * math.sqrt(2.0 / (out_c * kh * kw)))
        elif isinstance(mod, nn.Linear):  # U(±1/sqrt(in)) for weight and bias
            bound = 1.0 / math.sqrt(mod.in_features)
            t.copy_((torch.rand(t.shape, generator=gen) * 2 - 1) * bound)
        elif isinstance(mod, SplitBatchNorm2d):
            if leaf == "weight":
                t.copy_(1 + 0.1 * torch.randn(t.shape, generator=gen))
            elif leaf == "bias":
                t.copy_(0.1 * torch.randn(t.shape, generator=gen))
            elif leaf == "running_mean":
                t.copy_(0.1 * torch.randn(t.shape, generator=gen))
            elif leaf == "running_var":
                t.copy_(1 + 0.1 * torch.rand(t.shape, generator=gen))
            elif leaf == "num_batches_tracked":
                t.zero_()
            else:
                raise KeyError(name)
        else:
            raise KeyError(name)


@torch.no_grad()
def init_encoder_k(enc_k: nn.Module, enc_q: nn.Module, gen: torch.Generator) -> None:
    """θk = θq + 0.05 * randn for trainable tensors; BN buffers copied from θq."""
    enc_k.load_state_dict(enc_q.state_dict())
    for name, p in enc_k.named_parameters():  # named_parameters order = state_dict order
        p.add_(0.05 * torch.randn(p.shape, generator=gen))


def snapshot(prefix: str, model: nn.Module) -> "OrderedDict[str, torch.Tensor]":
    return OrderedDict((f"{prefix}.{k}", v.detach().clone().contiguous()) for k, v in model.state_dict().items())


def with_sorted_metadata(blob: bytes) -> bytes:
    """safetensors writes the ``__metadata__`` map in hash order, which differs
    between runs; rewrite it with sorted keys so the file is byte-for-byte
    reproducible. Same JSON length, so tensor offsets are unchanged."""
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":")).encode("ascii")
    assert len(text) <= n
    text = text + b" " * (n - len(text))  # safetensors pads the header with spaces
    return blob[:8] + text + blob[8 + n :]


# ---------------------------------------------------------------------------
# One MoCo step (Algorithm 1, official builder.py order).
# ---------------------------------------------------------------------------
def moco_step(enc_q, enc_k, opt, queue, queue_ptr, x_q, x_k, perm):
    """Returns (loss, logits). Updates enc_q (SGD), enc_k (EMA + BN stats), queue, queue_ptr in place."""
    # 1. Queries.
    q = F.normalize(enc_q(x_q), dim=1)  # (N, C)

    with torch.no_grad():
        # 2. Momentum update of the key encoder, trainable tensors only, θq before SGD.
        q_params = dict(enc_q.named_parameters())
        for name, pk in enc_k.named_parameters():
            pk.mul_(EMA_M).add_(q_params[name].detach(), alpha=1 - EMA_M)

        # 3. Keys with Shuffle BN: shuffle, encode, un-shuffle.
        k = enc_k(x_k[perm])  # (N, C), row i is image perm[i]
        k = k[torch.argsort(perm)]  # (N, C), row i is image i
        k = F.normalize(k, dim=1)  # (N, C)

    # 4. Logits and loss (positive at index 0); queue as before this step's enqueue.
    l_pos = (q * k).sum(dim=1, keepdim=True)  # (N, 1)
    l_neg = q @ queue  # (N, K)
    logits = torch.cat([l_pos, l_neg], dim=1) / TAU  # (N, 1+K)
    labels = torch.zeros(logits.shape[0], dtype=torch.long)  # (N,)
    loss = F.cross_entropy(logits, labels)  # mean over N

    # 5. SGD on θq.
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()

    # 6. Enqueue keys, dequeue the oldest.
    with torch.no_grad():
        ptr = int(queue_ptr[0])
        assert K % N == 0
        queue[:, ptr : ptr + N] = k.T  # (C, N)
        queue_ptr[0] = (ptr + N) % K

    return loss.detach(), logits.detach()


# ---------------------------------------------------------------------------
# The symmetric step of the official CIFAR demo (ModelMoCo, symmetric=True).
# ---------------------------------------------------------------------------
def cosine_momentum(t: int, total: int) -> float:
    """solo-learn's MomentumUpdater.update_tau at step t (from 0) of T = total steps."""
    return SYM_M_FINAL - (SYM_M_FINAL - SYM_M_BASE) * (math.cos(math.pi * t / total) + 1) / 2


def contrastive_loss(enc_q, enc_k, queue, im_q, im_k, perm):
    """ModelMoCo.contrastive_loss: (loss, q, k, top-1 of the positive). Shuffle BN on one
    device with the given permutation instead of torch.randperm."""
    q = F.normalize(enc_q(im_q), dim=1)  # (N, C)
    with torch.no_grad():
        k = F.normalize(enc_k(im_k[perm]), dim=1)  # (N, C), row i is image perm[i]
        k = k[torch.argsort(perm)]  # (N, C), row i is image i
    l_pos = torch.einsum("nc,nc->n", [q, k]).unsqueeze(-1)  # (N, 1)
    l_neg = torch.einsum("nc,ck->nk", [q, queue.clone().detach()])  # (N, K)
    logits = torch.cat([l_pos, l_neg], dim=1) / TAU  # (N, 1+K)
    labels = torch.zeros(logits.shape[0], dtype=torch.long)
    loss = F.cross_entropy(logits, labels)
    acc1 = (logits.detach().argmax(dim=1) == 0).float().mean()
    return loss, q, k, acc1


def moco_step_symmetric(enc_q, enc_k, opt, queue, queue_ptr, x_1, x_2, perm_k2, perm_k1, m):
    """ModelMoCo.forward(x_1, x_2) with symmetric=True, then the demo's SGD step.
    Returns (loss, loss_12, loss_21, acc1); updates everything in place."""
    with torch.no_grad():  # _momentum_update_key_encoder: once, before both key forwards
        q_params = dict(enc_q.named_parameters())
        for name, pk in enc_k.named_parameters():
            pk.mul_(m).add_(q_params[name].detach(), alpha=1 - m)

    loss_12, q1, k2, acc_12 = contrastive_loss(enc_q, enc_k, queue, x_1, x_2, perm_k2)
    loss_21, q2, k1, acc_21 = contrastive_loss(enc_q, enc_k, queue, x_2, x_1, perm_k1)
    loss = loss_12 + loss_21  # a sum, as the demo
    k = torch.cat([k1, k2], dim=0)  # (2N, C)

    with torch.no_grad():  # _dequeue_and_enqueue(k): the logits used a copy of the queue
        n2 = k.shape[0]
        ptr = int(queue_ptr[0])
        assert SYM_K % n2 == 0
        queue[:, ptr : ptr + n2] = k.t()  # (C, 2N)
        queue_ptr[0] = (ptr + n2) % SYM_K

    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach(), loss_12.detach(), loss_21.detach(), (acc_12 + acc_21) / 2


def initial_state(gen: torch.Generator, k: int):
    """θq, θk, the queue (C, k) and its pointer, drawn from gen in this order."""
    enc_q = ResNet18Cifar().float().train()
    enc_k = ResNet18Cifar().float().train()
    init_encoder_q(enc_q, gen)
    init_encoder_k(enc_k, enc_q, gen)
    for p in enc_k.parameters():
        p.requires_grad_(False)  # key encoder is never updated by gradient

    queue = F.normalize(torch.randn(DIM, k, generator=gen), dim=0)  # (C, k), unit columns
    queue_ptr = torch.zeros(1, dtype=torch.long)  # (1,)
    return enc_q, enc_k, queue, queue_ptr


def sgd(enc_q: nn.Module) -> torch.optim.Optimizer:
    """SGD over all trainable tensors of encoder_q (momentum buffers persist across steps)."""
    return torch.optim.SGD(
        enc_q.parameters(), lr=LR, momentum=SGD_MOMENTUM, dampening=0.0, weight_decay=WEIGHT_DECAY, nesterov=False
    )


def write_fixture(path: str, tensors: "OrderedDict[str, torch.Tensor]", metadata: dict, enc_q: nn.Module) -> None:
    for name, t in tensors.items():
        assert t.dtype in (torch.float32, torch.int64), (name, t.dtype)
        assert t.is_contiguous(), name
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(with_sorted_metadata(save(dict(tensors), metadata=metadata)))
    size = os.path.getsize(path)
    n_params = sum(p.numel() for p in enc_q.parameters())
    print(f"wrote {path}: {len(tensors)} tensors, {size} bytes ({size / 1024:.1f} KiB)")
    print(f"encoder: {len(enc_q.state_dict())} state_dict entries, {n_params} trainable scalars")
    # Four full float32 encoder snapshots dominate the size (about 4 * 46k * 4 B).
    if size > 1024 * 1024:
        print("WARNING: fixture is larger than 1 MiB")


def symmetric_fixture() -> None:
    """Two symmetric steps under the cosine momentum schedule -> SYM_OUT_PATH."""
    gen = torch.Generator().manual_seed(SYM_SEED)
    enc_q, enc_k, queue, queue_ptr = initial_state(gen, SYM_K)
    steps = []
    for i, (perm_k2, perm_k1) in enumerate(SYM_PERMS, start=1):
        x_1 = torch.randn(N, 3, IMG, IMG, generator=gen)  # (N, 3, IMG, IMG)
        x_2 = torch.randn(N, 3, IMG, IMG, generator=gen)  # (N, 3, IMG, IMG)
        steps.append((i, x_1, x_2, torch.tensor(perm_k2, dtype=torch.long), torch.tensor(perm_k1, dtype=torch.long)))

    tensors: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    tensors.update(snapshot("init.encoder_q", enc_q))
    tensors.update(snapshot("init.encoder_k", enc_k))
    tensors["init.queue"] = queue.clone()
    tensors["init.queue_ptr"] = queue_ptr.clone()
    for i, x_1, x_2, perm_k2, perm_k1 in steps:
        tensors[f"step{i}.x_1"] = x_1.clone()
        tensors[f"step{i}.x_2"] = x_2.clone()
        tensors[f"step{i}.perm_k2"] = perm_k2.clone()
        tensors[f"step{i}.perm_k1"] = perm_k1.clone()

    opt = sgd(enc_q)
    ms, out = [], []
    for i, x_1, x_2, perm_k2, perm_k1 in steps:
        m = cosine_momentum(i - 1, SYM_TOTAL_STEPS)
        ms.append(m)
        out.append(moco_step_symmetric(enc_q, enc_k, opt, queue, queue_ptr, x_1, x_2, perm_k2, perm_k1, m))

    for j, key in enumerate(["loss", "loss_12", "loss_21", "acc1"]):
        tensors[f"expected.{key}"] = torch.stack([o[j] for o in out]).float()  # (2,)
    tensors.update(snapshot("expected.encoder_q", enc_q))
    tensors.update(snapshot("expected.encoder_k", enc_k))
    tensors["expected.queue"] = queue.clone()  # (C, K)
    tensors["expected.queue_ptr"] = queue_ptr.clone()  # (1,)

    metadata = {
        "tau": repr(TAU),
        "m": repr(SYM_M_BASE),
        "m_final": repr(SYM_M_FINAL),
        "momentum_schedule": "cosine",
        "total_steps": str(SYM_TOTAL_STEPS),
        "m_step1": repr(ms[0]),
        "m_step2": repr(ms[1]),
        "symmetric": "true",
        "queue_size": str(SYM_K),
        "lr": repr(LR),
        "sgd_momentum": repr(SGD_MOMENTUM),
        "weight_decay": repr(WEIGHT_DECAY),
        "bn_splits": str(BN_SPLITS),
        "bn_eps": repr(BN_EPS),
        "bn_momentum": repr(BN_MOMENTUM),
        "seed": str(SYM_SEED),
        "generator": "scripts/golden_moco_step.py",
    }
    write_fixture(SYM_OUT_PATH, tensors, metadata, enc_q)
    print(f"m = {ms}, loss = {[o[0].item() for o in out]}, acc1 = {[o[3].item() for o in out]}")


def main() -> None:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(SEED)  # not used for sampling (explicit generator below), set for safety

    check_split_bn_against_torch()
    args = sys.argv[1:]
    if args not in ([], ["--symmetric-only"]):
        sys.exit(f"usage: {sys.argv[0]} [--symmetric-only]")
    if args:
        symmetric_fixture()
        return

    gen = torch.Generator().manual_seed(SEED)

    # Initial state.
    enc_q, enc_k, queue, queue_ptr = initial_state(gen, K)

    # Inputs of the two steps.
    steps = []
    for i, perm in enumerate(PERMS, start=1):
        x_q = torch.randn(N, 3, IMG, IMG, generator=gen)  # (N, 3, IMG, IMG)
        x_k = torch.randn(N, 3, IMG, IMG, generator=gen)  # (N, 3, IMG, IMG)
        steps.append((i, x_q, x_k, torch.tensor(perm, dtype=torch.long)))

    tensors: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    tensors.update(snapshot("init.encoder_q", enc_q))
    tensors.update(snapshot("init.encoder_k", enc_k))
    tensors["init.queue"] = queue.clone()
    tensors["init.queue_ptr"] = queue_ptr.clone()
    for i, x_q, x_k, perm in steps:
        tensors[f"step{i}.x_q"] = x_q.clone()
        tensors[f"step{i}.x_k"] = x_k.clone()
        tensors[f"step{i}.perm"] = perm.clone()

    opt = sgd(enc_q)

    losses, logits1 = [], None
    for i, x_q, x_k, perm in steps:
        loss, logits = moco_step(enc_q, enc_k, opt, queue, queue_ptr, x_q, x_k, perm)
        losses.append(loss)
        if i == 1:
            logits1 = logits

    tensors["expected.loss"] = torch.stack(losses).float()  # (2,)
    tensors["expected.logits1"] = logits1.clone()  # (N, 1+K)
    tensors.update(snapshot("expected.encoder_q", enc_q))
    tensors.update(snapshot("expected.encoder_k", enc_k))
    tensors["expected.queue"] = queue.clone()  # (C, K)
    tensors["expected.queue_ptr"] = queue_ptr.clone()  # (1,)

    metadata = {
        "tau": repr(TAU),
        "m": repr(EMA_M),
        "lr": repr(LR),
        "sgd_momentum": repr(SGD_MOMENTUM),
        "weight_decay": repr(WEIGHT_DECAY),
        "bn_splits": str(BN_SPLITS),
        "bn_eps": repr(BN_EPS),
        "bn_momentum": repr(BN_MOMENTUM),
        "seed": str(SEED),
        "generator": "scripts/golden_moco_step.py",
    }
    write_fixture(OUT_PATH, tensors, metadata, enc_q)
    print(f"loss step1 = {losses[0].item():.8f}, loss step2 = {losses[1].item():.8f}")

    symmetric_fixture()


if __name__ == "__main__":
    main()
