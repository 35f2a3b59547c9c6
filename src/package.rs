//! The artifact package of a run: `SHA256SUMS` (what `sha256sum -c` reads) over the reproducible files,
//! so two runs of the same code, seed and data on the same machine give the same `SHA256SUMS`, and
//! `manifest.json` (every file with its role and digest, and where the run came from); [`verify`]
//! re-hashes a package against its manifest.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::{file_digest, DataError, DigestAlgorithm};

use vggq_core::run_folder::RUN_FOLDERS;
/// The checksum list, in `sha256sum`'s format.
pub use vggq_core::run_folder::{CHECKSUMS_FILE, MANIFEST_FILE};

/// A file of the package as its producer describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRole {
    /// File name inside the package folder.
    pub name: String,
    /// Which model it holds (`fp32`, `dynamic_int8`, ...) or what else it is (`metrics`, `report`).
    pub variant: String,
    /// `pth`, `onnx`, `json`, `markdown`, `svg`, `burn-record`.
    pub format: String,
    /// What it was made from (another file of the package, or a pipeline step).
    pub source: String,
    /// A function of the seed, data and code alone (the models: the `.pth` and ONNX files, and Burn's
    /// record, whose parameter ids are numbered, `Vgg::with_numbered_ids`), listed in `SHA256SUMS`. Files
    /// whose bytes vary from run to run (measurements: timings, reports) are in the manifest only.
    pub reproducible: bool,
}

impl FileRole {
    pub fn reproducible(name: &str, variant: &str, format: &str, source: &str) -> Self {
        Self { name: name.into(), variant: variant.into(), format: format.into(), source: source.into(), reproducible: true }
    }

    pub fn varying(name: &str, variant: &str, format: &str, source: &str) -> Self {
        Self { reproducible: false, ..Self::reproducible(name, variant, format, source) }
    }
}

/// A file of the package with its size and digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackagedFile {
    #[serde(flatten)]
    pub role: FileRole,
    pub bytes: u64,
    pub sha256: String,
}

/// Where a package came from: enough to reproduce it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// The commit the tree was at, "unknown" where the steps ran by hand (only `cargo xtask all` asks git).
    pub git_commit: String,
    /// Whether tracked files differed from that commit; `null` where unknown, as for the commit.
    pub git_dirty: Option<bool>,
    pub rustc: String,
    pub burn: String,
    pub ort: String,
    pub onnxruntime: String,
    /// Where the model was trained (`cpu`, `cuda` or `wgpu`), and why there.
    pub device: String,
    pub device_reason: String,
    /// The GPU the run used or found: name, memory, compute capability.
    pub gpu: Option<crate::backend::Gpu>,
    /// The wgpu adapter a wgpu run trained on: name, type (a GPU, or the CPU for lavapipe), graphics
    /// API, driver.
    #[serde(default)]
    pub adapter: Option<crate::backend::Adapter>,
    /// The arithmetic training's matmuls and convolutions ran in (FP32 or TF32), measured.
    pub precision: crate::backend::precision::Precision,
    /// What training's CPU kernels ran with: threads, instruction set, processor, blocking. None of it
    /// changes a CPU run's bytes; it is what to compare first where two machines' results differ.
    pub cpu: Option<crate::model::CpuFacts>,
    /// cubecl's autotune cache of a GPU run when the package was made: whether the build timed its
    /// kernels, where the cache is and the SHA-256 of what it holds.
    pub autotune: Option<crate::backend::autotune::AutotuneCache>,
    /// Each provider asked for, where ONNX Runtime placed the nodes, or why it could not run.
    pub execution_providers: Vec<String>,
    pub seed: u64,
    /// The ImageNet weights training started from (a `pretrained` run's).
    #[serde(default)]
    pub imagenet_weights: Option<crate::model::WeightsFile>,
    pub dataset: String,
    pub dataset_sha256: String,
    /// The full profile, as printed at the start of the run.
    pub config: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub files: Vec<PackagedFile>,
    pub provenance: Provenance,
}

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// A file could not be read or hashed.
    #[error(transparent)]
    Digest(#[from] DataError),
    /// The package folder or one of its own files could not be read or written.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// `manifest.json` is not a manifest.
    #[error("{path} is not a valid manifest: {source}")]
    Manifest { path: PathBuf, source: serde_json::Error },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> PackageError + '_ {
    move |source| PackageError::Io { path: path.to_path_buf(), source }
}

