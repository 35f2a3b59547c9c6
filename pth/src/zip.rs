//! The zip container, exactly as PyTorch's `PyTorchStreamWriter` (miniz) lays it out.
//!
//! Every entry is stored (no compression), its local header carries an `FB` extra field of `Z` bytes
//! that pads the data to a multiple of [`DATA_ALIGNMENT`] (so that `torch.load(mmap=True)` can map
//! storages in place), sizes and CRC follow the data in a data descriptor, all dates are zero, and the
//! archive ends with zip64 end records even when it is small.

use std::io::Write;

use crate::error::{Error, Result};

/// Offset alignment of each entry's data (`.storage_alignment` says the same to readers).
pub const DATA_ALIGNMENT: u64 = 64;
/// Largest entry or archive offset this crate writes or reads: past it miniz switches to zip64
/// fields per entry, which VGG-sized files never need.
pub const MAX_ZIP32_VALUE: u64 = u32::MAX as u64 - 1;
/// Most entries a read archive may list (a state_dict of this many tensors is far beyond any model here).
pub const MAX_ENTRIES: u64 = 1 << 20;
/// Longest entry name accepted.
pub const MAX_NAME_LEN: usize = 4096;

const LOCAL_HEADER_SIG: u32 = 0x0403_4b50;
const DATA_DESCRIPTOR_SIG: u32 = 0x0807_4b50;
const CENTRAL_HEADER_SIG: u32 = 0x0201_4b50;
const ZIP64_END_SIG: u32 = 0x0606_4b50;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
const END_SIG: u32 = 0x0605_4b50;
const LOCAL_HEADER_LEN: u64 = 30;
const DATA_DESCRIPTOR_LEN: u64 = 16;
const CENTRAL_HEADER_LEN: u64 = 46;
const ZIP64_END_LEN: usize = 56;
const ZIP64_LOCATOR_LEN: usize = 20;
const END_LEN: usize = 22;
/// Bit 3 (sizes in a data descriptor) and bit 11 (UTF-8 names), as miniz sets them.
const FLAGS: u16 = 0x0808;
/// "FB": the extra-field id PyTorch uses for its alignment padding.
const PADDING_FIELD_ID: &[u8; 2] = b"FB";
/// Version made by / needed in the zip64 end record, as miniz writes them (3.0 unix, 4.5).
const ZIP64_VERSION_MADE_BY: u16 = 0x031e;
const ZIP64_VERSION_NEEDED: u16 = 0x002d;

struct CentralRecord {
    name: String,
    crc: u32,
    size: u32,
    header_offset: u32,
}

struct OpenEntry {
    name: String,
    header_offset: u64,
    size: u64,
    written: u64,
    crc: crc32fast::Hasher,
}

/// Streams entries into `W`; nothing but the central-directory records is held in memory.
pub(crate) struct ZipWriter<W: Write> {
    out: W,
    offset: u64,
    records: Vec<CentralRecord>,
    open: Option<OpenEntry>,
}

impl<W: Write> ZipWriter<W> {
    pub(crate) fn new(out: W) -> Self {
        ZipWriter { out, offset: 0, records: Vec::new(), open: None }
    }

    /// Writes one small stored entry.
    pub(crate) fn entry(&mut self, name: &str, data: &[u8]) -> Result<()> {
        self.start_entry(name, data.len() as u64)?;
        self.write_data(data)?;
        self.end_entry()
    }

