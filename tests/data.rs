//! Tests of `vggq::data`: generated datasets (every error case included), the real JPEG copy in
//! `shared/`, torchvision's preprocessing fixture, the seeded split and loader, and downloads from a
//! loopback server.

mod util;

use std::path::Path;
use std::sync::OnceLock;
use std::time::Instant;

use vggq::data::{load, Cifar10, DataError, DataSource};

/// The real JPEG copy, loaded once for all tests that need it.
fn real_jpeg() -> &'static Cifar10 {
    static DATA: OnceLock<Cifar10> = OnceLock::new();
    DATA.get_or_init(|| {
        let archive = util::shared_cifar10_jpeg();
        let started = Instant::now();
        let data = load(&DataSource::Local { path: archive }).expect("the shared JPEG copy loads");
        eprintln!("read cifar10-jpeg.tar.gz (60,000 JPEGs) in {:.2} s", started.elapsed().as_secs_f64());
        data
    })
}

fn load_path(path: &Path) -> Result<Cifar10, DataError> {
    load(&DataSource::Local { path: path.to_owned() })
}

mod real_data {
    use super::*;

    use crate::util::fixtures::CIFAR10_CLASSES;

    /// From shared/README.md.
    const JPEG_COPY_SHA256: &str = "45b041e867f5a40f79bfde38d3dd1fd511103d50068c1afecf6445e25234d4db";

    fn per_class(labels: &[u8]) -> Vec<usize> {
        let mut counts = vec![0; CIFAR10_CLASSES.len()];
        for &label in labels {
            counts[usize::from(label)] += 1;
        }
        counts
    }

    #[test]
    fn jpeg_copy_has_cifar10_shape_classes_and_fingerprint() {
        let data = real_jpeg();
        assert_eq!(data.train.len(), 50_000);
        assert_eq!(data.test.len(), 10_000);
        assert_eq!(data.classes, CIFAR10_CLASSES);
        assert_eq!(per_class(data.train.labels()), vec![5_000; 10]);
        assert_eq!(per_class(data.test.labels()), vec![1_000; 10]);
        assert_eq!(data.fingerprint.sha256, JPEG_COPY_SHA256);
        assert!(data.fingerprint.to_string().contains("cifar10-jpeg.tar.gz"));
    }
}

mod transforms {
    use super::*;
    use safetensors::SafeTensors;
    use vggq::data::{BilinearResize, Preprocess};

    /// Images of the fixture, from its README.txt.
    const FIXTURE_IMAGES: [&str; 8] = [
        "test/airplane/0001.jpg",
        "test/cat/0010.jpg",
        "test/ship/0100.jpg",
        "test/truck/0999.jpg",
        "train/bird/0001.jpg",
        "train/deer/2500.jpg",
        "train/frog/4999.jpg",
        "train/horse/1234.jpg",
    ];
    const SIDE: usize = 128;
    /// ToTensor + Normalize are replicated operation for operation in f32, so only the last bit may differ.
    const NORMALIZED_TOLERANCE: f64 = 1e-6;
    /// zune-jpeg (ours) and libjpeg-turbo (PIL) round IDCT and chroma upsampling differently (3 measured).
    const DECODER_TOLERANCE: f64 = 4.0;

    struct Fixture {
        bytes: Vec<u8>,
    }

