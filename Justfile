# MoCo harness recipes. `just --list` shows them all.

# The main job on the built-in dataset (no download, no GPU; about a minute on 2 cores). The
# config measures kNN at init itself (eval.knn_at_init) and ends with the init → final line.
demo:
    cargo run --release -- train experiments/demo.toml --out results/runs/demo

# Fast test suite (what CI runs), in the release profile: it reuses the main command's build.
test:
    cargo test --release

# The same tests in the debug profile (a second build of every dependency): debug assertions
# on, and kernel outputs pre-filled with NaN, so a kernel that leaves an element unwritten fails.
test-debug:
    cargo test

# Every test, including the ones marked slow.
test-all:
    cargo test --release -- --include-ignored

# Clippy with warnings as errors.
lint:
    cargo clippy --all-targets -- -D warnings

# Format the code.
fmt:
    cargo fmt

# MoCo on real CIFAR-10 at CPU scale (expects ../shared/data/cifar10-jpeg or set data.path).
cifar-cpu mode="moco":
    cargo run --release -- train experiments/cifar10-cpu.toml --set dictionary.mode={{mode}} --out results/runs/cifar10-cpu-{{mode}} --knn-at-init

# Regenerate the golden MoCo-step fixture with PyTorch (needs a venv with torch, safetensors, numpy).
golden python="python3":
    {{python}} scripts/golden_moco_step.py

# Run experiments/NAME.toml as a sweep (resumable; results/NAME/).
sweep name:
    cargo run --release -- sweep experiments/{{name}}.toml

# Redraw results/NAME's figures from its CSV files.
plot name:
    cargo run --release -- plot results/{{name}}

# Ours against PyTorch on this CPU, in one run: step img/s, peak RSS, per-op breakdown, K cost,
# augmentation (bench/README.md). `just bench step 256` runs one part.
bench *args:
    bench/run.sh {{args}}

# The venv the PyTorch side of the benchmarks needs (torch + torchvision from PyPI, ~3 GB).
bench-venv:
    python3 -m venv bench/.venv && bench/.venv/bin/pip install -r bench/requirements.txt

# The CUDA binary on a machine without a system CUDA toolkit, from PyPI's CUDA 13.0 wheels
# (the team's kit in ../shared/cuda; sm_90 = H100/H200 unless CUDA_COMPUTE_CAP says otherwise).
# Result: dist-cuda/moco.xz + run.sh, to carry to the GPU machine. With a system toolkit instead:
# `cargo build --release --features cuda`.
build-cuda features="cuda" kit="../shared/cuda":
    CARGO_TARGET_DIR=target-cuda CUDAFORGE_THREADS=2 {{kit}}/build-cuda.sh --features {{features}} --bin moco --out dist-cuda --compress .

# Publish a run's encoder on the Hugging Face Hub (token: HF_TOKEN or `hf auth login`).
push run repo:
    cargo run --release -- push {{run}} --repo {{repo}}

# Check a run's exported encoder in PyTorch: torchvision ResNet, strict=True, features equal to
# `moco embed`'s on the same inputs (needs `just bench-venv`; not part of CI).
check-export run data="builtin":
    cargo run --release -- push {{run}} --repo local/check --export-only target/export-check
    cargo run --release -- embed target/export-check/model.safetensors --data {{data}} --limit 256 --with-inputs --out target/export-check/feats.safetensors
    bench/.venv/bin/python bench/torch_check_export.py target/export-check target/export-check/feats.safetensors
