#!/usr/bin/env bash
# The GPU check, in one `device` call on the lent H200 (../shared/device/README.md): from the bundle
# `cargo xtask device-bundle` left in .device/part*/ (carried there part by part), it
#   1. probes the GPU (vggq device) with CUDA_PATH found from nvcc;
#   2. measures burn-cuda training and evaluation beside PyTorch at the smoke and full shapes, the two
#      alternating in rounds (vggq bench-train), PyTorch at the arithmetic vggq was measured to use;
#   3. runs the smoke profile with --device cuda through train, quantize, export, eval (ONNX Runtime's
#      CUDA and CPU providers) and report, twice with the same cubecl autotune cache, and compares the
#      two packages' SHA256SUMS;
#   4. times the full profile's first training steps to project the whole run;
# and prints one table last, also written to $OUT/summary.txt. Each stage runs on its own: one that
# fails is named in the summary and the others still run.
#
# $OUT gets at most 8 files (what the device tool brings back): device-check.log, summary.txt,
# bench.txt, golden_table.md, metrics.json, report.md, and results.tar.gz with everything else (the
# probe, the reports, both runs' SHA256SUMS and manifests, the autotune caches, the full steps' log).
#
# Plan for the H200 (8 minutes of the 10 a call may take), from the dry run's stage times on this
# project's 2-core CPU scaled by the CPU/GPU ratio of PyTorch's own training figures (torch 2.15 CPU
# here: 752 / 6.8 img/s at the smoke / full shapes; an H100-class GPU: tens of thousands / about 1,500):
#   probe 15 s | bench smoke 3 x 2 x 3 figures x (warm-up + 3 s) ~ 100 s | bench full ~ 120 s |
#   smoke run 1 (cubecl compiles and tunes its kernels) ~ 120 s | smoke run 2 (cache warm) ~ 60 s |
#   full steps 60 x 32 images ~ 30 s | summary 2 s.
#
#   scripts/device-check.sh            # there, after the last part arrived
#   scripts/device-check.sh --dry-run  # here (and in CI): the same stages on the CPU build, the CPU ONNX
#                                      # Runtime and small limits, from `cargo xtask device-bundle --dry-run`
#   VGGQ_CHECK_FAIL=<stage> ...        # rehearses a failing stage (the rest must still run)
set -uo pipefail

dry_run=false
[[ "${1:-}" == "--dry-run" ]] && dry_run=true
root="$(cd "$(dirname "$0")/.." && pwd)"
bundle="$root/.device"
out="${OUT:-$root/target/device-check}"
mkdir -p "$out"
# This run's files only: a dry run's $OUT may hold an earlier run's.
rm -f "$out"/*
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
keep="$work/keep"          # what goes into results.tar.gz
mkdir -p "$keep"
log="$out/device-check.log"
exec > >(tee "$log") 2>&1
started=$(date +%s)
: > "$work/stages"

# stage NAME COMMAND...: runs COMMAND in a subshell, records its status and duration; never stops the script.
stage() {
    local name="$1"; shift
    local begin=$(date +%s) status
    echo "== $(( begin - started )) s: $name"
    if [[ "${VGGQ_CHECK_FAIL:-}" == "$name" ]]; then
        echo "(failing $name on purpose: VGGQ_CHECK_FAIL=$name)"
        status=99
    else
        ( set -e; "$@" )
        status=$?
    fi
    echo "$name $status $(( $(date +%s) - begin ))" >> "$work/stages"
    [[ $status == 0 ]] || echo "== $name failed (exit $status)"
    return 0
}

# The test venv's Python here (what `cargo xtask setup` installed), the machine's there.
if $dry_run; then
    python="${VGGQ_PYTHON:?the dry run needs VGGQ_PYTHON, the test venv cargo xtask setup installs}"
else
    python=python3
fi

reassemble() {
    [[ -f "$bundle/part01/SHA256SUMS" ]] || { echo "no bundle in $bundle: run cargo xtask device-bundle and carry its parts"; return 1; }
    mkdir -p "$work/bundle"
    while read -r _ name; do
        cat "$bundle"/part*/"$name".xz.* | "$python" -c 'import lzma, sys; sys.stdout.buffer.write(lzma.decompress(sys.stdin.buffer.read()))' > "$work/bundle/$name"
    done < "$bundle/part01/SHA256SUMS"
    (cd "$work/bundle" && sha256sum --quiet --check "$bundle/part01/SHA256SUMS")
    chmod +x "$work/bundle/vggq"
}
stage reassemble reassemble
vggq="$work/bundle/vggq"
data="$work/bundle/cifar10-jpeg.tar.gz"
export ORT_DYLIB_PATH="$(ls "$work"/bundle/libonnxruntime.so.* 2>/dev/null | head -n 1)"

