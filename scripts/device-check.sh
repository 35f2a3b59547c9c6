#!/usr/bin/env bash
# The GPU check, in one `device` call on the lent H200 (../shared/device/README.md): from the bundle
# `cargo xtask device-bundle` left in .device/part*/ (carried there part by part), it measures burn-cuda
# training and evaluation beside PyTorch at the smoke and full shapes, at the same arithmetic (TF32 or
# FP32, measured); runs the smoke profile with --device cuda through train, quantize, export, eval (ONNX
# Runtime's CUDA and CPU execution providers) and report; times the full profile's first training steps
# to project the whole run; and prints one table last. Logs, metrics.json, the report and the golden
# table go to $OUT.
#
#   scripts/device-check.sh            # there, after the last part arrived
#   scripts/device-check.sh --dry-run  # here (and in CI): the same steps on the CPU build, the CPU ONNX
#                                      # Runtime and small limits, from `cargo xtask device-bundle --dry-run`
set -euo pipefail

dry_run=false
[[ "${1:-}" == "--dry-run" ]] && dry_run=true
root="$(cd "$(dirname "$0")/.." && pwd)"
bundle="$root/.device"
out="${OUT:-$root/target/device-check}"
mkdir -p "$out"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
log="$out/device-check.log"
exec > >(tee "$log") 2>&1
started=$(date +%s)
step() { echo "== $(( $(date +%s) - started )) s: $*"; }

# The test venv's Python here (what `cargo xtask setup` installed), the machine's there.
if $dry_run; then
    python="${VGGQ_PYTHON:?the dry run needs VGGQ_PYTHON, the test venv cargo xtask setup installs}"
else
    python=python3
fi

step "reassembling the bundle"
[[ -f "$bundle/part01/SHA256SUMS" ]] || { echo "no bundle in $bundle: run cargo xtask device-bundle and carry its parts" >&2; exit 1; }
mkdir -p "$work/bundle"
while read -r _ name; do
    cat "$bundle"/part*/"$name".xz.* | "$python" -c 'import lzma, sys; sys.stdout.buffer.write(lzma.decompress(sys.stdin.buffer.read()))' > "$work/bundle/$name"
done < "$bundle/part01/SHA256SUMS"
(cd "$work/bundle" && sha256sum --quiet --check "$bundle/part01/SHA256SUMS")
chmod +x "$work/bundle/vggq"
vggq="$work/bundle/vggq"
data="$work/bundle/cifar10-jpeg.tar.gz"
export ORT_DYLIB_PATH="$(ls "$work"/bundle/libonnxruntime.so.*)"

if $dry_run; then
    device=cpu
    seconds=1
    # The smoke profile on a few hundred images; the full shapes' benchmark at width/16 (a CPU needs
    # seconds for one full-width step), two full-size training steps.
    smoke_limits=(--train-images 320 --eval-images 320 --calibration-batches 2 --epochs 1)
    full_steps=2
    full_shapes=(--size 128 --width-div 16 --hidden 256)
else
    device=cuda
    seconds=10
    smoke_limits=()
    full_steps=60
    full_shapes=(--size 128 --width-div 1 --hidden 4096)
    # The CUDA 13, cuBLAS, cuDNN 9 and NVRTC libraries of the machine's PyTorch, for ONNX Runtime's CUDA
    # provider and burn-cuda's NVRTC; the toolkit's headers for the kernels burn-cuda compiles.
    nvidia_libs="$("$python" -c 'import nvidia, glob, os; print(":".join(sorted({os.path.dirname(p) for d in nvidia.__path__ for p in glob.glob(os.path.join(d, "**", "lib*.so*"), recursive=True)})))')"
    export LD_LIBRARY_PATH="$nvidia_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export CUDA_PATH="${CUDA_PATH:-/usr/local/cuda}"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.csv"
fi

step "probe"
"$vggq" device --json --precision | tee "$out/device.json"
precision="$("$python" -c 'import json, sys; p = json.load(open(sys.argv[1]))["precision"]; print("tf32" if "tf32" in (p["matmul"], p["conv"]) else "fp32")' "$out/device.json")"

