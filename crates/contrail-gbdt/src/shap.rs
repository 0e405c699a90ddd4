//! SHAP contributions by TreeSHAP (the path-dependent algorithm of Lundberg, Erion and
//! Lee, 2018), with node covers taken from the training row counts. For every row the
//! contributions plus the bias (the last entry) sum to the raw prediction.

use crate::bin::BinMapper;
use crate::booster::Booster;
use crate::tree::Tree;

#[derive(Clone, Copy, Debug)]
struct PathElem {
    feature: i64,
    zero: f64,
    one: f64,
    weight: f64,
}

fn extend(path: &mut Vec<PathElem>, zero: f64, one: f64, feature: i64) {
    let l = path.len();
    path.push(PathElem {
        feature,
        zero,
        one,
        weight: if l == 0 { 1.0 } else { 0.0 },
    });
    for i in (0..l).rev() {
        path[i + 1].weight += one * path[i].weight * (i + 1) as f64 / (l + 1) as f64;
        path[i].weight = zero * path[i].weight * (l - i) as f64 / (l + 1) as f64;
    }
}

fn unwind(path: &mut Vec<PathElem>, i: usize) {
    let l = path.len() - 1;
    let (one, zero) = (path[i].one, path[i].zero);
    let mut n = path[l].weight;
    for j in (0..l).rev() {
        if one != 0.0 {
            let t = path[j].weight;
            path[j].weight = n * (l + 1) as f64 / ((j + 1) as f64 * one);
            n = t - path[j].weight * zero * (l - j) as f64 / (l + 1) as f64;
        } else {
            path[j].weight = path[j].weight * (l + 1) as f64 / (zero * (l - j) as f64);
        }
    }
    for j in i..l {
        path[j].feature = path[j + 1].feature;
        path[j].zero = path[j + 1].zero;
        path[j].one = path[j + 1].one;
    }
    path.pop();
}

fn unwound_sum(path: &[PathElem], i: usize) -> f64 {
    let l = path.len() - 1;
    let (one, zero) = (path[i].one, path[i].zero);
    let mut n = path[l].weight;
    let mut total = 0.0;
    for j in (0..l).rev() {
        if one != 0.0 {
            let t = n * (l + 1) as f64 / ((j + 1) as f64 * one);
            total += t;
            n = path[j].weight - t * zero * (l - j) as f64 / (l + 1) as f64;
        } else {
            total += path[j].weight * (l + 1) as f64 / (zero * (l - j) as f64);
        }
    }
    total
}

/// Does row `x` (prepared as for prediction) go left at internal node `n`?
fn goes_left(t: &Tree, n: usize, x: &[f64], mappers: &[BinMapper]) -> bool {
    let f = t.feature[n] as usize;
    let v = x[f];
    if t.cat_index[n] >= 0 {
        let bin = if v.is_nan() {
            mappers[f].missing_bin()
        } else {
            v as usize
        };
        let bits = &t.cat_bitsets[t.cat_index[n] as usize];
        bits.get(bin / 32).is_some_and(|w| w >> (bin % 32) & 1 == 1)
    } else if v.is_nan() {
        t.default_left[n]
    } else {
        v <= t.threshold[n]
    }
}

/// A child pointer as (is_leaf, index).
fn child(c: i32) -> (bool, usize) {
    if c < 0 {
        (true, !c as usize)
    } else {
        (false, c as usize)
    }
}

fn cover(t: &Tree, c: (bool, usize)) -> f64 {
    if c.0 {
        t.leaf_count[c.1] as f64
    } else {
        t.node_count[c.1] as f64
    }
}

#[allow(clippy::too_many_arguments)]
fn recurse(
    t: &Tree,
    node: (bool, usize),
    x: &[f64],
    mappers: &[BinMapper],
    phi: &mut [f64],
    mut path: Vec<PathElem>,
    zero: f64,
    one: f64,
    feature: i64,
) {
    extend(&mut path, zero, one, feature);
    let (is_leaf, j) = node;
    if is_leaf {
        let v = t.leaf_value[j];
        for i in 1..path.len() {
            let w = unwound_sum(&path, i);
            phi[path[i].feature as usize] += w * (path[i].one - path[i].zero) * v;
        }
        return;
    }
    let (l, r) = (child(t.left[j]), child(t.right[j]));
    let (hot, cold) = if goes_left(t, j, x, mappers) {
        (l, r)
    } else {
        (r, l)
    };
    let f = t.feature[j] as i64;
    let (mut iz, mut io) = (1.0, 1.0);
    if let Some(k) = path.iter().position(|p| p.feature == f) {
        iz = path[k].zero;
        io = path[k].one;
        unwind(&mut path, k);
    }
    let c = t.node_count[j].max(1) as f64;
    recurse(
        t,
        hot,
        x,
        mappers,
        phi,
        path.clone(),
        iz * cover(t, hot) / c,
        io,
        f,
    );
    recurse(
        t,
        cold,
        x,
        mappers,
        phi,
        path,
        iz * cover(t, cold) / c,
        0.0,
        f,
    );
}

/// The cover-weighted mean leaf value of a tree: its expected output.
pub fn expected_value(t: &Tree) -> f64 {
    let n: f64 = t.leaf_count.iter().map(|c| *c as f64).sum();
    if n == 0.0 {
        return t.leaf_value.first().copied().unwrap_or(0.0);
    }
    t.leaf_value
        .iter()
        .zip(&t.leaf_count)
        .map(|(v, c)| v * *c as f64)
        .sum::<f64>()
        / n
}

impl Booster {
    /// SHAP contributions of one prepared row: `n_features + 1` values, the last the bias;
    /// they sum to the raw score of the first `n_trees` trees (all if `None`).
    pub fn shap_row(&self, x: &[f64], n_trees: Option<usize>) -> Vec<f64> {
        let nf = self.n_features();
        let mut phi = vec![0.0; nf + 1];
        phi[nf] = self.init_score;
        let trees = &self.trees[..n_trees.unwrap_or(self.trees.len()).min(self.trees.len())];
        for t in trees {
            if t.n_nodes() == 0 {
                phi[nf] += t.leaf_value.first().copied().unwrap_or(0.0);
                continue;
            }
            phi[nf] += expected_value(t);
            recurse(
                t,
                (false, 0),
                x,
                &self.mappers,
                &mut phi,
                Vec::with_capacity(32),
                1.0,
                1.0,
                -1,
            );
        }
        phi
    }

    /// SHAP contributions for row-major prepared features, row by row (rayon).
    pub fn shap(&self, x: &[f64]) -> Vec<Vec<f64>> {
        use rayon::prelude::*;
        let nf = self.n_features().max(1);
        x.par_chunks(nf)
            .map(|row| self.shap_row(row, None))
            .collect()
    }
}
