//! Truncated and corrupted files give errors, never panics.

use vggq_pth::{read_pth, Error};

use crate::util::reference_bytes;

#[test]
fn every_truncation_is_an_error() {
    let bytes = reference_bytes("tiny_static_int8_fx");
    for len in (0..bytes.len()).step_by(7) {
        assert!(read_pth(&bytes[..len]).is_err(), "truncated to {len} bytes");
    }
}

#[test]
fn corrupted_bytes_never_panic() {
    let original = reference_bytes("tiny_qat_int8_fx");
    for position in (0..original.len()).step_by(13) {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut bytes = original.clone();
            bytes[position] ^= flip;
            // Most flips are errors (CRC, signatures); some hit padding and are harmless. None may panic.
            let _ = read_pth(&bytes);
        }
    }
}

#[test]
fn a_flipped_storage_byte_fails_the_crc() {
    let mut bytes = reference_bytes("tiny_fp32");
    // data/0 of tiny_fp32 starts at 7574 + 30 + name + extra, on a 64-byte boundary.
    let data_start = (7574 + 30 + "tiny_fp32/data/0".len() + 4).next_multiple_of(64);
    bytes[data_start] ^= 1;
    assert!(matches!(read_pth(&bytes), Err(Error::CrcMismatch { entry }) if entry == "tiny_fp32/data/0"));
}

#[test]
fn a_missing_end_record_is_reported() {
    let mut bytes = reference_bytes("tiny_fp32");
    let end = bytes.len() - 22;
    bytes[end] = b'X';
    assert!(
        matches!(read_pth(&bytes), Err(Error::MissingEndRecord { searched }) if searched == END_RECORD_REACH.min(bytes.len()))
    );
}

/// How far from its end a zip's end record can lie: its 22 bytes after a comment of up to 65,535.
const END_RECORD_REACH: usize = 22 + 65_535;

/// A file cut short (a copy that did not finish) is said to be, not reported as a bad signature.
#[test]
fn a_file_cut_short_says_so() {
    let bytes = reference_bytes("tiny_fp32");
    let error = read_pth(&bytes[..bytes.len() / 2]).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "no zip end record in the file's last {} bytes: it is cut short, or not a zip archive as torch.save writes",
            END_RECORD_REACH.min(bytes.len() / 2)
        )
    );
}

#[test]
fn a_compressed_entry_is_refused() {
    let mut bytes = reference_bytes("tiny_fp32");
    let directory = bytes.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
    bytes[directory + 10] = 8; // method: deflate
    let err = read_pth(&bytes).unwrap_err();
    assert_eq!(err.to_string(), "zip entry `tiny_fp32/data.pkl` is unsupported: compressed; only stored entries are read");
}

#[test]
fn a_missing_record_is_named() {
    let bytes = reference_bytes("tiny_fp32");
    let renamed = replace_all(&bytes, b"tiny_fp32/byteorder", b"tiny_fp32/byteorde_");
    assert!(matches!(read_pth(&renamed), Err(Error::MissingEntry { entry }) if entry == "tiny_fp32/byteorder"));
}

/// Two entries of one name would leave which one a reader takes to the reader.
#[test]
fn a_repeated_entry_name_is_refused() {
    let bytes = reference_bytes("tiny_fp32");
    let renamed = replace_all(&bytes, b"tiny_fp32/data/1", b"tiny_fp32/data/0");
    let err = read_pth(&renamed).unwrap_err();
    assert_eq!(err.to_string(), "zip entry `tiny_fp32/data/0` is unsupported: its name is taken by an earlier entry");
}

/// Records pointing back into bytes an earlier entry holds would have them read once per record.
#[test]
fn an_entry_overlapping_the_one_before_is_refused() {
    let mut bytes = reference_bytes("tiny_fp32");
    let records: Vec<usize> = bytes.windows(4).enumerate().filter(|(_, w)| w == b"PK\x01\x02").map(|(i, _)| i).collect();
    // The local header offset is the record's last fixed field, 42 bytes in.
    let first_header: [u8; 4] = bytes[records[0] + 42..records[0] + 46].try_into().unwrap();
    bytes[records[1] + 42..records[1] + 46].copy_from_slice(&first_header);
    let second_name = &bytes[records[1] + 46..records[1] + 46 + usize::from(bytes[records[1] + 28])];
    let expected =
        format!("zip entry `{}` is unsupported: it overlaps the entry before it", String::from_utf8_lossy(second_name));
    assert_eq!(read_pth(&bytes).unwrap_err().to_string(), expected);
}

fn replace_all(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = haystack.to_vec();
    let mut i = 0;
    while let Some(p) = out[i..].windows(from.len()).position(|w| w == from) {
        out[i + p..i + p + to.len()].copy_from_slice(to);
        i += p + 1;
    }
    out
}
