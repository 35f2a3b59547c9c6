//! Reading a `.pth` state_dict with the restricted unpickler.
//!
//! The reader accepts what `torch.save` of a (quantized) state_dict produces and nothing else: the
//! object tree from [`crate::pickle::read`] is matched against the exact call shapes of
//! `_rebuild_tensor_v2`, `_rebuild_qtensor` and `_rebuild_parameter`. Tensors borrow their bytes from
//! the caller's buffer.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::{HashMap, HashSet};

use crate::error::{Error, Result};
use crate::pickle::read::{read as read_pickle, NestedKind, Object};
use crate::tensor::{DType, PackedLinearParams, QTensor, Quantizer, StateDict, Tensor, Value};
use crate::zip::{read_entries, ZipEntry};

/// Most dimensions a tensor may have.
pub const MAX_DIMS: usize = 16;

/// A parsed `.pth`: its zip entries and its state_dict, both borrowing the file bytes.
#[derive(Debug)]
pub struct PthFile<'a> {
    /// The folder inside the zip (torch uses the file stem).
    pub archive: &'a str,
    /// Every zip entry, in file order.
    pub entries: Vec<ZipEntry<'a>>,
    /// The decoded state_dict.
    pub state_dict: StateDict<'a>,
}

/// Parses the bytes of a `.pth` file.
pub fn read_pth(bytes: &[u8]) -> Result<PthFile<'_>> {
    let entries = read_entries(bytes)?;
    // torch takes the archive folder from the first entry's name.
    let first = entries.first().ok_or(Error::MissingEntry { entry: "data.pkl".into() })?;
    let archive = first.name.split_once('/').map_or(first.name, |(folder, _)| folder);
    let by_name: HashMap<&str, &[u8]> = entries.iter().map(|e| (e.name, e.data)).collect();
    let record = |name: &str| {
        let entry = format!("{archive}/{name}");
        by_name.get(entry.as_str()).copied().ok_or(Error::MissingEntry { entry })
    };
    let byteorder = record("byteorder")?;
    if byteorder != b"little" {
        return Err(Error::UnsupportedRecord {
            entry: format!("{archive}/byteorder"),
            found: String::from_utf8_lossy(byteorder).into_owned(),
        });
    }
    let pickle = read_pickle(record("data.pkl")?)?;
    let decoder = Decoder { archive, by_name: &by_name, file_len: bytes.len(), decoded: Cell::new(0) };
    let state_dict = decoder.state_dict(&pickle)?;
    Ok(PthFile { archive, entries, state_dict })
}

/// Parses a `.pth` file's bytes and returns its state_dict.
pub fn read_state_dict(bytes: &[u8]) -> Result<StateDict<'_>> {
    read_pth(bytes).map(|file| file.state_dict)
}

const ROOT: &str = "<root>";
const METADATA: &str = "_metadata";

fn unexpected(key: &str, expected: &'static str) -> Error {
    Error::UnexpectedObject { key: key.to_owned(), expected }
}

fn is_global(object: &Object, module: &str, name: &str) -> bool {
    matches!(object, Object::Global(g) if g.module == module && g.name == name)
}

struct Decoder<'f, 'a> {
    archive: &'a str,
    by_name: &'f HashMap<&'a str, &'a [u8]>,
    /// The file's size, which bounds [`Self::decoded`].
    file_len: usize,
    /// Bytes of storage decoded into owned per-channel parameters so far. Tensors borrow the file's
    /// bytes, but per-channel scales and zero points are decoded, once for every tensor that names their
    /// storage: a pickle that names one storage under many keys (through its memo, a few bytes each)
    /// would have it decoded again for each, and gigabytes allocated from a file of megabytes. torch.save
    /// gives each quantizer storages of its own, so a file's decoded bytes stay within its size.
    decoded: Cell<usize>,
}

