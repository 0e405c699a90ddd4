#!/usr/bin/env bash
# The test command: installs the S3-compatible test server if missing, then runs every
# test (unit, integration, end-to-end, and each benchmark once in test mode).
set -euo pipefail
cd "$(dirname "$0")/.."

S3S_VERSION=0.14.1
if ! command -v s3s-fs >/dev/null 2>&1 && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs" ]; then
  echo "installing s3s-fs $S3S_VERSION (the S3-compatible server the tests run against)" >&2
  cargo install s3s-fs --version "$S3S_VERSION" --features binary --locked
fi
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

cargo test --workspace --all-targets --locked "$@"

# The device back ends (cargo features, off by default). wgpu runs for real wherever a
# Vulkan driver is installed (Mesa's lavapipe on a machine without a GPU: .ci/run installs
# it and sets CONTRAIL_REQUIRE_DEVICE=wgpu so that a missing driver fails instead of
# skipping). cuda is compiled here and runs on a lent GPU (scripts/gpu-check.sh).
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
cargo test --locked -p contrail-kernels --features wgpu "$@"
cargo test --locked -p contrail-gbdt --features wgpu --test device "$@"
cargo test --locked -p contrail-nn --features wgpu --test device "$@"
cargo test --locked --features wgpu --test cli device_ "$@"
cargo check --locked --features wgpu,cuda
cargo check --locked -p contrail-gbdt --features wgpu,cuda --example gpu_check
