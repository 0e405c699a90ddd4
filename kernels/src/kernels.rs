//! The CubeCL kernels. Every loop over rows is grid-strided, so any grid covers any row
//! count, and every sum is an integer atomic, so results do not depend on the grid.

use cubecl::prelude::*;

/// Adds one row's packed gradient (`g`, two's complement) and hessian (`h`) to the bins
/// of its `width` columns in `hist` (bin `e` at `2e` and `2e + 1`), starting at `base`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn add_row(
    matrix: &Array<u32>,
    col_offset: &Array<u32>,
    hist: &Array<Atomic<u32>>,
    r: usize,
    base: u32,
    g: u32,
    h: u32,
    #[comptime] width: u32,
) {
    let words = comptime!(width.div_ceil(4));
    #[unroll]
    for w in 0..words {
        let word = matrix[r * words as usize + w as usize];
        #[unroll]
        for k in 0..4u32 {
            let c = comptime!(w * 4 + k);
            if comptime!(c < width) {
                let b = (word >> (k * 8)) & 0xFF;
                let e = (2 * (base + col_offset[c as usize] + b)) as usize;
                hist[e].fetch_add(g);
                hist[e + 1].fetch_add(h);
            }
        }
    }
}

/// Histograms of the leaves that have a slot (`slot_of_leaf[leaf] != u32::MAX`), straight
/// into device memory: `hist[slot · hist_len + bin]` as (gradient, hessian) pairs.
/// Rows out of the tree's sample have a leaf past `slot_of_leaf` and are skipped.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn hist_global(
    matrix: &Array<u32>,
    gh: &Array<u32>,
    leaf_of: &Array<u32>,
    slot_of_leaf: &Array<u32>,
    col_offset: &Array<u32>,
    hist: &Array<Atomic<u32>>,
    n_rows: u32,
    hist_len: u32,
    #[comptime] width: u32,
) {
    let stride = CUBE_COUNT * CUBE_DIM as usize;
    let n_leaves = slot_of_leaf.len();
    let mut r = ABSOLUTE_POS;
    while r < n_rows as usize {
        let leaf = leaf_of[r] as usize;
        if leaf < n_leaves {
            let slot = slot_of_leaf[leaf];
            if slot != u32::MAX {
                add_row(
                    matrix,
                    col_offset,
                    hist,
                    r,
                    slot * hist_len,
                    gh[2 * r + 1],
                    gh[2 * r],
                    width,
                );
            }
        }
        r += stride;
    }
}

/// [`hist_global`] privatised: each cube adds its rows into a copy of the histograms in
/// shared memory (`slots · hist_len` bins) and then adds that copy's non-zero bins to
/// device memory, so the device-memory atomics are per cube and bin, not per row.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn hist_shared(
    matrix: &Array<u32>,
    gh: &Array<u32>,
    leaf_of: &Array<u32>,
    slot_of_leaf: &Array<u32>,
    col_offset: &Array<u32>,
    hist: &Array<Atomic<u32>>,
    n_rows: u32,
    #[comptime] hist_len: u32,
    #[comptime] slots: u32,
    #[comptime] width: u32,
) {
    let size = comptime!((2 * hist_len * slots) as usize);
    let local = SharedMemory::<Atomic<u32>>::new(size);
    zero_shared(&local, size);
    let stride = CUBE_COUNT * CUBE_DIM as usize;
    let n_leaves = slot_of_leaf.len();
    let mut r = ABSOLUTE_POS;
    while r < n_rows as usize {
        let leaf = leaf_of[r] as usize;
        if leaf < n_leaves {
            let slot = slot_of_leaf[leaf];
            if slot != u32::MAX {
                add_row_shared(
                    matrix,
                    col_offset,
                    &local,
                    r,
                    slot * hist_len,
                    gh[2 * r + 1],
                    gh[2 * r],
                    width,
                );
            }
        }
        r += stride;
    }
    sync_cube();
    flush_shared(&local, hist, 0usize, size);
}