impl<'a> Decoder<'_, 'a> {
    fn state_dict(&self, root: &Object) -> Result<StateDict<'a>> {
        let (dict, state) = match root.kind() {
            Some(NestedKind::Build { object, state }) => (object, Some(state)),
            _ => (root, None),
        };
        let items = dict.as_dict().ok_or_else(|| unexpected(ROOT, "an OrderedDict"))?;
        let mut seen = HashSet::new();
        let mut entries = Vec::with_capacity(items.len());
        for (key, value) in items {
            let key = key.as_str().ok_or_else(|| unexpected(ROOT, "string keys"))?;
            if !seen.insert(key) {
                return Err(Error::DuplicateKey { key: key.to_owned() });
            }
            let value = self.value(key, value)?;
            value.check(key)?;
            entries.push((key.to_owned(), value));
        }
        let metadata = match state {
            Some(state) => self.metadata(state)?,
            None => Vec::new(),
        };
        Ok(StateDict { entries, metadata })
    }

    /// `{'_metadata': OrderedDict(prefix -> {'version': n})}`.
    fn metadata(&self, state: &Object) -> Result<Vec<(String, u64)>> {
        let expected = "a state of the form {'_metadata': OrderedDict}";
        let [(name, metadata)] = state.as_dict().ok_or_else(|| unexpected(METADATA, expected))? else {
            return Err(unexpected(METADATA, expected));
        };
        if name.as_str() != Some(METADATA) {
            return Err(unexpected(METADATA, expected));
        }
        let items = metadata.as_dict().ok_or_else(|| unexpected(METADATA, "an OrderedDict"))?;
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(items.len());
        for (prefix, versions) in items {
            let prefix = prefix.as_str().ok_or_else(|| unexpected(METADATA, "string module prefixes"))?;
            if !seen.insert(prefix) {
                return Err(Error::DuplicateKey { key: format!("_metadata[{prefix:?}]") });
            }
            let version = match versions.as_dict() {
                Some([(k, v)]) if k.as_str() == Some("version") => v.as_int().and_then(|v| u64::try_from(v).ok()),
                _ => None,
            };
            let version = version.ok_or_else(|| Error::UnexpectedObject {
                key: format!("_metadata[{prefix:?}]"),
                expected: "{'version': <non-negative int>}",
            })?;
            out.push((prefix.to_owned(), version));
        }
        Ok(out)
    }

    fn value(&self, key: &str, object: &Object) -> Result<Value<'a>> {
        if let Object::Global(g) = object {
            let dtype = DType::ALL.into_iter().find(|d| g.module == "torch" && d.torch_name() == g.name);
            return dtype.map(Value::Dtype).ok_or_else(|| unexpected(key, "a tensor, a dtype or packed params"));
        }
        if let Some([weight, bias]) = object.as_tuple() {
            let weight = self.qtensor(key, weight)?;
            let bias = match bias {
                Object::None => None,
                bias => Some(self.parameter(key, bias)?),
            };
            return Ok(Value::PackedLinear(PackedLinearParams { weight, bias }));
        }
        let Some(NestedKind::Call { callable, .. }) = object.kind() else {
            return Err(unexpected(key, "a tensor, a dtype or packed params"));
        };
        if is_global(callable, "torch._utils", "_rebuild_parameter") {
            Ok(Value::Parameter(self.parameter(key, object)?))
        } else if is_global(callable, "torch._utils", "_rebuild_qtensor") {
            Ok(Value::QTensor(self.qtensor(key, object)?))
        } else {
            Ok(Value::Tensor(self.tensor(key, object)?))
        }
    }

    /// Returns the arguments of `object` if it is a call of `torch._utils.<name>` with `len` arguments.
    fn call_args<'o>(
        &self,
        key: &str,
        object: &'o Object,
        name: &'static str,
        len: usize,
        expected: &'static str,
    ) -> Result<&'o [Object]> {
        match object.kind() {
            Some(NestedKind::Call { callable, args }) if is_global(callable, "torch._utils", name) => {
                args.as_tuple().filter(|a| a.len() == len).ok_or_else(|| unexpected(key, expected))
            }
            _ => Err(unexpected(key, expected)),
        }
    }

    /// `_rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict())`.
    fn tensor(&self, key: &str, object: &Object) -> Result<Tensor<'a>> {
        let (tensor, _) = self.borrowed_tensor(key, object)?;
        Ok(tensor)
    }

    /// The tensor, and its bytes with the file's lifetime.
    fn borrowed_tensor(&self, key: &str, object: &Object) -> Result<(Tensor<'a>, &'a [u8])> {
        let expected = "_rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict())";
        let args = self.call_args(key, object, "_rebuild_tensor_v2", 6, expected)?;
        let (dtype, data) = self.storage(key, &args[0])?;
        if dtype.is_quantized() {
            return Err(unexpected(key, "a float or integer storage"));
        }
        self.plain_tail(key, &args[1..], expected)?;
        let tensor = Tensor { dtype, shape: dims(key, &args[2])?, strides: dims(key, &args[3])?, data: Cow::Borrowed(data) };
        Ok((tensor, data))
    }

    /// Checks the `0, size, stride, ..., False, OrderedDict()` arguments common to both rebuild calls.
    fn plain_tail(&self, key: &str, args: &[Object], expected: &'static str) -> Result<()> {
        let offset_ok = args.first().and_then(Object::as_int) == Some(0);
        let requires_grad_ok = matches!(args[args.len() - 2], Object::Bool(false));
        let hooks_ok = args[args.len() - 1].as_dict().is_some_and(|h| h.is_empty());
        if offset_ok && requires_grad_ok && hooks_ok {
            Ok(())
        } else {
            Err(unexpected(key, expected))
        }
    }

    /// `_rebuild_parameter(tensor, True, OrderedDict())`.
    fn parameter(&self, key: &str, object: &Object) -> Result<Tensor<'a>> {
        let expected = "_rebuild_parameter(tensor, True, OrderedDict())";
        let args = self.call_args(key, object, "_rebuild_parameter", 3, expected)?;
        if !matches!(args[1], Object::Bool(true)) || !args[2].as_dict().is_some_and(|h| h.is_empty()) {
            return Err(unexpected(key, expected));
        }
        self.tensor(key, &args[0])
    }

    /// `_rebuild_qtensor(storage, 0, size, stride, quantizer_params, False, OrderedDict())`.
    fn qtensor(&self, key: &str, object: &Object) -> Result<QTensor<'a>> {
        let expected = "_rebuild_qtensor(storage, 0, size, stride, quantizer_params, False, OrderedDict())";
        let args = self.call_args(key, object, "_rebuild_qtensor", 7, expected)?;
        let (dtype, data) = self.storage(key, &args[0])?;
        if !dtype.is_quantized() {
            return Err(unexpected(key, "a quantized storage"));
        }
        self.plain_tail(key, &args[1..], expected)?;
        let params = args[4].as_tuple().ok_or_else(|| unexpected(key, "a quantizer tuple"))?;
        let quantizer = match params {
            [scheme, Object::Float(scale), Object::Int(zero_point)] if is_global(scheme, "torch", "per_tensor_affine") => {
                Quantizer::PerTensorAffine { scale: *scale, zero_point: *zero_point }
            }
            [scheme, scales, zero_points, Object::Int(axis)] if is_global(scheme, "torch", "per_channel_affine") => {
                let axis = usize::try_from(*axis).map_err(|_| unexpected(key, "a non-negative channel axis"))?;
                let scales = self.vector(key, scales, DType::F64)?;
                let zero_points = self.vector(key, zero_points, DType::I64)?;
                let decoded = self.decoded.get() + scales.len() + zero_points.len();
                if decoded > self.file_len {
                    return Err(Error::InvalidTensor {
                        key: key.to_owned(),
                        reason: format!(
                            "its per-channel parameters bring the storage bytes decoded to {decoded}, more than the file's {}: \
                             quantizers share storages, which torch.save never writes",
                            self.file_len
                        ),
                    });
                }
                self.decoded.set(decoded);
                Quantizer::PerChannelAffine {
                    scales: scales.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes"))).collect(),
                    zero_points: zero_points
                        .chunks_exact(8)
                        .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                        .collect(),
                    axis,
                }
            }
            _ => return Err(unexpected(key, "per_tensor_affine or per_channel_affine quantizer parameters")),
        };
        Ok(QTensor { dtype, shape: dims(key, &args[2])?, strides: dims(key, &args[3])?, data: Cow::Borrowed(data), quantizer })
    }

    /// The bytes of a contiguous 1-d tensor of `dtype` (per-channel scales and zero points).
    fn vector(&self, key: &str, object: &Object, dtype: DType) -> Result<&'a [u8]> {
        let (tensor, data) = self.borrowed_tensor(key, object)?;
        tensor.check(key)?;
        if tensor.dtype != dtype || tensor.shape.len() != 1 || tensor.strides != [1] {
            return Err(unexpected(key, "per-channel parameters as contiguous 1-d float64/int64 tensors"));
        }
        Ok(data)
    }

    /// Resolves `('storage', torch.<Type>Storage, key, 'cpu', numel)` to its dtype and zip entry.
    fn storage(&self, key: &str, object: &Object) -> Result<(DType, &'a [u8])> {
        let expected = "a persistent id ('storage', torch.<Type>Storage, key, 'cpu', numel)";
        let Some(NestedKind::PersistentId(pid)) = object.kind() else {
            return Err(unexpected(key, expected));
        };
        let Some([kind, Object::Global(class), Object::Str(storage_key), location, Object::Int(numel)]) = pid.as_tuple() else {
            return Err(unexpected(key, expected));
        };
        if kind.as_str() != Some("storage") || location.as_str() != Some("cpu") || class.module != "torch" {
            return Err(unexpected(key, expected));
        }
        let dtype = DType::ALL.into_iter().find(|d| d.storage_class() == class.name).ok_or_else(|| unexpected(key, expected))?;
        let entry = format!("{}/data/{storage_key}", self.archive);
        let data = self.by_name.get(entry.as_str()).copied().ok_or(Error::MissingEntry { entry })?;
        let expected_len = usize::try_from(*numel).ok().and_then(|n| n.checked_mul(dtype.size()));
        if expected_len != Some(data.len()) {
            return Err(Error::InvalidTensor {
                key: key.to_owned(),
                reason: format!("storage `{storage_key}` announces {numel} elements but holds {} bytes", data.len()),
            });
        }
        Ok((dtype, data))
    }
}