    /// Starts an entry of `size` bytes; its data follows through [`Self::write_data`], then
    /// [`Self::end_entry`]. The size is known up front because the padding depends only on the offset.
    pub(crate) fn start_entry(&mut self, name: &str, size: u64) -> Result<()> {
        let header_offset = self.offset;
        for (what, value) in [("zip entry size", size), ("zip entry offset", header_offset)] {
            if value > MAX_ZIP32_VALUE {
                return Err(Error::LimitExceeded { what, found: value, limit: MAX_ZIP32_VALUE });
            }
        }
        if name.len() > MAX_NAME_LEN {
            return Err(Error::LimitExceeded {
                what: "zip entry name length",
                found: name.len() as u64,
                limit: MAX_NAME_LEN as u64,
            });
        }
        let name_len = name.len() as u64;
        let data_start = header_offset + LOCAL_HEADER_LEN + name_len + 4;
        let padding = (DATA_ALIGNMENT - data_start % DATA_ALIGNMENT) % DATA_ALIGNMENT;

        let mut header = Vec::with_capacity((LOCAL_HEADER_LEN + name_len + 4 + padding) as usize);
        put_u32(&mut header, LOCAL_HEADER_SIG);
        put_u16(&mut header, 0); // version needed
        put_u16(&mut header, FLAGS);
        put_u16(&mut header, 0); // stored
        header.extend_from_slice(&[0; 16]); // time, date, crc, sizes: all in the data descriptor
        put_u16(&mut header, name.len() as u16);
        put_u16(&mut header, (padding + 4) as u16);
        header.extend_from_slice(name.as_bytes());
        header.extend_from_slice(PADDING_FIELD_ID);
        put_u16(&mut header, padding as u16);
        header.resize(header.len() + padding as usize, b'Z');
        self.out.write_all(&header)?;
        self.offset = data_start + padding;
        self.open = Some(OpenEntry { name: name.to_owned(), header_offset, size, written: 0, crc: crc32fast::Hasher::new() });
        Ok(())
    }

    /// Appends data to the entry being written.
    pub(crate) fn write_data(&mut self, data: &[u8]) -> Result<()> {
        let open = self.open.as_mut().expect("write_data outside an entry is a bug in this crate");
        open.crc.update(data);
        open.written += data.len() as u64;
        self.out.write_all(data)?;
        Ok(())
    }

    /// Ends the entry with its data descriptor.
    pub(crate) fn end_entry(&mut self) -> Result<()> {
        let open = self.open.take().expect("end_entry outside an entry is a bug in this crate");
        assert_eq!(open.written, open.size, "entry `{}`: announced and written sizes differ", open.name);
        let crc = open.crc.finalize();
        let mut descriptor = Vec::with_capacity(DATA_DESCRIPTOR_LEN as usize);
        put_u32(&mut descriptor, DATA_DESCRIPTOR_SIG);
        put_u32(&mut descriptor, crc);
        put_u32(&mut descriptor, open.size as u32);
        put_u32(&mut descriptor, open.size as u32);
        self.out.write_all(&descriptor)?;
        self.offset += open.size + DATA_DESCRIPTOR_LEN;
        self.records.push(CentralRecord {
            name: open.name,
            crc,
            size: open.size as u32,
            header_offset: open.header_offset as u32,
        });
        Ok(())
    }