if $dry_run; then
    device=cpu
    seconds=1
    rounds=2
    # The smoke profile on a few hundred images; the full shapes' benchmark at width/16 (a CPU needs
    # seconds for one full-width step), two full-size training steps.
    smoke_limits=(--train-images 320 --eval-images 320 --calibration-batches 2 --epochs 1)
    full_steps=2
    full_shapes=(--width-div 16 --hidden 256)
else
    device=cuda
    seconds=3
    rounds=3
    smoke_limits=()
    full_steps=60
    full_shapes=()
fi

setup_cuda() {
    # The CUDA 13, cuBLAS, cuDNN 9 and NVRTC libraries of the machine's PyTorch, for ONNX Runtime's CUDA
    # provider and burn-cuda's NVRTC; the toolkit's headers, from nvcc's folder, for the kernels
    # burn-cuda compiles (`vggq device` checks them as burn-cuda will look: include/cuda_runtime.h).
    local nvidia_libs nvcc
    nvidia_libs="$("$python" -c 'import nvidia, glob, os; print(":".join(sorted({os.path.dirname(p) for d in nvidia.__path__ for p in glob.glob(os.path.join(d, "**", "lib*.so*"), recursive=True)})))' || true)"
    [[ -n "$nvidia_libs" ]] || echo "python's nvidia wheels not found: relying on the system's CUDA libraries"
    export LD_LIBRARY_PATH="$nvidia_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    nvcc="$(command -v nvcc || ls -d /usr/local/cuda*/bin/nvcc 2>/dev/null | head -n 1 || true)"
    if [[ -n "$nvcc" ]]; then
        export CUDA_PATH="$(dirname "$(dirname "$(readlink -f "$nvcc")")")"
        echo "CUDA_PATH=$CUDA_PATH (from $nvcc)"
    fi
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$keep/gpu.csv"
}
$dry_run || stage setup-cuda setup_cuda

probe() {
    "$vggq" device --json --precision | tee "$keep/device.json"
}
stage probe probe
precision="$("$python" -c 'import json, sys; p = json.load(open(sys.argv[1]))["precision"]; print("tf32" if "tf32" in (p["matmul"], p["conv"]) else "fp32")' "$keep/device.json" 2>/dev/null || echo fp32)"

: > "$out/bench.txt"
bench() {  # profile, shape flags...
    local profile="$1"; shift
    "$vggq" bench-train --device "$device" --profile "$profile" --seconds "$seconds" --rounds "$rounds" "$@" \
        --baseline-name torch -- "$python" "$root/scripts/torch_bench_precision.py" "$precision" \
        "$work/bundle/torch_train_bench.py" --device "$device" --qat | sed "s/^/$profile: /" | tee -a "$out/bench.txt"
}
stage bench-smoke bench smoke
stage bench-full bench full "${full_shapes[@]}"

# The smoke profile twice, the second run with the first's autotune cache: the same SHA256SUMS, or the
# summary says how they differ.
autotune="$work/autotune"
smoke_run() {  # folder
    local run="$1"
    "$vggq" train --profile smoke --device "$device" --out "$run" --data "$data" --autotune-cache "$autotune" "${smoke_limits[@]}"
    "$vggq" quantize --run "$run" --device "$device" --data "$data" --autotune-cache "$autotune"
    "$vggq" export --run "$run"
    "$vggq" eval --run "$run" --device "$device" --data "$data"
    "$vggq" report --run "$run"
}
smoke="$work/smoke"
stage smoke-run smoke_run "$smoke"
cp "$smoke/metrics.json" "$smoke/report.md" "$smoke/golden_table.md" "$out/" 2>/dev/null
for file in train_report.json quant_report.json manifest.json SHA256SUMS; do cp "$smoke/$file" "$keep/smoke-$file" 2>/dev/null; done
stage smoke-rerun smoke_run "$work/smoke-rerun"
cp "$work/smoke-rerun/SHA256SUMS" "$keep/smoke-rerun-SHA256SUMS" 2>/dev/null
cp -r "$autotune" "$keep/autotune" 2>/dev/null