/// A tuple of non-negative ints (a size or a stride).
fn dims(key: &str, object: &Object) -> Result<Vec<usize>> {
    let items = object.as_tuple().ok_or_else(|| unexpected(key, "a tuple of sizes or strides"))?;
    if items.len() > MAX_DIMS {
        return Err(Error::LimitExceeded { what: "tensor rank", found: items.len() as u64, limit: MAX_DIMS as u64 });
    }
    items
        .iter()
        .map(|d| {
            d.as_int().and_then(|d| usize::try_from(d).ok()).ok_or_else(|| unexpected(key, "non-negative sizes and strides"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    //! Decoder errors, on archives built with our own zip writer around hand-made pickles.

    use super::*;
    use crate::zip::ZipWriter;

    fn archive(pickle: &[u8], byteorder: &[u8], storages: &[&[u8]]) -> Vec<u8> {
        let mut zip = ZipWriter::new(Vec::new());
        zip.entry("a/data.pkl", pickle).unwrap();
        zip.entry("a/byteorder", byteorder).unwrap();
        for (i, s) in storages.iter().enumerate() {
            zip.entry(&format!("a/data/{i}"), s).unwrap();
        }
        zip.finish().unwrap()
    }

    /// `OrderedDict([(key, value)])` where `value` is raw pickle bytes.
    fn one_entry(key: &str, value: &[u8]) -> Vec<u8> {
        let mut p = b"\x80\x02ccollections\nOrderedDict\n)R".to_vec();
        p.push(b'X');
        p.extend_from_slice(&(key.len() as u32).to_le_bytes());
        p.extend_from_slice(key.as_bytes());
        p.extend_from_slice(value);
        p.extend_from_slice(b"s.");
        p
    }

    /// `_rebuild_tensor_v2(('storage', torch.FloatStorage, '0', 'cpu', numel), 0, (len,), (1,), False, OrderedDict())`.
    fn float_tensor(numel: u16, len: u16) -> Vec<u8> {
        vector_tensor("FloatStorage", "0", numel, len)
    }

    /// `_rebuild_tensor_v2` of a contiguous 1-d tensor of `len` elements in storage `storage` of `class`,
    /// which announces `numel`.
    fn vector_tensor(class: &str, storage: &str, numel: u16, len: u16) -> Vec<u8> {
        let mut p = b"ctorch._utils\n_rebuild_tensor_v2\n(".to_vec();
        p.extend(persistent_id(class, storage, numel));
        p.extend(b"K\x00M");
        p.extend(len.to_le_bytes());
        p.extend(b"\x85K\x01\x85\x89ccollections\nOrderedDict\n)RtR");
        p
    }

    /// `('storage', torch.<class>, storage, 'cpu', numel)`, as BINPERSID takes it.
    fn persistent_id(class: &str, storage: &str, numel: u16) -> Vec<u8> {
        let mut p = format!("(X\x07\x00\x00\x00storagectorch\n{class}\nX").into_bytes();
        p.extend((storage.len() as u32).to_le_bytes());
        p.extend(storage.as_bytes());
        p.extend(b"X\x03\x00\x00\x00cpuM");
        p.extend(numel.to_le_bytes());
        p.extend(b"tQ");
        p
    }

    /// A state_dict whose `keys` all name one per-channel qint8 tensor of `channels` rows (the first
    /// key's, fetched from the memo for the others), and its three storages.
    fn shared_per_channel_archive(keys: &[&str], channels: u16) -> Vec<u8> {
        let mut qtensor = b"ctorch._utils\n_rebuild_qtensor\n(".to_vec();
        qtensor.extend(persistent_id("QInt8Storage", "0", channels));
        qtensor.extend(b"K\x00M");
        qtensor.extend(channels.to_le_bytes());
        qtensor.extend(b"K\x01\x86K\x01K\x01\x86(ctorch\nper_channel_affine\n");
        qtensor.extend(vector_tensor("DoubleStorage", "1", channels, channels));
        qtensor.extend(vector_tensor("LongStorage", "2", channels, channels));
        qtensor.extend(b"K\x00t\x89ccollections\nOrderedDict\n)RtRq\x01");
        let mut pickle = b"\x80\x02ccollections\nOrderedDict\n)R(".to_vec();
        for (i, key) in keys.iter().enumerate() {
            pickle.push(b'X');
            pickle.extend((key.len() as u32).to_le_bytes());
            pickle.extend(key.as_bytes());
            pickle.extend(if i == 0 { &qtensor[..] } else { b"h\x01" });
        }
        pickle.extend(b"u.");
        let channels = usize::from(channels);
        let scales: Vec<u8> = std::iter::repeat_n(1.0f64.to_le_bytes(), channels).flatten().collect();
        archive(&pickle, b"little", &[&vec![1; channels], &scales, &vec![0; channels * 8]])
    }

    #[test]
    fn per_channel_parameters_decode() {
        let bytes = shared_per_channel_archive(&["w"], 1000);
        let Some(Value::QTensor(qtensor)) = read_state_dict(&bytes).unwrap().get("w").cloned() else { panic!("a qtensor") };
        assert!(matches!(qtensor.quantizer, Quantizer::PerChannelAffine { scales, axis: 0, .. } if scales == [1.0; 1000]));
    }

    /// Each key would decode the same 16,000 bytes again: the second brings them past the file's size.
    #[test]
    fn storages_shared_between_quantizers_are_refused_before_they_multiply() {
        let bytes = shared_per_channel_archive(&["w", "v", "u"], 1000);
        let error = read_state_dict(&bytes).unwrap_err();
        assert!(
            matches!(&error, Error::InvalidTensor { key, reason } if key == "v" && reason.contains("decoded to 32000")),
            "{error}"
        );
    }

    #[test]
    fn a_plain_tensor_decodes() {
        let bytes = archive(&one_entry("w", &float_tensor(2, 2)), b"little", &[&[0, 0, 128, 63, 0, 0, 0, 64]]);
        let sd = read_state_dict(&bytes).unwrap();
        assert_eq!(sd.get("w"), Some(&Value::Tensor(Tensor::from_f32(vec![2], &[1.0, 2.0]))));
        assert!(sd.metadata.is_empty());
    }

    #[test]
    fn big_endian_files_are_refused() {
        let bytes = archive(&one_entry("w", &float_tensor(2, 2)), b"big", &[&[0; 8]]);
        assert_eq!(read_pth(&bytes).unwrap_err().to_string(), "zip entry `a/byteorder` holds unsupported value `big`");
    }

    #[test]
    fn a_storage_shorter_than_announced_is_named() {
        let bytes = archive(&one_entry("w", &float_tensor(2, 2)), b"little", &[&[0; 4]]);
        assert_eq!(read_pth(&bytes).unwrap_err().to_string(), "tensor `w`: storage `0` announces 2 elements but holds 4 bytes");
    }

    #[test]
    fn a_shape_beyond_its_storage_is_named() {
        let bytes = archive(&one_entry("w", &float_tensor(2, 3)), b"little", &[&[0; 8]]);
        assert!(matches!(read_pth(&bytes), Err(Error::InvalidTensor { key, .. }) if key == "w"));
    }

    #[test]
    fn a_missing_storage_is_named() {
        let bytes = archive(&one_entry("w", &float_tensor(2, 2)), b"little", &[]);
        assert!(matches!(read_pth(&bytes), Err(Error::MissingEntry { entry }) if entry == "a/data/0"));
    }

    #[test]
    fn other_objects_are_named_by_key() {
        let bytes = archive(&one_entry("w", b"K\x05"), b"little", &[]);
        assert_eq!(read_pth(&bytes).unwrap_err().to_string(), "entry `w`: expected a tensor, a dtype or packed params");
    }

    #[test]
    fn a_root_that_is_not_a_dict_is_reported() {
        let bytes = archive(b"\x80\x02K\x01.", b"little", &[]);
        assert_eq!(read_pth(&bytes).unwrap_err().to_string(), "entry `<root>`: expected an OrderedDict");
    }

    #[test]
    fn duplicate_keys_are_reported() {
        let mut pickle = one_entry("w", b"ctorch\nqint8\n");
        pickle.truncate(pickle.len() - 1);
        pickle.extend_from_slice(b"X\x01\x00\x00\x00wctorch\nqint8\ns.");
        let bytes = archive(&pickle, b"little", &[]);
        assert!(matches!(read_pth(&bytes), Err(Error::DuplicateKey { key }) if key == "w"));
    }
}
