//! The dense linear algebra the Gaussian process needs (row-major `n × n` matrices).

/// Dot product with four accumulators (independent adds pipeline; the order is fixed, so
/// results do not depend on anything but the inputs).
#[inline]
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f64; 4];
    let chunks = n / 4;
    for c in 0..chunks {
        let i = c * 4;
        acc[0] += a[i] * b[i];
        acc[1] += a[i + 1] * b[i + 1];
        acc[2] += a[i + 2] * b[i + 2];
        acc[3] += a[i + 3] * b[i + 3];
    }
    let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for i in chunks * 4..n {
        s += a[i] * b[i];
    }
    s
}

/// In-place lower Cholesky factor of a symmetric positive-definite matrix (the upper
/// triangle is zeroed). Returns false if the matrix is not positive definite.
pub fn cholesky(a: &mut [f64], n: usize) -> bool {
    for j in 0..n {
        let row_j = &mut a[j * n..(j + 1) * n];
        let s = row_j[j] - dot(&row_j[..j], &row_j[..j]);
        if s.is_nan() || s <= 0.0 {
            return false;
        }
        row_j[j] = s.sqrt();
        for i in j + 1..n {
            let (top, bottom) = a.split_at_mut(i * n);
            let rj = &top[j * n..j * n + j + 1];
            let ri = &mut bottom[..n];
            let d = dot(&ri[..j], &rj[..j]);
            ri[j] = (ri[j] - d) / rj[j];
        }
    }
    for i in 0..n {
        for v in &mut a[i * n + i + 1..(i + 1) * n] {
            *v = 0.0;
        }
    }
    true
}

/// Solves `L x = b` in place (L lower triangular).
pub fn solve_lower(l: &[f64], n: usize, b: &mut [f64]) {
    for i in 0..n {
        let d = dot(&l[i * n..i * n + i], &b[..i]);
        b[i] = (b[i] - d) / l[i * n + i];
    }
}

/// Solves `Lᵀ x = b` in place (L lower triangular).
pub fn solve_upper_t(l: &[f64], n: usize, b: &mut [f64]) {
    for i in (0..n).rev() {
        b[i] /= l[i * n + i];
        let bi = b[i];
        let row = &l[i * n..i * n + i];
        for (bk, lk) in b[..i].iter_mut().zip(row) {
            *bk -= lk * bi;
        }
    }
}

/// `A⁻¹` from the Cholesky factor `L` of `A` (full symmetric matrix, row-major). Rows are
/// computed in parallel; every entry is the same sum in the same order on any number of
/// threads.
pub fn inverse_from_cholesky(l: &[f64], n: usize) -> Vec<f64> {
    use rayon::prelude::*;
    if n == 0 {
        return Vec::new();
    }
    // M = L⁻ᵀ stored row-major (upper triangular): row j of M is column j of L⁻¹.
    let mut m = vec![0.0; n * n];
    m.par_chunks_mut(n).enumerate().for_each(|(j, row)| {
        row[j] = 1.0;
        // forward substitution from row j on
        for i in j..n {
            let d = dot(&l[i * n + j..i * n + i], &row[j..i]);
            row[i] = (row[i] - d) / l[i * n + i];
        }
    });
    // A⁻¹ = L⁻ᵀ L⁻¹: (i, j) = sum over k >= max(i, j) of M[i][k] M[j][k]; the upper
    // triangle by rows in parallel, then mirrored.
    let mut inv = vec![0.0; n * n];
    inv.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
        for j in i..n {
            row[j] = dot(&m[i * n + j..(i + 1) * n], &m[j * n + j..(j + 1) * n]);
        }
    });
    for i in 0..n {
        for j in 0..i {
            inv[i * n + j] = inv[j * n + i];
        }
    }
    inv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_solves_and_inverts() {
        let a0 = vec![4.0, 2.0, 0.6, 2.0, 5.0, 1.0, 0.6, 1.0, 3.0];
        let mut l = a0.clone();
        assert!(cholesky(&mut l, 3));
        // L Lᵀ == A
        for i in 0..3 {
            for j in 0..3 {
                let s: f64 = (0..3).map(|k| l[i * 3 + k] * l[j * 3 + k]).sum();
                assert!((s - a0[i * 3 + j]).abs() < 1e-12);
            }
        }
        let mut b = vec![1.0, 2.0, 3.0];
        solve_lower(&l, 3, &mut b);
        solve_upper_t(&l, 3, &mut b);
        for i in 0..3 {
            let s: f64 = (0..3).map(|k| a0[i * 3 + k] * b[k]).sum();
            assert!((s - (i + 1) as f64).abs() < 1e-12);
        }
        let inv = inverse_from_cholesky(&l, 3);
        for i in 0..3 {
            for j in 0..3 {
                let s: f64 = (0..3).map(|k| a0[i * 3 + k] * inv[k * 3 + j]).sum();
                assert!((s - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
        let mut not_pd = vec![1.0, 2.0, 2.0, 1.0];
        assert!(!cholesky(&mut not_pd, 2));
    }
}
