#!/usr/bin/env python3
"""Contrail's isolation forest vs scikit-learn's on the simulator's error fares, in one run.

    python3 scripts/compare_anomaly.py [--days 30] [--routes 100] [--seeds 3] [--threads 2]

Makes its own virtual environment (.venv-anomaly, pinned versions below) on first use.
Data: `contrail simulate` (error fares at the default rate, 0.2% of quotes), `contrail etl`,
then `contrail export-features --config configs/fare_anomaly.toml --event-ids`: the quotes'
`price_vs_route_mean` and `competitor_price_ratio` from the shared feature function, split
by time, joined to the simulator's truth (`is_anomaly`). scikit-learn rejects missing
values, so both libraries get the same files with each feature's missing values set to
its training median. Both train on the training days with scikit-learn's defaults
(100 trees, max_samples auto, contamination auto) and each of --seeds seeds, and score
the training days (rows/s) and the test day (AUROC and AUPRC against the injected error
fares). Contrail's times are its own log's: fit excludes reading Parquet; scoring is
given with Parquet in and out and for the forest alone; scikit-learn's are the
in-memory calls.
"""
import argparse
import glob
import json
import os
import re
import subprocess
import sys
import time

PINS = ["scikit-learn==1.7.2", "pyarrow==26.0.1", "numpy==2.4.6"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, ".venv-anomaly")
FEATURES = ["price_vs_route_mean", "competitor_price_ratio"]


def ensure_venv():
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import peer_venv
    peer_venv.ensure(VENV, PINS)


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stderr[-3000:]}")
    return p.stdout, p.stderr


