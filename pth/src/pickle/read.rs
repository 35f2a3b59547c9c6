//! A restricted pickle machine in the spirit of `torch/_weights_only_unpickler.py`.
//!
//! It accepts only the opcodes below and only globals on [`ALLOWED_GLOBALS`]; it imports nothing and
//! calls nothing. `REDUCE` and `BUILD` record the call as a passive [`NestedKind::Call`] /
//! [`NestedKind::Build`] node (except `collections.OrderedDict()`, which is simply an empty dict), and
//! the caller interprets the tree it gets back. Every size read from the input is checked against a
//! named limit.

use std::rc::Rc;

use super::op;
use crate::error::{Error, Result};

/// Largest `data.pkl` accepted (a VGG state_dict pickle is a few KiB).
pub const MAX_PICKLE_BYTES: usize = 64 << 20;
/// Most values and marks on the machine's stacks at once.
pub const MAX_STACK_LEN: usize = 1 << 20;
/// Highest memo index accepted.
pub const MAX_MEMO_INDEX: u32 = 1 << 20;
/// Deepest nesting of tuples, dicts and calls; bounds recursion in `Drop` and in the interpreter.
pub const MAX_NESTING: usize = 64;
/// Longest string accepted.
pub const MAX_STRING_BYTES: usize = 1 << 20;

/// Module attributes the reader accepts: what `torch.save` of a (quantized) state_dict references.
pub const ALLOWED_GLOBALS: &[(&str, &str)] = &[
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_qtensor"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch", "FloatStorage"),
    ("torch", "DoubleStorage"),
    ("torch", "LongStorage"),
    ("torch", "QInt8Storage"),
    ("torch", "QUInt8Storage"),
    ("torch", "float32"),
    ("torch", "float64"),
    ("torch", "int64"),
    ("torch", "qint8"),
    ("torch", "quint8"),
    ("torch", "per_tensor_affine"),
    ("torch", "per_channel_affine"),
];

/// A global from [`ALLOWED_GLOBALS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Global {
    pub module: &'static str,
    pub name: &'static str,
}

/// A passive pickled value.
#[derive(Debug, Clone)]
pub(crate) enum Object {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Rc<str>),
    Global(Global),
    Nested(Rc<Nested>),
}

/// A container, with its nesting depth so that limits need no recursion.
#[derive(Debug, Clone)]
pub(crate) struct Nested {
    pub depth: usize,
    pub kind: NestedKind,
}

#[derive(Debug, Clone)]
pub(crate) enum NestedKind {
    Tuple(Vec<Object>),
    List(Vec<Object>),
    /// A dict or OrderedDict, in insertion order.
    Dict(Vec<(Object, Object)>),
    /// `callable(*args)`, recorded, not performed.
    Call {
        callable: Object,
        args: Object,
    },
    /// `object.__setstate__(state)`, recorded, not performed.
    Build {
        object: Object,
        state: Object,
    },
    /// A `BINPERSID` reference to external data.
    PersistentId(Object),
}

impl Object {
    fn depth(&self) -> usize {
        match self {
            Object::Nested(n) => n.depth,
            _ => 0,
        }
    }

    pub(crate) fn kind(&self) -> Option<&NestedKind> {
        match self {
            Object::Nested(n) => Some(&n.kind),
            _ => None,
        }
    }

    pub(crate) fn as_tuple(&self) -> Option<&[Object]> {
        match self.kind() {
            Some(NestedKind::Tuple(items)) => Some(items),
            _ => None,
        }
    }

    pub(crate) fn as_dict(&self) -> Option<&[(Object, Object)]> {
        match self.kind() {
            Some(NestedKind::Dict(items)) => Some(items),
            _ => None,
        }
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Object::Str(s) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn as_int(&self) -> Option<i64> {
        match self {
            Object::Int(v) => Some(*v),
            _ => None,
        }
    }
}

/// Runs the restricted machine over `pickle` and returns the object `STOP` yields.
pub(crate) fn read(pickle: &[u8]) -> Result<Object> {
    if pickle.len() > MAX_PICKLE_BYTES {
        return Err(Error::LimitExceeded { what: "pickle size", found: pickle.len() as u64, limit: MAX_PICKLE_BYTES as u64 });
    }
    Machine::new(pickle).run()
}

struct Machine<'a> {
    input: &'a [u8],
    pos: usize,
    op_start: usize,
    stack: Vec<Object>,
    marks: Vec<usize>,
    /// Memo slots; `None` for unset.
    memo: Vec<Option<Memo>>,
}

