//! [`Accel`]: one device (a wgpu adapter or a CUDA GPU), the buffers on it, and the
//! launches of [`crate::kernels`] with their grids.
//!
//! CubeCL takes an array argument's length on trust (`unsafe`): every one here comes from
//! a [`Buf`] and its own length (`Buf::arg`, checked), and the kernels check their indices
//! against the row counts and table lengths passed alongside.
#![allow(unsafe_code)]

use std::panic::{catch_unwind, AssertUnwindSafe};

use cubecl::prelude::*;
use cubecl::server::Handle;

use crate::kernels;
use crate::AccelError;

/// A buffer of `u32` words on the device.
pub struct Buf {
    handle: Handle,
    len: usize,
}

impl Buf {
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The whole buffer as a kernel's array argument (of 32-bit elements).
    fn arg<R: Runtime>(&self) -> ArrayArg<R> {
        self.arg_of(self.len)
    }

    /// The buffer as an array argument of `len` elements: at most its words for 32-bit
    /// elements, half of them for 64-bit ones (checked).
    fn arg_of<R: Runtime>(&self, len: usize) -> ArrayArg<R> {
        assert!(
            len <= self.len,
            "an argument of {len} elements over {} words",
            self.len
        );
        // SAFETY: the length is within the buffer's (asserted; 64-bit callers pass half).
        unsafe { ArrayArg::from_raw_parts(self.handle.clone(), len) }
    }
}

/// What the chosen device is.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    /// `wgpu` or `cuda`.
    pub backend: &'static str,
    /// The adapter's or GPU's name, with the graphics API and kind for wgpu.
    pub name: String,
    /// Device memory, where the API tells it (CUDA).
    pub memory_bytes: Option<u64>,
    /// The largest buffer one kernel may bind.
    pub max_buffer_bytes: u64,
    /// Shared memory a cube may use.
    pub max_shared_bytes: usize,
    /// Multiprocessors, where the API tells them.
    pub units: Option<u32>,
    /// Histograms add packed 64-bit values (one atomic a bin) rather than two 32-bit sums.
    pub wide_atomics: bool,
}

impl std::fmt::Display for DeviceInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.backend, self.name)?;
        if let Some(m) = self.memory_bytes {
            write!(f, ", {:.1} GiB", m as f64 / (1u64 << 30) as f64)?;
        }
        if let Some(u) = self.units {
            write!(f, ", {u} multiprocessors")?;
        }
        write!(
            f,
            ", buffers up to {:.1} GiB, {} KiB shared memory a cube",
            self.max_buffer_bytes as f64 / (1u64 << 30) as f64,
            self.max_shared_bytes / 1024
        )?;
        if self.wide_atomics {
            write!(f, ", 64-bit atomics")?;
        }
        Ok(())
    }
}

enum Client {
    #[cfg(feature = "wgpu")]
    Wgpu(ComputeClient<cubecl::wgpu::WgpuRuntime>),
    #[cfg(feature = "cuda")]
    Cuda(ComputeClient<cubecl::cuda::CudaRuntime>),
}

/// Runs `$body` with `$c` the client and `$R` its runtime type.
macro_rules! with_client {
    ($self:expr, $c:ident, $R:ident => $body:expr) => {
        match &$self.client {
            #[cfg(feature = "wgpu")]
            Client::Wgpu($c) => {
                #[allow(dead_code)]
                type $R = cubecl::wgpu::WgpuRuntime;
                $body
            }
            #[cfg(feature = "cuda")]
            Client::Cuda($c) => {
                #[allow(dead_code)]
                type $R = cubecl::cuda::CudaRuntime;
                $body
            }
        }
    };
}

/// Threads per cube in every launch.
const CUBE: u32 = 256;
/// The most splits one partition launch counts in shared memory.
const MAX_SPLITS: usize = 2048;

/// A device and its client.
pub struct Accel {
    client: Client,
    pub info: DeviceInfo,
    /// Histograms of several leaves too large for one cube's shared memory together are
    /// built one leaf a cube from lists of their rows (else with device-memory atomics).
    /// On by default; `CONTRAIL_HIST=global` turns it off (for comparisons).
    pub grouped_histograms: bool,
    /// Rows a cube adds in the one-leaf-a-cube histograms: 4,096, or
    /// `CONTRAIL_HIST_ROWS` (at least 256). On an H200, 100 trees of depth 10 on 10 M rows
    /// took 2.15 s with 4,096, 2.46 s with 8,192, 2.42 s with 32,768
    /// (docs/gpu-performance.md, v9).
    pub hist_rows_a_cube: usize,
}