    impl Fixture {
        fn read() -> Fixture {
            let path = util::shared_dir().join("fixtures/transforms/seed_preprocess.safetensors");
            Fixture { bytes: std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())) }
        }

        fn u8s(&self, key: &str) -> Vec<u8> {
            SafeTensors::deserialize(&self.bytes).unwrap().tensor(key).unwrap().data().to_vec()
        }

        fn f32s(&self, key: &str) -> Vec<f32> {
            let tensors = SafeTensors::deserialize(&self.bytes).unwrap();
            let data = tensors.tensor(key).unwrap().data().to_vec();
            data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
        }
    }

    /// Our decoded pixels of an archive path: its index is its rank among the split's sorted file names,
    /// since the reader orders images by class folder, then by file name.
    fn our_decoded(path: &str) -> &'static [u8] {
        let data = real_jpeg();
        let (split, rest) = path.split_once('/').unwrap();
        let (class, file) = rest.split_once('/').unwrap();
        let class_index = data.classes.iter().position(|c| c == class).unwrap();
        let set = if split == "train" { &data.train } else { &data.test };
        let per_class = set.len() / data.classes.len();
        let number: usize = file.trim_end_matches(".jpg").parse().unwrap();
        // The copy numbers each class's files 0000.. without gaps (checked by the label below).
        let index = class_index * per_class + number;
        assert_eq!(usize::from(set.label(index)), class_index);
        set.image(index)
    }

    #[test]
    fn decoded_pixels_are_close_to_pil() {
        let fixture = Fixture::read();
        let mut worst: f64 = 0.0;
        for (i, path) in FIXTURE_IMAGES.iter().enumerate() {
            let diff = util::max_abs_diff(our_decoded(path), &fixture.u8s(&format!("{i}_decoded_hwc_u8")));
            eprintln!("decode {path}: max abs diff {diff} levels vs PIL");
            worst = worst.max(diff);
        }
        assert!(worst <= DECODER_TOLERANCE, "decoded pixels differ from PIL by {worst} levels");
    }

    #[test]
    fn resize_of_pil_pixels_is_identical_to_pil() {
        let fixture = Fixture::read();
        let resize = BilinearResize::new(SIDE);
        for i in 0..FIXTURE_IMAGES.len() {
            let resized = resize.apply(&fixture.u8s(&format!("{i}_decoded_hwc_u8")));
            let expected = fixture.u8s(&format!("{i}_resized_hwc_u8"));
            let mismatches = resized.iter().zip(&expected).filter(|(a, e)| a != e).count();
            assert_eq!(mismatches, 0, "image {i}: {mismatches} of {} resized values differ from PIL", expected.len());
        }
    }

    #[test]
    fn normalized_and_flipped_match_torchvision() {
        let fixture = Fixture::read();
        let preprocess = Preprocess::new(SIDE);
        let mut out = vec![0f32; preprocess.output_len()];
        let mut worst: f64 = 0.0;
        for i in 0..FIXTURE_IMAGES.len() {
            let decoded = fixture.u8s(&format!("{i}_decoded_hwc_u8"));
            for (flip, key) in [(false, "normalized_chw_f32"), (true, "flipped_normalized_chw_f32")] {
                preprocess.apply(&decoded, flip, &mut out);
                let diff = util::max_abs_diff(&out, &fixture.f32s(&format!("{i}_{key}")));
                assert!(diff <= NORMALIZED_TOLERANCE, "image {i} {key}: max abs diff {diff}");
                worst = worst.max(diff);
            }
        }
        eprintln!("normalized and flipped vs torchvision: max abs diff {worst:e}");
    }
}

mod generated {
    use super::*;
    use util::fixtures::{self, CLASSES};
    use vggq::data::{DataOrigin, IMAGE_BYTES};

    #[test]
    fn cifar_binary_folder_and_archive_read_the_same_images() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("extracted");
        fixtures::write_cifar_binary(&folder);
        let archive = dir.path().join("cifar.tar.gz");
        fixtures::tar_gz(&folder, "", &archive);

        let from_folder = load_path(&folder).unwrap();
        assert_eq!(from_folder.classes, CLASSES);
        assert_eq!((from_folder.train.len(), from_folder.test.len()), (10, 3));
        // Training batches are concatenated in order, so image ids run 0..10 then 10..13.
        for id in 0..10u8 {
            assert_eq!(from_folder.train.image(usize::from(id)), fixtures::hwc_image(id), "train image {id}");
            assert_eq!(from_folder.train.label(usize::from(id)), id % 3);
        }
        assert_eq!(from_folder.test.image(2), fixtures::hwc_image(12));
        assert!(matches!(from_folder.fingerprint.origin, DataOrigin::Folder(_)));

        let from_archive = load_path(&archive).unwrap();
        assert_eq!(from_archive.train, from_folder.train);
        assert_eq!(from_archive.test, from_folder.test);
        assert_eq!(from_archive.fingerprint.origin, DataOrigin::Archive(archive.clone()));
        let archive_sha = vggq::data::file_digest(&archive, vggq::data::DigestAlgorithm::Sha256).unwrap().hex;
        assert_eq!(from_archive.fingerprint.sha256, archive_sha);

