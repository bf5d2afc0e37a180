"""PyTorch versions of the W1-W4 workloads (WORKLOADS.md), for benchmarks and
parity checks beside moelab. Built from the workload text, on the weights of a
safetensors file when given (names as in ../shared/vectors)."""
import json
import math
import struct

import torch
import torch.nn as nn
import torch.nn.functional as F

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    base = 8 + n
    out = {}
    for name, e in header.items():
        b, en = e["data_offsets"]
        dt = {"F32": torch.float32, "I64": torch.int64}[e["dtype"]]
        t = torch.frombuffer(bytearray(data[base + b:base + en]), dtype=dt) if en > b else torch.zeros(0, dtype=dt)
        out[name] = t.reshape(e["shape"]).clone()
    return out, meta


class Normalize(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


class MoEConv(nn.Module):
    """W2: channel MoE, 2 experts, each owning half of the output channels."""

    def __init__(self, cin, cout, stride, sparse=True):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(cout, cin, 3, 3))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.router = nn.Linear(cin, 2, bias=False)
        self.stride, self.cout, self.sparse = stride, cout, sparse

    def forward(self, x):
        p = F.softmax(self.router(x.mean((2, 3))), dim=1)
        e = p.argmax(1)
        g = p.gather(1, e[:, None])[:, 0]
        half = self.cout // 2
        if not self.sparse:
            y = F.conv2d(x, self.weight, stride=self.stride, padding=1)
            mask = torch.zeros(x.shape[0], self.cout, device=x.device)
            for k in range(2):
                mask[e == k, k * half:(k + 1) * half] = 1
            return y * (mask * g[:, None])[:, :, None, None]
        outs = []
        ys = None
        for k in range(2):
            idx = (e == k).nonzero()[:, 0]
            if idx.numel() == 0:
                continue
            yk = F.conv2d(x[idx], self.weight[k * half:(k + 1) * half], stride=self.stride, padding=1)
            if ys is None:
                ys = x.new_zeros(x.shape[0], self.cout, yk.shape[2], yk.shape[3])
            ys = ys.index_put((idx,), F.pad(yk, (0, 0, 0, 0, k * half, self.cout - (k + 1) * half)) * g[idx, None, None, None], accumulate=True)
        return ys


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride, moe=False, sparse=True):
        super().__init__()
        conv = (lambda a, b, s: MoEConv(a, b, s, sparse)) if moe else (lambda a, b, s: nn.Conv2d(a, b, 3, s, 1, bias=False))
        self.conv1, self.bn1 = conv(cin, cout, stride), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = conv(cout, cout, 1), nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class ResNet18(nn.Module):
    def __init__(self, moe=False, sparse=True, width=16, classes=10):
        super().__init__()
        self.normalize = Normalize(CIFAR_MEAN, CIFAR_STD)
        w = [width, 2 * width, 4 * width, 8 * width]
        self.conv1, self.bn1 = nn.Conv2d(3, w[0], 3, 1, 1, bias=False), nn.BatchNorm2d(w[0])
        cin = w[0]
        for i in range(4):
            s = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", nn.Sequential(BasicBlock(cin, w[i], s, moe, sparse), BasicBlock(w[i], w[i], 1, moe, sparse)))
            cin = w[i]
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(self.normalize(x))))
        for i in range(4):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(x.mean((2, 3)))


def load_weights(model, tensors):
    state = model.state_dict()
    for k, v in tensors.items():
        if k.startswith("param."):
            name = k[6:]
            if name in state:
                state[name].copy_(v.reshape(state[name].shape))
    model.load_state_dict(state)


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, T, D = x.shape
        q, k, v = self.qkv(x).reshape(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        a = (q @ k.transpose(-2, -1) / math.sqrt(D // self.heads)).softmax(-1)
        return self.proj((a @ v).transpose(1, 2).reshape(B, T, D))


class MLP(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


def cv2(v):
    return v.var(unbiased=False) / v.mean() ** 2


class VMoELayer(nn.Module):
    """W4: top-2 of 8 experts, capacity, top-1 choices before top-2, dropped tokens add 0.
    In training mode self.aux holds the routers' auxiliary loss of WORKLOADS.md
    (0.005 importance + 0.005 load), which the train step adds to the loss."""

    def __init__(self, dim, hidden, experts=8, k=2, capacity_factor=1.25):
        super().__init__()
        self.router = nn.Linear(dim, experts, bias=False)
        self.experts = nn.ModuleList([MLP(dim, hidden) for _ in range(experts)])
        self.E, self.k, self.cf = experts, k, capacity_factor

    def forward(self, x):
        shape = x.shape
        X = x.reshape(-1, shape[-1])
        T = X.shape[0]
        clean = self.router(X)
        logits = clean + torch.randn_like(clean) / self.E if self.training else clean
        probs = logits.softmax(-1)
        self.aux = None
        if self.training:
            sigma = 1.0 / self.E
            thr = logits.detach().topk(self.k, dim=-1).values[:, -1:]
            load = (0.5 * (1 - torch.erf((thr - clean) / (sigma * math.sqrt(2))))).mean(0)
            self.aux = 0.005 * cv2(clean.softmax(-1).sum(0)) + 0.005 * cv2(load)
        top = probs.topk(self.k, dim=-1).indices  # [T, k]
        C = math.ceil(self.k * T * self.cf / self.E)
        # slots: rank by rank, tokens in order
        onehot = F.one_hot(top.t().reshape(-1), self.E)  # [k*T, E], rank-major
        pos = (onehot.cumsum(0) - 1) * onehot
        kept = ((pos < C) & (onehot > 0)).any(-1).reshape(self.k, T).t()  # [T, k]
        out = torch.zeros_like(X)
        for e in range(self.E):
            sel = (top == e) & kept
            tok, rank = sel.nonzero(as_tuple=True)
            if tok.numel() == 0:
                continue
            y = self.experts[e](X[tok])
            out.index_add_(0, tok, y * probs[tok, e, None])
        return out.reshape(shape)


class Block(nn.Module):
    def __init__(self, dim, heads, hidden, moe=False, experts=8):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.mlp = VMoELayer(dim, hidden, experts) if moe else MLP(dim, hidden)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class ViT(nn.Module):
    def __init__(self, moe=False, classes=10, dim=64, depth=4, heads=4, hidden=256, patch=4, experts=8):
        super().__init__()
        self.normalize = Normalize((0.1307,), (0.3081,))
        self.patch_embed = nn.Conv2d(1, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, (28 // patch) ** 2 + 1, dim))
        self.blocks = nn.Sequential(*[Block(dim, heads, hidden, moe and i % 2 == 1, experts) for i in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.patch_embed(self.normalize(x)).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
        return self.head(self.norm(self.blocks(x)[:, 0]))


def aux_loss(model):
    """The summed auxiliary losses of the V-MoE layers' last training forward (0 for other models)."""
    terms = [m.aux for m in model.modules() if isinstance(m, VMoELayer) and m.aux is not None]
    return sum(terms) if terms else 0


def build(name, experts=8):
    if name == "vmoe":
        return ViT(moe=True, experts=experts)
    return {"cnn-dense": lambda: ResNet18(), "moe-cnn": lambda: ResNet18(moe=True),
            "moe-cnn-mask": lambda: ResNet18(moe=True, sparse=False),
            "vit-dense": lambda: ViT()}[name]()