step "training and evaluation speed, vggq beside PyTorch ($precision)"
# This run's figures only: $out may hold an earlier run's (a dry run's target/device-check does).
: > "$out/bench.txt"
bench() {  # label, shape flags...
    local label="$1"; shift
    "$vggq" bench-train --device "$device" --seconds "$seconds" "$@" | sed "s/^/$label: /" | tee -a "$out/bench.txt"
    "$python" "$root/scripts/torch_bench_precision.py" "$precision" "$work/bundle/torch_train_bench.py" \
        --device "$device" --seconds "$seconds" "$@" | sed "s/^/$label: /" | tee -a "$out/bench.txt"
}
bench smoke --size 32 --width-div 4 --hidden 512
bench full "${full_shapes[@]}"

step "the smoke profile, --device $device"
smoke="$work/smoke"
"$vggq" train --profile smoke --device "$device" --out "$smoke" --data "$data" "${smoke_limits[@]}"
"$vggq" quantize --run "$smoke" --device "$device" --data "$data"
"$vggq" export --run "$smoke"
"$vggq" eval --run "$smoke" --device "$device" --data "$data"
"$vggq" report --run "$smoke"
cp "$smoke/metrics.json" "$smoke/report.md" "$smoke/golden_table.md" "$smoke/train_report.json" "$smoke/quant_report.json" "$out/"

step "the full profile's first $full_steps training steps"
full="$work/full"
"$vggq" train --profile full --device "$device" --init random --out "$full" --data "$data" \
    --train-images $((full_steps * 32)) --eval-images 32 --epochs 1 2>&1 | tee "$out/full-steps.log"

step "summary"
"$python" - "$out" "$full/train_report.json" <<'PY'
import json, re, sys
out, full_report = sys.argv[1], sys.argv[2]
bench = open(f"{out}/bench.txt").read().splitlines()
def rate(label, who, what):
    pattern = re.compile(rf"^{label}: {who}.* {what}: ([0-9.]+) img/s")
    return next((float(m.group(1)) for line in bench if (m := pattern.match(line))), float("nan"))
device = json.load(open(f"{out}/device.json"))
metrics = json.load(open(f"{out}/metrics.json"))
full = json.load(open(full_report))
images_per_second = full["epochs"][0]["train_images_per_sec"]
# The full run trains 5 epochs of 40,000 images in FP32 and again in QAT (fp32match), QAT at the speed
# the benchmark measured relative to FP32 training; evaluation passes are left out.
qat_factor = rate("full", "vggq", "qat train") / rate("full", "vggq", "train")
projected_minutes = 5 * 40_000 * (1 / images_per_second + 1 / (images_per_second * qat_factor)) / 60
rows = [("device", device["reason"]), ("precision", json.dumps(device["precision"]))]
for label in ("smoke", "full"):
    for what in ("train", "eval"):
        ours, torch = rate(label, "vggq", what), rate(label, "torch", what)
        rows.append((f"{label} {what} img/s", f"vggq {ours:.1f} | torch {torch:.1f} | ratio {ours / torch:.2f}x"))
    rows.append((f"{label} qat train img/s", f"vggq {rate(label, 'vggq', 'qat train'):.1f}"))
for row in metrics["rows"]:
    rows.append((f"{row['file']} [{row['requested']}]", f"{row['placement']} | top-1 {row['top1']:.2f} % | {row['inference']['images_per_s']:.1f} img/s | {row['size_mib']:.2f} MiB"))
for u in metrics["unavailable"]:
    rows.append((f"{u['provider']} not available", u["reason"]))
rows.append(("full profile training", f"{images_per_second:.1f} img/s over its first steps -> whole run about {projected_minutes:.1f} min (FP32 + QAT)"))
width = max(len(k) for k, _ in rows)
print("\n".join(f"{k:<{width}} | {v}" for k, v in rows))
PY
