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
# Every device test (the kernels, the trees, the networks, the binary: the test targets
# named `kernels` and `device`) is built by one command, so the GPU stack and every crate
# whose features it widens compile once: one `-p X --features wgpu` per package unified
# features differently each time and rebuilt ~370 crates over four builds, 45 of CI's 80
# minutes (a second command with other test targets rebuilds too).
cargo test --locked --workspace --features wgpu --test kernels --test device "$@"
cargo check --locked --workspace --features wgpu,cuda --lib --bins --examples