/// Hashes the files named in `roles` (inside `dir`) and writes `SHA256SUMS` over the reproducible ones,
/// then `manifest.json`, each atomically.
pub fn write(dir: &Path, roles: Vec<FileRole>, provenance: Provenance) -> Result<Manifest, PackageError> {
    let mut files = roles
        .into_iter()
        .map(|role| {
            let digest = file_digest(&dir.join(&role.name), DigestAlgorithm::Sha256)?;
            Ok(PackagedFile { role, bytes: digest.length, sha256: digest.hex })
        })
        .collect::<Result<Vec<_>, PackageError>>()?;
    files.sort_by(|a, b| a.role.name.cmp(&b.role.name));
    let manifest = Manifest { files, provenance };

    let sums: String =
        manifest.files.iter().filter(|f| f.role.reproducible).map(|f| format!("{}  {}\n", f.sha256, f.role.name)).collect();
    let sums_path = dir.join(CHECKSUMS_FILE);
    crate::atomic::write(&sums_path, sums.as_bytes()).map_err(io_error(&sums_path))?;

    // Last: a package without its manifest is visibly unfinished, whatever else it holds.
    let manifest_path = dir.join(MANIFEST_FILE);
    let json = serde_json::to_string_pretty(&manifest).expect("a manifest is plain data") + "\n";
    crate::atomic::write(&manifest_path, json.as_bytes()).map_err(io_error(&manifest_path))?;
    Ok(manifest)
}

/// What [`verify`] found wrong; empty when the package is intact.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Discrepancies {
    /// In the manifest (or `SHA256SUMS`, which goes with it), not in the folder.
    pub missing: Vec<String>,
    /// In the folder, not in the manifest: files, links (one in place of a package file too), and
    /// folders other than a run's own ([`RUN_FOLDERS`], listed with a trailing `/`).
    pub extra: Vec<String>,
    /// Present, but with other bytes than the manifest records (name, expected, actual SHA-256).
    pub changed: Vec<(String, String, String)>,
    /// Where `SHA256SUMS` and the manifest disagree (a line changed, added, left out or unreadable), or
    /// the manifest names no file of the folder (a path, a name listed twice), each said in words.
    pub lists: Vec<String>,
}

impl Discrepancies {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty() && self.changed.is_empty() && self.lists.is_empty()
    }
}

impl std::fmt::Display for Discrepancies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for name in &self.missing {
            writeln!(f, "missing: {name}")?;
        }
        for name in &self.extra {
            writeln!(f, "extra: {name}")?;
        }
        for (name, expected, actual) in &self.changed {
            writeln!(f, "changed: {name} (manifest {expected}, file {actual})")?;
        }
        for disagreement in &self.lists {
            writeln!(f, "{disagreement}")?;
        }
        Ok(())
    }
}

/// Whether `name` names a file directly in the package folder: not a path (`a/b`, `../a`, `/a`), which
/// would check a file elsewhere.
fn is_file_name(name: &str) -> bool {
    let mut components = Path::new(name).components();
    matches!(components.next(), Some(std::path::Component::Normal(_))) && components.next().is_none() && !name.contains('/')
}

/// Re-hashes every file of the package in `dir` against its `manifest.json`, checks that `SHA256SUMS`
/// lists exactly the manifest's reproducible files with the same digests, and lists what the folder holds
/// beyond the manifest.
pub fn verify(dir: &Path) -> Result<Discrepancies, PackageError> {
    let manifest_path = dir.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&manifest_path).map_err(io_error(&manifest_path))?;
    let manifest: Manifest =
        serde_json::from_str(&text).map_err(|source| PackageError::Manifest { path: manifest_path.clone(), source })?;
    let mut found = Discrepancies::default();

    let mut listed = BTreeMap::new();
    for file in &manifest.files {
        let name = file.role.name.as_str();
        if !is_file_name(name) {
            found.lists.push(format!("{MANIFEST_FILE}: `{name}` is not a file name in the folder"));
        } else if listed.insert(name, file).is_some() {
            found.lists.push(format!("{MANIFEST_FILE}: {name} is listed twice"));
        }
    }
    for (name, file) in &listed {
        let path = dir.join(name);
        // A link in place of the file is its own finding (`unlisted`): what it points to is not the package's.
        if path.is_symlink() {
            continue;
        }
        if !path.is_file() {
            found.missing.push(name.to_string());
            continue;
        }
        let actual = file_digest(&path, DigestAlgorithm::Sha256)?.hex;
        if actual != file.sha256 {
            found.changed.push((name.to_string(), file.sha256.clone(), actual));
        }
    }

    // SHA256SUMS is what users check with `sha256sum -c`: it must say what the manifest says of the
    // reproducible files, no more and no less; the files themselves were checked against the manifest.
    let sums_path = dir.join(CHECKSUMS_FILE);
    if sums_path.is_file() {
        let sums = std::fs::read_to_string(&sums_path).map_err(io_error(&sums_path))?;
        found.lists.extend(checksum_disagreements(&sums, &listed));
    } else {
        found.missing.push(CHECKSUMS_FILE.to_string());
    }
    found.extra = unlisted(dir, listed.keys().copied())?.iter().map(ToString::to_string).collect();
    Ok(found)
}