/// What a memo slot holds.
enum Memo {
    Value(Object),
    /// A dict or list: fetching it would need shared mutation, which torch.save never relies on, so it
    /// is refused instead. The slot keeps no reference to it: one would make the next APPEND or SETITEM
    /// copy the whole container (`Rc::make_mut`), and a pickle alternating puts and appends would keep
    /// a growing copy per put.
    MutableContainer,
}

impl<'a> Machine<'a> {
    fn new(input: &'a [u8]) -> Self {
        Machine { input, pos: 0, op_start: 0, stack: Vec::new(), marks: Vec::new(), memo: Vec::new() }
    }

    fn malformed(&self, reason: &'static str) -> Error {
        Error::MalformedPickle { offset: self.op_start, reason }
    }

    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let end =
            self.pos.checked_add(n).filter(|&e| e <= self.input.len()).ok_or(Error::Truncated { what: "pickle argument" })?;
        let out = &self.input[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn line(&mut self) -> Result<&str> {
        let input = self.input;
        let rest = &input[self.pos..];
        let len =
            rest.iter().take(MAX_STRING_BYTES).position(|&b| b == b'\n').ok_or(self.malformed("unterminated GLOBAL line"))?;
        self.pos += len + 1;
        std::str::from_utf8(&rest[..len]).map_err(|_| self.malformed("GLOBAL name is not utf-8"))
    }

    fn push(&mut self, object: Object) -> Result<()> {
        if self.stack.len() + self.marks.len() >= MAX_STACK_LEN {
            return Err(Error::LimitExceeded {
                what: "pickle stack length",
                found: MAX_STACK_LEN as u64,
                limit: MAX_STACK_LEN as u64,
            });
        }
        self.stack.push(object);
        Ok(())
    }

    fn pop(&mut self) -> Result<Object> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return Err(self.malformed("pop across a MARK"));
        }
        self.stack.pop().ok_or(self.malformed("stack underflow"))
    }

    fn pop_mark(&mut self) -> Result<Vec<Object>> {
        let mark = self.marks.pop().ok_or(self.malformed("no MARK on the stack"))?;
        Ok(self.stack.split_off(mark))
    }

    fn nested(&self, kind: NestedKind) -> Result<Object> {
        let children_depth = match &kind {
            NestedKind::Tuple(items) | NestedKind::List(items) => max_depth(items),
            NestedKind::Dict(items) => items.iter().map(|(k, v)| k.depth().max(v.depth())).max().unwrap_or(0),
            NestedKind::Call { callable: a, args: b } | NestedKind::Build { object: a, state: b } => a.depth().max(b.depth()),
            NestedKind::PersistentId(pid) => pid.depth(),
        };
        let depth = 1 + children_depth;
        if depth > MAX_NESTING {
            return Err(Error::LimitExceeded { what: "pickle nesting depth", found: depth as u64, limit: MAX_NESTING as u64 });
        }
        Ok(Object::Nested(Rc::new(Nested { depth, kind })))
    }

    fn memo_put(&mut self, index: u32) -> Result<()> {
        if index > MAX_MEMO_INDEX {
            return Err(Error::LimitExceeded {
                what: "pickle memo index",
                found: u64::from(index),
                limit: u64::from(MAX_MEMO_INDEX),
            });
        }
        let top = self.stack.last().ok_or(self.malformed("memo put with an empty stack"))?;
        let slot = match top.kind() {
            Some(NestedKind::Dict(_) | NestedKind::List(_)) => Memo::MutableContainer,
            _ => Memo::Value(top.clone()),
        };
        let index = index as usize;
        if self.memo.len() <= index {
            self.memo.resize_with(index + 1, || None);
        }
        self.memo[index] = Some(slot);
        Ok(())
    }

    fn memo_get(&mut self, index: u32) -> Result<()> {
        let object = match self.memo.get(index as usize) {
            Some(Some(Memo::MutableContainer)) => return Err(self.malformed("memo fetch of a mutable container")),
            Some(Some(Memo::Value(object))) => object.clone(),
            _ => return Err(self.malformed("memo fetch of an unset slot")),
        };
        self.push(object)
    }

    /// Applies `update` to the dict or list at the top of the stack; `children_depth`, the deepest new
    /// child, raises the container's depth (kept incremental so long APPEND runs stay linear).
    fn extend_top(
        &mut self,
        children_depth: usize,
        update: impl FnOnce(&mut NestedKind) -> Result<(), &'static str>,
    ) -> Result<()> {
        let added_depth = 1 + children_depth;
        if added_depth > MAX_NESTING {
            return Err(Error::LimitExceeded {
                what: "pickle nesting depth",
                found: added_depth as u64,
                limit: MAX_NESTING as u64,
            });
        }
        let top = self.pop()?;
        let Object::Nested(mut nested) = top else {
            return Err(self.malformed("SETITEM/APPEND target is not a container"));
        };
        let target = Rc::make_mut(&mut nested);
        update(&mut target.kind).map_err(|reason| self.malformed(reason))?;
        target.depth = target.depth.max(added_depth);
        self.push(Object::Nested(nested))
    }

    /// Runs the opcodes to STOP, each family in its own function.
    fn run(&mut self) -> Result<Object> {
        loop {
            self.op_start = self.pos;
            let [opcode] = self.take_array::<1>()?;
            match opcode {
                op::PROTO | op::STOP | op::MARK => {
                    if let Some(result) = self.control(opcode)? {
                        return Ok(result);
                    }
                }
                op::GLOBAL | op::REDUCE | op::BUILD | op::BINPERSID => self.object(opcode)?,
                op::NONE
                | op::NEWTRUE
                | op::NEWFALSE
                | op::BININT
                | op::BININT1
                | op::BININT2
                | op::LONG1
                | op::BINFLOAT
                | op::BINUNICODE
                | op::SHORT_BINUNICODE => {
                    let value = self.scalar(opcode)?;
                    self.push(value)?;
                }
                op::EMPTY_TUPLE | op::TUPLE1 | op::TUPLE2 | op::TUPLE3 | op::TUPLE | op::EMPTY_LIST | op::EMPTY_DICT => {
                    let container = self.container(opcode)?;
                    self.push(container)?;
                }
                op::APPEND | op::APPENDS | op::SETITEM | op::SETITEMS => self.fill(opcode)?,
                op::BINPUT | op::LONG_BINPUT | op::BINGET | op::LONG_BINGET => self.memo(opcode)?,
                _ => return Err(self.forbidden(opcode)),
            }
        }
    }

    fn forbidden(&self, opcode: u8) -> Error {
        Error::ForbiddenOpcode { opcode, offset: self.op_start }
    }

    /// PROTO, STOP (the result) and MARK.
    fn control(&mut self, opcode: u8) -> Result<Option<Object>> {
        match opcode {
            op::PROTO => {
                let [version] = self.take_array::<1>()?;
                if version > 2 {
                    return Err(self.malformed("protocol above 2"));
                }
            }
            op::STOP => {
                let result = self.pop()?;
                if !self.stack.is_empty() || !self.marks.is_empty() {
                    return Err(self.malformed("values left on the stack at STOP"));
                }
                return Ok(Some(result));
            }
            op::MARK => {
                if self.marks.len() + self.stack.len() >= MAX_STACK_LEN {
                    return Err(Error::LimitExceeded {
                        what: "pickle stack length",
                        found: MAX_STACK_LEN as u64,
                        limit: MAX_STACK_LEN as u64,
                    });
                }
                self.marks.push(self.stack.len());
            }
            _ => return Err(self.forbidden(opcode)),
        }
        Ok(None)
    }

    /// GLOBAL (allow-listed names only), REDUCE, BUILD and BINPERSID: objects kept as passive
    /// descriptions, never called.
    fn object(&mut self, opcode: u8) -> Result<()> {
        let object = match opcode {
            op::GLOBAL => {
                let offset = self.op_start;
                let module = self.line()?.to_owned();
                let name = self.line()?.to_owned();
                let global = ALLOWED_GLOBALS
                    .iter()
                    .find(|(m, n)| *m == module && *n == name)
                    .map(|&(module, name)| Global { module, name })
                    .ok_or(Error::ForbiddenGlobal { module, name, offset })?;
                Object::Global(global)
            }
            op::REDUCE => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let ordered_dict = Global { module: "collections", name: "OrderedDict" };
                match (&callable, args.as_tuple()) {
                    (Object::Global(g), Some([])) if *g == ordered_dict => self.nested(NestedKind::Dict(Vec::new()))?,
                    _ => self.nested(NestedKind::Call { callable, args })?,
                }
            }
            op::BUILD => {
                let state = self.pop()?;
                let object = self.pop()?;
                self.nested(NestedKind::Build { object, state })?
            }
            op::BINPERSID => {
                let pid = self.pop()?;
                self.nested(NestedKind::PersistentId(pid))?
            }
            _ => return Err(self.forbidden(opcode)),
        };
        self.push(object)
    }

    /// None, booleans, integers, floats and strings.
    fn scalar(&mut self, opcode: u8) -> Result<Object> {
        Ok(match opcode {
            op::NONE => Object::None,
            op::NEWTRUE => Object::Bool(true),
            op::NEWFALSE => Object::Bool(false),
            op::BININT => Object::Int(i64::from(i32::from_le_bytes(self.take_array()?))),
            op::BININT1 => Object::Int(i64::from(self.take_array::<1>()?[0])),
            op::BININT2 => Object::Int(i64::from(u16::from_le_bytes(self.take_array()?))),
            op::LONG1 => {
                let [len] = self.take_array::<1>()?;
                let len = usize::from(len);
                if len > 8 {
                    return Err(self.malformed("LONG1 wider than 64 bits"));
                }
                let bytes = self.take(len)?;
                let fill = if bytes.last().is_some_and(|&b| b & 0x80 != 0) { 0xff } else { 0 };
                let mut wide = [fill; 8];
                wide[..len].copy_from_slice(bytes);
                Object::Int(i64::from_le_bytes(wide))
            }
            op::BINFLOAT => Object::Float(f64::from_be_bytes(self.take_array()?)),
            op::BINUNICODE | op::SHORT_BINUNICODE => {
                let len = if opcode == op::BINUNICODE {
                    u32::from_le_bytes(self.take_array()?) as usize
                } else {
                    usize::from(self.take_array::<1>()?[0])
                };
                if len > MAX_STRING_BYTES {
                    return Err(Error::LimitExceeded {
                        what: "pickle string length",
                        found: len as u64,
                        limit: MAX_STRING_BYTES as u64,
                    });
                }
                let bad_utf8 = self.malformed("string is not utf-8");
                Object::Str(Rc::from(std::str::from_utf8(self.take(len)?).map_err(|_| bad_utf8)?))
            }
            _ => return Err(self.forbidden(opcode)),
        })
    }

    /// A new tuple (from the stack or since the MARK), list or dict.
    fn container(&mut self, opcode: u8) -> Result<Object> {
        let kind = match opcode {
            op::EMPTY_TUPLE => NestedKind::Tuple(Vec::new()),
            op::TUPLE1 | op::TUPLE2 | op::TUPLE3 => {
                let len = usize::from(opcode - op::TUPLE1) + 1;
                let mut items = (0..len).map(|_| self.pop()).collect::<Result<Vec<_>>>()?;
                items.reverse();
                NestedKind::Tuple(items)
            }
            op::TUPLE => NestedKind::Tuple(self.pop_mark()?),
            op::EMPTY_LIST => NestedKind::List(Vec::new()),
            op::EMPTY_DICT => NestedKind::Dict(Vec::new()),
            _ => return Err(self.forbidden(opcode)),
        };
        self.nested(kind)
    }

    /// APPEND(S) and SETITEM(S): items into the list or dict below them. A single form is its plural
    /// with one item (or one key and value).
    fn fill(&mut self, opcode: u8) -> Result<()> {
        let (new, not_a_target) = match opcode {
            op::APPEND => (vec![self.pop()?], "APPEND target is not a list"),
            op::APPENDS => (self.pop_mark()?, "APPENDS target is not a list"),
            op::SETITEM => {
                let value = self.pop()?;
                let key = self.pop()?;
                (vec![key, value], "SETITEM target is not a dict")
            }
            op::SETITEMS => (self.pop_mark()?, "SETITEMS target is not a dict"),
            _ => return Err(self.forbidden(opcode)),
        };
        let depth = max_depth(&new);
        if matches!(opcode, op::APPEND | op::APPENDS) {
            return self.extend_top(depth, |kind| match kind {
                NestedKind::List(items) => {
                    items.extend(new);
                    Ok(())
                }
                _ => Err(not_a_target),
            });
        }
        if new.len() % 2 != 0 {
            return Err(self.malformed("SETITEMS with an odd number of values"));
        }
        let mut flat = new.into_iter();
        let pairs = std::iter::from_fn(move || Some((flat.next()?, flat.next()?)));
        self.extend_top(depth, |kind| match kind {
            NestedKind::Dict(items) => {
                items.extend(pairs);
                Ok(())
            }
            _ => Err(not_a_target),
        })
    }

    /// BINPUT, LONG_BINPUT, BINGET and LONG_BINGET.
    fn memo(&mut self, opcode: u8) -> Result<()> {
        let index = match opcode {
            op::BINPUT | op::BINGET => u32::from(self.take_array::<1>()?[0]),
            op::LONG_BINPUT | op::LONG_BINGET => u32::from_le_bytes(self.take_array()?),
            _ => return Err(self.forbidden(opcode)),
        };
        if matches!(opcode, op::BINPUT | op::LONG_BINPUT) {
            self.memo_put(index)
        } else {
            self.memo_get(index)
        }
    }
}

