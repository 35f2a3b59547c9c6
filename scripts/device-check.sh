#!/usr/bin/env bash
# The GPU check, in one `device` call on the lent GPU (../shared/device/README.md; an H100, now the
# tool's default kind, or an H200, which the first check had): from the bundle
# `cargo xtask device-bundle` left in .device/part*/ (carried there part by part), it
#   1. probes the GPU (vggq device) with the CUDA libraries of the machine's PyTorch and CUDA_PATH
#      found from nvcc;
#   2. runs the smoke profile with --device cuda through train, quantize, export, eval (ONNX Runtime's
#      CUDA and CPU providers) and report, twice (with the same cubecl autotune cache where the build
#      tunes), and compares the two packages' SHA256SUMS (the first run's table is
#      golden/smoke-cuda.snap's source);
#   3. checks one smoke training step against the CPU's, and the convolution CUDA trains with (an im2col
#      GEMM) against Burn's conv2d (vggq device --check-step);
#   4. measures burn-cuda training and evaluation beside PyTorch at the smoke and full shapes, the two
#      alternating in rounds (vggq bench-train), PyTorch's matmuls and convolutions each at the
#      arithmetic vggq's were measured to use;
#   5. times the full profile's first training steps to project the whole run, and evaluates its four
#      ONNX files at full size on ONNX Runtime's CUDA provider (the user's table; the CPU's where it fails);
#   6. times the two convolutions (the im2col GEMM CUDA trains with, Burn's conv2d) at the full shapes;
#   7. trains the smoke profile again, killed after its first checkpoint inside an epoch and run again,
#      which must resume and end with the first smoke run's model;
#   8. runs the kernels' unit tests on the machine's CPU (each instruction-set path it has, AVX-512's
#      where it has it, which CI's CPU has not, against its definition), then repeats there (every core,
#      the widest kernels) the small CPU training and quantization the bundle made where it was built,
#      which must give the same model files;
#   9. measures vggq's CPU training and evaluation beside PyTorch's there, at the smoke shapes;
# sampling the GPU's memory in use all along (nvidia-smi, every half second) for each stage's peak,
# and prints one table last (with the commit the bundle was built from), also written to
# $OUT/summary.txt (rewritten after every stage, with results.tar.gz, so that a call the device tool
# stops at its limit still brings home the stages that ended). Each stage runs on its own, capped in
# time, in the order of what it is for: one that fails or runs out of time is named in the summary and
# the others still run; past the deadline (set from VGGQ_CHECK_SECONDS, the whole check's time, which
# the caller takes from the device time left: the deadline leaves a stopped stage's grace period and
# the summary inside it) the rest are skipped.
#
# $OUT gets 7 files: device-check.log, summary.txt, bench.txt, golden_table.md, metrics.json,
# full-metrics.json, and results.tar.gz with everything else (the probe, the step check, the
# convolutions' times, the memory samples, the smoke run's report.md, the reports, both runs'
# SHA256SUMS and manifests, the autotune cache, the full steps' log, the resumed training's logs, the
# CPU runs' log and verdicts). The summary and the archive are written beside their names and renamed,
# one at a time: a call stopped while one is written brings home the last whole one, and with the one
# being written still no more than the 8 files the device tool brings back.
#
# Stage caps (seconds), planned from the H200's first check (an H100 has its 132 multiprocessors and
# slower memory): reassemble 120 | setup 30 | probe 90 | smoke run 400 | smoke rerun
# 150 | check step 60 | bench smoke 90 and full 120 (3 rounds x 2 sides x 3 figures x (warm-up + 2 s)) |
# full steps and full-size ONNX 120 | conv speed 60 | smoke resume 90 (one smoke training in two runs) |
# cpu kernels 30 (about 1 s on 2 cores) | cpu bytes 60 (320 images at the smoke shapes, twice where the
# first differs) | bench cpu 60 (2 rounds; the CPU's stages last, so that the deadline cuts them
# first); the deadline (default 570 s, the grace period and summary inside it) cuts the sum short. The first H200
# check (2026-11-30) found the first training step alone past 200 s: cubecl's autotune compiled every
# candidate kernel with NVRTC on one core. The bundle's vggq is now built without autotune: each
# operation's default kernel, compiled once; its vggq-autotune, with it, takes over the rest of the check
# where the default build's smoke run fails (it then runs again, capped as the first). On lavapipe a
# smoke training of 320 images took 16 s instead of 1 min 14 s and compiled 186 kernels instead of 246;
# lavapipe cannot run the tensor-core candidates, so it never compiled them, and an H200, which can,
# compiled them all. The compiled-kernel cache grows as a run goes, so a stage stopped at its cap leaves
# the next one further along (the rerun, the benchmarks), and with autotune its cache too.
#
#   VGGQ_CHECK_SECONDS=N scripts/device-check.sh  # there, after the last part arrived
#   VGGQ_BUNDLE=DIR scripts/device-check.sh --dry-run  # here (and in CI): the same stages on the CPU
#                                      # build, the CPU ONNX Runtime and small limits, from the bundle
#                                      # `cargo xtask device-bundle --dry-run` left in DIR
#   VGGQ_CHECK_FAIL="<stage> ..." ...  # rehearses failing stages (the rest must still run; a failing
#                                      # smoke-run hands the rest to vggq-autotune); "<stage>:eval"
#                                      # fails that stage's eval on its device (a smoke run or
#                                      # full-steps: it evaluates again on --device auto, and the stage
#                                      # fails once it has its figures)
#   VGGQ_CHECK_CAP="<stage>=<seconds> ..." ...  # rehearses the watchdog: that stage's cap, unscaled (the
#                                      # stage is stopped there, its group given STOP_GRACE, the rest run)
set -uo pipefail