    /// Writes the central directory and the end records, and returns the stream.
    pub(crate) fn finish(mut self) -> Result<W> {
        let directory_offset = self.offset;
        if directory_offset > MAX_ZIP32_VALUE {
            return Err(Error::LimitExceeded { what: "zip directory offset", found: directory_offset, limit: MAX_ZIP32_VALUE });
        }
        let mut tail = Vec::new();
        for r in &self.records {
            put_u32(&mut tail, CENTRAL_HEADER_SIG);
            put_u16(&mut tail, 0); // version made by
            put_u16(&mut tail, 0); // version needed
            put_u16(&mut tail, FLAGS);
            put_u16(&mut tail, 0); // stored
            put_u32(&mut tail, 0); // time, date
            put_u32(&mut tail, r.crc);
            put_u32(&mut tail, r.size);
            put_u32(&mut tail, r.size);
            put_u16(&mut tail, r.name.len() as u16);
            tail.extend_from_slice(&[0; 12]); // extra, comment, disk, internal and external attributes
            put_u32(&mut tail, r.header_offset);
            tail.extend_from_slice(r.name.as_bytes());
        }
        let directory_len = tail.len() as u64;
        let count = self.records.len() as u64;
        let zip64_end_offset = directory_offset + directory_len;

        put_u32(&mut tail, ZIP64_END_SIG);
        put_u64(&mut tail, (ZIP64_END_LEN - 12) as u64);
        put_u16(&mut tail, ZIP64_VERSION_MADE_BY);
        put_u16(&mut tail, ZIP64_VERSION_NEEDED);
        put_u32(&mut tail, 0); // this disk
        put_u32(&mut tail, 0); // disk of the directory
        put_u64(&mut tail, count);
        put_u64(&mut tail, count);
        put_u64(&mut tail, directory_len);
        put_u64(&mut tail, directory_offset);

        put_u32(&mut tail, ZIP64_LOCATOR_SIG);
        put_u32(&mut tail, 0);
        put_u64(&mut tail, zip64_end_offset);
        put_u32(&mut tail, 1); // total disks

        put_u32(&mut tail, END_SIG);
        put_u32(&mut tail, 0); // disk numbers
        put_u16(&mut tail, count.min(0xffff) as u16);
        put_u16(&mut tail, count.min(0xffff) as u16);
        put_u32(&mut tail, directory_len.min(0xffff_ffff) as u32);
        put_u32(&mut tail, directory_offset as u32);
        put_u16(&mut tail, 0); // comment length
        self.out.write_all(&tail)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

fn put_u16(buf: &mut Vec<u8>, v: u16) {
    buf.extend_from_slice(&v.to_le_bytes());
}
fn put_u32(buf: &mut Vec<u8>, v: u32) {
    buf.extend_from_slice(&v.to_le_bytes());
}
fn put_u64(buf: &mut Vec<u8>, v: u64) {
    buf.extend_from_slice(&v.to_le_bytes());
}

/// One entry of a parsed archive, its data borrowed from the file bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZipEntry<'a> {
    /// Full name, `<archive>/data/0` and the like.
    pub name: &'a str,
    /// Offset of the entry's local header.
    pub header_offset: u64,
    /// Offset of the entry's data.
    pub data_offset: u64,
    /// The stored data.
    pub data: &'a [u8],
}

/// Bounds-checked little-endian reads from a byte slice.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Cursor<'a> {
    fn at(bytes: &'a [u8], pos: u64, what: &'static str) -> Result<Self> {
        let pos = usize::try_from(pos).map_err(|_| Error::Truncated { what })?;
        if pos > bytes.len() {
            return Err(Error::Truncated { what });
        }
        Ok(Cursor { bytes, pos, what })
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or(Error::Truncated { what: self.what })?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn signature(&mut self, expected: u32) -> Result<()> {
        let offset = self.pos as u64;
        if self.u32()? != expected {
            return Err(Error::BadSignature { what: self.what, offset });
        }
        Ok(())
    }
}

/// Parses the central directory of `bytes` and checks every entry (stored, sizes, CRC-32).
pub fn read_entries(bytes: &[u8]) -> Result<Vec<ZipEntry<'_>>> {
    let end_offset = find_end_record(bytes)?;
    let mut end = Cursor::at(bytes, end_offset as u64, "end of central directory")?;
    end.signature(END_SIG)?;
    end.take(4)?; // disk numbers
    end.u16()?; // entries on this disk
    let mut count = u64::from(end.u16()?);
    let mut directory_len = u64::from(end.u32()?);
    let mut directory_offset = u64::from(end.u32()?);

    if let Some(locator_offset) = end_offset.checked_sub(ZIP64_LOCATOR_LEN) {
        let mut locator = Cursor::at(bytes, locator_offset as u64, "zip64 end locator")?;
        if locator.u32()? == ZIP64_LOCATOR_SIG {
            locator.u32()?;
            let mut zip64 = Cursor::at(bytes, locator.u64()?, "zip64 end of central directory")?;
            zip64.signature(ZIP64_END_SIG)?;
            zip64.take(20)?; // record size, versions, disk numbers
            zip64.u64()?;
            count = zip64.u64()?;
            directory_len = zip64.u64()?;
            directory_offset = zip64.u64()?;
        }
    }
    if count > MAX_ENTRIES {
        return Err(Error::LimitExceeded { what: "zip entry count", found: count, limit: MAX_ENTRIES });
    }
    // Each record takes at least its fixed header, so a count the directory cannot hold is a lie.
    if count.checked_mul(CENTRAL_HEADER_LEN).is_none_or(|least| least > directory_len) {
        return Err(Error::Truncated { what: "central directory" });
    }
    let directory_end = directory_offset.checked_add(directory_len).ok_or(Error::Truncated { what: "central directory" })?;
    if directory_end > bytes.len() as u64 {
        return Err(Error::Truncated { what: "central directory" });
    }

