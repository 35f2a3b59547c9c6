//! Write throughput of the full-size FP32 VGG11-BN state_dict (~227 MiB): our writer (atomic with
//! fsync, and plain into a file like torch.save), `torch.save` of the same shapes through
//! `$VGGQ_PYTHON`, and a raw `std::fs::write` of the same byte count as the disk's ceiling.
//! Run with `cargo bench -p vggq-pth --bench write_fp32`.

use std::io::BufWriter;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use vggq_pth::layout::{layout, Variant, VggConfig};
use vggq_pth::{write_file, write_to};

#[path = "../tests/pth/synth.rs"]
mod synth;

/// Timed repetitions of each writer; the best is reported (the least disturbed by other load).
const REPEATS: usize = 3;

fn best<T>(mut run: impl FnMut() -> T) -> (Duration, T) {
    let mut best = None;
    for _ in 0..REPEATS {
        let start = Instant::now();
        let out = run();
        let elapsed = start.elapsed();
        if best.as_ref().is_none_or(|(b, _)| elapsed < *b) {
            best = Some((elapsed, out));
        }
    }
    best.expect("REPEATS > 0")
}

fn report(name: &str, bytes: u64, time: Duration) {
    println!("{name:<44} {:>8.1} MB/s  ({bytes} bytes in {:.3} s)", bytes as f64 / 1e6 / time.as_secs_f64(), time.as_secs_f64());
}

fn main() {
    let python = vggq_core::places::test_python();
    let state_dict = synth::state_dict(&layout(&VggConfig::full(), Variant::Fp32), 1);
    let dir = tempfile::tempdir().expect("temp dir");

    let path = dir.path().join("vgg11_bn_fp32.pth");
    let (time, ()) = best(|| write_file(&path, &state_dict).expect("write_file"));
    let bytes = std::fs::metadata(&path).expect("written file").len();
    report("vggq-pth write_file (temp + fsync + rename)", bytes, time);

    let plain = dir.path().join("plain.pth");
    let (time, ()) = best(|| {
        let file = std::fs::File::create(&plain).expect("create");
        write_to(BufWriter::with_capacity(1 << 20, file), "plain", &state_dict).expect("write_to");
    });
    report("vggq-pth write_to (BufWriter<File>, no fsync)", bytes, time);

    let raw = vec![0u8; bytes as usize];
    let raw_path = dir.path().join("raw.bin");
    let (time, ()) = best(|| std::fs::write(&raw_path, &raw).expect("raw write"));
    report("std::fs::write of as many bytes (ceiling)", bytes, time);

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/python/torch_save.py");
    let torch_path = dir.path().join("torch.pth");
    let output = Command::new(&python).arg(script).arg(&torch_path).arg(REPEATS.to_string()).output().expect("run VGGQ_PYTHON");
    assert!(output.status.success(), "torch_save.py failed:\n{}", String::from_utf8_lossy(&output.stderr));
    let (seconds, torch_bytes) = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let (s, b) = line.split_once(' ')?;
            Some((s.parse::<f64>().ok()?, b.parse::<u64>().ok()?))
        })
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .expect("torch_save.py printed timings");
    report("torch.save (same shapes)", torch_bytes, Duration::from_secs_f64(seconds));
}