dry_run=false
[[ "${1:-}" == "--dry-run" ]] && dry_run=true
root="$(cd "$(dirname "$0")/.." && pwd)"
bundle="$(realpath -m "${VGGQ_BUNDLE:-$root/.device}")"
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

# Seconds a stage's group has to end once stopped (a training saves its state first), before it is killed.
STOP_GRACE=30
# The whole check's time (VGGQ_CHECK_SECONDS, set by the caller from the device time left; the call's
# timeout_s at least that): the stages' deadline leaves a stage stopped there its grace period, and the
# summary its seconds, inside it, so that a slow or hanging stage costs its own result, not the others'
# nor the summary.
check_seconds=${VGGQ_CHECK_SECONDS:-$($dry_run && echo 3600 || echo 570)}
deadline=$(( started + check_seconds - STOP_GRACE - 15 ))
# Each stage's cap is the H200 plan's; the dry run's CPU needs longer for its smaller shapes (full-steps
# takes about 100 s of its 120 on 2 cores, and a stage stopped at its cap fails the rehearsal).
cap_scale=$($dry_run && echo 4 || echo 1)
# Background stages get process groups of their own, so that a stage past its time is stopped whole.
set -m

# memory_used_mib: the memory the summary's peaks are of: the GPU's in use (nvidia-smi; every process on
# it, the check's alone there), in a dry run the host's (MemTotal - MemAvailable), which rehearses the row.
# One nvidia-smi a sample, not one polling (`-lms`): its output into a pipe may wait in its buffer, and
# a sample must be read when it is taken.
if $dry_run; then
    export MEMORY_MEASURED="the host's memory in use (dry run: MemTotal - MemAvailable)"
    memory_used_mib() { awk '/^MemTotal:/ { total = $2 } /^MemAvailable:/ { available = $2 } END { print int((total - available) / 1024) }' /proc/meminfo; }
else
    export MEMORY_MEASURED="the GPU's memory in use (nvidia-smi)"
    memory_used_mib() { timeout 5 nvidia-smi -i 0 --query-gpu=memory.used --format=csv,noheader,nounits; }
fi
# Sampled every half second ("<epoch seconds> <MiB>") beside the stages, for each stage's peak: what the
# full shapes' training, ONNX Runtime's CUDA provider and the GEMM convolution's im2col need of a GPU.
# Outside $keep, which tar reads while the samples grow; bring_home copies them in.
( while :; do echo "$(date +%s.%N) $(memory_used_mib)"; sleep 0.5; done ) > "$work/memory.txt" 2>/dev/null &
sampler=$!
disown "$sampler"  # its end at the exit is no news
trap 'kill -- -"$sampler" 2>/dev/null; rm -rf "$work"' EXIT

# kernel_cache [JSON]: the compiled-kernel cache every GPU run on this machine shares, as `vggq device
# --json` says (in JSON, a file; by default what the probe stage recorded).
kernel_cache() {
    "$python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["kernel_cache"])' "${1:-$keep/device.json}" 2>/dev/null
}

# clear_cache_locks: after a vggq was stopped by a signal (the watchdog's SIGTERM ends any vggq but a
# training at once, whatever it was writing) or killed, once it is gone. cubecl takes a file's lock
# (FILE.lock, created, then given the time it was taken) to write to its compiled-kernel and autotune
# caches and removes it when done; a process ended in between leaves it, and the next vggq waits 30 s
# (cubecl's lock_max_duration) at each such file: then takes a dated one over, or, where the lock is
# still empty, gives the file up, which for the compiled-kernel cache (one file) is every kernel. Stages
# run one at a time, so none is held once the stopped one is gone. The probe writes where the cache is at
# its end: where it was the one stopped, vggq says so without probing (no kernel).
clear_cache_locks() {
    local kernels locks
    kernels="$(kernel_cache || kernel_cache <(timeout 20 "$vggq" device --json 2>/dev/null) || true)"
    locks="$( (find "$kernels" "${autotune:-}" -name '*.lock' -print -delete 2>/dev/null || true) | wc -l)"
    (( locks == 0 )) || echo "== cubecl lock files the stopped vggq left, removed: $locks"
}