fn max_depth(objects: &[Object]) -> usize {
    objects.iter().map(Object::depth).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(pickle: &[u8]) -> Error {
        read(pickle).expect_err("hostile pickle must be refused")
    }

    #[test]
    fn globals_outside_the_allowlist_are_refused_by_name() {
        let e = err(b"\x80\x02cos\nsystem\nq\x00.");
        assert_eq!(e.to_string(), "pickle global `os.system` at offset 2 is not allowed");
    }

    #[test]
    fn opcodes_outside_the_subset_are_refused() {
        // INST would import and call; weights_only refuses it too.
        assert!(matches!(err(b"\x80\x02(ios\nsystem\n."), Error::ForbiddenOpcode { opcode: b'i', offset: 3 }));
    }

    #[test]
    fn protocols_above_two_are_refused() {
        assert!(matches!(err(b"\x80\x05N."), Error::MalformedPickle { reason: "protocol above 2", .. }));
    }

    #[test]
    fn stack_underflow_is_reported() {
        assert!(matches!(err(b"\x80\x02R."), Error::MalformedPickle { reason: "stack underflow", offset: 2 }));
    }

    #[test]
    fn pops_may_not_cross_a_mark() {
        assert!(matches!(err(b"\x80\x02N(\x85."), Error::MalformedPickle { reason: "pop across a MARK", .. }));
    }

    #[test]
    fn unset_memo_slots_are_reported() {
        assert!(matches!(err(b"\x80\x02h\x05."), Error::MalformedPickle { reason: "memo fetch of an unset slot", .. }));
    }

    #[test]
    fn mutable_containers_are_not_fetched_from_the_memo() {
        assert!(matches!(
            err(b"\x80\x02}q\x00h\x00."),
            Error::MalformedPickle { reason: "memo fetch of a mutable container", .. }
        ));
    }

    /// A list put in the memo stays the stack's alone, so that APPEND extends it in place.
    #[test]
    fn the_memo_keeps_no_reference_to_a_mutable_container() {
        let mut machine = Machine::new(b"\x80\x02]q\x00.");
        let Object::Nested(list) = machine.run().unwrap() else { panic!("a list") };
        assert_eq!(Rc::strong_count(&list), 1);
    }

    #[test]
    fn a_missing_stop_is_truncation() {
        assert!(matches!(err(b"\x80\x02N"), Error::Truncated { .. }));
    }

    #[test]
    fn short_arguments_are_truncation() {
        assert!(matches!(err(b"\x80\x02X\xff\x00\x00\x00abc"), Error::Truncated { what: "pickle argument" }));
    }

    #[test]
    fn huge_strings_are_refused_before_reading() {
        assert!(matches!(err(b"\x80\x02X\xff\xff\xff\x7f"), Error::LimitExceeded { what: "pickle string length", .. }));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut pickle = b"\x80\x02)".to_vec();
        pickle.extend(std::iter::repeat_n(op::TUPLE1, MAX_NESTING + 1));
        pickle.push(op::STOP);
        assert!(matches!(err(&pickle), Error::LimitExceeded { what: "pickle nesting depth", .. }));
    }

    #[test]
    fn huge_memo_indices_are_refused() {
        assert!(matches!(err(b"\x80\x02Nr\xff\xff\xff\xff."), Error::LimitExceeded { what: "pickle memo index", .. }));
    }

    #[test]
    fn leftover_values_are_reported() {
        assert!(matches!(err(b"\x80\x02NN."), Error::MalformedPickle { reason: "values left on the stack at STOP", .. }));
    }

    #[test]
    fn ordered_dict_calls_become_dicts_and_other_calls_stay_passive() {
        let object = read(b"\x80\x02ccollections\nOrderedDict\n)R(K\x01K\x02u.").unwrap();
        assert!(matches!(object.as_dict(), Some([(Object::Int(1), Object::Int(2))])));
        let call = read(b"\x80\x02ctorch._utils\n_rebuild_parameter\nK\x01\x85R.").unwrap();
        assert!(matches!(call.kind(), Some(NestedKind::Call { .. })));
    }

    #[test]
    fn long1_decodes_negative_and_wide_ints() {
        let object = read(b"\x80\x02\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x80.").unwrap();
        assert_eq!(object.as_int(), Some(i64::MIN));
        assert!(matches!(err(b"\x80\x02\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x00."), Error::MalformedPickle { .. }));
    }
}