        // The batch folder itself is accepted too.
        let inner = load_path(&folder.join(vggq::data::BATCH_FOLDER)).unwrap();
        assert_eq!(inner.train, from_folder.train);
    }

    #[test]
    fn image_folder_directory_and_wrapped_archive_read_the_same_images() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("images");
        fixtures::write_image_folder(&folder);
        let archive = dir.path().join("images.tar.gz");
        fixtures::tar_gz(&folder, "cifar10-small", &archive);

        let from_folder = load_path(&folder).unwrap();
        assert_eq!(from_folder.classes, CLASSES);
        assert_eq!(from_folder.train.labels(), [0, 0, 1, 1, 2, 2]);
        assert_eq!(from_folder.test.labels(), [0, 1, 2]);
        // PNG is lossless: the pixels come back exactly; order is class, then file name.
        assert_eq!(from_folder.train.image(3), fixtures::hwc_image(11));
        assert_eq!(from_folder.test.image(2), fixtures::hwc_image(25));
        assert_eq!(from_folder.train.pixels().len(), 6 * IMAGE_BYTES);

        let from_archive = load_path(&archive).unwrap();
        assert_eq!(from_archive.train, from_folder.train);
        assert_eq!(from_archive.test, from_folder.test);
    }

    #[test]
    fn folder_fingerprint_follows_content() {
        let dir = tempfile::tempdir().unwrap();
        fixtures::write_image_folder(dir.path());
        let before = load_path(dir.path()).unwrap().fingerprint;
        assert_eq!(load_path(dir.path()).unwrap().fingerprint, before, "fingerprint is deterministic");
        fixtures::write_png(&dir.path().join("train/cat/1.png"), 99);
        assert_ne!(load_path(dir.path()).unwrap().fingerprint.sha256, before.sha256);
    }
}

mod errors {
    use super::*;
    use std::fs;
    use util::fixtures;
    use vggq::data::{BATCH_FOLDER, CLASS_NAMES_FILE, TEST_BATCH, TRAIN_BATCHES};

    /// Loads `path`, expecting an error whose message names `named` (a path fragment).
    fn load_error(path: &Path, named: &str) -> DataError {
        let error = match load_path(path) {
            Ok(_) => panic!("loading {} should fail", path.display()),
            Err(error) => error,
        };
        let message = error.to_string();
        assert!(message.contains(named), "`{message}` does not name `{named}`");
        error
    }

    #[test]
    fn missing_train_or_test_folder() {
        for missing in ["train", "test"] {
            let dir = tempfile::tempdir().unwrap();
            fixtures::write_image_folder(dir.path());
            fs::remove_dir_all(dir.path().join(missing)).unwrap();
            let error = load_error(dir.path(), &dir.path().join(missing).display().to_string());
            assert!(matches!(error, DataError::MissingFolder { .. }), "{error:?}");
        }
    }

    #[test]
    fn empty_class_folder() {
        let dir = tempfile::tempdir().unwrap();
        fixtures::write_image_folder(dir.path());
        for file in ["0.png", "1.png"] {
            fs::remove_file(dir.path().join("train/dog").join(file)).unwrap();
        }
        let error = load_error(dir.path(), "train/dog");
        assert!(matches!(error, DataError::EmptyClassFolder { .. }), "{error:?}");
    }

    #[test]
    fn non_image_file() {
        let dir = tempfile::tempdir().unwrap();
        fixtures::write_image_folder(dir.path());
        fs::write(dir.path().join("test/frog/notes.jpg"), "not a jpeg").unwrap();
        let error = load_error(dir.path(), "test/frog/notes.jpg");
        assert!(matches!(error, DataError::NotAnImage { .. }), "{error:?}");
        // An image of no bytes is said to be empty, not of a format that could not be determined.
        fs::write(dir.path().join("test/frog/notes.jpg"), "").unwrap();
        let error = load_error(dir.path(), "test/frog/notes.jpg` is empty (0 bytes)");
        assert!(matches!(error, DataError::EmptyFile { .. }), "{error:?}");
    }

