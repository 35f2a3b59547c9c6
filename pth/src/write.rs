//! Writing a state_dict exactly as `torch.save(model.state_dict(), path)` does.
//!
//! The pickle is built in memory (a few KiB), then every storage is streamed from the caller's
//! borrowed bytes into the zip in chunks; the only copy of the weights is the one the caller holds.

use std::borrow::Cow;
use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::pickle::write::{setitems_batches, PickleWriter};
use crate::tensor::{DType, PackedLinearParams, QTensor, Quantizer, StateDict, Tensor, Value};
use crate::zip::ZipWriter;

/// Bytes handed to the hasher, CRC and writer at a time: large enough for few syscalls, small
/// enough to stay in cache between the three passes.
const STREAM_CHUNK: usize = 1 << 20;
/// Largest `_version` written: Python ints are unbounded, our pickler's are `i64`.
const MAX_MODULE_VERSION: u64 = i64::MAX as u64;

/// The small records every archive carries, in torch's order, before the storages.
const FORMAT_VERSION: &[u8] = b"1";
const STORAGE_ALIGNMENT: &[u8] = b"64";
const BYTEORDER: &[u8] = b"little";
/// `version`, written after the storages.
const ARCHIVE_VERSION: &[u8] = b"3\n";

/// Writes `state_dict` to `path` atomically; the archive folder inside the zip is the file stem, as
/// torch names it.
///
/// The bytes go to a temporary file in the same folder, which is flushed to disk (`fsync`) and then
/// renamed over `path` (`vggq_core::atomic`): a crash or a full disk leaves either the old file or the
/// complete new one, never a truncated `.pth` that would fail later inside `torch.load`.
pub fn write_file(path: &Path, state_dict: &StateDict<'_>) -> Result<()> {
    let archive =
        path.file_stem().and_then(|s| s.to_str()).ok_or_else(|| Error::InvalidArchiveName(path.display().to_string()))?;
    vggq_core::atomic::write_with(path, |out| write_to(out, archive, state_dict).map(drop)).map_err(|error| match error {
        Error::Io(source) => Error::File { path: path.to_owned(), source },
        other => other,
    })
}

/// Writes the `.pth` bytes of `state_dict` to `out` with `archive` as the folder inside the zip, and
/// returns `out`. Equal inputs give equal bytes.
pub fn write_to<W: Write>(out: W, archive: &str, state_dict: &StateDict<'_>) -> Result<W> {
    if archive.is_empty() || archive.contains(['/', '\\']) {
        return Err(Error::InvalidArchiveName(archive.to_owned()));
    }
    let Encoder { pickle, storages } = encode(state_dict)?;
    let pickle = pickle.finish();

    let mut zip = ZipWriter::new(out);
    // The serialization id names this content: SHA-256 over the pickle and each storage (length-framed).
    let mut hasher = Sha256::new();
    hasher.update((pickle.len() as u64).to_le_bytes());
    hasher.update(&pickle);
    zip.entry(&format!("{archive}/data.pkl"), &pickle)?;
    zip.entry(&format!("{archive}/.format_version"), FORMAT_VERSION)?;
    zip.entry(&format!("{archive}/.storage_alignment"), STORAGE_ALIGNMENT)?;
    zip.entry(&format!("{archive}/byteorder"), BYTEORDER)?;
    for (key, storage) in storages.iter().enumerate() {
        zip.start_entry(&format!("{archive}/data/{key}"), storage.len() as u64)?;
        hasher.update((storage.len() as u64).to_le_bytes());
        for chunk in storage.chunks(STREAM_CHUNK) {
            hasher.update(chunk);
            zip.write_data(chunk)?;
        }
        zip.end_entry()?;
    }
    zip.entry(&format!("{archive}/version"), ARCHIVE_VERSION)?;
    zip.entry(&format!("{archive}/.data/serialization_id"), serialization_id(&hasher.finalize()).as_bytes())?;
    zip.finish()
}

/// torch's id format: two zero-padded 20-digit decimal u64s (torch draws them at random; we take
/// them from the content hash so that the same tensors give the same file).
fn serialization_id(digest: &[u8]) -> String {
    let high = u64::from_be_bytes(digest[..8].try_into().expect("sha-256 has 32 bytes"));
    let low = u64::from_be_bytes(digest[8..16].try_into().expect("sha-256 has 32 bytes"));
    format!("{high:020}{low:020}")
}

/// Pickles the state_dict; the encoder holds the pickle and the storages in key order (`data/0`, ...).
fn encode<'s>(state_dict: &'s StateDict<'_>) -> Result<Encoder<'s>> {
    let mut seen = std::collections::HashSet::new();
    for (key, value) in &state_dict.entries {
        if !seen.insert(key.as_str()) {
            return Err(Error::DuplicateKey { key: key.clone() });
        }
        value.check(key)?;
    }
    let mut seen = std::collections::HashSet::new();
    for (prefix, version) in &state_dict.metadata {
        if !seen.insert(prefix.as_str()) {
            return Err(Error::DuplicateKey { key: format!("_metadata[{prefix:?}]") });
        }
        if *version > MAX_MODULE_VERSION {
            return Err(Error::LimitExceeded { what: "module version", found: *version, limit: MAX_MODULE_VERSION });
        }
    }

    let mut e = Encoder { pickle: PickleWriter::new(), storages: Vec::new() };
    // OrderedDict.__reduce__: (OrderedDict, (), {'_metadata': ...}, None, iter(items)).
    e.empty_ordered_dict();
    for batch in setitems_batches(state_dict.entries.len()) {
        e.pickle.setitems_start(batch.len());
        for (key, value) in &state_dict.entries[batch.clone()] {
            e.pickle.str(key);
            e.value(value);
        }
        e.pickle.setitems_end(batch.len());
    }
    e.pickle.empty_dict();
    e.pickle.setitems_start(1);
    e.pickle.str("_metadata");
    e.empty_ordered_dict();
    for batch in setitems_batches(state_dict.metadata.len()) {
        e.pickle.setitems_start(batch.len());
        for (prefix, version) in &state_dict.metadata[batch.clone()] {
            e.pickle.str(prefix);
            e.pickle.empty_dict();
            e.pickle.setitems_start(1);
            e.pickle.interned_str("version");
            e.pickle.int(*version as i64);
            e.pickle.setitems_end(1);
        }
        e.pickle.setitems_end(batch.len());
    }
    e.pickle.setitems_end(1);
    e.pickle.build();
    Ok(e)
}

