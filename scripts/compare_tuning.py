#!/usr/bin/env python3
"""Contrail's samplers vs Optuna's default TPE on standard test functions, in one run.

    python3 scripts/compare_tuning.py [--seeds 10] [--trials 100]
                                      [--functions branin,hartmann6,levy10]
                                      [--samplers gp,tpe] [--no-build]
                                      [--gbdt] [--gbdt-seeds 3] [--work DIR]

Makes its own virtual environment (.venv-tuning, pinned versions below) on first use.
For each function, each Contrail sampler and Optuna's `TPESampler(seed=s)` (its defaults,
which is what `optuna.create_study()` uses) run `--trials` trials for seeds 1..N. Contrail
runs through the `bench_functions` example of crates/contrail-tune: the library's own
`Study` with the real samplers, in process (the black-box CLI adds only a process spawn per
trial). Prints the median (over seeds) regret, best-so-far minus the known optimum, at 25,
50 and 100 trials (or the given budget), and the mean time per suggestion.
Both sides compute the functions independently (Rust in contrail_tune::bench, Python here);
the script checks they agree at the known optima.

With --gbdt, also a real tuning task: 6 hyperparameters of Contrail's GBDT (learning_rate,
num_leaves, min_data_in_leaf, feature_fraction, bagging_fraction, lambda_l2; 100 rounds,
early stopping after 20) on the simulator's fare data (5 days x 20 routes, about 26,000
training rows, features from `contrail export-features`), minimising the validation RMSE.
Contrail runs the real black-box CLI, `contrail tune --command "<this script>
--objective-gbdt DIR"`; Optuna's objective calls the same command. No known optimum: the
table shows the median best-so-far validation RMSE, and the median test RMSE (held-out
days' rows, never seen by the search) of the model each search would hand over at that
budget, its best-validation trial's. The validation RMSE moves by several units from one
bagging draw to the next (neighbouring parameters draw other rows), so the best of many
trials is partly a lucky draw; the test RMSE of the chosen model is what a user gets.
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

PINS = ["optuna==5.0.0", "numpy==2.4.6", "pyarrow==26.0.1"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, ".venv-tuning")


def ensure_venv():
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import peer_venv
    peer_venv.ensure(VENV, PINS)


def branin(x):
    a, b, c = 1.0, 5.1 / (4 * math.pi ** 2), 5 / math.pi
    r, s, t = 6.0, 10.0, 1 / (8 * math.pi)
    return a * (x[1] - b * x[0] ** 2 + c * x[0] - r) ** 2 + s * (1 - t) * math.cos(x[0]) + s


HART_ALPHA = [1.0, 1.2, 3.0, 3.2]
HART_A = [[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14],
          [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]]
HART_P = [[0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886],
          [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
          [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650],
          [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381]]


def hartmann6(x):
    return -sum(HART_ALPHA[i] * math.exp(-sum(HART_A[i][j] * (x[j] - HART_P[i][j]) ** 2 for j in range(6)))
                for i in range(4))


def levy(x):
    w = [1 + (v - 1) / 4 for v in x]
    f = math.sin(math.pi * w[0]) ** 2
    for wi in w[:-1]:
        f += (wi - 1) ** 2 * (1 + 10 * math.sin(math.pi * wi + 1) ** 2)
    return f + (w[-1] - 1) ** 2 * (1 + math.sin(2 * math.pi * w[-1]) ** 2)


FUNCTIONS = {
    "branin": (branin, [(-5.0, 10.0), (0.0, 15.0)], 0.397887357729738),
    "hartmann6": (hartmann6, [(0.0, 1.0)] * 6, -3.322368011391339),
    "levy10": (levy, [(-10.0, 10.0)] * 10, 0.0),
}


def check_functions():
    assert abs(branin([math.pi, 2.275]) - FUNCTIONS["branin"][2]) < 1e-6
    assert abs(hartmann6([0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573]) - FUNCTIONS["hartmann6"][2]) < 1e-4
    assert abs(levy([1.0] * 10)) < 1e-12


def run_optuna(name, seeds, trials):
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    f, bounds, opt = FUNCTIONS[name]
    runs = []
    for seed in seeds:
        sampler = optuna.samplers.TPESampler(seed=seed)
        study = optuna.create_study(sampler=sampler, direction="minimize")
        best, curve, ask_s = math.inf, [], []
        for _ in range(trials):
            t0 = time.perf_counter()
            trial = study.ask()
            x = [trial.suggest_float(f"x{i:02d}", lo, hi) for i, (lo, hi) in enumerate(bounds)]
            ask_s.append(time.perf_counter() - t0)
            v = f(x)
            study.tell(trial, v)
            best = min(best, v)
            curve.append(best)
        runs.append({"best_so_far": curve, "ask_ms": [s * 1e3 for s in ask_s], "optimum": opt})
    return runs


def run_contrail(name, sampler, seeds, trials):
    exe = os.path.join(ROOT, "target", "release", "examples", "bench_functions")
    out = subprocess.run([exe, "--function", name, "--sampler", sampler, "--seeds",
                          ",".join(str(s) for s in seeds), "--trials", str(trials)],
                         check=True, capture_output=True, text=True).stdout
    runs = [json.loads(line) for line in out.splitlines() if line.strip()]
    f, bounds, opt = FUNCTIONS[name]
    for r in runs:
        assert abs(r["optimum"] - opt) < 1e-9, (name, r["optimum"], opt)
    return runs


GBDT_SPACE = """
[learning_rate]
type = "float"
low = 0.01
high = 0.3
log = true
[num_leaves]
type = "int"
low = 4
high = 256
log = true
[min_data_in_leaf]
type = "int"
low = 2
high = 200
log = true
[feature_fraction]
type = "float"
low = 0.3
high = 1.0
[bagging_fraction]
type = "float"
low = 0.3
high = 1.0
[lambda_l2]
type = "float"
low = 0.001
high = 100.0
log = true
"""


def contrail_exe():
    return os.path.join(ROOT, "target", "release", "contrail")


def gbdt_objective(fare, params, test=False):
    """Trains on fare/train.parquet; returns the validation RMSE (with `test`, the test
    RMSE of the same model: the one this trial trained)."""
    cmd = [contrail_exe(), "-q", "train", "--data", os.path.join(fare, "train.parquet"),
           "--valid", os.path.join(fare, "valid.parquet"), "--target", "price",
           "--num-iterations", "100", "--early-stopping-round", "20", "--bagging-freq", "1",
           "--num-threads", "1", "--seed", "1"]
    for k, v in sorted(params.items()):
        cmd += ["--" + k.replace("_", "-"), str(v)]
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "model.ctm")
        out = subprocess.run(cmd + ["--out", model], check=True, capture_output=True, text=True).stdout
        if not test:
            return json.loads(out)["valid-rmse"]
        pred = os.path.join(tmp, "pred.parquet")
        subprocess.run([contrail_exe(), "-q", "predict", "--model", model, "--data",
                        os.path.join(fare, "test.parquet"), "--out", pred], check=True, capture_output=True)
        import numpy as np
        import pyarrow.parquet as pq
        t = pq.read_table(pred, columns=["price", "prediction"])
        err = t.column("price").to_numpy() - t.column("prediction").to_numpy()
        return float(np.sqrt(np.mean(err * err)))


def chosen_test_rmse(fare, run, budgets, cache):
    """Test RMSE of the model a search hands over at each budget: its best-validation
    trial's (the first of equal ones)."""
    out = []
    for b in budgets:
        vals = run["values"][:b]
        i = min(range(len(vals)), key=lambda k: (vals[k], k))
        key = json.dumps(run["params"][i], sort_keys=True)
        if key not in cache:
            cache[key] = gbdt_objective(fare, run["params"][i], test=True)
        out.append(cache[key])
    return out


