//! Device kernels for tree training, written once in CubeCL (Rust compiled to WGSL/SPIR-V
//! for wgpu and to CUDA C for CUDA), and [`Accel`], the device they run on.
//!
//! The trainer keeps on the device: the row-major bin matrix (one byte per column, four
//! columns a word), the feature-major bins of every usable feature (for partitions), the
//! packed fixed-point gradient and hessian of every row, and the leaf of every row. A
//! histogram pass adds each row of the leaves asked for into its leaf's histogram with
//! 32-bit integer atomics; a partition pass moves the rows of split leaves to their new
//! leaves and counts the left rows. Integer sums do not depend on the order of the
//! atomics, so histograms (and so splits and trees) are the CPU's, bit for bit.
//!
//! Only summaries cross back: a histogram per leaf and a count per split, and the leaf of
//! every row once a tree is grown. Prediction walks a forest's trees on binned rows and
//! adds leaf values in `f32`.
//!
//! Without the `wgpu` or `cuda` feature the crate holds only the types that name devices.

mod error;
pub use error::AccelError;

#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod accel;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub mod kernels;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub use accel::{Accel, Buf, DeviceInfo};
