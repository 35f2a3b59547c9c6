//! A text listing of a `.pth` file, in the format of the torch reference README: one line per key
//! with dtype, shape and qscheme, the `_metadata` as Python prints it, and the zip entries.

use crate::error::Result;
use crate::read::read_pth;

/// Renders the listing of the `.pth` file `file_name` whose contents are `bytes`.
pub fn render(file_name: &str, bytes: &[u8]) -> Result<String> {
    let file = read_pth(bytes)?;
    let state_dict = &file.state_dict;
    let mut out = format!("==== {file_name} ({} bytes, {} keys)\n", bytes.len(), state_dict.entries.len());
    for (key, value) in &state_dict.entries {
        out.push_str(&format!("  {key}: {}\n", value.signature()));
    }
    let metadata: Vec<String> =
        state_dict.metadata.iter().map(|(prefix, version)| format!("{}: {{'version': {version}}}", python_str(prefix))).collect();
    out.push_str(&format!("  _metadata: {{{}}}\n  zip entries:\n", metadata.join(", ")));
    for entry in &file.entries {
        out.push_str(&format!(
            "    {}  size={} compress_type=0 header_offset={}\n",
            entry.name,
            entry.data.len(),
            entry.header_offset
        ));
    }
    Ok(out)
}

/// `repr(s)` for the strings of module prefixes: single quotes, backslash escapes.
fn python_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' | '\'' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}