def make_data(args, contrail):
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    lake = os.path.join(args.work, "lake")
    export = os.path.join(args.work, "export")
    data = os.path.join(args.work, "data")
    if not os.path.exists(os.path.join(data, "test.parquet")):
        run([contrail, "-q", "simulate", "--lake", lake, "--days", str(args.days), "--routes",
             str(args.routes), "--searches-per-route-day", "700", "--seed", "7"])
        run([contrail, "-q", "etl", "--lake", lake])
        run([contrail, "-q", "export-features", "--lake", lake, "--config",
             os.path.join(ROOT, "configs", "fare_anomaly.toml"), "--event-ids", "--out", export])
        truth = {}
        for f in glob.glob(os.path.join(lake, "truth", "**", "*.parquet"), recursive=True):
            t = pq.read_table(f, columns=["event_id", "is_anomaly"])
            truth.update(zip(t.column(0).to_pylist(), t.column(1).to_pylist()))
        os.makedirs(data, exist_ok=True)
        tr = pq.read_table(os.path.join(export, "train.parquet"))
        medians = {c: float(np.nanmedian(tr.column(c).to_numpy(zero_copy_only=False).astype(float)))
                   for c in FEATURES}
        for split in ["train", "test"]:
            t = pq.read_table(os.path.join(export, f"{split}.parquet"))
            cols = {}
            for c in FEATURES:
                v = t.column(c).to_numpy(zero_copy_only=False).astype(float)
                cols[c] = np.where(np.isnan(v), medians[c], v)
            ids = t.column("event_id").to_pylist()
            missing = sum(1 for i in ids if i not in truth)
            if missing:
                raise SystemExit(f"{missing} {split} rows have no truth")
            cols["true_anomaly"] = np.array([bool(truth[i]) for i in ids])
            pq.write_table(pa.table(cols), os.path.join(data, f"{split}.parquet"))
    return data


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--routes", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--contrail", default=os.path.join(ROOT, "target", "release", "contrail"))
    ap.add_argument("--work", default=os.path.join(ROOT, "target", "compare-anomaly"))
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    ensure_venv()
    import numpy as np
    import pyarrow.parquet as pq
    from sklearn.ensemble import IsolationForest
    from sklearn.metrics import average_precision_score, roc_auc_score
    contrail = os.path.abspath(args.contrail)
    if not os.path.exists(contrail):
        subprocess.check_call(["cargo", "build", "--release", "--bin", "contrail"], cwd=ROOT)
    os.makedirs(args.work, exist_ok=True)
    data = make_data(args, contrail)
    tr = pq.read_table(os.path.join(data, "train.parquet"))
    te = pq.read_table(os.path.join(data, "test.parquet"))
    xtr = np.column_stack([tr.column(c).to_numpy() for c in FEATURES])
    xte = np.column_stack([te.column(c).to_numpy() for c in FEATURES])
    yte = te.column("true_anomaly").to_numpy(zero_copy_only=False).astype(int)
    res = {"scikit-learn": [], "contrail": []}
    for seed in range(args.seeds):
        m = IsolationForest(random_state=seed, n_jobs=args.threads)
        t = time.time()
        m.fit(xtr)
        fit = time.time() - t
        t = time.time()
        m.score_samples(xtr)
        rate = len(xtr) / (time.time() - t)
        s = -m.score_samples(xte)
        res["scikit-learn"].append({"fit": fit, "score_rows_s": rate, "auroc": roc_auc_score(yte, s),
                                    "auprc": average_precision_score(yte, s)})
        model = os.path.join(args.work, "forest.ctm")
        _, err = run([contrail, "train", "--model", "isolation-forest", "--data",
                      os.path.join(data, "train.parquet"), "--features", ",".join(FEATURES),
                      "--seed", str(seed), "--num-threads", str(args.threads), "--out", model])
        fit = float(re.search(r"in ([0-9.]+)s; wrote", err).group(1))
        _, err = run([contrail, "predict", "--model", model, "--data", os.path.join(data, "train.parquet"),
                      "--out", os.path.join(args.work, "scored-train.parquet")])
        m_ = re.search(r"\(([0-9.]+) rows/s; the forest alone ([0-9.]+) rows/s\)", err)
        rate, kernel = float(m_.group(1)), float(m_.group(2))
        out = os.path.join(args.work, "scored-test.parquet")
        run([contrail, "predict", "--model", model, "--data", os.path.join(data, "test.parquet"), "--out", out])
        s = pq.read_table(out, columns=["anomaly_score"]).column(0).to_numpy()
        res["contrail"].append({"fit": fit, "score_rows_s": rate, "forest_rows_s": kernel,
                                "auroc": roc_auc_score(yte, s), "auprc": average_precision_score(yte, s)})
    print(f"\n{len(xtr):,} training quotes, {len(xte):,} test quotes with {int(yte.sum())} injected "
          f"error fares; features {', '.join(FEATURES)}; {args.seeds} seeds, {args.threads} threads\n")
    hdr = f"{'library':<14} {'fit s':>8} {'score rows/s':>14} {'AUROC':>8} {'AUPRC':>8}   per seed AUROC"
    print(hdr)
    print("-" * len(hdr))
    summary = {}
    for lib, runs in res.items():
        med = lambda k: float(np.median([r[k] for r in runs]))
        mean = lambda k: float(np.mean([r[k] for r in runs]))
        summary[lib] = {"fit": med("fit"), "score_rows_s": med("score_rows_s"), "auroc": mean("auroc"),
                        "auprc": mean("auprc"), "runs": runs}
        per = " ".join(f"{r['auroc']:.4f}" for r in runs)
        print(f"{lib:<14} {med('fit'):>8.3f} {med('score_rows_s'):>14,.0f} {mean('auroc'):>8.4f} "
              f"{mean('auprc'):>8.4f}   {per}")
    c, k = summary["contrail"], summary["scikit-learn"]
    c["forest_rows_s"] = float(np.median([r["forest_rows_s"] for r in res["contrail"]]))
    print(f"{'(in memory)':<14} {'':>8} {c['forest_rows_s']:>14,.0f}   Contrail's forest alone, without Parquet")
    print(f"{'Contrail/sk':<14} {k['fit'] / c['fit']:>7.1f}x {c['score_rows_s'] / k['score_rows_s']:>13.1f}x "
          f"{c['auroc'] - k['auroc']:>+8.4f} {c['auprc'] - k['auprc']:>+8.4f}   (speed-ups; metric differences)")
    print(f"{'':<14} {'':>8} {c['forest_rows_s'] / k['score_rows_s']:>13.1f}x   in memory against in memory")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
