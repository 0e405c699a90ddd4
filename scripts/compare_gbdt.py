#!/usr/bin/env python3
"""Contrail vs LightGBM vs XGBoost (hist) on the very same Parquet files, in one run.

    python3 scripts/compare_gbdt.py [--workloads fare,synthetic,booked] [--iterations 500]
                                    [--leaves 255] [--rows 2000000] [--threads 2] [--seeds 1]
                                    [--peers lightgbm,xgboost]

Makes its own virtual environment (.venv-compare, pinned versions below) on first use.
Workloads:
  fare       the simulator's fare data (30 days x 100 routes, about 2M rows), target price,
             features from docs/features.md computed by `contrail export-features`
  synthetic  2,000,000 x 28 numeric regression generated here with numpy
  booked     binary classification of the simulator's booked flag (same rows as fare)
Each library trains in its own process (so peak RSS is its own) with equivalent
parameters; fit time includes binning/Dataset construction, not Parquet reading.
Prints a table: fit seconds, peak RSS, test metrics, predict rows/s, Contrail/LightGBM.
With --seeds N, LightGBM trains N times: its default draw of the 200,000 rows it samples
for bin edges, then data_random_seed 1..N-1 (the draw alone moves the fare RMSE by about
1%, because 0.1% of the test rows carry 60% of its squared error, and the synthetic RMSE
by about 2%); the table shows the median fit time, the largest peak RSS and the mean
metrics, and the per-seed values follow (`default`, then `seed k`).
booked trains with early stopping on its validation file (valid.parquet: later days than
train, earlier than test), 50 rounds of patience on the validation logloss, for every library:
with 255 leaves the validation logloss is best after about 20 trees, and after 500 the model's
test logloss is worse than the base rate's, so its AUC measures how the overfitting happened to
fall (0.006 apart between LightGBM's own bin-sample seeds). --booked-fixed trains it for
--iterations rounds like the others. fare and synthetic train for --iterations rounds.
Contrail's bin edges come from every row (its default up to 10M rows) and XGBoost's from
its quantile sketch of every row: they train once. --lightgbm-all-rows adds a LightGBM row
with bin_construct_sample_cnt = every row (the same edges' information as Contrail's).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

PINS = ["lightgbm==4.6.0", "xgboost-cpu==3.2.0", "pyarrow==26.0.1", "pandas==3.1.1", "numpy==2.4.6"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, ".venv-compare")
BOOKED_PATIENCE = 50  # early-stopping rounds for booked (see above)


def ensure_venv():
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import peer_venv
    peer_venv.ensure(VENV, PINS)


def run_child(cmd, env=None):
    """Runs a command; returns (stdout, stderr, wall seconds, peak RSS in MB)."""
    t = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out, err = p.communicate()
    # communicate() reaps the child; its rusage is in RUSAGE_CHILDREN's max so far, so
    # measure each child with a fresh wait4-based launcher instead.
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err.decode()[-3000:]}")
    return out.decode(), err.decode(), time.time() - t


def run_measured(cmd):
    """Runs a command and returns (stdout, stderr, peak RSS MB) using os.wait4."""
    r, w = os.pipe()
    r2, w2 = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.dup2(w, 1)
        os.dup2(w2, 2)
        os.close(r)
        os.close(r2)
        os.execvp(cmd[0], cmd)
    os.close(w)
    os.close(w2)
    out = b""
    err = b""
    import selectors
    sel = selectors.DefaultSelector()
    sel.register(r, selectors.EVENT_READ)
    sel.register(r2, selectors.EVENT_READ)
    open_fds = 2
    while open_fds:
        for key, _ in sel.select():
            chunk = os.read(key.fd, 65536)
            if not chunk:
                sel.unregister(key.fd)
                open_fds -= 1
            elif key.fd == r:
                out += chunk
            else:
                err += chunk
    _, status, ru = os.wait4(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err.decode()[-3000:]}")
    return out.decode(), err.decode(), ru.ru_maxrss / 1024.0


# ---------------------------------------------------------------- data


def contrail_bin(args):
    return os.path.abspath(args.contrail)


def make_lake_exports(args, work):
    lake = os.path.join(work, "lake")
    fare = os.path.join(work, "fare")
    booked = os.path.join(work, "booked")
    if not os.path.exists(os.path.join(fare, "test.parquet")):
        days = max(3, round(30 * args.rows / 2_000_000))
        c = contrail_bin(args)
        run_child([c, "-q", "simulate", "--lake", lake, "--days", str(days), "--routes", "100",
                   "--searches-per-route-day", "700", "--seed", "7"])
        run_child([c, "-q", "etl", "--lake", lake])
        run_child([c, "-q", "export-features", "--lake", lake, "--config",
                   os.path.join(ROOT, "configs", "fare_price.toml"), "--out", fare])
        run_child([c, "-q", "export-features", "--lake", lake, "--config",
                   os.path.join(ROOT, "configs", "booking.toml"), "--out", booked])
    return fare, booked


def make_synthetic(args, work):
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    out = os.path.join(work, "synthetic")
    if os.path.exists(os.path.join(out, "test.parquet")):
        return out
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(42)
    n = args.rows + 2 * 200_000
    x = rng.standard_normal((n, 28)).astype(np.float64)
    x[rng.random((n, 28)) < 0.02] = np.nan
    z = np.nan_to_num(x)
    y = (np.sin(z[:, 0] * 2) * 3 + z[:, 1] * z[:, 2] + np.abs(z[:, 3]) * 2 + (z[:, 4] > 0.5) * 4
         + 0.5 * z[:, 5:10].sum(axis=1) + np.where(z[:, 10] > 0, z[:, 11], -z[:, 12]) * 2
         + rng.standard_normal(n))
    cols = {f"x{i}": x[:, i] for i in range(28)}
    cols["y"] = y
    t = pa.table(cols)
    pq.write_table(t.slice(0, args.rows), os.path.join(out, "train.parquet"))
    pq.write_table(t.slice(args.rows, 200_000), os.path.join(out, "valid.parquet"))
    pq.write_table(t.slice(args.rows + 200_000, 200_000), os.path.join(out, "test.parquet"))
    return out


# ---------------------------------------------------------------- workers


def load(path, target):
    import pandas as pd
    import pyarrow.parquet as pq
    df = pq.read_table(path).to_pandas()
    y = df.pop(target).to_numpy()
    for c in df.columns:
        if not pd.api.types.is_numeric_dtype(df[c]):
            df[c] = df[c].astype("category")
    return df, y


def align_categories(tr, te):
    for c in tr.columns:
        if str(tr[c].dtype) == "category":
            te[c] = te[c].astype(tr[c].dtype)


def worker(args):
    """Trains one peer library; prints JSON with fit seconds, predictions path, rows/s."""
    import numpy as np
    tr, y = load(os.path.join(args.data, "train.parquet"), args.target)
    te, yt = load(os.path.join(args.data, "test.parquet"), args.target)
    align_categories(tr, te)
    es = args.early_stopping_round
    if es:
        va, yv = load(os.path.join(args.data, "valid.parquet"), args.target)
        align_categories(tr, va)
    if args.worker in ("lightgbm", "lgbm-all"):
        import lightgbm as lgb
        params = {"objective": args.objective, "num_leaves": args.leaves, "learning_rate": 0.1,
                  "min_data_in_leaf": 20, "min_sum_hessian_in_leaf": 1e-3, "max_bin": 255,
                  "num_threads": args.threads, "seed": 0, "deterministic": True, "verbose": -1}
        ds_params = {"max_bin": 255}
        if args.data_random_seed is not None:
            params["data_random_seed"] = ds_params["data_random_seed"] = args.data_random_seed
        if args.worker == "lgbm-all":
            params["bin_construct_sample_cnt"] = ds_params["bin_construct_sample_cnt"] = len(tr)
        t = time.time()
        ds = lgb.Dataset(tr, y, params=ds_params)
        if es:
            params["metric"] = {"binary": "binary_logloss"}.get(args.objective, "l2")
            m = lgb.train(params, ds, args.iterations, valid_sets=[lgb.Dataset(va, yv, reference=ds)],
                          callbacks=[lgb.early_stopping(es, first_metric_only=True, verbose=False)])
            trees = m.best_iteration
        else:
            m = lgb.train(params, ds, args.iterations)
            trees = m.num_trees()
        fit = time.time() - t
        t = time.time()
        p = m.predict(te, num_threads=args.threads)  # at the best iteration when early stopping
        pred_s = time.time() - t
    else:
        import xgboost as xgb
        obj = {"regression": "reg:squarederror", "binary": "binary:logistic"}[args.objective]
        params = {"objective": obj, "tree_method": "hist", "grow_policy": "lossguide",
                  "max_leaves": args.leaves, "max_depth": 0, "eta": 0.1, "max_bin": 256,
                  "min_child_weight": 1e-3, "lambda": 0.0, "nthread": args.threads, "seed": 0}
        t = time.time()
        d = xgb.QuantileDMatrix(tr, y, enable_categorical=True, max_bin=256)
        if es:
            params["eval_metric"] = {"binary": "logloss"}.get(args.objective, "rmse")
            dv = xgb.QuantileDMatrix(va, yv, enable_categorical=True, max_bin=256, ref=d)
            m = xgb.train(params, d, args.iterations, evals=[(dv, "valid")], early_stopping_rounds=es,
                          verbose_eval=False)
            trees = m.best_iteration + 1
        else:
            m = xgb.train(params, d, args.iterations)
            trees = args.iterations
        fit = time.time() - t
        t = time.time()
        p = m.inplace_predict(te, iteration_range=(0, trees))
        pred_s = time.time() - t
    np.save(args.pred, np.asarray(p, dtype=np.float64))
    print(json.dumps({"fit": fit, "pred_rows_s": len(te) / pred_s, "trees": trees}))


# ---------------------------------------------------------------- metrics


def metrics(objective, y, p):
    import numpy as np
    if objective == "binary":
        p = np.clip(p, 1e-15, 1 - 1e-15)
        ll = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
        order = np.argsort(p, kind="mergesort")
        ranks = np.empty(len(p))
        ranks[order] = np.arange(1, len(p) + 1)
        # tie-aware AUC via average ranks
        import pandas as pd
        ranks = pd.Series(p).rank().to_numpy()
        npos = y.sum()
        nneg = len(y) - npos
        auc = (ranks[y == 1].sum() - npos * (npos + 1) / 2) / (npos * nneg)
        return {"logloss": ll, "auc": auc}
    rmse = float(np.sqrt(np.mean((p - y) ** 2)))
    mae = float(np.mean(np.abs(p - y)))
    r2 = 1 - np.sum((p - y) ** 2) / np.sum((y - y.mean()) ** 2)
    return {"rmse": rmse, "mae": mae, "r2": float(r2)}


def combine(runs):
    """One row from runs with different seeds: median times, largest RSS, mean metrics."""
    import numpy as np
    if len(runs) == 1:
        return runs[0]
    row = {"fit": float(np.median([r["fit"] for r in runs])), "rss": max(r["rss"] for r in runs),
           "pred_rows_s": float(np.median([r["pred_rows_s"] for r in runs]))}
    for k in runs[0]:
        if k not in row:
            row[k] = float(np.mean([r[k] for r in runs]))
    row["per_seed"] = runs
    return row


def run_workload(args, name, data, target, objective, early_stopping_round=0):
    import numpy as np
    import pyarrow.parquet as pq
    yt = pq.read_table(os.path.join(data, "test.parquet"), columns=[target]).column(0).to_numpy()
    rows = {}
    # LightGBM's default draw first, so a multi-seed mean never leaves it out.
    seeds = [None] + list(range(1, args.seeds))
    # Contrail: once (its bin edges come from every row, no sample to draw)
    model = os.path.join(args.work, f"{name}.ctm")
    pred = os.path.join(args.work, f"{name}-pred.parquet")
    c = contrail_bin(args)
    es_args = []
    if early_stopping_round:
        es_args = ["--valid", os.path.join(data, "valid.parquet"),
                   "--early-stopping-round", str(early_stopping_round)]
    variants = [("contrail", [])] + ([("contrail-q", ["--label-edges", "0"])] if args.contrail_quantile else [])
    for lib, extra in variants:
        _, err, rss = run_measured([c, "train", "--data", os.path.join(data, "train.parquet"), "--target", target,
                                    "--objective", objective, "--num-iterations", str(args.iterations),
                                    "--num-leaves", str(args.leaves), "--learning-rate", "0.1",
                                    "--min-data-in-leaf", "20", "--max-bin", "255",
                                    "--num-threads", str(args.threads), "--out", model, *es_args, *extra])
        found = re.search(r"trained (\d+) trees in ([0-9.]+)s", err)
        trees, fit = int(found.group(1)), float(found.group(2))
        _, perr, _ = run_measured([c, "predict", "--model", model, "--data", os.path.join(data, "test.parquet"),
                                   "--out", pred])
        prs = float(re.search(r"\(([0-9.]+) rows/s\)", perr).group(1))
        p = pq.read_table(pred, columns=["prediction"]).column(0).to_numpy()
        rows[lib] = {"fit": fit, "rss": rss, "pred_rows_s": prs, "trees": trees, **metrics(objective, yt, p)}
    libs = args.peers.split(",") + (["lgbm-all"] if args.lightgbm_all_rows else [])
    for lib in libs:
        runs = []
        for seed in (seeds if lib == "lightgbm" else [None]):
            pred_npy = os.path.join(args.work, f"{name}-{lib}.npy")
            extra = [] if seed is None else ["--data-random-seed", str(seed)]
            out, _, rss = run_measured([sys.executable, os.path.abspath(__file__), "--worker", lib, "--data", data,
                                        "--target", target, "--objective", objective, "--pred", pred_npy,
                                        "--iterations", str(args.iterations), "--leaves", str(args.leaves),
                                        "--threads", str(args.threads),
                                        "--early-stopping-round", str(early_stopping_round), *extra])
            r = json.loads(out.strip().splitlines()[-1])
            runs.append({"fit": r["fit"], "rss": rss, "pred_rows_s": r["pred_rows_s"], "trees": r["trees"],
                         **metrics(objective, yt, np.load(pred_npy))})
        rows[lib] = combine(runs)
    return rows


def fmt(k, v):
    return f"{k} {v:.0f}" if k == "trees" else f"{k} {v:.4f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workloads", default="fare,synthetic,booked")
    ap.add_argument("--iterations", type=int, default=500)
    ap.add_argument("--leaves", type=int, default=255)
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=1, help="LightGBM bin-sample draws: its default, then data_random_seed 1..N-1 (see above)")
    ap.add_argument("--contrail", default=os.path.join(ROOT, "target", "release", "contrail"))
    ap.add_argument("--work", default=os.path.join(ROOT, "target", "compare-gbdt"))
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--lightgbm-all-rows", action="store_true",
                    help="also train LightGBM with bin edges from every row")
    ap.add_argument("--contrail-quantile", action="store_true",
                    help="also train Contrail with --label-edges 0 (quantile bin edges only, as LightGBM)")
    ap.add_argument("--peers", default="lightgbm,xgboost",
                    help="peer libraries to train (lightgbm, xgboost); Contrail always trains")
    ap.add_argument("--booked-fixed", action="store_true",
                    help="train booked for --iterations rounds, without early stopping")
    # worker mode
    ap.add_argument("--worker")
    ap.add_argument("--data")
    ap.add_argument("--target")
    ap.add_argument("--objective")
    ap.add_argument("--pred")
    ap.add_argument("--data-random-seed", type=int)
    ap.add_argument("--early-stopping-round", type=int, default=0)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    ensure_venv()
    if not os.path.exists(args.contrail):
        subprocess.check_call(["cargo", "build", "--release", "--bin", "contrail"], cwd=ROOT)
    os.makedirs(args.work, exist_ok=True)
    results = {}
    wl = args.workloads.split(",")
    if "fare" in wl or "booked" in wl:
        fare, booked = make_lake_exports(args, args.work)
    if "fare" in wl:
        results["fare (regression)"] = run_workload(args, "fare", fare, "price", "regression")
    if "synthetic" in wl:
        results["synthetic 28 numeric (regression)"] = run_workload(args, "synthetic", make_synthetic(args, args.work), "y", "regression")
    if "booked" in wl:
        es = 0 if args.booked_fixed else BOOKED_PATIENCE
        label = "booked (binary)" if args.booked_fixed else "booked (binary, early stopping)"
        results[label] = run_workload(args, "booked", booked, "booked", "binary", es)
    print(f"\n{args.iterations} iterations (or early stopping after {BOOKED_PATIENCE} rounds without a better validation "
          f"loss), {args.leaves} leaves, learning rate 0.1, {args.threads} threads\n")
    hdr = f"{'workload':<36} {'library':<9} {'fit s':>8} {'peak MB':>8} {'metrics':<56} {'predict rows/s':>15}"
    print(hdr)
    print("-" * len(hdr))
    for w, rows in results.items():
        for lib, r in rows.items():
            m = "  ".join(fmt(k, v) for k, v in r.items() if k not in ("fit", "rss", "pred_rows_s", "per_seed"))
            print(f"{w:<36} {lib:<9} {r['fit']:>8.2f} {r['rss']:>8.0f} {m:<56} {r['pred_rows_s']:>15,.0f}")
            for i, s in enumerate(r.get("per_seed", [])):
                m = "  ".join(fmt(k, v) for k, v in s.items() if k not in ("fit", "rss", "pred_rows_s"))
                name = "  default" if i == 0 else f"  seed {i}"
                print(f"{'':<36} {name:<9} {s['fit']:>8.2f} {s['rss']:>8.0f} {m:<56}")
        c, l = rows["contrail"], rows["lightgbm"]
        print(f"{'':<36} {'C/LGBM':<9} {c['fit'] / l['fit']:>8.2f} {c['rss'] / l['rss']:>8.2f} "
              f"{'':<56} {c['pred_rows_s'] / l['pred_rows_s']:>15.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