# stage NAME CAP COMMAND...: runs COMMAND in a subshell for at most CAP seconds (times cap_scale; and not past the
# deadline), records its status and duration; never stops the script. A stage with under 10 s left is
# skipped (status "skipped"), one stopped at its limit is recorded as "timeout".
stage() {
    local name="$1" cap=$(( $2 * cap_scale )) entry; shift 2
    for entry in ${VGGQ_CHECK_CAP:-}; do
        [[ "${entry%%=*}" == "$name" ]] && cap="${entry#*=}"
    done
    local begin=$(date +%s) status
    local limit=$(( deadline - begin < cap ? deadline - begin : cap ))
    echo "== $(( begin - started )) s: $name (at most $limit s)"
    if [[ " ${VGGQ_CHECK_FAIL:-} " == *" $name "* ]]; then
        echo "(failing $name on purpose: VGGQ_CHECK_FAIL=${VGGQ_CHECK_FAIL})"
        status=99
    elif (( limit < 10 )); then
        echo "(skipping $name: the check's time is spent)"
        status=skipped
    else
        ( set -e; current_stage="$name"; "$@" ) &
        local pid=$!
        ( sleep "$limit"; echo "== $name: stopped after $limit s"; kill -TERM -- -"$pid" 2>/dev/null ) &
        local watchdog=$!
        disown "$watchdog"  # its end is no news
        wait "$pid"
        status=$?
        kill -- -"$watchdog" 2>/dev/null
        # A vggq training stopped by the watchdog's SIGTERM saves its state at its next progress read
        # before it ends: its group has STOP_GRACE seconds for that, then is killed, so that no stage runs
        # beside the next. A stage that ended by itself left no group.
        local given_up=$(( $(date +%s) + STOP_GRACE ))
        while kill -0 -- -"$pid" 2>/dev/null && (( $(date +%s) < given_up )); do sleep 0.1; done
        local killed=false
        kill -KILL -- -"$pid" 2>/dev/null && killed=true
        (( $(date +%s) - begin < limit )) || status=timeout
        if $killed || [[ $status == timeout ]]; then
            # A system call under way ends before the process does (within seconds: one stuck in the GPU's
            # driver must not hold up the check, whose later stages then may wait on its locks).
            local gone_by=$(( $(date +%s) + 5 ))
            while kill -0 -- -"$pid" 2>/dev/null && (( $(date +%s) < gone_by )); do sleep 0.05; done
            clear_cache_locks
        fi
    fi
    echo "$name $status $(( $(date +%s) - begin )) $begin" >> "$work/stages"
    [[ $status == 0 ]] || echo "== $name failed ($status)"
    # What has come of the check so far, in $OUT: where the device tool stops the whole call at its time
    # limit, the stages that ended still come home. A skipped stage changed nothing (and the summary's
    # seconds are what is left).
    [[ $status == skipped ]] || bring_home > /dev/null
    return 0
}

# stage_status NAME: what `stage` recorded for NAME (0, an exit status, timeout, skipped), if it ran.
stage_status() {
    awk -v name="$1" '$1 == name { print $2 }' "$work/stages"
}

