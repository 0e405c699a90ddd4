"""Writes the importer fixtures in tests/fixtures/import/: small LightGBM and XGBoost
models (text, JSON, UBJSON) and, for each, a Parquet file of input rows with the
library's own predictions (`expected`), so the Rust tests check the importers against
the libraries without Python. Re-run to regenerate (same seeds, same files):

    python3 scripts/make_import_fixtures.py
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare_gbdt  # noqa: E402  (the comparison venv and its pinned versions)

compare_gbdt.ensure_venv()

import lightgbm as lgb  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import xgboost as xgb  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "import")
N = 3000


def frame(seed, n=N):
    r = np.random.default_rng(seed)
    days = r.integers(0, 120, n).astype(np.float64)
    fare = r.gamma(4.0, 60.0, n)
    load = r.uniform(0, 1, n)
    delta = r.normal(0, 20, n)
    delta[r.uniform(size=n) < 0.2] = 0.0  # many exact zeros (LightGBM's zero handling)
    cabin = r.integers(0, 6, n).astype(np.float64)  # categorical codes
    for a in (days, fare, delta, cabin):
        a[r.uniform(size=n) < 0.07] = np.nan
    y = (
        0.02 * np.nan_to_num(fare, nan=240.0)
        + np.where(np.isnan(days), 1.5, np.log1p(np.nan_to_num(days)))
        + 2.0 * load
        + 0.05 * np.nan_to_num(delta)
        + np.where(np.isnan(cabin), 0.3, np.nan_to_num(cabin) % 3)
        + r.normal(0, 0.5, n)
    )
    X = pd.DataFrame(
        {"days_to_departure": days, "fare_offered": fare, "load_factor": load, "price_delta": delta, "cabin": cabin}
    )
    return X, y


def scoring_rows():
    """Rows to predict: fresh draws plus edge values (NaN, exact zeros, tiny values,
    thresholds' neighbours, negative and unseen category codes, infinities)."""
    X, _ = frame(99, 2000)
    r = np.random.default_rng(7)
    edge = X.sample(400, random_state=3).reset_index(drop=True)
    edge.loc[0:40, "price_delta"] = 0.0
    edge.loc[41:60, "price_delta"] = 1e-40
    edge.loc[61:80, "price_delta"] = -1e-36
    edge.loc[81:100, "cabin"] = -1.0
    edge.loc[101:120, "cabin"] = 17.0
    edge.loc[121:130, "cabin"] = np.nan
    edge.loc[131:140, "fare_offered"] = np.inf
    edge.loc[141:150, "fare_offered"] = -np.inf
    edge.loc[151:200, "days_to_departure"] = r.integers(0, 120, 50).astype(np.float64) + 0.5
    return pd.concat([X, edge], ignore_index=True)


def write(name, X, expected, margin):
    t = pa.table(
        {
            **{c: pa.array(X[c].to_numpy(np.float64)) for c in X.columns},
            "expected": pa.array(expected.astype(np.float64)),
            "expected_margin": pa.array(margin.astype(np.float64)),
        }
    )
    pq.write_table(t, os.path.join(OUT, name + ".parquet"), compression="snappy")


def main():
    os.makedirs(OUT, exist_ok=True)
    X, y = frame(1)
    S = scoring_rows()
    cat = ["cabin"]

    # LightGBM: regression with a categorical feature and NaN missing values.
    common = dict(num_leaves=15, learning_rate=0.1, min_data_in_leaf=10, verbose=-1, seed=1, deterministic=True, num_threads=1)
    m = lgb.train({**common, "objective": "regression", "cat_smooth": 1, "min_data_per_group": 5}, lgb.Dataset(X, y, categorical_feature=cat), 40)
    m.save_model(os.path.join(OUT, "lgb_regression.txt"))
    write("lgb_regression", S, m.predict(S), m.predict(S, raw_score=True))

    # zero_as_missing: zeros and NaN take the default direction.
    m = lgb.train({**common, "objective": "regression", "zero_as_missing": True}, lgb.Dataset(X, y, categorical_feature=cat), 40)
    m.save_model(os.path.join(OUT, "lgb_zero_as_missing.txt"))
    write("lgb_zero_as_missing", S, m.predict(S), m.predict(S, raw_score=True))

    # use_missing=false: NaN is treated as zero (missing type None).
    m = lgb.train({**common, "objective": "regression", "use_missing": False}, lgb.Dataset(X, y), 30)
    m.save_model(os.path.join(OUT, "lgb_no_missing.txt"))
    write("lgb_no_missing", S, m.predict(S), m.predict(S, raw_score=True))

    # Binary: probabilities (sigmoid of the raw score).
    yb = (y > np.median(y)).astype(np.float64)
    m = lgb.train({**common, "objective": "binary"}, lgb.Dataset(X, yb, categorical_feature=cat), 40)
    m.save_model(os.path.join(OUT, "lgb_binary.txt"))
    write("lgb_binary", S, m.predict(S), m.predict(S, raw_score=True))

    # Poisson: exp of the raw score.
    yp = np.random.default_rng(5).poisson(np.exp(0.3 * (y - y.mean()) / y.std()))
    m = lgb.train({**common, "objective": "poisson"}, lgb.Dataset(X, yp, categorical_feature=cat), 30)
    m.save_model(os.path.join(OUT, "lgb_poisson.txt"))
    write("lgb_poisson", S, m.predict(S), m.predict(S, raw_score=True))

    # XGBoost: squared error with a categorical feature (pandas category codes).
    xp = dict(tree_method="hist", max_depth=5, eta=0.1, seed=1, nthread=1, max_cat_to_onehot=1)
    d = xgb.DMatrix(
        X.to_numpy(np.float64),
        y,
        feature_names=list(X.columns),
        feature_types=["q", "q", "q", "q", "c"],
        enable_categorical=True,
    )
    b = xgb.train({**xp, "objective": "reg:squarederror"}, d, 40)
    b.save_model(os.path.join(OUT, "xgb_regression.json"))
    b.save_model(os.path.join(OUT, "xgb_regression.ubj"))
    # XGBoost predicts from the codes: the category's position in [0..5].
    # Feed the raw codes (negative and unseen ones included) through inplace_predict on a
    # NumPy array, which reads them as codes.
    write("xgb_regression", S, b.inplace_predict(S.to_numpy(np.float64)), b.inplace_predict(S.to_numpy(np.float64), predict_type="margin"))

    # Binary logistic with base_score from the labels; numeric only.
    b = xgb.train({**xp, "objective": "binary:logistic"}, xgb.DMatrix(X, yb), 40)
    b.save_model(os.path.join(OUT, "xgb_binary.json"))
    write("xgb_binary", S, b.inplace_predict(S.to_numpy(np.float64)), b.inplace_predict(S.to_numpy(np.float64), predict_type="margin"))

    # Poisson (log link, base_score stored on the response scale).
    b = xgb.train({**xp, "objective": "count:poisson", "max_delta_step": 0.7}, xgb.DMatrix(X, yp), 30)
    b.save_model(os.path.join(OUT, "xgb_poisson.json"))
    write("xgb_poisson", S, b.inplace_predict(S.to_numpy(np.float64)), b.inplace_predict(S.to_numpy(np.float64), predict_type="margin"))
    print("wrote", OUT, file=sys.stderr)


if __name__ == "__main__":
    main()