def make_fare(work):
    fare = os.path.join(work, "fare")
    if not os.path.exists(os.path.join(fare, "valid.parquet")):
        lake = os.path.join(work, "lake")
        c = contrail_exe()
        subprocess.run([c, "-q", "simulate", "--lake", lake, "--days", "5", "--routes", "20", "--seed", "7"],
                       check=True, capture_output=True)
        subprocess.run([c, "-q", "etl", "--lake", lake], check=True, capture_output=True)
        subprocess.run([c, "-q", "export-features", "--lake", lake, "--config",
                        os.path.join(ROOT, "configs", "fare_price.toml"), "--out", fare],
                       check=True, capture_output=True)
    return fare


def run_gbdt_optuna(fare, seeds, trials):
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    runs = []
    for seed in seeds:
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed), direction="minimize")
        best, curve, values, plist = math.inf, [], [], []
        for _ in range(trials):
            trial = study.ask()
            p = {
                "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
                "num_leaves": trial.suggest_int("num_leaves", 4, 256, log=True),
                "min_data_in_leaf": trial.suggest_int("min_data_in_leaf", 2, 200, log=True),
                "feature_fraction": trial.suggest_float("feature_fraction", 0.3, 1.0),
                "bagging_fraction": trial.suggest_float("bagging_fraction", 0.3, 1.0),
                "lambda_l2": trial.suggest_float("lambda_l2", 0.001, 100.0, log=True),
            }
            v = gbdt_objective(fare, p)
            study.tell(trial, v)
            best = min(best, v)
            curve.append(best)
            values.append(v)
            plist.append(p)
        runs.append({"best_so_far": curve, "optimum": 0.0, "values": values, "params": plist})
    return runs