# bring_home: the summary table ($OUT/summary.txt) and results.tar.gz, from what the stages have left so
# far; after every stage, and once more at the end.
bring_home() {
    rm -rf "$keep/autotune"
    cp "$work/memory.txt" "$keep/memory.txt"
    [[ -d "${autotune:-}" ]] && cp -r "$autotune" "$keep/autotune"
    local kernels kernel_mib
    kernels="$(kernel_cache)"
    kernel_mib="$(du -sm "$kernels" 2>/dev/null | cut -f1)"
    echo "$(find "$kernels" -type f 2>/dev/null | wc -l) files, ${kernel_mib:-0} MiB in $kernels" > "$keep/kernel-cache.txt"
    { tar -czf "$out/$RESULTS_ARCHIVE.partial" -C "$keep" . && mv "$out/$RESULTS_ARCHIVE.partial" "$out/$RESULTS_ARCHIVE"; } \
        || echo "$RESULTS_ARCHIVE could not be written"
    "$python" - "$out" "$keep" "$work/stages" <<'PY' > "$out/summary.txt.partial" && mv "$out/summary.txt.partial" "$out/summary.txt"
import json, os, re, sys
out, keep, stages = sys.argv[1:4]

def load(path):
    try:
        return json.load(open(path))
    except Exception as error:
        return None

rows = []
stage_times = []
for line in open(stages):
    name, status, seconds, begin = line.split()
    stage_times.append((name, int(begin), int(begin) + int(seconds) + 1))
    verdict = {"0": "ok", "skipped": "SKIPPED (no time left)", "timeout": "STOPPED at its time limit"}.get(status, f"FAILED (exit {status})")
    rows.append((f"stage {name}", f"{verdict}, {seconds} s"))
commit = os.environ.get("VGGQ_GIT_COMMIT")
if commit:
    state = {"false": "as committed", "true": "with uncommitted changes"}.get(os.environ.get("VGGQ_GIT_DIRTY"), "changes unknown")
    rows.append(("bundle built from", f"{commit} ({state})"))
else:
    rows.append(("bundle built from", "no commit recorded (built outside a git checkout)"))
device = load(f"{keep}/device.json")
if device:
    rows += [("device", device.get("reason")), ("precision", json.dumps(device.get("precision")))]
checked = load(f"{keep}/check-step.json") or {}
step = checked.get("step_agreement")
if step:
    rows.append(("step against the CPU", f"logits {step['logits']:.1e}, loss {step['loss']:.1e}, updates {step['update']:.1e} (at most{', at ' + step['update_parameter'] if step['update_parameter'] else ''}), relative"))
if checked.get("conv_agreement") is not None:
    rows.append(("conv: GEMM against conv2d", f"{checked['conv_agreement']:.1e} (at most, forward and weight gradient, relative)"))
speed = (load(f"{keep}/conv-speed.json") or {}).get("conv_speed")
if speed:
    rows.append(("conv speed", f"GEMM {speed['gemm_ms']:.1f} ms, conv2d {speed['conv2d_ms']:.1f} ms ({speed['profile']} shapes, batch 32, forward and weight gradient, median of 3)"))
    layers = ", ".join(f"{l['channels']}>{l['width']} at {l['side']} px {l['gemm_ms']:.1f}/{l['conv2d_ms']:.1f}" for l in speed.get("layers", []))
    rows.append(("conv speed by layer", f"GEMM/conv2d ms: {layers}"))
# Each stage's peak of the memory samples taken while it ran (a stage shorter than a sample has none).
samples = []
for line in open(f"{keep}/memory.txt") if os.path.exists(f"{keep}/memory.txt") else []:
    fields = line.split()
    if len(fields) == 2 and fields[1].isdigit():
        samples.append((float(fields[0]), int(fields[1])))
peaks = []
for name, begin, end in stage_times:
    during = [mib for when, mib in samples if begin <= when <= end]
    if during:
        peaks.append((name, max(during)))
if peaks:
    rows.append(("peak memory by stage", f"GiB of {os.environ['MEMORY_MEASURED']}: " + ", ".join(f"{name} {mib / 1024:.1f}" for name, mib in peaks)))
bench = open(f"{out}/bench.txt").read().splitlines() if os.path.exists(f"{out}/bench.txt") else []
# vggq bench-train's summary lines: "<profile>: summary <figure>: vggq M [..] | torch M [..] | ratio Rx [..] (...)",
# a block after every round: the last of each figure covers the most rounds (a bench stopped at its cap
# still has those of the rounds it finished).
summaries = {}
for line in bench:
    m = re.match(r"^(\w+): summary (.+?): (.*)$", line)
    if m:
        summaries[f"{m.group(1)} {m.group(2)}"] = m.group(3)
rows += summaries.items()
metrics_file, checksums_file, train_report_file, smoke_run, smoke_rerun = (os.environ[v] for v in ("METRICS_FILE", "CHECKSUMS_FILE", "TRAIN_REPORT_FILE", "SMOKE_RUN_PREFIX", "SMOKE_RERUN_PREFIX"))
for name, label in ((metrics_file, "smoke"), (f"full-{metrics_file}", "full size")):
    metrics = load(f"{out}/{name}")
    for row in (metrics or {}).get("rows", []):
        rows.append((f"{label}: {row['file']} [{row['requested']}]", f"{row['placement']} | top-1 {row['top1']:.2f} % of {row['images']} images | {row['inference']['images_per_s']:.1f} img/s | {row['size_mib']:.2f} MiB"))
    for u in (metrics or {}).get("unavailable", []):
        rows.append((f"{label}: {u['provider']} not available", u["reason"]))
first, second = (open(p).read() if os.path.exists(p) else None for p in (f"{keep}/{smoke_run}{checksums_file}", f"{keep}/{smoke_rerun}{checksums_file}"))
if first and second:
    differing = sorted({l.split()[1] for l in set(first.splitlines()) ^ set(second.splitlines())})
    rows.append(("smoke rerun", "identical SHA256SUMS" if not differing else "differs: " + ", ".join(differing)))
resumed = open(f"{keep}/smoke-resume.sha256").read().split() if os.path.exists(f"{keep}/smoke-resume.sha256") else []
if len(resumed) == 4:
    model = os.path.basename(resumed[1])
    rows.append(("smoke resume", f"the smoke run's {model}" if resumed[0] == resumed[2] else f"{model} differs from the smoke run's"))
# The kernels' tests on this CPU ("test result: ok. 24 passed; 0 failed; ..."), then the CPU run against
# the bundle's (where it was built): the widest kernels, and the AVX2 ones where those differ.
tested = [l for l in open(f"{keep}/kernel-tests.log")] if os.path.exists(f"{keep}/kernel-tests.log") else []
tested = [l.split(": ", 1)[1].strip() for l in tested if l.startswith("test result: ")]
if tested:
    rows.append(("cpu kernel tests", f"{tested[-1]} ({os.environ['KERNEL_TESTS_FILTER']}, this CPU's instruction-set paths)"))
reference = load(f"{keep}/{os.environ['CPU_REFERENCE_FILE']}")
facts = lambda cpu: f"[{cpu['processor']}: {cpu['threads']} threads, {cpu['isa']} kernels (the CPU has {cpu['detected_isa']})]"
for name, label in (("widest", "cpu bytes"), ("avx2", "cpu bytes, VGGQ_ISA=avx2")):
    ran = load(f"{keep}/cpu-bytes-{name}.json")
    if reference and ran:
        files, differing = len(reference["sha256"]), ran["differing"]
        here, there = facts(ran["cpu"]), facts(reference["cpu"])
        if differing:
            rows.append((label, f"{', '.join(differing)} ({len(differing)} of {files} model files) differ here {here} from where the bundle was built {there}"))
        else:
            rows.append((label, f"the same {files} model files here {here} as where the bundle was built {there}"))
if os.path.exists(f"{keep}/kernel-cache.txt"):
    rows.append(("compiled-kernel cache", open(f"{keep}/kernel-cache.txt").read().strip()))
smoke_train = load(f"{keep}/{smoke_run}{train_report_file}")
if smoke_train and smoke_train["device"]["backend"] != "cpu":
    rows.append(("kernels", "chosen by timing (autotune)" if smoke_train["autotune"]["tuned"] else "each operation's default (a build without autotune)"))
tuned = f"{keep}/autotune/autotune.log"
if os.path.exists(tuned):
    rows.append(("autotune", f"{sum(1 for _ in open(tuned))} lines in autotune.log"))
full = load(f"{keep}/full-{train_report_file}")
if full and full.get("epochs"):
    rate = full["epochs"][0]["train_images_per_sec"]
    qat = summaries.get("full qat/fp32 train")
    if qat:
        factor = float(re.search(r"vggq ([0-9.]+)", qat).group(1))
        # The full run trains 5 epochs of 40,000 images in FP32 and again in QAT (fp32match), QAT at the
        # speed the benchmark measured relative to FP32 training; evaluation passes are left out.
        minutes = 5 * 40_000 * (1 / rate + 1 / (rate * factor)) / 60
        rows.append(("full profile training", f"{rate:.1f} img/s over its first steps -> whole run about {minutes:.1f} min (FP32 + QAT)"))
    else:
        rows.append(("full profile training", f"{rate:.1f} img/s over its first steps (no QAT/FP32 figure from bench-full to project the run)"))
width = max(len(k) for k, _ in rows)
print("\n".join(f"{k:<{width}} | {v}" for k, v in rows))
PY
}