    #[test]
    fn wrong_image_size() {
        let dir = tempfile::tempdir().unwrap();
        fixtures::write_image_folder(dir.path());
        fixtures::write_png_of_side(&dir.path().join("train/cat/2.png"), 0, 64);
        let error = load_error(dir.path(), "train/cat/2.png");
        assert!(matches!(error, DataError::WrongImageSize { width: 64, height: 64, expected: 32, .. }), "{error:?}");
    }

    #[test]
    fn file_outside_class_folder() {
        let dir = tempfile::tempdir().unwrap();
        fixtures::write_image_folder(dir.path());
        fixtures::write_png(&dir.path().join("train/stray.png"), 0);
        let error = load_error(dir.path(), "train/stray.png");
        assert!(matches!(error, DataError::FileOutsideClassFolder { .. }), "{error:?}");
    }

    #[test]
    fn class_mismatch_between_train_and_test() {
        let dir = tempfile::tempdir().unwrap();
        fixtures::write_image_folder(dir.path());
        fixtures::write_png(&dir.path().join("test/horse/0.png"), 0);
        let error = load_error(dir.path(), "horse");
        assert!(matches!(error, DataError::ClassMismatch { .. }), "{error:?}");
    }

    #[test]
    fn truncated_binary_record() {
        let dir = tempfile::tempdir().unwrap();
        fixtures::write_cifar_binary(dir.path());
        let batch = dir.path().join(BATCH_FOLDER).join(TRAIN_BATCHES[2]);
        let bytes = fs::read(&batch).unwrap();
        fs::write(&batch, &bytes[..bytes.len() - 1]).unwrap();
        let error = load_error(dir.path(), TRAIN_BATCHES[2]);
        assert!(matches!(error, DataError::TruncatedRecord { record_bytes: 3073, .. }), "{error:?}");
    }

