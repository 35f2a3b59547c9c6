//! Imports the committed ONNX fixture (written by vggq's own exporter) with burn-import: Rust source and
//! embedded weights in `$OUT_DIR/model/`.

const FIXTURE: &str = "onnx/vgg11bn_tiny_fp32.onnx";

#[allow(deprecated)] // burn-import 0.21 forwards to burn-onnx; the issue asks for burn-import.
fn main() {
    println!("cargo:rerun-if-changed={FIXTURE}");
    burn_import::onnx::ModelGen::new()
        .input(FIXTURE)
        .out_dir("model/")
        .load_strategy(burn_import::onnx::LoadStrategy::Embedded)
        .run_from_script();
}