/// Lists the rows of each slot's leaf: row `r` with `slot = slot_of_leaf[leaf_of[r]]`
/// (not `u32::MAX`) goes to `rows[slot_start[slot] + k]`, as long as that is below
/// `slot_start[slot + 1]` (the host's count of the slot's rows; a row past it is not
/// written). `fill[slot]` (zero before) ends as the slot's rows on the device.
///
/// A cube takes a tile of `tile` rows: it counts the tile's rows a slot in shared memory,
/// reserves each slot's range in `rows` with one device-memory atomic, and places the rows
/// by shared-memory atomics (one device atomic a slot a cube, not one a row, which
/// measured slower than device-memory histograms on an H200: docs/gpu-performance.md, v7).
/// The order within a slot depends on the run; the integer histograms built from the
/// list do not.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn gather_rows(
    leaf_of: &Array<u32>,
    slot_of_leaf: &Array<u32>,
    slot_start: &Array<u32>,
    fill: &Array<Atomic<u32>>,
    rows: &mut Array<u32>,
    n_rows: u32,
    n_slots: u32,
    #[comptime] max_slots: u32,
    #[comptime] tile: u32,
) {
    let counts = SharedMemory::<Atomic<u32>>::new(max_slots as usize);
    let mut base = SharedMemory::<u32>::new(max_slots as usize);
    zero_shared(&counts, n_slots as usize);
    let n_leaves = slot_of_leaf.len();
    let t0 = CUBE_POS as u32 * tile;
    let mut i = UNIT_POS;
    while i < tile {
        let r = t0 + i;
        if r < n_rows {
            let leaf = leaf_of[r as usize] as usize;
            if leaf < n_leaves {
                let slot = slot_of_leaf[leaf];
                if slot != u32::MAX {
                    counts[slot as usize].fetch_add(1u32);
                }
            }
        }
        i += CUBE_DIM;
    }
    sync_cube();
    let mut s = UNIT_POS;
    while s < n_slots {
        let c = counts[s as usize].load();
        if c > 0 {
            base[s as usize] = fill[s as usize].fetch_add(c);
        }
        counts[s as usize].store(0u32);
        s += CUBE_DIM;
    }
    sync_cube();
    let mut i = UNIT_POS;
    while i < tile {
        let r = t0 + i;
        if r < n_rows {
            let leaf = leaf_of[r as usize] as usize;
            if leaf < n_leaves {
                let slot = slot_of_leaf[leaf];
                if slot != u32::MAX {
                    let k = counts[slot as usize].fetch_add(1u32);
                    let at = slot_start[slot as usize] + base[slot as usize] + k;
                    if at < slot_start[slot as usize + 1] {
                        rows[at as usize] = r;
                    }
                }
            }
        }
        i += CUBE_DIM;
    }
}

/// Histograms from lists of rows ([`gather_rows`]): cube `k` takes the rows
/// `rows[work[3k + 1]..work[3k + 2]]`, all of slot `work[3k]`, adds them into one
/// histogram in shared memory and then its non-zero bins into `hist[slot · hist_len + bin]`
/// ((gradient, hessian) pairs). Every cube works on one leaf, so shared memory holds one
/// histogram whatever the number of leaves in the pass.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn hist_rows(
    matrix: &Array<u32>,
    gh: &Array<u32>,
    rows: &Array<u32>,
    work: &Array<u32>,
    col_offset: &Array<u32>,
    hist: &Array<Atomic<u32>>,
    #[comptime] hist_len: u32,
    #[comptime] width: u32,
) {
    let size = comptime!((2 * hist_len) as usize);
    let local = SharedMemory::<Atomic<u32>>::new(size);
    zero_shared(&local, size);
    let w = (CUBE_POS * 3) as usize;
    let slot = work[w];
    let end = work[w + 2] as usize;
    let mut k = work[w + 1] as usize + UNIT_POS as usize;
    while k < end {
        let r = rows[k] as usize;
        add_row_shared(
            matrix,
            col_offset,
            &local,
            r,
            0u32,
            gh[2 * r + 1],
            gh[2 * r],
            width,
        );
        k += CUBE_DIM as usize;
    }
    sync_cube();
    flush_shared(&local, hist, (2 * slot * hist_len) as usize, size);
}

