#!/usr/bin/env bash
# The GPU check, on a lent GPU machine (CUDA 13 driver, no Rust): conformance of the cuda
# and wgpu back ends against the CPU, the measured copy bandwidth, then the training
# benchmark (10,000,000 airline-like rows × 8 features, 100 trees of depth 10) on each
# device and the histogram pass's bandwidth. Prints a short table last.
#
# Here (the build machine):
#   scripts/gpu-check.sh --build      # release build with --features wgpu,cuda into .gpu/
#                                     # (the check and the contrail binary, one feature set)
# On the GPU machine (the device tool carries .gpu and .gl, the Vulkan loader's packages):
#   scripts/gpu-check.sh              # at most about 8 minutes
#   NN=1 scripts/gpu-check.sh         # then the neural demand model, Contrail vs PyTorch on
#                                     # cuda (scripts/compare_nn.py, batch 4096)
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--build" ]; then
  set -e
  # The lent machines have the CUDA 13.0 driver; without nvcc here cudarc would take its
  # newest bindings.
  CUDARC_CUDA_VERSION="${CUDARC_CUDA_VERSION:-13000}" \
    cargo build --release --locked --workspace --features wgpu,cuda --bin contrail --example gpu_check
  mkdir -p .gpu
  cp "${CARGO_TARGET_DIR:-target}/release/examples/gpu_check" .gpu/gpu_check
  cp "${CARGO_TARGET_DIR:-target}/release/contrail" .gpu/contrail
  strip .gpu/gpu_check .gpu/contrail
  # The device tool carries 64 MiB at most: the binary travels compressed.
  gzip -6 -f .gpu/contrail
  ls -la .gpu
  exit 0
fi

OUT="${OUT:-/tmp/gpu-check-out}"
mkdir -p "$OUT"
# The Vulkan loader (wgpu reaches the NVIDIA driver through it).
if [ -d .gl ] && ! ldconfig -p | grep -q 'libvulkan.so.1 '; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
for icd in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json; do
  if [ -f "$icd" ] && [ -z "${VK_DRIVER_FILES:-}" ]; then export VK_DRIVER_FILES="$icd"; fi
done
# NVRTC (CubeCL compiles its CUDA kernels at run time) and the driver, wherever they are.
for lib in libnvrtc.so libcuda.so; do
  if ! ldconfig -p | grep -q "$lib"; then
    d=$(find /usr/local /opt /usr/lib -name "$lib*" 2>/dev/null | head -1)
    [ -n "$d" ] && export LD_LIBRARY_PATH="$(dirname "$d")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  fi
done
echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv 2>&1 | tee "$OUT/nvidia-smi.txt"

# The copy-bandwidth ceiling: a 2 GiB device-to-device copy, median of 10 (bytes read
# plus bytes written over time).
python3 - <<'PY' 2>&1 | tee "$OUT/copy.txt"
try:
    import torch
    x = torch.rand(2 * 1024**3 // 4, device="cuda")
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    torch.cuda.synchronize()
    ts = []
    for _ in range(10):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); y.copy_(x); e.record(); torch.cuda.synchronize()
        ts.append(s.elapsed_time(e) / 1e3)
    ts.sort()
    t = ts[len(ts) // 2]
    print(f"| copy bandwidth (2 GiB device to device, torch) | cuda | {2 * x.numel() * 4 / t / 1e9:.0f} GB/s read+write | |")
except Exception as e:
    print(f"| copy bandwidth | cuda | not measured: {e} | |")
PY

BIN="${BIN:-.gpu/gpu_check}"
timeout 420 "$BIN" --rows "${ROWS:-10000000}" --trees "${TREES:-100}" --cpu-trees "${CPU_TREES:-5}" ${CHECK_ARGS:---compare-histograms} 2>&1 | tee "$OUT/gpu_check.log"
rc=${PIPESTATUS[0]}
if [ -n "${NN:-}" ] && [ -f .gpu/contrail.gz ]; then
  echo
  gunzip -c .gpu/contrail.gz > /tmp/contrail && chmod +x /tmp/contrail
  PYTHONUNBUFFERED=1 timeout 240 python3 scripts/compare_nn.py --device cuda --exe /tmp/contrail \
    --system-python --rows "${NN_ROWS:-200000}" --valid-rows 20000 --epochs "${NN_EPOCHS:-4}" \
    --batch 4096 --threads 16 2>&1 | tee "$OUT/compare_nn.log"
  [ "${PIPESTATUS[0]}" = 0 ] || rc=1
fi
echo
grep '^| copy' "$OUT/copy.txt"
exit "$rc"
