//! Files that appear whole or not at all.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Buffer between a writer and the temporary file: large enough that streaming a 200 MiB model costs
/// few system calls.
const FILE_BUFFER: usize = 1 << 20;

/// A temporary file is named `.<name>.<random>.tmp`: hidden, and telling which file it was becoming.
const TEMP_SUFFIX: &str = ".tmp";
/// Letters and digits only, so a temporary file of `a` is never taken for one of `a.b`
/// (`.a.b.<random>.tmp`).
const TEMP_RANDOM_CHARS: usize = 6;

fn temp_prefix(file_name: &str) -> String {
    format!(".{file_name}.")
}

/// A new temporary file in `folder` for a write of `file_name`.
fn temp_file_of(folder: &Path, file_name: &str) -> std::io::Result<tempfile::NamedTempFile> {
    tempfile::Builder::new().prefix(&temp_prefix(file_name)).rand_bytes(TEMP_RANDOM_CHARS).suffix(TEMP_SUFFIX).tempfile_in(folder)
}

/// Whether `entry` is a temporary file that a write of `file_name` made.
pub fn is_temp_of(entry: &str, file_name: &str) -> bool {
    entry
        .strip_prefix(&temp_prefix(file_name))
        .and_then(|rest| rest.strip_suffix(TEMP_SUFFIX))
        .is_some_and(|random| random.len() == TEMP_RANDOM_CHARS && random.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Writes `bytes` to `path` atomically (see [`write_with`]).
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_with(path, |out| out.write_all(bytes))
}

/// Lets `fill` write the file's contents into a temporary file beside `path`, syncs it, renames it over
/// `path` and syncs the folder: a reader or an interrupted run never sees half a file, an old `path`
/// survives a failed write, and once this returns the new file survives a crash. Same folder, because a
/// rename is only atomic within one file system. Nothing is left behind when `fill` fails; a write that
/// was killed (Ctrl-C, SIGKILL) leaves its temporary file, which the next successful write of the same
/// file removes, so a rerun leaves a run folder as a clean run would (one writer per file at a time: a
/// second one's temporary file would be removed under it).
pub fn write_with<E: From<std::io::Error>>(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<&File>) -> Result<(), E>,
) -> Result<(), E> {
    let folder = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = temp_file_of(folder, &file_name)?;
    let mut out = BufWriter::with_capacity(FILE_BUFFER, temp.as_file());
    fill(&mut out)?;
    out.flush()?;
    drop(out);
    temp.as_file().sync_all()?;
    // Temporary files are created private; artifacts are for everyone to read, as torch.save's are.
    #[cfg(unix)]
    temp.as_file().set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    temp.persist(path).map_err(|error| error.error)?;
    // The rename lives in the folder's metadata; syncing the folder makes it durable too.
    File::open(folder)?.sync_all()?;
    remove_temps_of(folder, &file_name)?;
    Ok(())
}

/// Removes what interrupted writes of `file_name` left in `folder`, and says what that was.
pub fn remove_temps_of(folder: &Path, file_name: &str) -> std::io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for entry in std::fs::read_dir(folder)? {
        let entry = entry?;
        if entry.file_type()?.is_file() && is_temp_of(&entry.file_name().to_string_lossy(), file_name) {
            remove_if_present(&entry.path())?;
            removed.push(entry.path());
        }
    }
    Ok(removed)
}

/// Removes the file `path`; one already gone (never written, or removed meanwhile) is no error.
pub fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_fill_leaves_the_old_file_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.bin");
        write(&path, b"old").unwrap();
        let result: std::io::Result<()> = write_with(&path, |out| {
            out.write_all(b"half")?;
            Err(std::io::Error::other("disk full"))
        });
        assert!(result.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "the temporary file was removed");
    }

    #[test]
    fn a_write_removes_what_killed_writes_of_the_same_file_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.bin");
        let names = |dir: &Path| {
            let mut names: Vec<String> =
                std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
            names.sort();
            names
        };
        // What a killed write of model.bin leaves (the temporary file is kept, as a kill keeps it), beside
        // another file's temporary file and files whose names only look alike.
        temp_file_of(dir.path(), "model.bin").unwrap().keep().unwrap();
        let others = [".model.bin.old.abc123.tmp", ".model.bin.abc12.tmp", ".other.bin.abc123.tmp", "model.bin.abc123.tmp"];
        for name in others {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        let folder = ".model.bin.xyz789.tmp";
        std::fs::create_dir(dir.path().join(folder)).unwrap();
        assert_eq!(names(dir.path()).len(), others.len() + 2);

        write(&path, b"new").unwrap();
        let mut expected: Vec<String> = others.iter().chain(&[folder, "model.bin"]).map(|s| s.to_string()).collect();
        expected.sort();
        assert_eq!(names(dir.path()), expected);
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
    }

    #[test]
    fn the_new_file_is_readable_by_everyone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        write(&path, b"{}").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o644);
        }
    }
}