def run_gbdt_contrail(fare, work, sampler, seeds, trials):
    import shutil
    space = os.path.join(work, "gbdt_space.toml")
    with open(space, "w") as f:
        f.write(GBDT_SPACE)
    command = f"{sys.executable} {os.path.abspath(__file__)} --objective-gbdt {fare}"
    runs = []
    for seed in seeds:
        out = os.path.join(work, f"tune-{sampler}-{seed}")
        shutil.rmtree(out, ignore_errors=True)
        subprocess.run([contrail_exe(), "-q", "tune", "--space", space, "--command", command,
                        "--trials", str(trials), "--sampler", sampler, "--seed", str(seed), "--out", out],
                       check=True, capture_output=True)
        values, params = {}, {}
        with open(os.path.join(out, "journal.jsonl")) as f:
            for line in f:
                r = json.loads(line)
                if r["record"] == "ask":
                    for t in r["trials"]:
                        params[t["trial"]] = t["params"]
                if r["record"] == "tell":
                    values[r["trial"]] = r.get("value", math.inf) if r["state"] == "complete" else math.inf
        best, curve = math.inf, []
        for t in range(trials):
            best = min(best, values[t])
            curve.append(best)
        runs.append({"best_so_far": curve, "optimum": 0.0, "values": [values[t] for t in range(trials)],
                     "params": [params[t] for t in range(trials)]})
    return runs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--functions", default="branin,hartmann6,levy10")
    ap.add_argument("--samplers", default="gp,tpe")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--gbdt", action="store_true", help="also the GBDT tuning task")
    ap.add_argument("--gbdt-seeds", type=int, default=3)
    ap.add_argument("--work", default=os.path.join(ROOT, "target", "compare-tuning"))
    ap.add_argument("--objective-gbdt", metavar="FARE_DIR", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.objective_gbdt:
        # One trial of the GBDT task: parameters as JSON on stdin, validation RMSE out.
        print(gbdt_objective(args.objective_gbdt, json.loads(sys.stdin.read())))
        return
    ensure_venv()
    check_functions()
    import optuna
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "contrail-tune", "--example",
                        "bench_functions"], cwd=ROOT, check=True)
        if args.gbdt:
            subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "contrail"], cwd=ROOT, check=True)
    seeds = list(range(1, args.seeds + 1))
    budgets = [b for b in (25, 50, 100) if b <= args.trials] or [args.trials]
    rows = []
    for name in args.functions.split(","):
        entries = [(f"Optuna {optuna.__version__} TPE (default)", run_optuna(name, seeds, args.trials))]
        for s in args.samplers.split(","):
            entries.append((f"Contrail {s}", run_contrail(name, s, seeds, args.trials)))
        for label, runs in entries:
            regrets = [statistics.median(r["best_so_far"][b - 1] - r["optimum"] for r in runs) for b in budgets]
            ask = statistics.mean(m for r in runs for m in r["ask_ms"])
            rows.append((name, label, regrets, ask))
            print(f"{name:10s} {label:32s} " + "  ".join(f"{v:10.4g}" for v in regrets) + f"  {ask:8.2f} ms",
                  file=sys.stderr)
    gbdt_rows = []
    if args.gbdt:
        os.makedirs(args.work, exist_ok=True)
        fare = make_fare(args.work)
        gseeds = list(range(1, args.gbdt_seeds + 1))
        entries = [(f"Optuna {optuna.__version__} TPE (default)", run_gbdt_optuna(fare, gseeds, args.trials))]
        for s in args.samplers.split(","):
            entries.append((f"Contrail {s} (contrail tune CLI)", run_gbdt_contrail(fare, args.work, s, gseeds, args.trials)))
        cache = {}
        for label, runs in entries:
            best = [statistics.median(r["best_so_far"][b - 1] for r in runs) for b in budgets]
            tests = [chosen_test_rmse(fare, r, budgets, cache) for r in runs]
            test = [statistics.median(t[k] for t in tests) for k in range(len(budgets))]
            gbdt_rows.append((label, best, test))
            print(f"gbdt       {label:32s} " + "  ".join(f"{v:10.4g}" for v in best)
                  + "   test " + "  ".join(f"{v:10.4g}" for v in test), file=sys.stderr)
    print(f"\n{len(seeds)} seeds x {args.trials} trials; median regret (best so far - optimum) at "
          + " / ".join(str(b) for b in budgets) + " trials; mean suggestion time\n")
    print("| function | sampler | " + " | ".join(f"regret @{b}" for b in budgets) + " | ms / suggestion |")
    print("|---|---|" + "---|" * len(budgets) + "---|")
    for name, label, regrets, ask in rows:
        print(f"| {name} | {label} | " + " | ".join(f"{v:.4g}" for v in regrets) + f" | {ask:.2f} |")
    if gbdt_rows:
        print(f"\nGBDT on the fare data, {args.gbdt_seeds} seeds x {args.trials} trials: median best-so-far "
              "validation RMSE, and median test RMSE of the chosen (best-validation) model, at "
              + " / ".join(str(b) for b in budgets) + " trials\n")
        print("| sampler | " + " | ".join(f"valid @{b}" for b in budgets) + " | "
              + " | ".join(f"test @{b}" for b in budgets) + " |")
        print("|---|" + "---|" * (2 * len(budgets)))
        for label, best, test in gbdt_rows:
            print(f"| {label} | " + " | ".join(f"{v:.2f}" for v in best) + " | "
                  + " | ".join(f"{v:.2f}" for v in test) + " |")


if __name__ == "__main__":
    main()
