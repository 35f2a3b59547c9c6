//! Files that appear whole or not at all.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

/// Buffer between a writer and the temporary file: large enough that streaming a 200 MiB model costs
/// few system calls.
const FILE_BUFFER: usize = 1 << 20;

/// Writes `bytes` to `path` atomically (see [`write_with`]).
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_with(path, |out| out.write_all(bytes))
}

/// Lets `fill` write the file's contents into a temporary file beside `path`, syncs it, renames it over
/// `path` and syncs the folder: a reader or an interrupted run never sees half a file, an old `path`
/// survives a failed write, and once this returns the new file survives a crash. Same folder, because a
/// rename is only atomic within one file system. Nothing is left behind when `fill` fails.
pub fn write_with<E: From<std::io::Error>>(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<&File>) -> Result<(), E>,
) -> Result<(), E> {
    let folder = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = tempfile::Builder::new().prefix(&format!(".{file_name}.")).suffix(".tmp").tempfile_in(folder)?;
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
    Ok(())
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