    let mut directory = Cursor::at(bytes, directory_offset, "central directory header")?;
    let mut entries = Vec::with_capacity(count as usize);
    let mut names = std::collections::HashSet::new();
    // Entries follow one another in the file, as torch.save writes them: records that point at the same
    // bytes again would have each read (and its CRC computed) once per record.
    let mut previous_end = 0;
    for _ in 0..count {
        directory.signature(CENTRAL_HEADER_SIG)?;
        directory.take(4)?; // versions
        let flags = directory.u16()?;
        let method = directory.u16()?;
        directory.take(4)?; // time, date
        let crc = directory.u32()?;
        let compressed_size = directory.u32()?;
        let size = directory.u32()?;
        let name_len = usize::from(directory.u16()?);
        let extra_len = usize::from(directory.u16()?);
        let comment_len = usize::from(directory.u16()?);
        directory.take(8)?; // disk, attributes
        let header_offset = directory.u32()?;
        if name_len > MAX_NAME_LEN {
            return Err(Error::LimitExceeded {
                what: "zip entry name length",
                found: name_len as u64,
                limit: MAX_NAME_LEN as u64,
            });
        }
        let raw_name = directory.take(name_len)?;
        let name = std::str::from_utf8(raw_name).map_err(|_| Error::UnsupportedZipEntry {
            entry: String::from_utf8_lossy(raw_name).into_owned(),
            reason: "name is not utf-8",
        })?;
        directory.take(extra_len)?;
        directory.take(comment_len)?;
        let unsupported = |reason| Error::UnsupportedZipEntry { entry: name.to_owned(), reason };
        if !names.insert(name) {
            return Err(unsupported("its name is taken by an earlier entry"));
        }
        if u64::from(header_offset) < previous_end {
            return Err(unsupported("it overlaps the entry before it"));
        }
        if method != 0 {
            return Err(unsupported("compressed; only stored entries are read"));
        }
        if flags & 1 != 0 {
            return Err(unsupported("encrypted"));
        }
        if compressed_size != size || u64::from(size) > MAX_ZIP32_VALUE || u64::from(header_offset) > MAX_ZIP32_VALUE {
            return Err(unsupported("zip64 or inconsistent sizes"));
        }

        let mut local = Cursor::at(bytes, u64::from(header_offset), "local file header")?;
        local.signature(LOCAL_HEADER_SIG)?;
        local.take(22)?;
        let local_name_len = usize::from(local.u16()?);
        let local_extra_len = usize::from(local.u16()?);
        if local.take(local_name_len)? != name.as_bytes() {
            return Err(unsupported("local header names another entry"));
        }
        local.take(local_extra_len)?;
        let data_offset = local.pos as u64;
        let data = local.take(size as usize)?;
        previous_end = local.pos as u64;
        if crc32fast::hash(data) != crc {
            return Err(Error::CrcMismatch { entry: name.to_owned() });
        }
        entries.push(ZipEntry { name, header_offset: u64::from(header_offset), data_offset, data });
    }
    Ok(entries)
}

/// Finds the end-of-central-directory record, which may be followed by a comment of up to 64 KiB.
fn find_end_record(bytes: &[u8]) -> Result<usize> {
    let last = bytes.len().checked_sub(END_LEN).ok_or(Error::Truncated { what: "end of central directory" })?;
    let first = last.saturating_sub(usize::from(u16::MAX));
    (first..=last)
        .rev()
        .find(|&i| bytes[i..i + 4] == END_SIG.to_le_bytes())
        .ok_or(Error::MissingEndRecord { searched: bytes.len() - first })
}