/// Zeroes a cube's `local[..n]`, then waits for every unit of the cube.
#[cube]
fn zero_shared(local: &SharedMemory<Atomic<u32>>, n: usize) {
    let mut i = UNIT_POS as usize;
    while i < n {
        local[i].store(0u32);
        i += CUBE_DIM as usize;
    }
    sync_cube();
}

/// Adds a cube's non-zero `local[..n]` to `out[base..base + n]` (after a `sync_cube`).
#[cube]
fn flush_shared(
    local: &SharedMemory<Atomic<u32>>,
    out: &Array<Atomic<u32>>,
    base: usize,
    n: usize,
) {
    let mut j = UNIT_POS as usize;
    while j < n {
        let v = local[j].load();
        if v != 0 {
            out[base + j].fetch_add(v);
        }
        j += CUBE_DIM as usize;
    }
}

/// [`add_row`] into shared memory.
#[cube]
#[allow(clippy::too_many_arguments)]
fn add_row_shared(
    matrix: &Array<u32>,
    col_offset: &Array<u32>,
    hist: &SharedMemory<Atomic<u32>>,
    r: usize,
    base: u32,
    g: u32,
    h: u32,
    #[comptime] width: u32,
) {
    let words = comptime!(width.div_ceil(4));
    #[unroll]
    for w in 0..words {
        let word = matrix[r * words as usize + w as usize];
        #[unroll]
        for k in 0..4u32 {
            let c = comptime!(w * 4 + k);
            if comptime!(c < width) {
                let b = (word >> (k * 8)) & 0xFF;
                let e = (2 * (base + col_offset[c as usize] + b)) as usize;
                hist[e].fetch_add(g);
                hist[e + 1].fetch_add(h);
            }
        }
    }
}

/// [`add_row`] with one 64-bit atomic a bin: the packed `(gradient << 32) + hessian`
/// (the hessian sum of any set of rows fits 32 bits, so the packed sum is the pair of
/// sums), half the atomics of the 32-bit pair. CUDA has 64-bit atomics; WGSL does not.
#[cube]
#[allow(clippy::too_many_arguments)]
fn add_row_wide(
    matrix: &Array<u32>,
    col_offset: &Array<u32>,
    hist: &Array<Atomic<u64>>,
    r: usize,
    base: u32,
    v: u64,
    #[comptime] width: u32,
) {
    let words = comptime!(width.div_ceil(4));
    #[unroll]
    for w in 0..words {
        let word = matrix[r * words as usize + w as usize];
        #[unroll]
        for k in 0..4u32 {
            let c = comptime!(w * 4 + k);
            if comptime!(c < width) {
                let b = (word >> (k * 8)) & 0xFF;
                hist[(base + col_offset[c as usize] + b) as usize].fetch_add(v);
            }
        }
    }
}

/// [`hist_global`] with 64-bit atomics on packed values (`gh[r]` is row `r`'s packed pair;
/// `hist[slot · hist_len + bin]` the packed sums).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn hist_global_wide(
    matrix: &Array<u32>,
    gh: &Array<u64>,
    leaf_of: &Array<u32>,
    slot_of_leaf: &Array<u32>,
    col_offset: &Array<u32>,
    hist: &Array<Atomic<u64>>,
    n_rows: u32,
    hist_len: u32,
    #[comptime] width: u32,
) {
    let stride = CUBE_COUNT * CUBE_DIM as usize;
    let n_leaves = slot_of_leaf.len();
    let mut r = ABSOLUTE_POS;
    while r < n_rows as usize {
        let leaf = leaf_of[r] as usize;
        if leaf < n_leaves {
            let slot = slot_of_leaf[leaf];
            if slot != u32::MAX {
                add_row_wide(matrix, col_offset, hist, r, slot * hist_len, gh[r], width);
            }
        }
        r += stride;
    }
}

/// Words a split takes in the split table: its feature column, its new leaf, and the
/// side of each of 256 bins (one bit each, 1 = left).
pub const SPLIT_WORDS: usize = 10;