full_steps_run() {
    "$vggq" train --profile full --device "$device" --init random --out "$work/full" --data "$data" \
        --train-images $((full_steps * 32)) --eval-images 32 --epochs 1 2>&1 | tee "$keep/full-steps.log"
    cp "$work/full/train_report.json" "$keep/full-train_report.json"
}
stage full-steps full_steps_run

echo "== $(( $(date +%s) - started )) s: summary"
tar -czf "$out/results.tar.gz" -C "$keep" . || echo "results.tar.gz could not be written"
"$python" - "$out" "$keep" "$work/stages" <<'PY' | tee "$out/summary.txt"
import json, os, re, sys
out, keep, stages = sys.argv[1:4]

def load(path):
    try:
        return json.load(open(path))
    except Exception as error:
        return None

rows = []
for line in open(stages):
    name, status, seconds = line.split()
    rows.append((f"stage {name}", ("ok" if status == "0" else f"FAILED (exit {status})") + f", {seconds} s"))
device = load(f"{keep}/device.json")
if device:
    rows += [("device", device.get("reason")), ("precision", json.dumps(device.get("precision")))]
bench = open(f"{out}/bench.txt").read().splitlines() if os.path.exists(f"{out}/bench.txt") else []
# vggq bench-train's summary lines: "<profile>: summary <figure>: vggq M [..] | torch M [..] | ratio Rx [..] (...)".
for line in bench:
    m = re.match(r"^(\w+): summary (.+?): (.*)$", line)
    if m:
        rows.append((f"{m.group(1)} {m.group(2)}", m.group(3)))
metrics = load(f"{out}/metrics.json")
for row in (metrics or {}).get("rows", []):
    rows.append((f"{row['file']} [{row['requested']}]", f"{row['placement']} | top-1 {row['top1']:.2f} % | {row['inference']['images_per_s']:.1f} img/s | {row['size_mib']:.2f} MiB"))
for u in (metrics or {}).get("unavailable", []):
    rows.append((f"{u['provider']} not available", u["reason"]))
first, second = (open(p).read() if os.path.exists(p) else None for p in (f"{keep}/smoke-SHA256SUMS", f"{keep}/smoke-rerun-SHA256SUMS"))
if first and second:
    differing = sorted({l.split()[1] for l in set(first.splitlines()) ^ set(second.splitlines())})
    rows.append(("smoke rerun, same autotune cache", "identical SHA256SUMS" if not differing else "differs: " + ", ".join(differing)))
full = load(f"{keep}/full-train_report.json")
if full and full.get("epochs"):
    rate = full["epochs"][0]["train_images_per_sec"]
    qat = [l for l in bench if l.startswith("full: summary qat/fp32 train:")]
    factor = float(re.search(r"vggq ([0-9.]+)", qat[0]).group(1)) if qat else float("nan")
    # The full run trains 5 epochs of 40,000 images in FP32 and again in QAT (fp32match), QAT at the
    # speed the benchmark measured relative to FP32 training; evaluation passes are left out.
    minutes = 5 * 40_000 * (1 / rate + 1 / (rate * factor)) / 60
    rows.append(("full profile training", f"{rate:.1f} img/s over its first steps -> whole run about {minutes:.1f} min (FP32 + QAT)"))
width = max(len(k) for k, _ in rows)
print("\n".join(f"{k:<{width}} | {v}" for k, v in rows))
PY
files=$(ls -A "$out" | wc -l)
echo "$files files in $out"
# Fails where any stage did (its status, the second field, not 0).
awk '$2 != 0 { failed = 1 } END { exit failed }' "$work/stages"