    /// A local archive cut short (an interrupted copy) or damaged says so, naming the archive, instead of
    /// an i/o error on a path inside it that does not exist on disk, or an image that does not decode
    /// (or, worse, decodes to other pixels): a byte flipped anywhere in the stream, in a file's data too,
    /// which deflate may decode without complaint and only gzip's CRC-32 at the stream's end catches.
    #[test]
    fn cut_short_or_damaged_archive() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("images");
        fixtures::write_image_folder(&folder);
        let archive = dir.path().join("images.tar.gz");
        fixtures::tar_gz(&folder, "", &archive);
        let whole = fs::read(&archive).unwrap();
        let flipped_at = |at: usize| {
            let mut flipped = whole.clone();
            flipped[at] ^= 0xff;
            (format!("byte {at} of {} flipped", whole.len()), flipped)
        };
        let damaged = (1..16).map(|sixteenth| flipped_at(whole.len() * sixteenth / 16));
        for (how, bytes) in std::iter::once(("cut short".to_string(), whole[..whole.len() / 2].to_vec())).chain(damaged) {
            fs::write(&archive, bytes).unwrap();
            let error = load_error(&archive, &format!("`{}` is cut short or damaged", archive.display()));
            assert!(matches!(error, DataError::DamagedArchive { .. }), "{how}: {error:?}");
        }
    }

    #[test]
    fn binary_label_without_class_name() {
        let dir = tempfile::tempdir().unwrap();
        fixtures::write_cifar_binary(dir.path());
        let batch = dir.path().join(BATCH_FOLDER).join(TEST_BATCH);
        let mut bytes = fs::read(&batch).unwrap();
        bytes[vggq::data::RECORD_BYTES] = 3;
        fs::write(&batch, bytes).unwrap();
        let error = load_error(dir.path(), TEST_BATCH);
        assert!(matches!(error, DataError::LabelOutOfRange { record: 1, label: 3, class_count: 3, .. }), "{error:?}");
    }

    #[test]
    fn empty_class_list() {
        let dir = tempfile::tempdir().unwrap();
        fixtures::write_cifar_binary(dir.path());
        fs::write(dir.path().join(BATCH_FOLDER).join(CLASS_NAMES_FILE), "\n\n").unwrap();
        let error = load_error(dir.path(), CLASS_NAMES_FILE);
        assert!(matches!(error, DataError::ClassCount { count: 0, .. }), "{error:?}");
    }

    /// A label past the model's ten outputs would fail inside training: the run's data refuses it first,
    /// naming the data and its classes.
    #[test]
    fn classes_other_than_the_models_outputs() {
        use vggq::pipeline::RunData;
        use vggq::profile::{Profile, ProfileName};
        let dir = tempfile::tempdir().unwrap();
        fixtures::write_image_folder(dir.path());
        let profile = Profile::named(ProfileName::Smoke);
        let error = RunData::new(load_path(dir.path()).unwrap(), &profile).err().expect("three classes are refused");
        let message = error.to_string();
        assert!(message.contains(&dir.path().display().to_string()) && message.contains("cat"), "{message}");
        assert!(matches!(&error, DataError::ClassesForModel { classes, model: 10, .. } if classes.len() == 3), "{error:?}");
    }

    #[test]
    fn missing_binary_batch() {
        let dir = tempfile::tempdir().unwrap();
        fixtures::write_cifar_binary(dir.path());
        fs::remove_file(dir.path().join(BATCH_FOLDER).join(TEST_BATCH)).unwrap();
        let error = load_error(dir.path(), TEST_BATCH);
        assert!(matches!(error, DataError::MissingFile { .. }), "{error:?}");
    }

    #[test]
    fn unknown_layout_and_missing_path() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("readme.txt"), "nothing here").unwrap();
        let error = load_error(dir.path(), &dir.path().display().to_string());
        assert!(matches!(error, DataError::UnknownLayout { .. }), "{error:?}");
        // What it holds, for a user to see the copy they meant (here, beside it).
        fs::create_dir(dir.path().join("wrapped")).unwrap();
        fs::write(dir.path().join("wrapped/cifar-10-binary.tar.gz"), "not read").unwrap();
        load_error(dir.path(), "it holds `wrapped/`, `readme.txt`");
        load_error(&dir.path().join("wrapped"), "it holds `cifar-10-binary.tar.gz`");
        let plain_file = dir.path().join("readme.txt");
        let error = load_error(&plain_file, "readme.txt` is a file but not a gzip-compressed archive");
        assert!(matches!(error, DataError::NotGzip { plain_tar: false, .. }), "{error:?}");
        // An archive left uncompressed is said to be one.
        let tar = dir.path().join("cifar-10-binary.tar");
        let mut builder = tar::Builder::new(fs::File::create(&tar).unwrap());
        builder.append_path_with_name(&plain_file, "readme.txt").unwrap();
        builder.finish().unwrap();
        drop(builder);
        let error = load_error(&tar, "cifar-10-binary.tar` is an uncompressed tar archive (gzip it, or unpack it");
        assert!(matches!(error, DataError::NotGzip { plain_tar: true, .. }), "{error:?}");
        let empty = dir.path().join("cifar-10-binary.tar.gz");
        fs::write(&empty, b"").unwrap();
        assert!(matches!(load_error(&empty, "is empty (0 bytes)"), DataError::EmptyFile { .. }));
        // A link to a folder above it would be read once more at every level.
        let looped = dir.path().join("looped");
        fs::create_dir_all(looped.join("train/cat")).unwrap();
        std::os::unix::fs::symlink("..", looped.join("train/cat/up")).unwrap();
        let error = load_error(&looped, "has already been read through");
        assert!(matches!(&error, DataError::FolderReadTwice { path } if path.ends_with("train/cat/up")), "{error:?}");
        // In a folder of other things, the loop does not hide that it is not CIFAR-10.
        let error = load_error(dir.path(), "`cifar-10-binary.tar.gz`, `readme.txt` (listing it stopped early: `");
        assert!(
            matches!(&error, DataError::UnknownLayout { holds, .. } if holds.contains("train/cat/up` is a folder")),
            "{error:?}"
        );
        let absent = dir.path().join("absent");
        assert!(matches!(load_error(&absent, "absent"), DataError::MissingSource { .. }));
    }

    /// A later step checks its data by digest before loading it; data of neither layout (an empty folder)
    /// is refused as such there too, not reported as other data than the run's.
    #[test]
    fn a_digest_is_only_taken_of_cifar10() {
        let dir = tempfile::tempdir().unwrap();
        let source = |path: &Path| DataSource::Local { path: path.to_path_buf() };
        let error = vggq::data::source_digest(&source(dir.path())).unwrap_err();
        assert!(matches!(error, DataError::UnknownLayout { .. }), "{error:?}");
        fixtures::write_cifar_binary(dir.path());
        let digest = vggq::data::source_digest(&source(dir.path())).unwrap();
        assert_eq!(digest, load(&source(dir.path())).unwrap().fingerprint.to_string());
    }
}