/// Applies splits: a row of a split leaf (`split_of_leaf[leaf] = k`, `leaf < n_leaves`)
/// reads its bin in the split's feature column (`columns`, feature-major, four rows a
/// word, `col_words` words a column), looks its side up in the split's bit table, and
/// either stays (left, counted in `counts[k]`) or moves to the split's new leaf. The
/// split table holds [`SPLIT_WORDS`] words a split. Counts are added per cube in shared
/// memory first (`max_splits` of them).
///
/// (Not named `partition`: that is a reserved word in WGSL, and a kernel WGSL cannot
/// compile is only logged by the launch. `leaf_of`, the one buffer written, is the last: CubeCL binds written buffers after
/// read ones. Five buffers: wgpu on Vulkan allows eight storage buffers a shader, one of which
/// CubeCL takes for its metadata and one wgpu may take for array lengths.)
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn split_rows(
    columns: &Array<u32>,
    split_of_leaf: &Array<u32>,
    table: &Array<u32>,
    counts: &Array<Atomic<u32>>,
    leaf_of: &mut Array<u32>,
    n_rows: u32,
    col_words: u32,
    n_splits: u32,
    n_leaves: u32,
    #[comptime] max_splits: u32,
) {
    let local = SharedMemory::<Atomic<u32>>::new(max_splits as usize);
    zero_shared(&local, n_splits as usize);
    let stride = CUBE_COUNT * CUBE_DIM as usize;
    let mut r = ABSOLUTE_POS;
    while r < n_rows as usize {
        let leaf = leaf_of[r];
        if leaf < n_leaves {
            let k = split_of_leaf[leaf as usize];
            if k != u32::MAX {
                let t = (k * 10) as usize;
                let col = table[t] as usize;
                let word = columns[col * col_words as usize + r / 4];
                let b = (word >> (((r % 4) * 8) as u32)) & 0xFF;
                let bit = (table[t + 2 + (b / 32) as usize] >> (b % 32)) & 1;
                if bit == 1 {
                    local[k as usize].fetch_add(1u32);
                } else {
                    leaf_of[r] = table[t + 1];
                }
            }
        }
        r += stride;
    }
    sync_cube();
    flush_shared(&local, counts, 0usize, n_splits as usize);
}

/// Words a node takes in a forest table ([`predict_binned`]).
pub const NODE_WORDS: usize = 6;
/// Words a tree takes at the start of a forest table.
pub const TREE_WORDS: usize = 3;
/// A child with this bit set is a leaf (its index in its tree in the low bits).
pub const LEAF_BIT: u32 = 1 << 31;

/// Sums each row's leaf values over the trees of a forest, walking the trees on the
/// row's bins (`bins`: feature-major, four rows a word, `col_words` words a feature).
///
/// `table` holds, for each of `n_trees` trees, [`TREE_WORDS`] words (first node, first
/// leaf, node count), then from `node_base` on [`NODE_WORDS`] words a node (feature with
/// the default-left flag in bit 31, threshold bin, left child, right child, offset of its
/// categorical bit table in `table` or `u32::MAX`, the feature's missing bin), then the
/// categorical bit tables (8 words each). A row goes left on a category in the table, on
/// the missing bin by the default direction, else on a bin at most the threshold.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn predict_binned(
    bins: &Array<u32>,
    table: &Array<u32>,
    leaf_value: &Array<f32>,
    out: &mut Array<f32>,
    n_rows: u32,
    col_words: u32,
    n_trees: u32,
    node_base: u32,
) {
    let stride = CUBE_COUNT * CUBE_DIM as usize;
    let mut r = ABSOLUTE_POS;
    while r < n_rows as usize {
        // Compensated (Kahan) sum: f32 with the error of about one rounding, not one a tree.
        let mut acc = 0.0f32;
        let mut lost = 0.0f32;
        for t in 0..n_trees {
            let tw = (t * 3) as usize;
            let first = table[tw];
            let leaves = table[tw + 1];
            let mut v = 0.0f32;
            if table[tw + 2] == 0 {
                v = leaf_value[leaves as usize];
            } else {
                let mut n = 0u32;
                let mut done = false;
                while !done {
                    let w = (node_base + (first + n) * 6) as usize;
                    let fw = table[w];
                    let f = fw & 0x7FFF_FFFF;
                    let word = bins[(f * col_words) as usize + r / 4];
                    let b = (word >> (((r % 4) * 8) as u32)) & 0xFF;
                    let cat = table[w + 4];
                    let mut left = b <= table[w + 1];
                    if cat != u32::MAX {
                        left = ((table[cat as usize + (b / 32) as usize] >> (b % 32)) & 1) == 1;
                    } else if b == table[w + 5] {
                        left = (fw >> 31) == 1;
                    }
                    let c = if left { table[w + 2] } else { table[w + 3] };
                    if c >= 0x8000_0000u32 {
                        v = leaf_value[(leaves + (c & 0x7FFF_FFFF)) as usize];
                        done = true;
                    } else {
                        n = c;
                    }
                }
            }
            let y = v - lost;
            let s = acc + y;
            lost = (s - acc) - y;
            acc = s;
        }
        out[r] = acc;
        r += stride;
    }
}