# The test venv's Python here (what `cargo xtask setup` installed), the machine's there.
if $dry_run; then
    python="${VGGQ_PYTHON:?the dry run needs VGGQ_PYTHON, the test venv cargo xtask setup installs}"
else
    python=python3
fi

# The bundle's kind, the run folder's file names and the batch size, as vggq has them (cargo xtask
# device-bundle writes them).
if ! source "$bundle/part01/vggq.env"; then
    echo "no bundle in $bundle (part01/vggq.env): run cargo xtask device-bundle and carry its parts, from part01, one call each while the machine stays warm (a call that found it cold started a fresh one, without the parts carried before)"
    exit 1
fi
# A rehearsal's CPU bundle on the GPU (or a GPU bundle in a rehearsal) would spend the check on builds
# that cannot run it.
expected_kind=$($dry_run && echo dry-run || echo cuda)
if [[ "${BUNDLE_KIND:-}" != "$expected_kind" ]]; then
    echo "the bundle in $bundle is a ${BUNDLE_KIND:-unnamed} bundle, this check needs a $expected_kind one: run cargo xtask device-bundle$($dry_run && echo ' --dry-run') (and carry its parts)"
    exit 1
fi
# A bundle older than this script lacks names it reads: stopped here, not half-way with no summary.
shared_names=(BUNDLE_PARTS MODEL_FILE TRAIN_CHECKPOINT TRAIN_REPORT_FILE QUANT_REPORT_FILE METRICS_FILE REPORT_FILE GOLDEN_TABLE_FILE MANIFEST_FILE
    CHECKSUMS_FILE BATCH_SIZE RESULTS_ARCHIVE SMOKE_RUN_PREFIX TUNING_BUILD DATA_FILE TORCH_BENCH CPU_REFERENCE_FILE
    KERNEL_TESTS KERNEL_TESTS_FILTER)
for name in "${shared_names[@]}"; do
    if [[ -z "${!name:-}" ]]; then
        echo "the bundle in $bundle names no $name (part01/vggq.env): it is older than this script; run cargo xtask device-bundle$($dry_run && echo ' --dry-run') again"
        exit 1
    fi
done
export "${shared_names[@]}"
# The commit the bundle was built from, where git could tell (`cargo xtask device-bundle` records it as
# `cargo xtask all` gives it to vggq): each run's manifest records it, and the summary says it.
[[ -n "${VGGQ_GIT_COMMIT:-}" ]] && export VGGQ_GIT_COMMIT
[[ -n "${VGGQ_GIT_DIRTY:-}" ]] && export VGGQ_GIT_DIRTY
# Every part here: a call that found the machine cold started a fresh one, without the parts carried
# before it; stopped here, before any stage, so that the device time goes to carrying them again.
missing=()
for (( number = 1; number <= BUNDLE_PARTS; number++ )); do
    part="$(printf 'part%02d' "$number")"
    [[ -d "$bundle/$part" ]] || missing+=("$part")