mod split {
    use vggq::data::Split;

    #[test]
    fn same_seed_same_split_on_every_machine() {
        let split = Split::new(50_000, 0);
        assert_eq!((split.train.len(), split.val.len()), (40_000, 10_000));
        assert_eq!(split, Split::new(50_000, 0));
        assert_ne!(split, Split::new(50_000, 1));
        // ChaCha8 is platform-independent: pinning the first indices catches any change of algorithm.
        assert_eq!(split.val[..5], GOLDEN_VAL_SEED_0);
        let subset = split.subset(10_000, 0);
        assert_eq!((subset.train.len(), subset.val.len()), (8_000, 2_000));
        assert_eq!(subset, split.subset(10_000, 0));
        assert_ne!(subset, split.subset(10_000, 1));
        assert_eq!(subset.train[..5], GOLDEN_SUBSET_TRAIN_SEED_0);
    }

    const GOLDEN_VAL_SEED_0: [usize; 5] = [21470, 4781, 11802, 19579, 32950];
    const GOLDEN_SUBSET_TRAIN_SEED_0: [usize; 5] = [15838, 33236, 4413, 30861, 7029];
}

mod loader {
    use super::*;
    use vggq::data::{Batch, BatchLoader, LoaderConfig, Preprocess};

    fn small_set() -> vggq::data::ImageSet {
        real_jpeg().test.select(&(0..100).map(|i| i * 97).collect::<Vec<_>>())
    }

    fn config(side: usize) -> LoaderConfig {
        LoaderConfig { batch_size: 32, workers: 2, prefetch: 3, ..LoaderConfig::train(side, 5) }
    }

    fn collect(loader: &BatchLoader, epoch: u64) -> Vec<Batch> {
        loader.epoch(epoch).collect()
    }

    #[test]
    fn batches_are_seeded_complete_and_keep_the_last_partial_one() {
        let set = small_set();
        let loader = BatchLoader::new(set.clone(), config(32)).unwrap();
        let epoch = collect(&loader, 0);
        assert_eq!(loader.batch_count(), 4);
        assert_eq!(epoch.iter().map(Batch::len).collect::<Vec<_>>(), [32, 32, 32, 4]);
        assert_eq!(epoch[3].shape(), [4, 3, 32, 32]);
        assert_eq!(epoch[3].images.len(), 4 * 3 * 32 * 32);
        assert_eq!(epoch, collect(&loader, 0), "same epoch, same batches");
        assert_ne!(epoch[0].labels, collect(&loader, 1)[0].labels, "each epoch has its own order");
        let mut labels: Vec<i64> = epoch.iter().flat_map(|b| b.labels.clone()).collect();
        let mut expected: Vec<i64> = set.labels().iter().map(|&l| i64::from(l)).collect();
        labels.sort_unstable();
        expected.sort_unstable();
        assert_eq!(labels, expected, "every image exactly once");
        // A training resumed inside an epoch takes the rest of the same batches, the partial one included.
        assert_eq!(loader.epoch_from(0, 2).collect::<Vec<_>>(), epoch[2..]);
        assert_eq!(loader.epoch_from(0, 4).count(), 0);
    }