/// Where `SHA256SUMS` (its text `sums`) and the manifest's files `listed` disagree, said in words.
fn checksum_disagreements(sums: &str, listed: &BTreeMap<&str, &PackagedFile>) -> Vec<String> {
    let mut lists = Vec::new();
    let mut summed = BTreeMap::new();
    for (number, line) in sums.lines().enumerate() {
        let Some((hex, name)) = line.split_once("  ") else {
            lists.push(format!("{CHECKSUMS_FILE}: line {} is not `<sha256>  <file>`", number + 1));
            continue;
        };
        if summed.insert(name, hex).is_some() {
            lists.push(format!("{CHECKSUMS_FILE}: {name} is listed twice"));
        }
    }
    for (name, file) in listed.iter().filter(|(_, file)| file.role.reproducible) {
        match summed.get(name) {
            None => lists.push(format!("{CHECKSUMS_FILE}: {name} is left out (the manifest lists it as reproducible)")),
            Some(hex) if *hex != file.sha256 => {
                lists.push(format!("{CHECKSUMS_FILE}: {name} is {hex}, the manifest says {}", file.sha256))
            }
            Some(_) => {}
        }
    }
    for name in summed.keys().filter(|name| !listed.get(*name).is_some_and(|file| file.role.reproducible)) {
        lists.push(format!("{CHECKSUMS_FILE}: {name} is listed, the manifest has no reproducible file of that name"));
    }
    lists
}

/// An entry of a package folder that the package does not hold ([`unlisted`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unlisted {
    /// A file or link of a name the package has no file of.
    Entry(String),
    /// A folder other than a run's own ([`RUN_FOLDERS`]).
    Folder(String),
    /// A link in place of a package file: the file's bytes would not travel with the folder.
    LinkInPlace(String),
}

impl std::fmt::Display for Unlisted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unlisted::Entry(name) => write!(f, "{name}"),
            Unlisted::Folder(name) => write!(f, "{name}/"),
            Unlisted::LinkInPlace(name) => write!(f, "{name} (a link in place of the file)"),
        }
    }
}

/// What `dir` holds beyond the package files `names` (and `SHA256SUMS` and `manifest.json`), sorted as
/// shown: files, links (one in place of a package file too), and folders other than a run's own
/// ([`RUN_FOLDERS`]). What [`verify`] lists as extra, and what the report step refuses to package
/// beside the run's files.
pub fn unlisted<'a>(dir: &Path, names: impl IntoIterator<Item = &'a str>) -> Result<Vec<Unlisted>, PackageError> {
    let known: BTreeSet<&str> = names.into_iter().chain([CHECKSUMS_FILE, MANIFEST_FILE]).collect();
    let mut extra = Vec::new();
    // A folder entry that cannot be read is an error, never a file quietly left out of the check.
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let file_type = entry.file_type().map_err(io_error(&entry.path()))?;
        if file_type.is_dir() {
            if !RUN_FOLDERS.contains(&name.as_str()) {
                extra.push(Unlisted::Folder(name));
            }
        } else if !known.contains(name.as_str()) {
            extra.push(Unlisted::Entry(name));
        } else if file_type.is_symlink() {
            extra.push(Unlisted::LinkInPlace(name));
        }
    }
    extra.sort_by_cached_key(ToString::to_string);
    Ok(extra)
}
