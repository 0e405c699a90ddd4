#!/usr/bin/env python3
"""Neural demand model training: Contrail (burn, CPU) vs PyTorch (CPU), in one run.

    python3 scripts/compare_nn.py [--rows 200000] [--valid-rows 50000] [--epochs 5]
                                  [--batch 1024] [--threads 2] [--seed 7]
                                  [--device cpu|cuda] [--exe PATH] [--system-python]

Makes its own virtual environment (.venv-nn: pinned PyTorch, NumPy, PyArrow) on first use;
--system-python uses the running interpreter's packages instead (a lent GPU machine has
PyTorch with CUDA and cannot install). --device cuda trains both on the GPU (Contrail
built with --features cuda, named by --exe): the training tensors are put on the device
once, and every batch is gathered there.

The data: --rows training and --valid-rows validation rows of a synthetic demand task with
a known Poisson rate: six categorical ids with the cardinalities of the lake's route,
origin, destination, carrier, cabin and channel, and ten standard-normal numeric features;
log mu is a nonlinear function of both. Both libraries train the same network on the same
Parquet rows: an embedding of width 8 per categorical feature, three hidden layers
(256, 128, 64, ReLU, dropout 0.1) and a linear output (four linear layers), the Poisson
loss, AdamW (lr 2e-3, weight decay 1e-4, eps 1e-8), a 2% linear warm-up then cosine decay,
batch --batch, rows shuffled every epoch, --epochs epochs, --threads threads.

Reported: samples/s of every epoch (median over epochs; each epoch includes the batch
gathering and the optimiser step, as in training) and the final validation Poisson
negative log-likelihood (all terms), each with its ratio.
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_venv  # noqa: E402

PINS = ["torch==2.15.0", "numpy==2.4.6", "pyarrow==26.0.1"]
CARDS = [40, 48, 48, 20, 4, 4]
NAMES = ["route", "origin", "destination", "carrier", "cabin", "channel"]
N_NUM = 10
EMB = 8
HIDDEN = [256, 128, 64]


def make_data(n, seed):
    import numpy as np

    rng = np.random.default_rng(seed)
    cats = [rng.integers(0, c, n) for c in CARDS]
    num = rng.standard_normal((n, N_NUM)).astype(np.float32)
    # Per-category effects (fixed by a separate stream) and a nonlinear numeric part.
    erng = np.random.default_rng(12345)
    eta = -0.8 + sum(erng.normal(0, 0.35, c)[k] for c, k in zip(CARDS, cats))
    eta = eta + 0.4 * num[:, 0] - 0.3 * num[:, 1] ** 2 + 0.25 * np.tanh(2 * num[:, 2] * num[:, 3])
    eta = eta + 0.2 * np.sin(num[:, 4]) + 0.3 * (cats[4] == 3) * num[:, 5]
    y = rng.poisson(np.exp(eta)).astype(np.float64)
    return cats, num, y


def write_parquet(path, cats, num, y):
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = {}
    for name, c in zip(NAMES, cats):
        cols[name] = pa.array([f"{name[:2]}{k}" for k in c], pa.string())
    for j in range(N_NUM):
        cols[f"x{j}"] = pa.array(num[:, j].astype("float64"))
    cols["y"] = pa.array(y)
    pq.write_table(pa.table(cols), path)


def lr_at(step, total, base, warm_frac=0.02, floor_ratio=0.01):
    warm = round(warm_frac * total)
    if step < warm:
        return base * (step + 1) / warm
    t = min((step - warm) / max(total - warm, 1), 1.0)
    floor = base * floor_ratio
    return floor + (base - floor) * 0.5 * (1 + math.cos(math.pi * t))


def run_torch(train, valid, args):
    import numpy as np
    import torch

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    (tc, tx, ty), (vc, vx, vy) = train, valid

    # Ids as Contrail encodes them: categories in order of first appearance in the
    # training rows, from 1 (0 is unseen); numeric features standardised with the
    # training mean and deviation, clipped to +-8.
    def ids(col, ref):
        order = {}
        for v in ref:
            if v not in order:
                order[v] = len(order) + 1
        return np.array([order.get(v, 0) for v in col], dtype=np.int64), len(order) + 1

    cat_t, cat_v, sizes = [], [], []
    for j in range(len(CARDS)):
        a, n = ids(tc[j], tc[j])
        b, _ = ids(vc[j], tc[j])
        cat_t.append(a)
        cat_v.append(b)
        sizes.append(n)
    mean, std = tx.mean(0), tx.std(0)
    norm = lambda x: np.clip((x - mean) / std, -8, 8).astype(np.float32)  # noqa: E731
    Ct = torch.from_numpy(np.stack(cat_t, 1)).to(dev)
    Cv = torch.from_numpy(np.stack(cat_v, 1)).to(dev)
    Xt, Xv = torch.from_numpy(norm(tx)).to(dev), torch.from_numpy(norm(vx)).to(dev)
    Yt = torch.from_numpy(ty.astype(np.float32)).to(dev)
    Yv = torch.from_numpy(vy.astype(np.float32)).to(dev)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.ModuleList([torch.nn.Embedding(n, EMB) for n in sizes])
            layers, w = [], EMB * len(sizes) + N_NUM
            for h in HIDDEN:
                layers += [torch.nn.Linear(w, h), torch.nn.ReLU(), torch.nn.Dropout(0.1)]
                w = h
            layers.append(torch.nn.Linear(w, 1))
            self.body = torch.nn.Sequential(*layers)

        def forward(self, c, x):
            parts = [e(c[:, j]) for j, e in enumerate(self.emb)] + [x]
            return self.body(torch.cat(parts, 1)).squeeze(1)

    net = Net().to(dev)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4, eps=1e-8)
    n = len(Yt)
    steps = math.ceil(n / args.batch)
    total = steps * args.epochs
    rates = []
    g = torch.Generator().manual_seed(args.seed)
    for epoch in range(args.epochs):
        net.train()
        t = time.perf_counter()
        perm = torch.randperm(n, generator=g).to(dev)
        for k in range(steps):
            idx = perm[k * args.batch:(k + 1) * args.batch]
            for pg in opt.param_groups:
                pg["lr"] = lr_at(epoch * steps + k, total, args.lr)
            eta = net(Ct[idx], Xt[idx]).clamp(-30, 30)
            loss = (eta.exp() - Yt[idx] * eta).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        rates.append(n / (time.perf_counter() - t))
        print(f"  torch epoch {epoch}: {rates[-1]:.0f} samples/s", file=sys.stderr)
    net.eval()
    with torch.no_grad():
        eta = torch.cat([net(Cv[i:i + 16384], Xv[i:i + 16384]) for i in range(0, len(Yv), 16384)]).clamp(-30, 30).double()
        yv = Yv.double()
        nll = (eta.exp() - yv * eta + torch.lgamma(yv + 1)).mean().item()
    return rates, nll


def run_contrail(train_path, valid_path, args, tmp):
    exe = args.exe or os.path.join(ROOT, "target", "release", "contrail")
    if not args.exe and not os.path.exists(exe):
        subprocess.check_call(["cargo", "build", "--release", "--quiet"], cwd=ROOT)
    params = os.path.join(tmp, "nn.toml")
    with open(params, "w") as f:
        f.write(
            f"head = 'poisson'\nhidden = {HIDDEN}\nembedding_dim = {EMB}\ndropout = 0.1\n"
            f"learning_rate = {args.lr}\nweight_decay = 0.0001\nepsilon = 1e-8\n"
            f"batch_size = {args.batch}\nmax_epochs = {args.epochs}\nlr_schedule = 'cosine'\n"
            f"warmup_fraction = 0.02\nmin_lr_ratio = 0.01\nearly_stopping_rounds = 0\nseed = {args.seed}\n"
        )
    metrics = os.path.join(tmp, "epochs.jsonl")
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    cmd = [exe, "train", "--model", "nn", "--data", train_path, "--valid", valid_path,
           "--target", "y", "--out", os.path.join(tmp, "m.ctm"), "--nn-params", params,
           "--metrics-file", metrics, "--device", args.device]
    # Contrail's per-epoch lines go straight to stderr, so a slow or stopped run shows
    # how far it got.
    p = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {p.returncode}; its output is above)")
    logs = [json.loads(line) for line in open(metrics)]
    for log in logs:
        print(f"  contrail epoch {log['epoch']}: {log['samples_per_sec']:.0f} samples/s", file=sys.stderr)
    return [log["samples_per_sec"] for log in logs], logs[-1]["valid_nll"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--valid-rows", type=int, default=50_000)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--exe", help="the contrail binary (default: target/release/contrail, built if absent)")
    ap.add_argument("--system-python", action="store_true",
                    help="use this interpreter's PyTorch, NumPy and PyArrow, not .venv-nn")
    args = ap.parse_args()
    if not args.system_python:
        peer_venv.ensure(os.path.join(ROOT, ".venv-nn"), PINS)
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        train = make_data(args.rows, args.seed)
        valid = make_data(args.valid_rows, args.seed + 1)
        tp, vp = os.path.join(tmp, "train.parquet"), os.path.join(tmp, "valid.parquet")
        write_parquet(tp, *train)
        write_parquet(vp, *valid)
        # Contrail first, then PyTorch, in the same run on the same files.
        c_rates, c_nll = run_contrail(tp, vp, args, tmp)
        t_rates, t_nll = run_torch(train, valid, args)
    cm, tm = statistics.median(c_rates), statistics.median(t_rates)
    print(f"compare_nn: {args.rows} train rows, {args.valid_rows} valid, {args.epochs} epochs, batch {args.batch}, "
          f"{args.threads} threads, device {args.device}, PyTorch {torch.__version__}")
    print(f"{'':<10} {'samples/s (median epoch)':>26} {'valid Poisson NLL':>18}")
    print(f"{'contrail':<10} {cm:>26.0f} {c_nll:>18.5f}")
    print(f"{'pytorch':<10} {tm:>26.0f} {t_nll:>18.5f}")
    print(f"{'ratio':<10} {cm / tm:>26.2f} {c_nll / t_nll:>18.4f}")


if __name__ == "__main__":
    main()