    #[test]
    fn eval_batches_follow_the_set_and_are_never_flipped() {
        let set = small_set();
        let loader = BatchLoader::new(set.clone(), LoaderConfig { batch_size: 10, ..LoaderConfig::eval(64) }).unwrap();
        let preprocess = Preprocess::new(64);
        let mut expected = vec![0f32; preprocess.output_len()];
        for (b, batch) in loader.epoch(3).enumerate() {
            for (k, image) in batch.images.chunks_exact(preprocess.output_len()).enumerate() {
                let index = b * 10 + k;
                preprocess.apply(set.image(index), false, &mut expected);
                assert_eq!(image, expected.as_slice(), "image {index}");
                assert_eq!(batch.labels[k], i64::from(set.label(index)));
            }
        }
    }

    #[test]
    fn train_batches_flip_about_half_the_images() {
        let set = small_set();
        let loader = BatchLoader::new(set.clone(), LoaderConfig { shuffle: false, ..config(32) }).unwrap();
        let preprocess = Preprocess::new(32);
        let mut plain = vec![0f32; preprocess.output_len()];
        let mut flipped = 0;
        for (index, image) in collect(&loader, 0).iter().flat_map(|b| b.images.chunks_exact(3 * 32 * 32)).enumerate() {
            preprocess.apply(set.image(index), false, &mut plain);
            if image != plain.as_slice() {
                preprocess.apply(set.image(index), true, &mut plain);
                assert_eq!(image, plain.as_slice(), "image {index} is neither plain nor flipped");
                flipped += 1;
            }
        }
        assert!((30..=70).contains(&flipped), "{flipped} of 100 images flipped");
    }

    #[test]
    fn rejects_zero_batch_size() {
        let error = BatchLoader::new(small_set(), LoaderConfig { batch_size: 0, ..config(32) }).err().unwrap();
        assert!(error.to_string().contains("batch size"), "{error}");
    }
}

mod download {
    use super::*;
    use std::fs;
    use util::fixtures;
    use util::http_server::{Reply, TestServer};
    use vggq::data::{download_verified, file_digest, DigestAlgorithm, DownloadOutcome, ExpectedFile};

    /// A small CIFAR-format archive and its MD5.
    fn small_archive() -> (Vec<u8>, String) {
        let dir = tempfile::tempdir().unwrap();
        fixtures::write_cifar_binary(dir.path());
        let archive = dir.path().join("a.tar.gz");
        fixtures::tar_gz(&dir.path().join(vggq::data::BATCH_FOLDER), vggq::data::BATCH_FOLDER, &archive);
        let md5 = file_digest(&archive, DigestAlgorithm::Md5).unwrap().hex;
        (fs::read(&archive).unwrap(), md5)
    }

    /// The small archive served at `/cifar.tar.gz`, and an empty cache to download it into.
    struct Served {
        archive: Vec<u8>,
        md5: String,
        server: TestServer,
        cache: tempfile::TempDir,
    }

    impl Served {
        fn new() -> Self {
            let (archive, md5) = small_archive();
            let server = TestServer::start(vec![("/cifar.tar.gz", Reply::Body(archive.clone()))]);
            Served { archive, md5, server, cache: tempfile::tempdir().unwrap() }
        }

        /// Where the download goes.
        fn dest(&self) -> std::path::PathBuf {
            self.cache.path().join("cifar.tar.gz")
        }

        fn download(&self) -> Result<DownloadOutcome, DataError> {
            let expected =
                ExpectedFile { length: Some(self.archive.len() as u64), algorithm: DigestAlgorithm::Md5, digest: &self.md5 };
            let verified = download_verified(&self.server.url("/cifar.tar.gz"), &self.dest(), &expected)?;
            assert_eq!(verified.digest.hex, self.md5, "the digest of the file in place");
            Ok(verified.outcome)
        }
    }