/// Objective codes of [`gradients`].
pub const OBJ_SQUARED: u32 = 0;
/// Huber loss with threshold `a`.
pub const OBJ_HUBER: u32 = 1;
/// Binary log loss on the logit.
pub const OBJ_BINARY: u32 = 2;
/// Poisson log likelihood on the log rate; the hessian uses `exp(f + a)` (`a`: max delta).
pub const OBJ_POISSON: u32 = 3;
/// Gamma deviance on the log mean.
pub const OBJ_GAMMA: u32 = 4;
/// Tweedie deviance on the log mean with variance power `a`.
pub const OBJ_TWEEDIE: u32 = 5;

/// Each row's gradient and hessian of the objective at its score (32.32 fixed point, as
/// [`add_scores`] keeps it),
/// times its weight (`weighted`), as `f32` bits in `gh` (hessian at `2r`, gradient at
/// `2r + 1`), and the largest `|gradient|` and hessian as bits in `maxima[0]` and
/// `maxima[1]` (a non-negative `f32` orders as its bits; a negative hessian or a NaN shows
/// as bits above every finite value). The maxima are atomic maxima: the same whatever the
/// grid or the order.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn gradients(
    score_int: &Array<u32>,
    score_frac: &Array<u32>,
    label: &Array<f32>,
    weight: &Array<f32>,
    maxima: &Array<Atomic<u32>>,
    gh: &mut Array<u32>,
    n_rows: u32,
    a: f32,
    #[comptime] objective: u32,
    #[comptime] weighted: bool,
) {
    let stride = CUBE_COUNT * CUBE_DIM as usize;
    let mut r = ABSOLUTE_POS;
    let mut mg = 0u32;
    let mut mh = 0u32;
    while r < n_rows as usize {
        let f = f32::cast_from(i32::reinterpret(score_int[r]))
            + f32::cast_from(score_frac[r]) * 2.328_306_4e-10f32;
        let y = label[r];
        let mut g = f - y;
        let mut h = 1.0f32;
        if comptime!(objective == 1) {
            g = max(min(g, a), -a);
        }
        if comptime!(objective == 2) {
            let p = 1.0f32 / (1.0f32 + (-f).exp());
            g = p - y;
            h = max(p * (1.0f32 - p), 1e-16f32);
        }
        if comptime!(objective == 3) {
            g = f.exp() - y;
            h = (f + a).exp();
        }
        if comptime!(objective == 4) {
            let e = (-f).exp();
            g = 1.0f32 - y * e;
            h = max(y * e, 1e-16f32);
        }
        if comptime!(objective == 5) {
            let ea = ((1.0f32 - a) * f).exp();
            let eb = ((2.0f32 - a) * f).exp();
            g = eb - y * ea;
            h = max((2.0f32 - a) * eb - y * (1.0f32 - a) * ea, 1e-16f32);
        }
        if comptime!(weighted) {
            let w = weight[r];
            g *= w;
            h *= w;
        }
        // |g| and h as bits: a NaN's bits are above infinity's, a negative value's have
        // the sign bit set, so either shows in the maxima (no float comparison, which a
        // driver's fast math could fold away).
        let gb = u32::reinterpret(g) & 0x7FFF_FFFFu32;
        let hb = u32::reinterpret(h);
        if gb > mg {
            mg = gb;
        }
        if hb > mh {
            mh = hb;
        }
        gh[2 * r] = u32::reinterpret(h);
        gh[2 * r + 1] = u32::reinterpret(g);
        r += stride;
    }
    maxima[0].fetch_max(mg);
    maxima[1].fetch_max(mh);
}

