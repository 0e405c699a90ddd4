//! A trained tree as struct-of-arrays node tables, and prediction on bins and on raw
//! values. Node `i` is internal; a child index `c < 0` is leaf `!c`.

use serde::{Deserialize, Serialize};

use crate::bin::{BinMapper, Binned};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tree {
    pub left: Vec<i32>,
    pub right: Vec<i32>,
    pub feature: Vec<u32>,
    /// Numeric splits: bins `<= threshold_bin` go left. Unused for categorical splits.
    pub threshold_bin: Vec<u32>,
    /// Numeric splits on raw values: `x <= threshold` goes left (the bin's upper bound).
    pub threshold: Vec<f64>,
    /// Where missing values go in numeric splits.
    pub default_left: Vec<bool>,
    /// Categorical splits: index into `cat_bitsets` (a bitset over bins that go left),
    /// or -1 for numeric splits.
    pub cat_index: Vec<i32>,
    pub cat_bitsets: Vec<Vec<u32>>,
    pub gain: Vec<f64>,
    /// Sum of hessians and row count under each node, for explanations.
    pub node_hess: Vec<f64>,
    pub node_count: Vec<u64>,
    pub node_value: Vec<f64>,
    pub leaf_value: Vec<f64>,
    pub leaf_hess: Vec<f64>,
    pub leaf_count: Vec<u64>,
}

#[inline]
fn in_bitset(bits: &[u32], bin: usize) -> bool {
    bits.get(bin / 32).is_some_and(|w| w >> (bin % 32) & 1 == 1)
}

impl Tree {
    pub fn n_leaves(&self) -> usize {
        self.leaf_value.len()
    }

    pub fn n_nodes(&self) -> usize {
        self.left.len()
    }

    /// Does a row with bin `bin` at node `n` go left?
    #[inline]
    pub fn goes_left_bin(&self, n: usize, bin: usize, missing_bin: usize) -> bool {
        let ci = self.cat_index[n];
        if ci >= 0 {
            in_bitset(&self.cat_bitsets[ci as usize], bin)
        } else if bin == missing_bin {
            self.default_left[n]
        } else {
            bin as u32 <= self.threshold_bin[n]
        }
    }

    /// The leaf a binned row falls in.
    pub fn leaf_of_binned(&self, data: &Binned, row: usize) -> usize {
        if self.n_nodes() == 0 {
            return 0;
        }
        let mut n = 0usize;
        loop {
            let f = self.feature[n] as usize;
            let missing = data.mappers[f].missing_bin();
            let c = if self.goes_left_bin(n, data.bin(row, f), missing) {
                self.left[n]
            } else {
                self.right[n]
            };
            if c < 0 {
                return !c as usize;
            }
            n = c as usize;
        }
    }

    /// The leaf a raw row falls in. `x[f]` is the value of feature `f`: a number (NaN
    /// missing) for numeric features, the category's bin for categorical ones.
    #[inline]
    pub fn leaf_of_raw(&self, x: &[f64], mappers: &[BinMapper]) -> usize {
        if self.n_nodes() == 0 {
            return 0;
        }
        let mut n = 0usize;
        loop {
            let f = self.feature[n] as usize;
            let v = x[f];
            let ci = self.cat_index[n];
            let left = if ci >= 0 {
                let bin = if v.is_nan() {
                    mappers[f].missing_bin()
                } else {
                    v as usize
                };
                in_bitset(&self.cat_bitsets[ci as usize], bin)
            } else if v.is_nan() {
                self.default_left[n]
            } else {
                v <= self.threshold[n]
            };
            let c = if left { self.left[n] } else { self.right[n] };
            if c < 0 {
                return !c as usize;
            }
            n = c as usize;
        }
    }
}
