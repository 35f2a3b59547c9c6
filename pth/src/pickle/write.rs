//! A pickle emitter that numbers its memo exactly as CPython's pickler does for `torch.save`.
//!
//! CPython memoizes by object identity. The objects torch.save pickles fall into two groups, and the
//! methods below are named after them: process-wide singletons (globals, interned string constants
//! such as `'storage'` and `'cpu'`), memoized once and fetched afterwards; and fresh objects (keys,
//! tuples, storage keys, empty OrderedDicts), memoized every time. Ints, floats and bools are never
//! memoized; the empty tuple is written as `EMPTY_TUPLE` without a memo slot.

use std::collections::HashMap;

use super::op;

/// Items per `MARK ... SETITEMS` batch, CPython's `_BATCHSIZE`.
const SETITEMS_BATCH: usize = 1000;

pub(crate) struct PickleWriter {
    out: Vec<u8>,
    memo_len: u32,
    singletons: HashMap<(&'static str, &'static str), u32>,
}

impl PickleWriter {
    /// Starts a protocol-2 pickle.
    pub(crate) fn new() -> Self {
        PickleWriter { out: vec![op::PROTO, 2], memo_len: 0, singletons: HashMap::new() }
    }

    /// Ends the pickle and returns its bytes.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.out.push(op::STOP);
        self.out
    }

    fn put(&mut self) {
        let index = self.memo_len;
        self.memo_len += 1;
        match u8::try_from(index) {
            Ok(small) => self.out.extend_from_slice(&[op::BINPUT, small]),
            Err(_) => {
                self.out.push(op::LONG_BINPUT);
                self.out.extend_from_slice(&index.to_le_bytes());
            }
        }
    }

    /// Fetches a singleton already memoized, or writes it with `emit` and memoizes it.
    fn singleton(&mut self, id: (&'static str, &'static str), emit: impl FnOnce(&mut Self)) {
        match self.singletons.get(&id) {
            Some(&index) => match u8::try_from(index) {
                Ok(small) => self.out.extend_from_slice(&[op::BINGET, small]),
                Err(_) => {
                    self.out.push(op::LONG_BINGET);
                    self.out.extend_from_slice(&index.to_le_bytes());
                }
            },
            None => {
                emit(self);
                self.singletons.insert(id, self.memo_len);
                self.put();
            }
        }
    }

    /// A module attribute (`torch.qint8`, `torch._utils._rebuild_tensor_v2`, ...).
    pub(crate) fn global(&mut self, module: &'static str, name: &'static str) {
        self.singleton((module, name), |w| {
            w.out.push(op::GLOBAL);
            for part in [module, name] {
                w.out.extend_from_slice(part.as_bytes());
                w.out.push(b'\n');
            }
        });
    }

    /// A string constant that Python interns, so every use is the same object.
    pub(crate) fn interned_str(&mut self, s: &'static str) {
        self.singleton(("", s), |w| w.unicode(s));
    }

    /// A freshly built string (a key, a storage key).
    pub(crate) fn str(&mut self, s: &str) {
        self.unicode(s);
        self.put();
    }

    fn unicode(&mut self, s: &str) {
        self.out.push(op::BINUNICODE);
        // Strings are keys and module prefixes; a 4 GiB one cannot be built in memory next to the weights.
        self.out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.out.extend_from_slice(s.as_bytes());
    }

    /// An int, in the shortest form CPython's `save_long` picks.
    pub(crate) fn int(&mut self, v: i64) {
        if (0..=0xff).contains(&v) {
            self.out.extend_from_slice(&[op::BININT1, v as u8]);
        } else if (0..=0xffff).contains(&v) {
            self.out.push(op::BININT2);
            self.out.extend_from_slice(&(v as u16).to_le_bytes());
        } else if let Ok(v32) = i32::try_from(v) {
            self.out.push(op::BININT);
            self.out.extend_from_slice(&v32.to_le_bytes());
        } else {
            // LONG1: minimal little-endian two's complement.
            let bytes = v.to_le_bytes();
            let mut len = 8;
            while len > 1 {
                let top = bytes[len - 1];
                let next_sign = bytes[len - 2] & 0x80;
                if (top == 0 && next_sign == 0) || (top == 0xff && next_sign != 0) {
                    len -= 1;
                } else {
                    break;
                }
            }
            self.out.extend_from_slice(&[op::LONG1, len as u8]);
            self.out.extend_from_slice(&bytes[..len]);
        }
    }

    /// A float (`BINFLOAT`, big-endian IEEE 754 double).
    pub(crate) fn float(&mut self, v: f64) {
        self.out.push(op::BINFLOAT);
        self.out.extend_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn bool(&mut self, v: bool) {
        self.out.push(if v { op::NEWTRUE } else { op::NEWFALSE });
    }

    pub(crate) fn none(&mut self) {
        self.out.push(op::NONE);
    }

    /// Opens a fresh tuple of `len` items; write them, then call [`Self::tuple_end`] with the same `len`.
    pub(crate) fn tuple_start(&mut self, len: usize) {
        match len {
            0 => self.out.push(op::EMPTY_TUPLE),
            1..=3 => {}
            _ => self.out.push(op::MARK),
        }
    }

    /// Closes a tuple opened by [`Self::tuple_start`].
    pub(crate) fn tuple_end(&mut self, len: usize) {
        match len {
            0 => {}
            1..=3 => {
                self.out.push([op::TUPLE1, op::TUPLE2, op::TUPLE3][len - 1]);
                self.put();
            }
            _ => {
                self.out.push(op::TUPLE);
                self.put();
            }
        }
    }

    /// A tuple of ints (sizes, strides).
    pub(crate) fn int_tuple(&mut self, values: &[usize]) {
        self.tuple_start(values.len());
        values.iter().for_each(|&v| self.int(v as i64));
        self.tuple_end(values.len());
    }

    /// Calls the callable and arguments just written (`REDUCE`); the result is a fresh object.
    pub(crate) fn reduce(&mut self) {
        self.out.push(op::REDUCE);
        self.put();
    }

    /// Turns the persistent-id tuple just written into a reference to external data.
    pub(crate) fn persistent_id(&mut self) {
        self.out.push(op::BINPERSID);
    }

    /// A fresh empty dict.
    pub(crate) fn empty_dict(&mut self) {
        self.out.push(op::EMPTY_DICT);
        self.put();
    }

    /// Opens a batch of `len` key/value pairs for the dict below (see [`setitems_batches`]).
    pub(crate) fn setitems_start(&mut self, len: usize) {
        if len > 1 {
            self.out.push(op::MARK);
        }
    }

    /// Closes a batch opened by [`Self::setitems_start`].
    pub(crate) fn setitems_end(&mut self, len: usize) {
        match len {
            0 => {}
            1 => self.out.push(op::SETITEM),
            _ => self.out.push(op::SETITEMS),
        }
    }

    /// Sets the state written last on the object below it (`BUILD`).
    pub(crate) fn build(&mut self) {
        self.out.push(op::BUILD);
    }
}

/// The index ranges in which CPython's `_batch_setitems` writes `len` dict items: batches of
/// [`SETITEMS_BATCH`], a lone item with `SETITEM` and longer batches with `MARK ... SETITEMS`.
pub(crate) fn setitems_batches(len: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    (0..len).step_by(SETITEMS_BATCH).map(move |start| start..(start + SETITEMS_BATCH).min(len))
}