    /// Names in `dir`, to check that a failed download leaves nothing behind.
    fn entries(dir: &Path) -> Vec<String> {
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn downloads_verifies_loads_and_then_uses_the_cache() {
        let served = Served::new();
        assert_eq!(served.download().unwrap(), DownloadOutcome::Downloaded);
        assert_eq!(fs::read(served.dest()).unwrap(), served.archive);
        assert_eq!(entries(served.cache.path()), ["cifar.tar.gz"], "no temporary file left");
        assert_eq!(load_path(&served.dest()).unwrap().train.len(), 10);

        assert_eq!(served.download().unwrap(), DownloadOutcome::Cached);
        assert_eq!(served.server.requests(), 1, "a verified cached file is not downloaded again");
    }

    /// A download killed midway (Ctrl-C) left its temporary file, which nothing removed: up to the size
    /// of the file (163 MB for CIFAR-10, 507 MB for the torchvision weights) in the cache, each time. The
    /// next download of the same file removes it. Its name is the one every atomic write gives its
    /// temporary file (`.<name>.<6 letters or digits>.tmp`); another file's is kept.
    #[test]
    fn a_killed_downloads_temporary_file_is_removed_by_the_next() {
        let served = Served::new();
        let cache = served.cache.path();
        fs::write(cache.join(".cifar.tar.gz.k1LLed.tmp"), &served.archive[..served.archive.len() / 2]).unwrap();
        fs::write(cache.join(".other.tar.gz.k1LLed.tmp"), b"another file's").unwrap();
        assert_eq!(served.download().unwrap(), DownloadOutcome::Downloaded);
        let mut left = entries(cache);
        left.sort();
        assert_eq!(left, [".other.tar.gz.k1LLed.tmp", "cifar.tar.gz"]);
    }

    #[test]
    fn sha256_and_a_stale_cached_file_are_handled() {
        let (archive, _) = small_archive();
        let server = TestServer::start(vec![("/w.bin", Reply::Body(archive.clone()))]);
        let cache = tempfile::tempdir().unwrap();
        let dest = cache.path().join("w.bin");
        fs::write(&dest, b"stale partial file").unwrap();
        let sha = {
            fs::write(cache.path().join("probe"), &archive).unwrap();
            let digest = file_digest(&cache.path().join("probe"), DigestAlgorithm::Sha256).unwrap().hex;
            fs::remove_file(cache.path().join("probe")).unwrap();
            digest
        };
        // Only a prefix, as torchvision publishes it; the whole digest comes back.
        let expected = ExpectedFile { length: Some(archive.len() as u64), algorithm: DigestAlgorithm::Sha256, digest: &sha[..8] };
        let verified = download_verified(&server.url("/w.bin"), &dest, &expected).unwrap();
        assert_eq!((verified.outcome, verified.digest.hex), (DownloadOutcome::Downloaded, sha));
        assert_eq!(fs::read(&dest).unwrap(), archive);
    }

    #[test]
    fn truncated_corrupted_cut_and_missing_downloads_fail_and_leave_nothing() {
        let (archive, md5) = small_archive();
        let mut corrupted = archive.clone();
        corrupted[archive.len() / 2] ^= 0xff;
        let truncated = archive[..archive.len() - 100].to_vec();
        let server = TestServer::start(vec![
            ("/truncated", Reply::Body(truncated)),
            ("/corrupted", Reply::Body(corrupted)),
            ("/cut", Reply::CutShort { declared: archive.len(), body: archive[..1000].to_vec() }),
        ]);
        let expected = ExpectedFile { length: Some(archive.len() as u64), algorithm: DigestAlgorithm::Md5, digest: &md5 };
        let cache = tempfile::tempdir().unwrap();
        let dest = cache.path().join("cifar.tar.gz");
        let attempt = |path: &str| {
            let url = server.url(path);
            let error = download_verified(&url, &dest, &expected).unwrap_err();
            let message = error.to_string();
            assert!(message.contains(&url), "`{message}` does not name the URL");
            assert!(entries(cache.path()).is_empty(), "{path} left {:?}", entries(cache.path()));
            (error, message)
        };

        let (error, message) = attempt("/truncated");
        assert!(matches!(error, DataError::LengthMismatch { .. }), "{error:?}");
        assert!(message.contains(&archive.len().to_string()) && message.contains(&(archive.len() - 100).to_string()));

        let (error, message) = attempt("/corrupted");
        assert!(matches!(error, DataError::DigestMismatch { .. }), "{error:?}");
        assert!(message.contains(&md5), "{message}");

        let (error, _) = attempt("/cut");
        assert!(matches!(error, DataError::Transfer { .. }), "{error:?}");

        let (error, message) = attempt("/absent");
        assert!(matches!(error, DataError::Request { .. }), "{error:?}");
        assert!(message.contains("404"), "{message}");
    }
}