/// Turns the `f32` pairs [`gradients`] wrote into fixed point in place: the hessian
/// `floor(h · sh + 1/2)` as `u32`, the gradient `floor(g · sg + 1/2)` as two's complement.
/// `sg` and `sh` are powers of two small enough that no sum over the rows overflows.
#[cube(launch)]
pub fn quantise_pairs(gh: &mut Array<u32>, n_rows: u32, sg: f32, sh: f32) {
    let stride = CUBE_COUNT * CUBE_DIM as usize;
    let mut r = ABSOLUTE_POS;
    while r < n_rows as usize {
        let h = f32::reinterpret(gh[2 * r]);
        let g = f32::reinterpret(gh[2 * r + 1]);
        gh[2 * r] = u32::cast_from((h * sh + 0.5f32).floor());
        gh[2 * r + 1] = u32::reinterpret(i32::cast_from((g * sg + 0.5f32).floor()));
        r += stride;
    }
}

/// Adds `delta[r]` to each row's score, kept in 32.32 fixed point: the integer part
/// (`score_int`, two's complement) and the fraction (`score_frac`, units of `2^-32`).
/// Integer sums are exact and cannot be reordered by a compiler the way a compensated
/// float sum can (Vulkan drivers may fold Kahan's correction away, and did on lavapipe).
/// A delta is taken to fixed point by truncating `|delta|` to `2^-32` (its whole part and
/// fraction are exact in `f32`), then negated in two's complement if negative.
#[cube(launch)]
pub fn add_scores(
    delta: &Array<f32>,
    score_frac: &mut Array<u32>,
    score_int: &mut Array<u32>,
    n_rows: u32,
) {
    let stride = CUBE_COUNT * CUBE_DIM as usize;
    let mut r = ABSOLUTE_POS;
    while r < n_rows as usize {
        let v = delta[r];
        let u = v.abs();
        let whole = u.floor();
        // `u - floor(u)` is exact (Sterbenz) and below 1; times 2^32 it is below 2^32.
        let mut part = u32::cast_from((u - whole) * 4294967296.0f32);
        let mut int = i32::cast_from(whole);
        if v < 0.0f32 {
            // -(int + part·2^-32) in two's complement across the two words.
            int = -int - select(part != 0u32, 1i32, 0i32);
            part = 0u32 - part;
        }
        let old = score_frac[r];
        let new = old + part;
        let carry = select(new < old, 1i32, 0i32);
        score_frac[r] = new;
        score_int[r] = u32::reinterpret(i32::reinterpret(score_int[r]) + int + carry);
        r += stride;
    }
}

/// Copies `src[..n]` to `dst[offset..offset + n]`.
#[cube(launch)]
pub fn copy_words(src: &Array<u32>, dst: &mut Array<u32>, offset: u32, n: u32) {
    let stride = CUBE_COUNT * CUBE_DIM as usize;
    let mut i = ABSOLUTE_POS;
    while i < n as usize {
        dst[offset as usize + i] = src[i];
        i += stride;
    }
}

/// Sets `out[i] = value` for every `i`.
#[cube(launch)]
pub fn fill(out: &mut Array<u32>, value: u32, n: u32) {
    let stride = CUBE_COUNT * CUBE_DIM as usize;
    let mut i = ABSOLUTE_POS;
    while i < n as usize {
        out[i] = value;
        i += stride;
    }
}
