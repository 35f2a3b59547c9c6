//! `inspect::render` reproduces the listing in the reference README.

use vggq_pth::inspect::render;

use crate::util::{reference_bytes, reference_dir, REFERENCE_STEMS};

#[test]
fn listing_matches_the_reference_readme() {
    let readme = std::fs::read_to_string(reference_dir().join("README.txt")).unwrap();
    for stem in REFERENCE_STEMS {
        let file_name = format!("{stem}.pth");
        let ours = render(&file_name, &reference_bytes(stem)).unwrap();
        let start = readme.find(&format!("==== {file_name} ")).unwrap_or_else(|| panic!("{file_name} not in README"));
        let section = &readme[start..];
        let end = section.find("  pickletools.dis(").expect("section has a disassembly");
        let expected = &section[..end];
        for (i, (a, b)) in ours.lines().zip(expected.lines()).enumerate() {
            assert_eq!(a, b, "{file_name}: line {i}");
        }
        assert_eq!(ours, expected, "{file_name}");
    }
}
