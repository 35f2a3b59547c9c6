//! The ImageFolder layout (`train/<class>/*`, `test/<class>/*`, labels = sorted class-folder names), as
//! torchvision's `ImageFolder` reads it, with images decoded in parallel.

use std::io::Cursor;

use image::ImageDecoder;
use rayon::prelude::*;

use crate::data::error::DataError;
use crate::data::file_tree::{join, FileTree};
use crate::data::image_set::{ImageSet, IMAGE_BYTES, SOURCE_SIDE};
use crate::data::source::{Cifar10, MAX_CLASSES};

pub const TRAIN_FOLDER: &str = "train";
pub const TEST_FOLDER: &str = "test";

/// Whether `folder` of `tree` looks like an ImageFolder root (the absent half is reported by `read`).
pub(crate) fn is_image_folder(tree: &FileTree, folder: &str) -> bool {
    tree.has_folder(&join(folder, TRAIN_FOLDER)) || tree.has_folder(&join(folder, TEST_FOLDER))
}

/// Reads `folder/train` and `folder/test` of `tree`.
pub(crate) fn read(tree: &FileTree, folder: &str) -> Result<Cifar10, DataError> {
    let train_folder = join(folder, TRAIN_FOLDER);
    let test_folder = join(folder, TEST_FOLDER);
    let classes = class_folders(tree, &train_folder)?;
    let test_classes = class_folders(tree, &test_folder)?;
    if classes != test_classes {
        return Err(DataError::ClassMismatch {
            train: tree.display_path(&train_folder),
            test: tree.display_path(&test_folder),
            train_classes: classes,
            test_classes,
        });
    }
    let train = read_split(tree, &train_folder, &classes)?;
    let test = read_split(tree, &test_folder, &classes)?;
    Ok(Cifar10 { train, test, classes, fingerprint: tree.fingerprint() })
}

fn class_folders(tree: &FileTree, split_folder: &str) -> Result<Vec<String>, DataError> {
    if !tree.has_folder(split_folder) {
        return Err(DataError::MissingFolder { path: tree.display_path(split_folder) });
    }
    let classes = tree.subfolders(split_folder);
    if classes.is_empty() || classes.len() > MAX_CLASSES {
        let path = tree.display_path(split_folder);
        return Err(DataError::ClassCount { path, count: classes.len(), max: MAX_CLASSES });
    }
    Ok(classes)
}

/// Decodes every file below each class folder (sorted by path, as torchvision does), labelled by the
/// class's index in `classes`.
fn read_split(tree: &FileTree, split_folder: &str, classes: &[String]) -> Result<ImageSet, DataError> {
    if let Some((name, _)) = tree.files_below(split_folder).find(|(name, _)| !name[split_folder.len() + 1..].contains('/')) {
        return Err(DataError::FileOutsideClassFolder { path: tree.display_path(name) });
    }
    let mut files = Vec::new();
    let mut labels = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let class_folder = join(split_folder, class);
        let before = files.len();
        files.extend(tree.files_below(&class_folder));
        if files.len() == before {
            return Err(DataError::EmptyClassFolder { path: tree.display_path(&class_folder) });
        }
        // `class_folders` caps the class count at MAX_CLASSES, so every label fits a u8.
        let label = u8::try_from(label).expect("class count is capped at MAX_CLASSES");
        labels.resize(files.len(), label);
    }
    let mut pixels = vec![0u8; files.len() * IMAGE_BYTES];
    pixels
        .par_chunks_exact_mut(IMAGE_BYTES)
        .zip(files.par_iter())
        .try_for_each(|(out, (name, bytes))| decode_into(bytes, out).map_err(|e| e.at(tree.display_path(name))))?;
    Ok(ImageSet::new(pixels, labels))
}

/// Why one image could not be decoded, before the path is attached.
enum DecodeError {
    /// No bytes at all, which the decoder would call an unknown format.
    Empty,
    NotAnImage(image::ImageError),
    WrongSize {
        width: u32,
        height: u32,
    },
}

impl DecodeError {
    fn at(self, path: std::path::PathBuf) -> DataError {
        match self {
            DecodeError::Empty => DataError::EmptyFile { path },
            DecodeError::NotAnImage(source) => DataError::NotAnImage { path, source },
            DecodeError::WrongSize { width, height } => DataError::WrongImageSize { path, width, height, expected: SOURCE_SIDE },
        }
    }
}

/// Decodes a JPEG or PNG (recognised by content, not by name) into `out` as RGB HWC, converting other
/// colour types to RGB as torchvision's loader does with `convert("RGB")`. The size is checked from the
/// header, before any pixel is decoded or allocated.
fn decode_into(bytes: &[u8], out: &mut [u8]) -> Result<(), DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    let decoder = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|error| DecodeError::NotAnImage(image::ImageError::IoError(error)))?
        .into_decoder()
        .map_err(DecodeError::NotAnImage)?;
    let (width, height) = decoder.dimensions();
    if usize::try_from(width) != Ok(SOURCE_SIDE) || usize::try_from(height) != Ok(SOURCE_SIDE) {
        return Err(DecodeError::WrongSize { width, height });
    }
    let image = image::DynamicImage::from_decoder(decoder).map_err(DecodeError::NotAnImage)?;
    out.copy_from_slice(image.to_rgb8().as_raw());
    Ok(())
}
