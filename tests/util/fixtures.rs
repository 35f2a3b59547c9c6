//! Tiny datasets written in temporary folders: CIFAR-10 binary batches and ImageFolder trees.

use std::fs;
use std::path::Path;

use image::{Rgb, RgbImage};
use vggq::data::{BATCH_FOLDER, CLASS_NAMES_FILE, IMAGE_BYTES, SOURCE_SIDE, TEST_BATCH, TRAIN_BATCHES};

pub const CLASSES: [&str; 3] = ["cat", "dog", "frog"];
/// CIFAR-10's classes, in label order: the data of a run's models (which give a logit for each).
pub const CIFAR10_CLASSES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// A deterministic HWC image whose pixels depend on `id`, so images can be told apart after loading.
pub fn hwc_image(id: u8) -> Vec<u8> {
    (0..IMAGE_BYTES).map(|i| (i as u8).wrapping_mul(7).wrapping_add(id.wrapping_mul(31))).collect()
}

/// One binary record: label, then the R, G and B planes of `hwc`.
pub fn cifar_record(label: u8, hwc: &[u8]) -> Vec<u8> {
    let mut record = vec![label];
    for channel in 0..3 {
        record.extend(hwc.iter().skip(channel).step_by(3));
    }
    record
}

/// Writes `folder/cifar-10-batches-bin/` with two records per training batch and three in the test batch;
/// image ids count up from 0 across train then test, labels cycle through `CLASSES`.
pub fn write_cifar_binary(folder: &Path) {
    write_cifar_binary_of(folder, &CLASSES);
}

/// [`write_cifar_binary`] with these classes (the labels cycle through them).
pub fn write_cifar_binary_of(folder: &Path, classes: &[&str]) {
    let batches = folder.join(BATCH_FOLDER);
    fs::create_dir_all(&batches).unwrap();
    fs::write(batches.join(CLASS_NAMES_FILE), format!("{}\n\n", classes.join("\n"))).unwrap();
    let mut id = 0u8;
    let files = TRAIN_BATCHES.iter().map(|name| (name, 2)).chain([(&TEST_BATCH, 3)]);
    for (name, records) in files {
        let mut bytes = Vec::new();
        for _ in 0..records {
            bytes.extend(cifar_record(id % classes.len() as u8, &hwc_image(id)));
            id += 1;
        }
        fs::write(batches.join(name), bytes).unwrap();
    }
}

/// Saves `hwc_image(id)` as a lossless PNG of the CIFAR side.
pub fn write_png(path: &Path, id: u8) {
    write_png_of_side(path, id, SOURCE_SIDE as u32);
}

pub fn write_png_of_side(path: &Path, id: u8, side: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let pixels = hwc_image(id);
    let image = RgbImage::from_fn(side, side, |x, y| {
        let at = ((y as usize % SOURCE_SIDE) * SOURCE_SIDE + x as usize % SOURCE_SIDE) * 3;
        Rgb([pixels[at], pixels[at + 1], pixels[at + 2]])
    });
    image.save(path).unwrap();
}

/// Writes `train/<class>/{0,1}.png` and `test/<class>/0.png` for every class in `CLASSES`; image id =
/// 10 * class index + (split offset) + file number.
pub fn write_image_folder(folder: &Path) {
    for (class_index, class) in CLASSES.iter().enumerate() {
        let id = 10 * class_index as u8;
        write_png(&folder.join(format!("train/{class}/0.png")), id);
        write_png(&folder.join(format!("train/{class}/1.png")), id + 1);
        write_png(&folder.join(format!("test/{class}/0.png")), id + 5);
    }
}

/// Packs the contents of `folder` into a `.tar.gz` at `archive`, below `prefix` inside the archive.
pub fn tar_gz(folder: &Path, prefix: &str, archive: &Path) {
    let file = fs::File::create(archive).unwrap();
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(file, flate2::Compression::fast()));
    builder.append_dir_all(prefix, folder).unwrap();
    builder.into_inner().unwrap().finish().unwrap();
}