done
if (( ${#missing[@]} > 0 )); then
    echo "the bundle in $bundle lacks ${missing[*]} of its $BUNDLE_PARTS parts: the machine was not warm for every call; carry them all again, from part01, one call each while it stays warm"
    exit 1
fi
# The rerun's files in results.tar.gz (the first run's prefix comes from xtask, whose device-golden reads them).
export SMOKE_RERUN_PREFIX=smoke-rerun-

reassemble() {
    [[ -f "$bundle/part01/SHA256SUMS" ]] || { echo "no bundle in $bundle: run cargo xtask device-bundle and carry its parts"; return 1; }
    mkdir -p "$work/bundle"
    while read -r _ name; do
        cat "$bundle"/part*/"$name".xz.* | "$python" -c 'import lzma, sys; sys.stdout.buffer.write(lzma.decompress(sys.stdin.buffer.read()))' > "$work/bundle/$name"
    done < "$bundle/part01/SHA256SUMS"
    (cd "$work/bundle" && sha256sum --quiet --check "$bundle/part01/SHA256SUMS")
    chmod +x "$work/bundle"/vggq*
}
stage reassemble 120 reassemble
vggq="$work/bundle/vggq"
# The same with cubecl's autotune (in a dry run's bundle, a copy of the CPU build): the fallback below.
vggq_tuning="$work/bundle/$TUNING_BUILD"
data="$work/bundle/$DATA_FILE"
export ORT_DYLIB_PATH="$(ls "$work"/bundle/libonnxruntime.so.* 2>/dev/null | head -n 1)"

if $dry_run; then
    # The rehearsal's own caches: the machine's compiled-kernel cache may be a real GPU run's, whose locks
    # are not the rehearsal's to clear (and it downloads nothing: its data is given, its weights random).
    export VGGQ_CACHE="$work/vggq-cache"
    device=cpu
    seconds=1
    rounds=2
    # The CPU's bench is the smoke bench's command on the CPU, whose rounds the smoke bench rehearses.
    cpu_rounds=1
    # The smoke profile on a few hundred images; the full shapes' benchmark at width/16 (a CPU needs
    # seconds for one full-width step), one full-size training step and calibration batch (8 s each
    # on 2 cores: the rehearsal checks the stage runs, the full-shape run in CI checks its figures).
    # Two epochs of 51 full batches and a partial one (read every 13 steps), so that the resume stage
    # has a checkpoint inside an epoch to resume from, as the smoke profile's 250 steps an epoch (read
    # every 50) on the GPU.
    smoke_limits=(--train-images 1648 --eval-images 320 --calibration-batches 2 --epochs 2)
    full_steps=1
    full_calibration_batches=1
    full_eval_images=32
    full_fallback_images=32
    full_shapes=(--width-div 16 --hidden 256)
    # The convolutions' times at the smoke shapes: at the full ones a CPU takes tens of seconds.
    conv_speed_profile=smoke
else
    device=cuda
    seconds=2
    rounds=3
    # Within its cap, each round's PyTorch started anew.
    cpu_rounds=2
    smoke_limits=()
    full_steps=60
    full_calibration_batches=2
    full_eval_images=1024
    # ONNX Runtime's CPU provider on 16 cores, within what is left of the stage's cap.
    full_fallback_images=256
    full_shapes=()
    conv_speed_profile=full
fi

setup_cuda() {
    # The CUDA 13, cuBLAS, cuDNN 9 and NVRTC libraries of the machine's PyTorch, for ONNX Runtime's CUDA
    # provider and burn-cuda's NVRTC; the toolkit's headers, from nvcc's folder, for the kernels
    # burn-cuda compiles (`vggq device` checks them as burn-cuda will look: include/cuda_runtime.h).
    # A stage runs in a subshell: the variables go to cuda.env, which the script reads after it.
    local nvidia_libs nvcc
    # Not a toolkit's stubs/ (a libcuda.so there, found before the driver's, fails cuInit).
    nvidia_libs="$("$python" -c 'import nvidia, glob, os; print(":".join(sorted({os.path.dirname(p) for d in nvidia.__path__ for p in glob.glob(os.path.join(d, "**", "lib*.so*"), recursive=True) if "stubs" not in p.split(os.sep)})))' || true)"
    [[ -n "$nvidia_libs" ]] || echo "python's nvidia wheels not found: relying on the system's CUDA libraries"
    echo "export LD_LIBRARY_PATH='$nvidia_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}'" > "$work/cuda.env"
    nvcc="$(command -v nvcc || ls -d /usr/local/cuda*/bin/nvcc 2>/dev/null | head -n 1 || true)"
    if [[ -n "$nvcc" ]]; then
        echo "export CUDA_PATH='$(dirname "$(dirname "$(readlink -f "$nvcc")")")'" >> "$work/cuda.env"
    fi
    cat "$work/cuda.env"
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$keep/gpu.csv"
}
if ! $dry_run; then
    stage setup-cuda 30 setup_cuda
    # shellcheck disable=SC1091
    [[ -f "$work/cuda.env" ]] && source "$work/cuda.env"
fi

probe() {
    "$vggq" device --json --precision | tee "$keep/device.json"
}
stage probe 90 probe
# What the matmuls and the convolutions were measured to compute in, each: PyTorch's baseline is given the same.
read -r -a precision <<< "$("$python" -c 'import json, sys; p = json.load(open(sys.argv[1]))["precision"]; print(p["matmul"], p["conv"])' "$keep/device.json" 2>/dev/null || echo fp32 fp32)"

# Stages in the order of what they are for, each capped, so that the check's deadline cuts the least
# needed: the golden run, its rerun, the benchmarks, the full shapes.
#
# The smoke profile twice (the second run with the first's autotune cache, where the build tunes): the
# same SHA256SUMS, or the summary says how they differ.
autotune="$work/autotune"
# The smoke run's training, which the resume stage repeats (the same flags, so the same model).
smoke_training=(train --profile smoke --device "$device" --data "$data" --autotune-cache "$autotune" "${smoke_limits[@]}")
# evaluate RUN [FLAGS...]: vggq eval of RUN on $device. ONNX Runtime's CUDA provider needs libraries of
# its own (cuDNN 9 ...): where it fails, --device auto records why and evaluates on the CPU's (and where
# even that fails, --device cpu does), with FLAGS, so that the stage's figures still come; it returns 3
# then, for the stage to fail once it has them (1 where no provider evaluated).
evaluate() {
    local run="$1"; shift
    if [[ " ${VGGQ_CHECK_FAIL:-} " == *" $current_stage:eval "* ]]; then
        echo "(failing $current_stage's eval on --device $device on purpose: VGGQ_CHECK_FAIL=${VGGQ_CHECK_FAIL})"
    elif "$vggq" eval --run "$run" --device "$device" --data "$data"; then
        return 0
    fi
    echo "== $current_stage: eval on --device $device failed: evaluating again on --device auto"
    "$vggq" eval --run "$run" --device auto --data "$data" "$@" || "$vggq" eval --run "$run" --device cpu --data "$data" "$@" || return 1
    return 3
}
smoke_run() {  # folder
    local run="$1"
    "$vggq" "${smoke_training[@]}" --out "$run"
    "$vggq" quantize --run "$run" --device "$device" --data "$data" --autotune-cache "$autotune"
    # Burn's part ran (the fallback below is for its kernels, not for ONNX Runtime's provider).
    touch "$run.trained"
    "$vggq" export --run "$run"
    # The package, and the SHA256SUMS that show whether burn-cuda's training reproduces, come whatever
    # provider evaluated.
    local evaluated=true
    evaluate "$run" || evaluated=false
    "$vggq" report --run "$run"
    $evaluated || return 3
}
smoke="$work/smoke"
stage smoke-run 400 smoke_run "$smoke"
# Default kernels have run on lavapipe only, which lacks the tensor cores some of them need; where the
# smoke run fails in training or quantizing (not merely runs out of time, and not in ONNX Runtime's
# evaluation, which the other build would not change), the rest of the check goes to the tuning build,
# which the first H200 check saw run, and the smoke run is made again with it.
smoke_status="$(stage_status smoke-run)"
if [[ "$smoke_status" != 0 && "$smoke_status" != timeout && ! -e "$smoke.trained" && -x "$vggq_tuning" ]]; then
    echo "== the default build's smoke run failed: the rest of the check uses $(basename "$vggq_tuning")"
    vggq="$vggq_tuning"
    smoke="$work/smoke-autotune"
    stage smoke-run-autotune 400 smoke_run "$smoke"
fi
cp "$smoke/$METRICS_FILE" "$smoke/$GOLDEN_TABLE_FILE" "$out/" 2>/dev/null
for file in "$TRAIN_REPORT_FILE" "$QUANT_REPORT_FILE" "$MANIFEST_FILE" "$CHECKSUMS_FILE" "$REPORT_FILE"; do cp "$smoke/$file" "$keep/$SMOKE_RUN_PREFIX$file" 2>/dev/null; done
stage smoke-rerun 150 smoke_run "$work/smoke-rerun"
for file in "$CHECKSUMS_FILE" "$TRAIN_REPORT_FILE" "$QUANT_REPORT_FILE" "$MANIFEST_FILE" "$METRICS_FILE"; do
    cp "$work/smoke-rerun/$file" "$keep/$SMOKE_RERUN_PREFIX$file" 2>/dev/null
done

# One smoke training step against the CPU's, and the convolution as an im2col GEMM (what CUDA trains
# with: TF32 on tensor cores) against Burn's conv2d (FP32) on the GPU (`vggq device --check-step`): how
# far the GPU's arithmetic moves a step, and where a smoke run failed, a first look at why.
check_step() {
    "$vggq" device --device "$device" --json --check-step > "$keep/check-step.json"
}
stage check-step 60 check_step

: > "$out/bench.txt"
bench() {  # label (the summary's rows' first word), device, rounds, profile, shape flags...
    local label="$1" on="$2" rounds="$3" profile="$4"; shift 4
    # PyTorch computes as vggq was measured to on the GPU; on the CPU both compute in FP32.
    local arithmetic=("${precision[@]}")
    [[ $on == cpu ]] && arithmetic=(fp32 fp32)
    "$vggq" bench-train --device "$on" --profile "$profile" --seconds "$seconds" --rounds "$rounds" "$@" --autotune-cache "$autotune" \
        --baseline-name torch -- "$python" "$root/scripts/torch_bench_precision.py" "${arithmetic[@]}" \
        "$work/bundle/$TORCH_BENCH" --device "$on" --qat | sed -u "s/^/$label: /" | tee -a "$out/bench.txt"
}
stage bench-smoke 90 bench smoke "$device" "$rounds" smoke
stage bench-full 120 bench full "$device" "$rounds" full "${full_shapes[@]}"

# The full profile's first training steps (to project the whole run), then its four ONNX files at full
# size through ONNX Runtime (the user's table: FP32 at 516 img/s on the CUDA provider; where that
# provider fails, the CPU's figures on fewer images, which its time allows). Its kernels are those the
# full-shape bench chose, where the build tunes: the same autotune cache.
full_steps_run() {
    local run="$work/full"
    "$vggq" train --profile full --device "$device" --init random --out "$run" --data "$data" --autotune-cache "$autotune" \
        --train-images $((full_steps * BATCH_SIZE)) --eval-images "$full_eval_images" --calibration-batches "$full_calibration_batches" --epochs 1 2>&1 \
        | tee "$keep/full-steps.log"
    cp "$run/$TRAIN_REPORT_FILE" "$keep/full-$TRAIN_REPORT_FILE"
    "$vggq" quantize --run "$run" --device "$device" --data "$data" --autotune-cache "$autotune" 2>&1 | tee -a "$keep/full-steps.log"
    "$vggq" export --run "$run"
    local evaluated=true
    evaluate "$run" --images "$full_fallback_images" 2>&1 | tee -a "$keep/full-steps.log" || evaluated=false
    cp "$run/$METRICS_FILE" "$out/full-$METRICS_FILE"
    $evaluated || return 3
}
stage full-steps 120 full_steps_run

# The convolution CUDA trains with (the im2col GEMM, on tensor cores) against Burn's conv2d (its
# default, direct kernel), timed at the full profile's shapes (`vggq device --conv-speed`): which of the
# two `ComposedBackend::CONV3X3` names for CUDA, measured rather than read.
conv_speed() {
    "$vggq" device --device "$device" --json --conv-speed "$conv_speed_profile" > "$keep/conv-speed.json"
}
stage conv-speed 60 conv_speed

# The smoke training once more, taking a checkpoint at every progress read (every 50 steps), killed once
# the first is written and run again: it must resume inside the epoch and end with the smoke run's model,
# which took none inside an epoch (the replay of Burn's random draws through burn-cuda and its fusion,
# and a checkpoint's reads leaving fusion's queue as it was, which CI checks on lavapipe only). Last: it
# checks a recovery, the stages before it what every run gives.
smoke_resume() {
    local run="$work/smoke-resume"
    local train=("$vggq" "${smoke_training[@]}" --out "$run" --checkpoint-minutes 0)
    "${train[@]}" > "$keep/smoke-resume-killed.log" 2>&1 &
    local killed=$!
    while [[ ! -e "$run/$TRAIN_CHECKPOINT" ]] && kill -0 "$killed" 2>/dev/null; do sleep 0.05; done
    kill -KILL "$killed" 2>/dev/null || true
    wait "$killed" 2>/dev/null || true
    clear_cache_locks
    if [[ ! -e "$run/$TRAIN_CHECKPOINT" ]]; then
        tail -n 20 "$keep/smoke-resume-killed.log"
        echo "vggq train ended before it wrote $run/$TRAIN_CHECKPOINT"
        return 1
    fi
    "${train[@]}" | tee "$keep/smoke-resume.log"
    # After the first read (step 50 of the smoke profile's epoch), or a later save where the GPU
    # outran the wait.
    grep -q "^resuming after " "$keep/smoke-resume.log" || { echo "vggq train, run again, did not resume"; return 1; }
    # The summary compares the two (where the smoke run got as far as its model).
    [[ -f "$smoke/$MODEL_FILE" ]] || { echo "the smoke run left no $MODEL_FILE to compare with"; return 1; }
    sha256sum "$smoke/$MODEL_FILE" "$run/$MODEL_FILE" | tee "$keep/smoke-resume.sha256"
    cmp "$smoke/$MODEL_FILE" "$run/$MODEL_FILE"
}
stage smoke-resume 90 smoke_resume

# The promise that a CPU run is the same bytes on every machine, on this machine's CPU, which CI's cannot
# keep (a 2-core AMD EPYC without AVX-512). First the kernels' own tests (the library's, which the bundle
# holds): each instruction-set path this CPU has against its definition, bit for bit.
cpu_kernels() {
    local status=0
    (cd "$work" && "$work/bundle/$KERNEL_TESTS" "$KERNEL_TESTS_FILTER") > "$keep/kernel-tests.log" 2>&1 || status=$?
    grep "^test result:" "$keep/kernel-tests.log" || tail -n 20 "$keep/kernel-tests.log"
    # None run is no check (an executable without them, a filter that matches none).
    grep -q "^test result: .* [1-9][0-9]* passed" "$keep/kernel-tests.log" || { echo "no kernel test ran"; return 1; }
    return $status
}
stage cpu-kernels 30 cpu_kernels
# Then the small CPU training and quantization the bundle holds as made where it was built (its
# arguments, its model files' SHA-256, the CPU facts it ran with), run here on every core with the
# widest kernels this CPU has (AVX-512 on the Xeons and EPYCs beside an H100 or H200), must give the
# same model files; where it does not, once more with the AVX2 kernels forced (VGGQ_ISA=avx2), which
# tells our kernels' width apart from what the other libraries chose for this CPU. After the GPU's
# stages, with the kernels' tests: they check the CPU's promise, the stages before them the GPU's.
cpu_bytes() {
    local reference="$work/bundle/$CPU_REFERENCE_FILE" isa args train quantize
    cp "$reference" "$keep/"
    # Its two commands' arguments, a line each (a plain assignment: the stage ends where python fails).
    args="$("$python" -c 'import json, sys; r = json.load(open(sys.argv[1])); print(" ".join(r["train"])); print(" ".join(r["quantize"]))' "$reference")"
    read -r -a train <<< "$(sed -n 1p <<< "$args")"
    read -r -a quantize <<< "$(sed -n 2p <<< "$args")"
    for isa in widest avx2; do
        local run="$work/cpu-$isa"
        (
            [[ $isa == widest ]] || export VGGQ_ISA="$isa"
            "$vggq" train "${train[@]}" --data "$data" --out "$run"
            "$vggq" quantize --run "$run" "${quantize[@]}" --data "$data"
        ) >> "$keep/cpu-bytes.log" 2>&1
        # {"cpu": the facts this run recorded, "differing": the reference's files it did not reproduce}
        "$python" - "$reference" "$run" "$TRAIN_REPORT_FILE" > "$keep/cpu-bytes-$isa.json" <<'PY'
import hashlib, json, os, sys
reference, run, report = sys.argv[1:4]
expected = json.load(open(reference))["sha256"]
digest = lambda name: hashlib.sha256(open(os.path.join(run, name), "rb").read()).hexdigest()
differing = [name for name, sha256 in expected.items() if digest(name) != sha256]
print(json.dumps({"cpu": json.load(open(os.path.join(run, report)))["cpu"], "differing": differing}))
PY
        cat "$keep/cpu-bytes-$isa.json"
        grep -q '"differing": \[\]' "$keep/cpu-bytes-$isa.json" && [[ $isa == widest ]] && return 0
    done
    return 1
}
stage cpu-bytes 60 cpu_bytes

# vggq's CPU training and evaluation beside PyTorch's on this machine's CPU, at the smoke shapes: every
# core, AVX-512 where it has it, where the README's CPU figures are 2 cores' without it (and PyTorch's
# oneDNN on many cores is another opponent). Last of all: a figure, where the stages before it check.
stage bench-cpu 60 bench cpu cpu "$cpu_rounds" smoke

echo "== $(( $(date +%s) - started )) s: summary"
bring_home
cat "$out/summary.txt"
files=$(ls -A "$out" | wc -l)
echo "$files files in $out"
# Fails where any stage did (its status, the second field, not 0).
awk '$2 != 0 { failed = 1 } END { exit failed }' "$work/stages"
