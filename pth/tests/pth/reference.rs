//! Our writer against the files PyTorch wrote: read each reference, write the same tensors again,
//! and compare the archives entry by entry.

use vggq_pth::zip::read_entries;
use vggq_pth::{read_pth, write_to};

use crate::util::{reference_bytes, REFERENCE_STEMS};

#[test]
fn rewriting_a_reference_reproduces_it_except_the_serialization_id() {
    for stem in REFERENCE_STEMS {
        let original = reference_bytes(stem);
        let parsed = read_pth(&original).unwrap_or_else(|e| panic!("{stem}: {e}"));
        assert_eq!(parsed.archive, stem);
        let rewritten = write_to(Vec::new(), parsed.archive, &parsed.state_dict).unwrap();

        let ours = read_entries(&rewritten).unwrap();
        let theirs = &parsed.entries;
        let names = |entries: &[vggq_pth::zip::ZipEntry]| entries.iter().map(|e| e.name.to_owned()).collect::<Vec<_>>();
        assert_eq!(names(&ours), names(theirs), "{stem}: entry names and order");
        for (a, b) in ours.iter().zip(theirs) {
            assert_eq!(
                (a.header_offset, a.data_offset, a.data.len()),
                (b.header_offset, b.data_offset, b.data.len()),
                "{stem}: layout of `{}`",
                a.name
            );
            if a.name.ends_with("/.data/serialization_id") {
                assert_eq!(a.data.len(), 40);
                assert!(a.data.iter().all(u8::is_ascii_digit), "{stem}: id must be 40 decimal digits");
            } else {
                assert!(a.data == b.data, "{stem}: bytes of `{}` differ", a.name);
            }
        }
        assert_eq!(rewritten.len(), original.len(), "{stem}: file size");
        // Everything outside the id entry (headers, padding, descriptors, directory) matches too,
        // except the id's CRC-32 in its data descriptor and central directory record.
        let differing = rewritten.iter().zip(&original).filter(|(a, b)| a != b).count();
        assert!(differing <= 40 + 2 * 4, "{stem}: {differing} bytes differ");
    }
}

#[test]
fn equal_tensors_give_equal_files() {
    let original = reference_bytes("tiny_static_int8_fx");
    let parsed = read_pth(&original).unwrap();
    let first = write_to(Vec::new(), "x", &parsed.state_dict).unwrap();
    let second = write_to(Vec::new(), "x", &parsed.state_dict).unwrap();
    assert!(first == second);
}
