//! CIFAR-10 for training: reading it (official binary archive or ImageFolder, as a folder or `.tar.gz`),
//! verified downloads, the seeded train/val split, torchvision-identical preprocessing and the batch loader.
//!
//! Independent of Burn by design: batches are plain `Vec<f32>` (CHW) and `Vec<i64>` that the training
//! code turns into tensors.

mod cifar_binary;
mod digest;
mod download;
mod error;
mod file_tree;
mod image_folder;
mod image_set;
mod loader;
mod seed;
mod source;
mod split;
mod transform;

pub use cifar_binary::{BATCH_FOLDER, CLASS_NAMES_FILE, RECORD_BYTES, TEST_BATCH, TRAIN_BATCHES};
pub use digest::{bytes_digest, file_digest, DigestAlgorithm, StreamDigest};
pub use download::{download_verified, DownloadOutcome, ExpectedFile, Verified};
pub use error::DataError;
pub use file_tree::DataOrigin;
pub(crate) use file_tree::TAR_MAGIC;
pub use image_folder::{TEST_FOLDER, TRAIN_FOLDER};
pub use image_set::{ImageSet, CHANNELS, IMAGE_BYTES, SOURCE_SIDE};
pub use loader::{Batch, BatchLoader, EpochBatches, LoaderConfig, DEFAULT_BATCH_SIZE};
pub use source::{
    content_of, is_recorded_as, load, source_digest, Cifar10, DataSource, Fingerprint, ImageCounts, CIFAR10_BINARY_ARCHIVE,
    CIFAR10_BINARY_FILE_NAME, CIFAR10_BINARY_URL, MAX_CLASSES,
};
pub use split::Split;
pub use transform::{BilinearResize, Preprocess, IMAGENET_MEAN, IMAGENET_STD};
