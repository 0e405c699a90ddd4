//! Device kernels for tree training, written once in CubeCL (Rust compiled to WGSL/SPIR-V
//! for wgpu and to CUDA C for CUDA), and [`Accel`], the device they run on.
//!
//! The trainer keeps on the device: the row-major bin matrix (one byte per column, four
//! columns a word), the feature-major bins of every usable feature (for partitions and
//! tree walks), the packed fixed-point gradient and hessian of every row, the leaf of every
//! row and, when the device computes the gradients, every row's score (32.32 fixed point),
//! label and weight.
//!
//! - `gradients` and `quantise_pairs`: each row's gradient pair of the objective in `f32`,
//!   the largest |gradient| and hessian (atomic maxima, two words back to the host for the
//!   scales), then fixed point in place.
//! - `hist_shared`, `gather_rows` + `hist_rows`, `hist_global` (`hist_global_wide` with
//!   64-bit atomics on CUDA): the histograms of the leaves asked for, as integer sums with
//!   atomics, in shared memory where they fit (all leaves in one cube, or one leaf a cube
//!   from lists of their rows), else in device memory. Integer sums do not depend on the
//!   order of the atomics, so a histogram is the same on every device and every run.
//! - `split_rows`: moves the rows of split leaves to their new leaves, counts the left rows.
//! - `predict_binned` and `add_scores`: walk trees on binned rows (prediction, and the
//!   score update after each tree), add to 32.32 fixed-point scores.
//!
//! Only summaries cross back: a histogram per leaf, a count per split and two words of
//! gradient maxima a tree (with host gradients instead, the leaf of every row once a tree).

//! Without the `wgpu` or `cuda` feature the crate holds only the types that name devices.

mod error;
pub use error::AccelError;

#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod accel;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub mod kernels;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub use accel::{Accel, Buf, DeviceInfo};
