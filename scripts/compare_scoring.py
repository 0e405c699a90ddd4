#!/usr/bin/env python3
"""Batch scoring: Contrail vs LightGBM predict vs XGBoost inplace_predict, in one run.

    python3 scripts/compare_scoring.py [--rows 2000000] [--trees 500] [--leaves 255]
                                       [--threads 2] [--repeats 3] [--train-rows 200000]

Makes its own virtual environment (.venv-compare, the pins of compare_gbdt.py) on first
use. Two models of the same shape (--trees x --leaves, 28 numeric features, the
synthetic regression of compare_gbdt.py):

  lightgbm  trained by LightGBM, imported with `contrail import --from lightgbm-text`
  contrail  trained by `contrail train` with the same parameters

Each is scored on the same --rows rows:
  LightGBM   Booster.predict on a float64 NumPy array (the LightGBM model only)
  XGBoost    inplace_predict of the model exported by `contrail export --to xgboost-json`
  Treelite   GTIL on the exported models (agreement only: a reference interpreter)
  Contrail   `contrail score`: the predictor alone (its JSON summary's
             predict_rows_per_second) and the whole job (Parquet parts in, Parquet parts
             out on local disk, committed), wall time of the command included, writing
             `prediction` alone (--keep '') and every input column beside it

Every library uses --threads threads; each timing is the median of --repeats runs. The
script also checks that Contrail's predictions of the imported model equal LightGBM's
(largest relative difference) and that XGBoost's predictions of the exported models equal
Contrail's (to XGBoost's f32 rounding; the features are rounded to f32 values so that
XGBoost's cast of its inputs changes nothing). Prints a table of rows/s and ratios.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare_gbdt  # noqa: E402  (the venv, its pins, the synthetic data)


def timed(f, repeats):
    times = []
    out = None
    for _ in range(repeats):
        t = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def run(cmd, threads=None):
    env = dict(os.environ)
    if threads:
        env["RAYON_NUM_THREADS"] = str(threads)
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stderr[-3000:]}")
    return p.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--train-rows", type=int, default=200_000)
    ap.add_argument("--trees", type=int, default=500)
    ap.add_argument("--leaves", type=int, default=255)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--parts", type=int, default=8, help="input Parquet parts for the job")
    ap.add_argument("--contrail", default=os.path.join(ROOT, "target", "release", "contrail"))
    ap.add_argument("--work", default=os.path.join(ROOT, "target", "compare-scoring"))
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    compare_gbdt.ensure_venv()
    if not os.path.exists(args.contrail):
        subprocess.check_call(["cargo", "build", "--release", "--bin", "contrail"], cwd=ROOT)
    c = os.path.abspath(args.contrail)

    try:
        import treelite  # noqa: F401
    except ImportError:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "treelite==4.8.1"])
    import lightgbm as lgb
    import treelite
    import treelite.gtil
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import xgboost as xgb

    os.makedirs(args.work, exist_ok=True)
    w = lambda *p: os.path.join(args.work, *p)  # noqa: E731
    # The synthetic data of compare_gbdt.py: --rows scoring rows in train.parquet.
    gen = argparse.Namespace(rows=args.rows)
    data = compare_gbdt.make_synthetic(gen, w("data"))
    table = pq.read_table(os.path.join(data, "train.parquet"))
    feats = [f"x{i}" for i in range(28)]
    # Features rounded to f32 values (stored as f64), as most feature stores keep them:
    # XGBoost casts inputs to f32, so on f32 values its decisions and Contrail's agree
    # exactly and the agreement check below measures the exporter, not the cast.
    table = pa.table({**{f: pa.array(table.column(f).to_numpy().astype(np.float32).astype(np.float64))
                         for f in feats}, "y": table.column("y")})
    X = np.column_stack([table.column(f).to_numpy() for f in feats]).astype(np.float64)
    y = table.column("y").to_numpy()
    n = len(X)
    # Training rows: the first --train-rows; scoring parts: every row, in --parts files.
    train = w("train.parquet")
    if not os.path.exists(train):
        pq.write_table(table.slice(0, args.train_rows), train)
    parts = w("input")
    if not os.path.isdir(parts):
        os.makedirs(parts + ".tmp", exist_ok=True)
        step = -(-n // args.parts)
        for k in range(args.parts):
            pq.write_table(table.slice(k * step, step).select(feats),
                           os.path.join(parts + ".tmp", f"part-{k:03d}.parquet"))
        os.rename(parts + ".tmp", parts)

    # Models.
    lgb_txt = w("lightgbm.txt")
    params = dict(objective="regression", num_leaves=args.leaves, learning_rate=0.1,
                  min_data_in_leaf=20, max_bin=255, num_threads=args.threads, verbose=-1,
                  seed=1, deterministic=True)
    if not os.path.exists(lgb_txt):
        print(f"training LightGBM ({args.trees} x {args.leaves})", file=sys.stderr)
        m = lgb.train(params, lgb.Dataset(X[: args.train_rows], y[: args.train_rows], feature_name=feats), args.trees)
        m.save_model(lgb_txt)
    if not os.path.exists(w("contrail.contrail")):
        print(f"training Contrail ({args.trees} x {args.leaves})", file=sys.stderr)
        run([c, "-q", "train", "--data", train, "--target", "y", "--num-iterations", str(args.trees),
             "--num-leaves", str(args.leaves), "--learning-rate", "0.1", "--min-data-in-leaf", "20",
             "--num-threads", str(args.threads), "--out", w("contrail.contrail")])
    run([c, "-q", "import", "--from", "lightgbm-text", lgb_txt, "--out", w("lightgbm.contrail")])
    for name in ("lightgbm", "contrail"):
        run([c, "-q", "export", "--to", "xgboost-json", w(f"{name}.contrail"), "--out", w(f"{name}.xgb.json")])
    booster = lgb.Booster(model_file=lgb_txt)
    tree_leaves = [t["num_leaves"] for t in booster.dump_model()["tree_info"]]

    results = {}
    print(f"scoring {n:,} rows x 28 features with {args.threads} threads, median of {args.repeats}",
          file=sys.stderr)
    # LightGBM on its own model.
    secs, p_lgb = timed(lambda: booster.predict(X, num_threads=args.threads), args.repeats)
    results[("lightgbm", "LightGBM predict")] = n / secs
    # XGBoost on both exported models.
    p_xgb = {}
    for name in ("lightgbm", "contrail"):
        b = xgb.Booster(model_file=w(f"{name}.xgb.json"))
        b.set_param({"nthread": args.threads})
        secs, p_xgb[name] = timed(lambda: b.inplace_predict(X), args.repeats)
        results[(name, "XGBoost inplace_predict")] = n / secs
    # Contrail: the whole job, from scratch each time: writing `prediction` alone, and
    # writing every input column beside it.
    p_con = {}
    for name in ("lightgbm", "contrail"):
        for keep in ("", None):
            job, pred = [], []
            for _ in range(args.repeats):
                out = w(f"scored-{name}")
                shutil.rmtree(out, ignore_errors=True)
                t = time.perf_counter()
                s = json.loads(run([c, "-q", "score", "--model", w(f"{name}.contrail"), "--input", parts,
                                    "--output", out] + (["--keep", keep] if keep is not None else []),
                                   threads=args.threads))
                job.append(n / (time.perf_counter() - t))
                pred.append(s["predict_rows_per_second"])
                assert s["rows"] == n, s
            if keep == "":
                results[(name, "Contrail predictor")] = statistics.median(pred)
                results[(name, "Contrail score job")] = statistics.median(job)
            else:
                results[(name, "Contrail job, all columns")] = statistics.median(job)
        got = []
        for f in sorted(os.listdir(out)):
            if f.endswith(".parquet"):
                got.append(pq.read_table(os.path.join(out, f)).column("prediction").to_numpy())
        p_con[name] = np.concatenate(got)

    # Agreement.
    rel = lambda a, b: float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1.0)))  # noqa: E731
    # Treelite (what Triton's FIL loads models through) reads the exported JSON too; its
    # GTIL is a reference interpreter, so it checks agreement on the first 200,000 rows.
    k = min(n, 200_000)
    p_tl = {name: treelite.gtil.predict(treelite.frontend.load_xgboost_model(w(f"{name}.xgb.json")),
                                        X[:k].astype(np.float32)).reshape(-1)
            for name in ("lightgbm", "contrail")}
    checks = {
        "Treelite GTIL (exported LightGBM model) vs Contrail": rel(p_tl["lightgbm"], p_con["lightgbm"][:k]),
        "Treelite GTIL (exported Contrail model) vs Contrail": rel(p_tl["contrail"], p_con["contrail"][:k]),
        "Contrail (imported) vs LightGBM": rel(p_con["lightgbm"], p_lgb),
        "XGBoost (exported LightGBM model) vs Contrail": rel(p_xgb["lightgbm"], p_con["lightgbm"]),
        "XGBoost (exported Contrail model) vs Contrail": rel(p_xgb["contrail"], p_con["contrail"]),
    }

    print(f"\n{n:,} rows, {args.trees} trees, up to {args.leaves} leaves "
          f"(LightGBM model: {statistics.mean(tree_leaves):.0f} leaves a tree on average), "
          f"{args.threads} threads, median of {args.repeats}\n")
    hdr = f"{'model':<10} {'scorer':<26} {'rows/s':>12} {'vs LightGBM':>12}"
    print(hdr)
    print("-" * len(hdr))
    base = results[("lightgbm", "LightGBM predict")]
    for (model, scorer), v in results.items():
        print(f"{model:<10} {scorer:<26} {v:>12,.0f} {v / base:>11.2f}x")
    for name in ("lightgbm", "contrail"):
        for job in ("Contrail score job", "Contrail job, all columns"):
            r = results[(name, job)] / results[(name, "Contrail predictor")]
            print(f"{name:<10} {job.replace('Contrail ', '') + ' / predictor':<26} {r:>12.2f}")
    print()
    for k, v in checks.items():
        print(f"largest relative difference, {k}: {v:.2e}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": {f"{m} / {s}": v for (m, s), v in results.items()},
                       "checks": checks}, f, indent=2)


if __name__ == "__main__":
    main()