/// A (gradient sum, hessian sum) pair of histogram words as the CPU packs it:
/// `(gradient << 32) + hessian`, the gradient two's complement.
fn pack_pair(g: u32, h: u32) -> u64 {
    (((g as i32 as i64) << 32) as u64).wrapping_add(h as u64)
}

fn grouped_default() -> bool {
    std::env::var("CONTRAIL_HIST").map_or(true, |v| v != "global")
}

fn hist_rows_default() -> usize {
    std::env::var("CONTRAIL_HIST_ROWS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(4096)
        .max(256)
}

/// What a client's device is: its name and memory as the driver told them, its limits
/// and whether it adds 64-bit integers atomically, as the client reports them.
fn device_info<R: Runtime>(
    c: &ComputeClient<R>,
    backend: &'static str,
    name: String,
    memory_bytes: Option<u64>,
) -> DeviceInfo {
    use cubecl::ir::{features::AtomicUsage, StorageType, Type};
    let props = c.properties();
    let wide = Type::new(StorageType::Atomic(
        u64::as_type_native_unchecked().elem_type(),
    ));
    DeviceInfo {
        backend,
        name,
        memory_bytes,
        max_buffer_bytes: memory_bytes.map_or(props.memory.max_page_size, |m| {
            props.memory.max_page_size.min(m)
        }),
        max_shared_bytes: props.hardware.max_shared_memory_size,
        units: props.hardware.num_streaming_multiprocessors,
        wide_atomics: props.atomic_type_usage(wide).contains(AtomicUsage::Add),
    }
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

impl Accel {
    /// The best wgpu adapter (discrete, then integrated, virtual, then a software one such as
    /// Mesa's lavapipe), on whichever graphics API it has.
    #[cfg(feature = "wgpu")]
    pub fn wgpu() -> Result<Self, AccelError> {
        use cubecl::wgpu::{init_setup, AutoGraphicsApi, WgpuDevice};
        use std::sync::OnceLock;
        // A wgpu device is set up once a process; later opens reuse its client.
        static CHOSEN: OnceLock<Result<(WgpuDevice, String), String>> = OnceLock::new();
        let chosen = CHOSEN.get_or_init(|| {
            // List the adapters first (opening a kind that is absent panics inside cubecl),
            // then open the best kind there is.
            let instance =
                wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
            let adapters =
                cubecl::future::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
            let rank = |t: wgpu::DeviceType| match t {
                wgpu::DeviceType::DiscreteGpu => 0,
                wgpu::DeviceType::IntegratedGpu => 1,
                wgpu::DeviceType::VirtualGpu => 2,
                wgpu::DeviceType::Cpu => 3,
                wgpu::DeviceType::Other => 4,
            };
            let best = adapters
                .iter()
                .map(|a| a.get_info())
                .filter(|i| rank(i.device_type) < 4)
                .min_by_key(|i| rank(i.device_type))
                .ok_or_else(|| {
                    let seen: Vec<String> = adapters
                        .iter()
                        .map(|a| format!("{:?}", a.get_info().device_type))
                        .collect();
                    format!(
                        "adapters found: {}",
                        if seen.is_empty() {
                            "none".into()
                        } else {
                            seen.join(", ")
                        }
                    )
                })?;
            let device = match best.device_type {
                wgpu::DeviceType::DiscreteGpu => WgpuDevice::DiscreteGpu(0),
                wgpu::DeviceType::IntegratedGpu => WgpuDevice::IntegratedGpu(0),
                wgpu::DeviceType::VirtualGpu => WgpuDevice::VirtualGpu(0),
                _ => WgpuDevice::Cpu,
            };
            catch_unwind(AssertUnwindSafe(|| {
                let setup = init_setup::<AutoGraphicsApi>(&device, Default::default());
                let info = setup.adapter.get_info();
                format!("{} ({:?}, {:?})", info.name, info.backend, info.device_type)
            }))
            .map(|name| (device, name))
            .map_err(panic_text)
        });
        let (device, name) = chosen.as_ref().map_err(|last| AccelError::Unavailable {
            backend: "wgpu",
            what: "adapter".into(),
            reason: format!(
                "no Vulkan, Metal or DX12 adapter could be opened ({last}); on Debian, \
                 `apt-get install mesa-vulkan-drivers` gives a software one (lavapipe)"
            ),
        })?;
        let client = cubecl::wgpu::WgpuRuntime::client(device);
        let info = device_info(&client, "wgpu", name.clone(), None);
        Ok(Accel {
            grouped_histograms: grouped_default(),
            hist_rows_a_cube: hist_rows_default(),
            client: Client::Wgpu(client),
            info,
        })
    }

    /// CUDA GPU number `index`.
    #[cfg(feature = "cuda")]
    pub fn cuda(index: usize) -> Result<Self, AccelError> {
        let unavailable = |reason: String| AccelError::Unavailable {
            backend: "cuda",
            what: index.to_string(),
            reason,
        };
        // SAFETY: only tries to open the driver library by its usual names (no call into
        // it); a machine without one is told so instead of a panic from the loader.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(unavailable(
                "no CUDA driver library (libcuda.so) on this machine".into(),
            ));
        }
        let probe = catch_unwind(|| -> Result<(String, u64), String> {
            let count = cudarc::driver::CudaContext::device_count()
                .map_err(|e| format!("the CUDA driver did not answer: {e}"))?;
            if index >= count.max(0) as usize {
                return Err(format!("this machine has {count} CUDA device(s)"));
            }
            let ctx = cudarc::driver::CudaContext::new(index).map_err(|e| e.to_string())?;
            let name = ctx.name().map_err(|e| e.to_string())?;
            let mem = ctx.total_mem().map_err(|e| e.to_string())? as u64;
            Ok((name, mem))
        });
        let (name, mem) = match probe {
            Ok(Ok(x)) => x,
            Ok(Err(reason)) => return Err(unavailable(reason)),
            Err(p) => {
                return Err(unavailable(format!(
                    "the CUDA driver library could not be loaded ({})",
                    panic_text(p)
                )))
            }
        };
        let client = catch_unwind(|| {
            cubecl::cuda::CudaRuntime::client(&cubecl::cuda::CudaDevice::new(index))
        })
        .map_err(|p| unavailable(panic_text(p)))?;
        let info = device_info(&client, "cuda", name, Some(mem));
        Ok(Accel {
            grouped_histograms: grouped_default(),
            hist_rows_a_cube: hist_rows_default(),
            client: Client::Cuda(client),
            info,
        })
    }

    fn device_error(&self, reason: String) -> AccelError {
        AccelError::Device {
            backend: self.info.backend,
            reason,
        }
    }

    /// Checks that `words` u32 words fit one buffer.
    pub fn check_size(&self, what: &str, words: usize) -> Result<(), AccelError> {
        let need = words as u64 * 4;
        if need > self.info.max_buffer_bytes {
            return Err(AccelError::TooLarge {
                backend: self.info.backend,
                what: what.into(),
                need,
                limit: self.info.max_buffer_bytes,
            });
        }
        Ok(())
    }

    /// Copies `data` to a new device buffer.
    pub fn upload(&self, what: &str, data: &[u32]) -> Result<Buf, AccelError> {
        self.check_size(what, data.len())?;
        let handle = with_client!(self, c, R => c.create_from_slice(u32::as_bytes(data)));
        Ok(Buf {
            handle,
            len: data.len(),
        })
    }

    /// Moves `data` to a new device buffer of twice as many words (each `u64` as its low
    /// word, then its high word). Taking the vector avoids the copies a slice costs (on a
    /// lent H200, uploading 80 MB from a slice took 185 ms: two single-threaded copies
    /// into fresh pages before the transfer).
    pub fn upload_u64(&self, what: &str, data: Vec<u64>) -> Result<Buf, AccelError> {
        self.check_size(what, 2 * data.len())?;
        let len = 2 * data.len();
        let handle = with_client!(self, c, R => c.create(cubecl::bytes::Bytes::from_elems(data)));
        Ok(Buf { handle, len })
    }

    /// Writes `data` into `dst` (two words a value, low word first) in pieces of at most
    /// `chunk_bytes` (see [`Accel::write_words`]).
    pub fn write_u64(&self, dst: &Buf, data: &[u64], chunk_bytes: usize) -> Result<(), AccelError> {
        self.write_words(dst, u32::from_bytes(u64::as_bytes(data)), chunk_bytes)
    }

    /// Copies `data` to a new device buffer in pieces of at most `chunk_bytes` (see
    /// [`Accel::write_words`]): on a lent H200, 80 MB took 110 ms as one upload and 32 ms
    /// in 1 MiB pieces.
    pub fn upload_pieces(
        &self,
        what: &str,
        data: &[u32],
        chunk_bytes: usize,
    ) -> Result<Buf, AccelError> {
        let b = self.empty(what, data.len())?;
        self.write_words(&b, data, chunk_bytes)?;
        Ok(b)
    }

    /// Writes `data` into the start of `dst` in pieces of at most `chunk_bytes`: each
    /// piece is uploaded to a small buffer and copied into place by a kernel. Small pieces
    /// reuse host and staging memory from one call to the next, where one large upload
    /// allocates (and pins, and faults in) its whole size every time.
    pub fn write_words(
        &self,
        dst: &Buf,
        data: &[u32],
        chunk_bytes: usize,
    ) -> Result<(), AccelError> {
        if data.len() > dst.len {
            return Err(self.device_error(format!(
                "{} words into a buffer of {} words",
                data.len(),
                dst.len
            )));
        }
        let per = (chunk_bytes / 4).max(1);
        for (k, piece) in data.chunks(per).enumerate() {
            let n = piece.len();
            let src = Buf {
                handle: with_client!(self, c, R => c.create_from_slice(u32::as_bytes(piece))),
                len: n,
            };
            let cubes = self.cubes_for(n);
            with_client!(self, c, R => {
                kernels::copy_words::launch::<R>(
                    c,
                    CubeCount::Static(cubes, 1, 1),
                    CubeDim::new_1d(CUBE),
                    src.arg(),
                    dst.arg(),
                    (k * per) as u32,
                    n as u32,
                )
            });
        }
        Ok(())
    }

    /// A new buffer of `n` words, each `value`.
    pub fn filled(&self, what: &str, n: usize, value: u32) -> Result<Buf, AccelError> {
        let b = self.empty(what, n)?;
        self.fill(&b, value);
        Ok(b)
    }

    /// A new buffer of `n` words (at least one), not initialised.
    fn empty(&self, what: &str, n: usize) -> Result<Buf, AccelError> {
        self.check_size(what, n.max(1))?;
        let handle = with_client!(self, c, R => c.empty(n.max(1) * 4));
        Ok(Buf {
            handle,
            len: n.max(1),
        })
    }

    fn cubes_for(&self, n: usize) -> u32 {
        let units = self.info.units.unwrap_or(16).max(1);
        (n.div_ceil(CUBE as usize) as u32).clamp(1, units * 8)
    }

    /// Sets every word of `b` to `value`.
    pub fn fill(&self, b: &Buf, value: u32) {
        let cubes = self.cubes_for(b.len);
        with_client!(self, c, R => {
            kernels::fill::launch::<R>(
                c,
                CubeCount::Static(cubes, 1, 1),
                CubeDim::new_1d(CUBE),
                b.arg(),
                value,
                b.len as u32,
            )
        });
    }

    /// Reads a buffer back into `out` (as long as the buffer), copying in parallel.
    pub fn read_into(&self, b: &Buf, out: &mut [u32]) -> Result<(), AccelError> {
        use rayon::prelude::*;
        let bytes = self.fetch(b)?;
        let words = u32::from_bytes(&bytes);
        if words.len() < out.len() || out.len() != b.len {
            return Err(self.device_error(format!(
                "read {} words into {} (buffer of {})",
                words.len(),
                out.len(),
                b.len
            )));
        }
        out.par_chunks_mut(1 << 16)
            .zip(words[..b.len].par_chunks(1 << 16))
            .for_each(|(o, w)| o.copy_from_slice(w));
        Ok(())
    }

    /// Reads a buffer back. A launch that failed (a kernel the driver could not compile,
    /// say) is reported here: the back ends only log it when it happens.
    pub fn read(&self, b: &Buf) -> Result<Vec<u32>, AccelError> {
        Ok(u32::from_bytes(&self.fetch(b)?)[..b.len].to_vec())
    }

    /// The bytes of `b` once every launch before has run; a launch that failed is an
    /// error here.
    fn fetch(&self, b: &Buf) -> Result<cubecl::bytes::Bytes, AccelError> {
        let [bytes] = self.fetch_all([b])?;
        Ok(bytes)
    }

    /// The bytes of several buffers after one flush and one wait (each read is a round
    /// trip to the device: a deep histogram pass reads its counters and its histograms).
    fn fetch_all<const N: usize>(
        &self,
        bufs: [&Buf; N],
    ) -> Result<[cubecl::bytes::Bytes; N], AccelError> {
        with_client!(self, c, R => c.flush())
            .map_err(|e| self.device_error(format!("a launch failed: {e:?}")))?;
        let handles = bufs.iter().map(|b| b.handle.clone()).collect();
        let read = with_client!(self, c, R => cubecl::reader::read_sync(c.read_async(handles)))
            .map_err(|e| self.device_error(format!("reading a buffer: {e:?}")))?;
        let got = read.len();
        read.try_into()
            .map_err(|_| self.device_error(format!("{got} buffers read back of {N}")))
    }

    /// The histograms of `slots` leaves (those with `slot_of_leaf[leaf] != u32::MAX`):
    /// `slots · hist_len` packed sums, `(gradient sum << 32) + hessian sum` a bin, the
    /// wrapping sum of the rows' packed pairs in `gh` (two words a row: hessian, then
    /// gradient). `matrix` holds `n_rows` rows of `width` byte columns (four a word);
    /// column `c`'s bins start at `col_offset[c]`.
    ///
    /// With 64-bit atomics (CUDA) a row adds its packed pair to a bin in one atomic; without
    /// (WGSL) the gradient and hessian sums are two 32-bit atomics. Either way the sums are
    /// integers, the same whatever the order.
    #[allow(clippy::too_many_arguments)]
    pub fn histograms(
        &self,
        matrix: &Buf,
        width: u32,
        gh: &Buf,
        leaf_of: &Buf,
        slot_of_leaf: &Buf,
        col_offset: &Buf,
        n_rows: u32,
        hist_len: u32,
        slots: u32,
        slot_rows: &[u32],
    ) -> Result<Vec<u64>, AccelError> {
        let bins = hist_len as usize * slots as usize;
        let hist = self.filled("histograms", 2 * bins, 0)?;
        // Statically sized shared memory: CUDA allows 48 KiB of it without opting in.
        let shared_limit = self.info.max_shared_bytes.min(48 * 1024);
        // Several leaves that do not fit one cube's shared memory together, but one does:
        // list each leaf's rows, then one leaf a cube.
        let grouped = hist_len as usize * slots as usize * 8 > shared_limit
            && hist_len as usize * 8 <= shared_limit
            && slot_rows.len() == slots as usize
            && (slots as usize).next_power_of_two() * 8 <= shared_limit
            && self.grouped_histograms;
        if grouped {
            return self.histograms_grouped(
                matrix,
                width,
                gh,
                leaf_of,
                slot_of_leaf,
                col_offset,
                n_rows,
                hist_len,
                slot_rows,
                hist,
            );
        }
        // Shared memory only when the histograms of every slot of the pass fit one cube's.
        // (Cubes in grid rows each taking a group of slots, every row reading the leaf of
        // every row, measured slower than device-memory atomics on an H200:
        // docs/gpu-performance.md, v4.)
        let shared = hist_len as usize * slots as usize * 8 <= shared_limit;
        // The privatised kernel: one or two cubes a multiprocessor, each adding its copy once.
        let cubes = if shared {
            self.cubes_for(n_rows as usize)
                .min(2 * self.info.units.unwrap_or(8).max(1))
        } else {
            self.cubes_for(n_rows as usize)
        };
        // 64-bit atomics only in device memory: in shared memory they measured 4× slower
        // than two 32-bit ones on an H200 (a pass over 10 M rows: 0.93 ms against 0.23).
        if self.info.wide_atomics && !shared {
            with_client!(self, c, R => {
                let count = CubeCount::Static(cubes, 1, 1);
                let dim = CubeDim::new_1d(CUBE);
                kernels::hist_global_wide::launch::<R>(
                    c, count, dim, matrix.arg(), gh.arg_of(gh.len / 2), leaf_of.arg(), slot_of_leaf.arg(),
                    col_offset.arg(), hist.arg_of(bins), n_rows, hist_len, width,
                )
            });
            // Packed 64-bit sums, low word first.
            return self.read_pairs(&hist, |lo, hi| lo as u64 | (hi as u64) << 32);
        }
        with_client!(self, c, R => {
            let count = CubeCount::Static(cubes, 1, 1);
            let dim = CubeDim::new_1d(CUBE);
            if shared {
                kernels::hist_shared::launch::<R>(
                    c, count, dim, matrix.arg(), gh.arg(), leaf_of.arg(), slot_of_leaf.arg(),
                    col_offset.arg(), hist.arg(), n_rows, hist_len, slots, width,
                )
            } else {
                kernels::hist_global::launch::<R>(
                    c, count, dim, matrix.arg(), gh.arg(), leaf_of.arg(), slot_of_leaf.arg(),
                    col_offset.arg(), hist.arg(), n_rows, hist_len, width,
                )
            }
        });
        self.read_pairs(&hist, pack_pair)
    }

    /// A buffer of word pairs read back as one `u64` a pair (`combine(first, second)`),
    /// converted in parallel.
    fn read_pairs(&self, hist: &Buf, combine: fn(u32, u32) -> u64) -> Result<Vec<u64>, AccelError> {
        let bytes = self.fetch(hist)?;
        Ok(Self::pairs(hist, &bytes, combine))
    }

    /// [`Accel::read_pairs`] on bytes already read back.
    fn pairs(hist: &Buf, bytes: &[u8], combine: fn(u32, u32) -> u64) -> Vec<u64> {
        use rayon::prelude::*;
        let words = u32::from_bytes(bytes);
        let n = hist.len.min(words.len()) / 2;
        let mut out = vec![0u64; n];
        out.par_chunks_mut(1 << 14)
            .zip(words[..2 * n].par_chunks(2 << 14))
            .for_each(|(o, w)| {
                for (x, p) in o.iter_mut().zip(w.chunks_exact(2)) {
                    *x = combine(p[0], p[1]);
                }
            });
        out
    }

    /// Applies `n_splits` splits (see [`kernels::split_rows`]) and returns each split's
    /// left row count. `table` holds [`kernels::SPLIT_WORDS`] words a split.
    #[allow(clippy::too_many_arguments)]
    pub fn split_rows(
        &self,
        columns: &Buf,
        col_words: u32,
        leaf_of: &Buf,
        split_of_leaf: &Buf,
        table: &Buf,
        n_rows: u32,
        n_splits: usize,
    ) -> Result<Vec<u32>, AccelError> {
        if n_splits > MAX_SPLITS || table.len < n_splits * kernels::SPLIT_WORDS {
            return Err(AccelError::Unsupported {
                backend: self.info.backend,
                reason: format!(
                    "{n_splits} splits in one pass (at most {MAX_SPLITS}), table of {} words",
                    table.len
                ),
            });
        }
        let counts = self.filled("split counts", n_splits, 0)?;
        let max_splits = (n_splits.max(1)).next_power_of_two() as u32;
        let cubes = self.cubes_for(n_rows as usize);
        with_client!(self, c, R => {
            kernels::split_rows::launch::<R>(
                c,
                CubeCount::Static(cubes, 1, 1),
                CubeDim::new_1d(CUBE),
                columns.arg(),
                split_of_leaf.arg(),
                table.arg(),
                counts.arg(),
                leaf_of.arg(),
                n_rows,
                col_words,
                n_splits as u32,
                split_of_leaf.len as u32,
                max_splits,
            )
        });
        let mut v = self.read(&counts)?;
        v.truncate(n_splits);
        Ok(v)
    }

    /// Sums the leaf values of a forest for `n_rows` rows (see [`kernels::predict_binned`]).
    #[allow(clippy::too_many_arguments)]
    pub fn predict(
        &self,
        bins: &Buf,
        col_words: u32,
        table: &Buf,
        leaf_value: &[f32],
        n_rows: usize,
        n_trees: u32,
        node_base: u32,
    ) -> Result<Vec<f32>, AccelError> {
        let out = self.filled("predictions", n_rows, 0)?;
        self.predict_into(
            bins, col_words, table, leaf_value, n_rows, n_trees, node_base, &out,
        )?;
        let mut words = vec![0u32; out.len];
        self.read_into(&out, &mut words)?;
        Ok(words.into_iter().take(n_rows).map(f32::from_bits).collect())
    }

    /// [`Accel::predict`] into `out` (`f32`, `n_rows` long), left on the device.
    #[allow(clippy::too_many_arguments)]
    pub fn predict_into(
        &self,
        bins: &Buf,
        col_words: u32,
        table: &Buf,
        leaf_value: &[f32],
        n_rows: usize,
        n_trees: u32,
        node_base: u32,
        out: &Buf,
    ) -> Result<(), AccelError> {
        if out.len < n_rows.max(1) {
            return Err(self.device_error(format!(
                "{n_rows} predictions into a buffer of {} words",
                out.len
            )));
        }
        let leaves = self.upload_f32("leaf values", leaf_value)?;
        let cubes = self.cubes_for(n_rows);
        with_client!(self, c, R => {
            kernels::predict_binned::launch::<R>(
                c,
                CubeCount::Static(cubes, 1, 1),
                CubeDim::new_1d(CUBE),
                bins.arg(),
                table.arg(),
                leaves.arg(),
                out.arg_of(n_rows.max(1)),
                n_rows as u32,
                col_words,
                n_trees,
                node_base,
            )
        });
        Ok(())
    }

    /// A new buffer holding `data`.
    pub fn upload_f32(&self, what: &str, data: &[f32]) -> Result<Buf, AccelError> {
        self.check_size(what, data.len().max(1))?;
        let handle = if data.is_empty() {
            with_client!(self, c, R => c.create_from_slice(f32::as_bytes(&[0.0])))
        } else {
            with_client!(self, c, R => c.create_from_slice(f32::as_bytes(data)))
        };
        Ok(Buf {
            handle,
            len: data.len().max(1),
        })
    }

    /// Reads an `f32` buffer back.
    pub fn read_f32(&self, b: &Buf) -> Result<Vec<f32>, AccelError> {
        Ok(self.read(b)?.into_iter().map(f32::from_bits).collect())
    }

    /// [`Accel::histograms`] one leaf a cube: [`kernels::gather_rows`] lists each slot's
    /// rows (`slot_rows[s]` of them, as the host counted), then [`kernels::hist_rows`] adds
    /// a piece of one slot's list in shared memory per cube. A count that disagrees with
    /// the device's rows is an error, not a wrong histogram.
    #[allow(clippy::too_many_arguments)]
    fn histograms_grouped(
        &self,
        matrix: &Buf,
        width: u32,
        gh: &Buf,
        leaf_of: &Buf,
        slot_of_leaf: &Buf,
        col_offset: &Buf,
        n_rows: u32,
        hist_len: u32,
        slot_rows: &[u32],
        hist: Buf,
    ) -> Result<Vec<u64>, AccelError> {
        let slots = slot_rows.len();
        let mut start = Vec::with_capacity(slots + 1);
        let mut total = 0u64;
        for &l in slot_rows {
            start.push(total as u32);
            total += l as u64;
        }
        if total > n_rows as u64 {
            return Err(
                self.device_error(format!("{total} rows in the leaves of a pass, of {n_rows}"))
            );
        }
        start.push(total as u32);
        let list = self.filled("rows by leaf", total as usize, 0)?;
        let fill = self.filled("rows by leaf: counters", slots, 0)?;
        let starts = self.upload("rows by leaf: starts", &start)?;
        // At most 65,535 cubes.
        let per = self.hist_rows_a_cube.max((total as usize).div_ceil(65_535));
        let mut work: Vec<u32> = Vec::new();
        for (s, &l) in slot_rows.iter().enumerate() {
            let mut k = 0usize;
            while k < l as usize {
                let end = (k + per).min(l as usize);
                work.extend([s as u32, start[s] + k as u32, start[s] + end as u32]);
                k = end;
            }
        }
        let cubes = (work.len() / 3) as u32;
        if cubes > 0 {
            let work = self.upload("rows by leaf: work", &work)?;
            // Tiles of rows a cube for the gather: at least 16,384, at most 65,535 cubes.
            let tile = 16_384u32.max(n_rows.div_ceil(65_535));
            let gather = n_rows.div_ceil(tile).max(1);
            // Slots rounded up to a power of two: few shapes to compile.
            let max_slots = (slots.next_power_of_two() as u32).max(32);
            with_client!(self, c, R => {
                kernels::gather_rows::launch::<R>(
                    c,
                    CubeCount::Static(gather, 1, 1),
                    CubeDim::new_1d(CUBE),
                    leaf_of.arg(),
                    slot_of_leaf.arg(),
                    starts.arg(),
                    fill.arg(),
                    list.arg(),
                    n_rows,
                    slots as u32,
                    max_slots,
                    tile,
                );
                kernels::hist_rows::launch::<R>(
                    c,
                    CubeCount::Static(cubes, 1, 1),
                    CubeDim::new_1d(CUBE),
                    matrix.arg(),
                    gh.arg(),
                    list.arg(),
                    work.arg(),
                    col_offset.arg(),
                    hist.arg(),
                    hist_len,
                    width,
                )
            });
        }
        let [counts, sums] = self.fetch_all([&fill, &hist])?;
        let counts = u32::from_bytes(&counts);
        if let Some(s) = (0..slots).find(|&s| counts.get(s) != Some(&slot_rows[s])) {
            return Err(self.device_error(format!(
                "leaf slot {s} has {:?} rows on the device, {} by the host's count",
                counts.get(s),
                slot_rows[s]
            )));
        }
        Ok(Self::pairs(&hist, &sums, pack_pair))
    }

    /// Each row's gradient and hessian (one of the `OBJ_*` objectives of
    /// [`kernels::gradients`], with its parameter `a`) at its score (32.32 fixed point:
    /// integer part `int`, fraction `frac`, as [`Accel::add_scores`] keeps it), times its
    /// weight (`None`: 1), as `f32` pairs in `gh` (two words a row, hessian first), and the
    /// largest `|gradient|` and hessian over the rows (a NaN, or a negative hessian, shows
    /// as such in the result). Then [`Accel::quantise_pairs`] turns them into fixed point.
    #[allow(clippy::too_many_arguments)]
    pub fn gradients(
        &self,
        objective: u32,
        a: f32,
        int: &Buf,
        frac: &Buf,
        label: &Buf,
        weight: Option<&Buf>,
        gh: &Buf,
        n_rows: usize,
    ) -> Result<(f32, f32), AccelError> {
        let n = n_rows;
        if [int.len, frac.len, label.len].iter().any(|&l| l < n) || gh.len < 2 * n {
            return Err(self.device_error(format!("gradients of {n} rows: a buffer is short")));
        }
        if weight.is_some_and(|w| w.len < n) {
            return Err(self.device_error(format!("gradients of {n} rows: the weights are short")));
        }
        let maxima = self.filled("gradient maxima", 2, 0)?;
        let cubes = self.cubes_for(n);
        let w = weight.unwrap_or(label);
        with_client!(self, c, R => {
            kernels::gradients::launch::<R>(
                c,
                CubeCount::Static(cubes, 1, 1),
                CubeDim::new_1d(CUBE),
                int.arg(),
                frac.arg(),
                label.arg(),
                w.arg(),
                maxima.arg_of(2),
                gh.arg(),
                n as u32,
                a,
                objective,
                weight.is_some(),
            )
        });
        let m = self.read(&maxima)?;
        Ok((f32::from_bits(m[0]), f32::from_bits(m[1])))
    }

    /// Turns the `f32` pairs of [`Accel::gradients`] into fixed point in place:
    /// `floor(x · s + 1/2)`, the gradient as a two's complement word.
    pub fn quantise_pairs(&self, gh: &Buf, n_rows: usize, sg: f32, sh: f32) {
        let cubes = self.cubes_for(n_rows);
        with_client!(self, c, R => {
            kernels::quantise_pairs::launch::<R>(
                c,
                CubeCount::Static(cubes, 1, 1),
                CubeDim::new_1d(CUBE),
                gh.arg(),
                n_rows.min(gh.len / 2) as u32,
                sg,
                sh,
            )
        });
    }

    /// Adds `delta` (`f32`) to the 32.32 fixed-point scores (`frac`, `int`) of the first
    /// `n_rows` rows.
    pub fn add_scores(&self, delta: &Buf, frac: &Buf, int: &Buf, n_rows: usize) {
        let n = n_rows.min(delta.len).min(frac.len).min(int.len);
        let cubes = self.cubes_for(n);
        with_client!(self, c, R => {
            kernels::add_scores::launch::<R>(
                c,
                CubeCount::Static(cubes, 1, 1),
                CubeDim::new_1d(CUBE),
                delta.arg(),
                frac.arg(),
                int.arg(),
                n as u32,
            )
        });
    }

    /// Waits for every launch so far (for timings).
    pub fn sync(&self) -> Result<(), AccelError> {
        with_client!(self, c, R => cubecl::future::block_on(c.sync()))
            .map_err(|e| self.device_error(format!("waiting for the device: {e:?}")))
    }
}
