//! The official CIFAR-10 binary format: `cifar-10-batches-bin/data_batch_{1..5}.bin` and `test_batch.bin`,
//! each a sequence of records of one label byte and 3072 pixel bytes (planar R, G, B planes of 32x32), and
//! `batches.meta.txt` with one class name per line.

use crate::data::error::DataError;
use crate::data::file_tree::{join, FileTree};
use crate::data::image_set::{ImageSet, CHANNELS, IMAGE_BYTES, SOURCE_SIDE};
use crate::data::source::{Cifar10, MAX_CLASSES};

/// The folder the official archive unpacks to.
pub const BATCH_FOLDER: &str = "cifar-10-batches-bin";
/// The five training batches, in the order their images are concatenated.
pub const TRAIN_BATCHES: [&str; 5] =
    ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"];
pub const TEST_BATCH: &str = "test_batch.bin";
pub const CLASS_NAMES_FILE: &str = "batches.meta.txt";
/// One label byte followed by the planar pixels.
pub const RECORD_BYTES: usize = 1 + IMAGE_BYTES;
const PLANE_BYTES: usize = SOURCE_SIDE * SOURCE_SIDE;

/// Whether `folder` of `tree` holds CIFAR-10 binary batches.
pub(crate) fn is_batch_folder(tree: &FileTree, folder: &str) -> bool {
    tree.has_file(&join(folder, TRAIN_BATCHES[0]))
}

/// Reads the batches in `folder` of `tree`.
pub(crate) fn read(tree: &FileTree, folder: &str) -> Result<Cifar10, DataError> {
    let file = |name: &str| {
        let name = join(folder, name);
        tree.file(&name).ok_or_else(|| DataError::MissingFile { path: tree.display_path(&name) })
    };
    let names_file = join(folder, CLASS_NAMES_FILE);
    let classes = parse_class_names(&tree.display_path(&names_file), file(CLASS_NAMES_FILE)?)?;
    let mut train = ImageSet::default();
    for batch in TRAIN_BATCHES {
        train.extend(parse_records(&tree.display_path(&join(folder, batch)), file(batch)?, classes.len())?);
    }
    let test = parse_records(&tree.display_path(&join(folder, TEST_BATCH)), file(TEST_BATCH)?, classes.len())?;
    Ok(Cifar10 { train, test, classes, fingerprint: tree.fingerprint() })
}

/// Class names, one per non-empty line (the official file ends with blank lines).
pub(crate) fn parse_class_names(path: &std::path::Path, bytes: &[u8]) -> Result<Vec<String>, DataError> {
    let classes: Vec<String> =
        String::from_utf8_lossy(bytes).lines().map(str::trim).filter(|line| !line.is_empty()).map(str::to_owned).collect();
    if classes.is_empty() || classes.len() > MAX_CLASSES {
        return Err(DataError::ClassCount { path: path.to_owned(), count: classes.len(), max: MAX_CLASSES });
    }
    Ok(classes)
}

/// Decodes a batch file's records into HWC images.
pub(crate) fn parse_records(path: &std::path::Path, bytes: &[u8], class_count: usize) -> Result<ImageSet, DataError> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(RECORD_BYTES) {
        return Err(DataError::TruncatedRecord { path: path.to_owned(), length: bytes.len(), record_bytes: RECORD_BYTES });
    }
    let count = bytes.len() / RECORD_BYTES;
    let mut pixels = vec![0u8; count * IMAGE_BYTES];
    let mut labels = Vec::with_capacity(count);
    for (record_index, (record, image)) in bytes.chunks_exact(RECORD_BYTES).zip(pixels.chunks_exact_mut(IMAGE_BYTES)).enumerate()
    {
        let label = record[0];
        if usize::from(label) >= class_count {
            return Err(DataError::LabelOutOfRange { path: path.to_owned(), record: record_index, label, class_count });
        }
        labels.push(label);
        let planes = &record[1..];
        for (pixel, hwc) in image.chunks_exact_mut(CHANNELS).enumerate() {
            for (channel, value) in hwc.iter_mut().enumerate() {
                *value = planes[channel * PLANE_BYTES + pixel];
            }
        }
    }
    Ok(ImageSet::new(pixels, labels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn planar_record_becomes_hwc() {
        let mut record = vec![3u8];
        for channel in 0..CHANNELS as u8 {
            record.extend((0..PLANE_BYTES).map(|i| (i as u8).wrapping_add(channel * 100)));
        }
        let set = parse_records(Path::new("b.bin"), &record, 10).unwrap();
        assert_eq!(set.labels(), [3]);
        // Pixel 5 (row 0, column 5): R = 5, G = 105, B = 205.
        assert_eq!(&set.image(0)[15..18], [5, 105, 205]);
    }

    #[test]
    fn class_names_skip_blank_lines() {
        let names = parse_class_names(Path::new("m.txt"), b"airplane\nautomobile\n\n").unwrap();
        assert_eq!(names, ["airplane", "automobile"]);
    }
}