/// Pickles values and collects the storages they reference, keyed in the order torch's
/// `persistent_id` meets them.
struct Encoder<'s> {
    pickle: PickleWriter,
    storages: Vec<Cow<'s, [u8]>>,
}

impl<'s> Encoder<'s> {
    fn value(&mut self, value: &'s Value<'_>) {
        match value {
            Value::Tensor(t) => self.tensor(t),
            Value::Parameter(t) => self.parameter(t),
            Value::QTensor(q) => self.qtensor(q),
            Value::Dtype(d) => self.pickle.global("torch", d.torch_name()),
            Value::PackedLinear(PackedLinearParams { weight, bias }) => {
                self.pickle.tuple_start(2);
                self.qtensor(weight);
                match bias {
                    Some(b) => self.parameter(b),
                    None => self.pickle.none(),
                }
                self.pickle.tuple_end(2);
            }
        }
    }

    /// `OrderedDict()`: the state_dict itself, `_metadata`, and every tensor's `backward_hooks`.
    fn empty_ordered_dict(&mut self) {
        self.pickle.global("collections", "OrderedDict");
        self.pickle.tuple_start(0);
        self.pickle.reduce();
    }

    /// The persistent id `('storage', torch.<Type>Storage, '<key>', 'cpu', numel)`.
    fn storage(&mut self, dtype: DType, data: Cow<'s, [u8]>) {
        let key = self.storages.len().to_string();
        let numel = data.len() / dtype.size();
        self.storages.push(data);
        self.pickle.tuple_start(5);
        self.pickle.interned_str("storage");
        self.pickle.global("torch", dtype.storage_class());
        self.pickle.str(&key);
        self.pickle.interned_str("cpu");
        self.pickle.int(numel as i64);
        self.pickle.tuple_end(5);
        self.pickle.persistent_id();
    }

    /// `_rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict())`.
    fn tensor(&mut self, t: &'s Tensor<'_>) {
        self.tensor_from(t.dtype, Cow::Borrowed(&t.data), &t.shape, &t.strides);
    }

    fn tensor_from(&mut self, dtype: DType, data: Cow<'s, [u8]>, shape: &[usize], strides: &[usize]) {
        self.pickle.global("torch._utils", "_rebuild_tensor_v2");
        self.pickle.tuple_start(6);
        self.storage(dtype, data);
        self.pickle.int(0);
        self.pickle.int_tuple(shape);
        self.pickle.int_tuple(strides);
        self.pickle.bool(false);
        self.empty_ordered_dict();
        self.pickle.tuple_end(6);
        self.pickle.reduce();
    }

    /// `_rebuild_parameter(tensor, True, OrderedDict())`.
    fn parameter(&mut self, t: &'s Tensor<'_>) {
        self.pickle.global("torch._utils", "_rebuild_parameter");
        self.pickle.tuple_start(3);
        self.tensor(t);
        self.pickle.bool(true);
        self.empty_ordered_dict();
        self.pickle.tuple_end(3);
        self.pickle.reduce();
    }

    /// `_rebuild_qtensor(storage, 0, size, stride, quantizer_params, False, OrderedDict())`.
    fn qtensor(&mut self, q: &'s QTensor<'_>) {
        self.pickle.global("torch._utils", "_rebuild_qtensor");
        self.pickle.tuple_start(7);
        self.storage(q.dtype, Cow::Borrowed(&q.data));
        self.pickle.int(0);
        self.pickle.int_tuple(&q.shape);
        self.pickle.int_tuple(&q.strides);
        match &q.quantizer {
            Quantizer::PerTensorAffine { scale, zero_point } => {
                self.pickle.tuple_start(3);
                self.pickle.global("torch", "per_tensor_affine");
                self.pickle.float(*scale);
                self.pickle.int(*zero_point);
                self.pickle.tuple_end(3);
            }
            Quantizer::PerChannelAffine { scales, zero_points, axis } => {
                self.pickle.tuple_start(4);
                self.pickle.global("torch", "per_channel_affine");
                let scale_bytes = scales.iter().flat_map(|s| s.to_le_bytes()).collect::<Vec<_>>();
                self.tensor_from(DType::F64, Cow::Owned(scale_bytes), &[scales.len()], &[1]);
                let zero_point_bytes = zero_points.iter().flat_map(|z| z.to_le_bytes()).collect::<Vec<_>>();
                self.tensor_from(DType::I64, Cow::Owned(zero_point_bytes), &[zero_points.len()], &[1]);
                self.pickle.int(*axis as i64);
                self.pickle.tuple_end(4);
            }
        }
        self.pickle.bool(false);
        self.empty_ordered_dict();
        self.pickle.tuple_end(7);
        self.pickle.reduce();
    }
}
