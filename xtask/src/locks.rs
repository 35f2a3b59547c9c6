//! `cargo xtask lock`: the pip requirement locks in `xtask/locks/`, which every pip that xtask runs
//! installs or downloads from with `--require-hashes`. A lock pins its roots (a wheel alone, or
//! requirements with everything they depend on, as pip resolves them on PyPI) and gives each pinned
//! version the SHA-256 of each of its wheels and source archives on PyPI's index: the same versions on
//! every machine, and from any index or mirror only the files that were reviewed. `cargo xtask lock`
//! writes them again after a pin changes (a lock whose pins and hashes stay keeps its file, date
//! included); the tests check that each is PyPI's and still the closure of its roots, and that the
//! venv's installs on each Python the venv is made with, from PyPI's index and the wheels' own metadata
//! read by range requests, without downloading a wheel ([`locked_reports`]).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use crate::onnxruntime::{Wheel, CPU_WHEEL, CUDA_LIBRARIES_LOCK, GPU_EXTRAS, GPU_WHEEL};
use crate::python;

/// A pip requirements file of exact pins with their hashes.
struct Lock {
    /// The file, under the workspace root.
    path: &'static str,
    /// What it pins and what fetches it: the first lines of its header.
    purpose: &'static str,
    roots: Roots,
}

/// What a lock pins.
enum Roots {
    /// A wheel alone: its libraries are unpacked, never imported, so what it depends on does not matter.
    Wheel(Wheel),
    /// A wheel's extras and everything they depend on (not the wheel itself).
    Extras(Wheel, &'static [&'static str]),
    /// A requirements file's lines and everything they depend on.
    Requirements(&'static str),
}

/// Every lock, in the order `cargo xtask lock` writes them.
const LOCKS: [Lock; 4] = [
    Lock {
        path: CPU_WHEEL.lock,
        purpose: "ONNX Runtime's CPU wheel, which `cargo xtask setup` fetches with `pip download --require-hashes`\n\
                  (xtask/src/onnxruntime.rs, CPU_WHEEL).",
        roots: Roots::Wheel(CPU_WHEEL),
    },
    Lock {
        path: GPU_WHEEL.lock,
        purpose: "ONNX Runtime's CUDA 13 wheel, which `cargo xtask setup` (on a machine with an NVIDIA driver) and\n\
                  `cargo xtask device-bundle` fetch with `pip download --require-hashes` (xtask/src/onnxruntime.rs,\n\
                  GPU_WHEEL).",
        roots: Roots::Wheel(GPU_WHEEL),
    },
    Lock {
        path: CUDA_LIBRARIES_LOCK,
        purpose: "The CUDA 13 and cuDNN 9 wheels the GPU wheel's extras name, which `cargo xtask setup` fetches with\n\
                  `pip download --no-deps --require-hashes` where the system lacks the CUDA provider's libraries\n\
                  (xtask/src/onnxruntime.rs, CUDA_LIBRARIES_LOCK).",
        roots: Roots::Extras(GPU_WHEEL, &GPU_EXTRAS),
    },
    Lock {
        path: python::INTEROP_LOCK,
        purpose: "The Python venv of the tests' and benchmarks' references (PyTorch, torchvision, onnx, ONNX Runtime),\n\
                  which `cargo xtask setup` installs with `pip install --require-hashes` (xtask/src/python.rs).",
        roots: Roots::Requirements(python::REQUIREMENTS),
    },
];

/// PyPI's simple index, in its JSON form (PEP 691), which gives every file's SHA-256.
const PYPI_SIMPLE: &str = "https://pypi.org/simple";

/// How a lock's header begins the line that says when it was written, and from what.
const WRITTEN_ON: &str = "Written by `cargo xtask lock` on ";

pub fn run(sh: &Shell) -> Result<()> {
    use_pips_proxy(sh)?;
    let today = cmd!(sh, "date -u +%Y-%m-%d").quiet().read()?;
    // All resolved before any is written: a failure (PyPI unreachable) leaves the locks as they were.
    let resolved: Vec<Resolved> =
        LOCKS.iter().map(|lock| lock.resolve(sh).with_context(|| format!("locking {}", lock.path))).collect::<Result<_>>()?;
    for (lock, resolved) in LOCKS.iter().zip(resolved) {
        let path = sh.current_dir().join(lock.path);
        let existing = std::fs::read_to_string(&path).ok();
        match text_to_write(existing.as_deref(), &today, |date| lock_text(lock.purpose, date, &resolved)) {
            None => println!("{} unchanged", lock.path),
            Some(text) => {
                vggq_core::atomic::write(&path, text.as_bytes()).with_context(|| format!("writing {}", lock.path))?;
                println!("wrote {}", lock.path);
            }
        }
    }
    Ok(())
}

/// The text of a lock that reads `text_on(date)` when written on `date`: None where `existing` already
/// reads so on the date its header gives (its pins, hashes and words unchanged), so that a rerun on
/// another day leaves it, date included; else the text written `today`.
fn text_to_write(existing: Option<&str>, today: &str, text_on: impl Fn(&str) -> String) -> Option<String> {
    let unchanged = existing.is_some_and(|existing| written_on(existing).is_some_and(|date| text_on(date) == existing));
    (!unchanged).then(|| text_on(today))
}

/// The date a lock's header says it was written on.
fn written_on(text: &str) -> Option<&str> {
    let line = text.lines().find_map(|line| line.strip_prefix("# ")?.strip_prefix(WRITTEN_ON))?;
    line.split_once(':').map(|(date, _)| date)
}

/// What `cargo xtask lock` found for a lock, whatever the day: its roots and how they were resolved, in
/// words, and each pin with its files' hashes, by name.
struct Resolved {
    what: String,
    pins: Vec<(String, Vec<String>)>,
}

impl Lock {
    /// The requirements the lock closes over, as pip's arguments (`name==version`, `name~=13.0`, `-r FILE`:
    /// pip reads a requirements file itself, its comments and options included).
    fn root_requirements(&self, sh: &Shell) -> Result<Vec<String>> {
        Ok(match self.roots {
            Roots::Wheel(wheel) => vec![wheel.requirement()],
            Roots::Extras(wheel, extras) => {
                // The wheel this machine would install, pinned with PyPI's hashes of today (its lock may
                // be about to change with it).
                let hashes = pypi_hashes(sh, wheel.package, wheel.version)?;
                let lock = tempfile::NamedTempFile::new()?;
                let resolved = Resolved { what: String::new(), pins: vec![(wheel.requirement(), hashes)] };
                std::fs::write(lock.path(), lock_text("", "today", &resolved))?;
                let scratch = tempfile::tempdir()?;
                let reports = locked_reports(sh, lock.path(), &[THIS_PYTHON.to_string()], scratch.path())?;
                let picked = parse_report(&sh.read_file(&reports[0])?)?;
                let found = picked.packages.first().context("the report lists no wheel")?;
                extra_requirements(&found.requires_dist, extras)
            }
            Roots::Requirements(path) => vec!["-r".to_string(), path.to_string()],
        })
    }

    /// The lock's pins and their files' hashes, as PyPI gives them today.
    fn resolve(&self, sh: &Shell) -> Result<Resolved> {
        let (mut pins, what) = match self.roots {
            Roots::Wheel(wheel) => (vec![wheel.requirement()], format!("{} alone", self.roots_named())),
            Roots::Extras(..) | Roots::Requirements(_) => {
                let resolved = pip_resolve(sh, &self.root_requirements(sh)?)?;
                let what = format!(
                    "{} and their dependencies, as pip resolved them on PyPI for {}",
                    self.roots_named(),
                    resolved.environment
                );
                (resolved.pins(), what)
            }
        };
        sort_pins(&mut pins);
        let mut locked = Vec::new();
        for pin in pins {
            let (name, version) = pin.split_once("==").expect("a pin is name==version");
            let hashes = pypi_hashes(sh, name, version)?;
            locked.push((pin, hashes));
        }
        let mut resolved = Resolved { what, pins: locked };
        if let Roots::Requirements(roots) = self.roots {
            // A venv's lock, resolved on this Python, must install on the others the venv is made with.
            let versions = python::INTEROP_PYTHONS;
            resolved.what += &format!(
                ", and checked to install on CPython {} on Linux {} with glibc 2.{} or newer (a wheel \
                 of each pin among its hashes, and every dependency those versions' and machines' markers ask \
                 for pinned)",
                versions.join(", "),
                python::INTEROP_MACHINES.join(" and "),
                python::GLIBC_MINOR
            );
            let candidate = tempfile::NamedTempFile::new()?;
            std::fs::write(candidate.path(), lock_text(self.purpose, "today", &resolved))?;
            installs_on(sh, candidate.path(), roots, &each_platform(&versions))?;
        }
        Ok(resolved)
    }

    /// The roots, in words, for the header.
    fn roots_named(&self) -> String {
        match self.roots {
            Roots::Wheel(wheel) => wheel.requirement(),
            Roots::Extras(wheel, extras) => {
                format!("the `{}` extras of {} (not the wheel)", extras.join("`, `"), wheel.requirement())
            }
            Roots::Requirements(path) => path.to_string(),
        }
    }
}

/// A lock's file as written on `date`: `purpose` and where its pins came from as comments, then each pin
/// with its hashes, one a line.
fn lock_text(purpose: &str, date: &str, resolved: &Resolved) -> String {
    let provenance = format!(
        "{WRITTEN_ON}{date}: {}; each version with the SHA-256 of each of its wheels and source archives \
         (.tar.gz, .zip) on PyPI's index.",
        resolved.what
    );
    let mut text: String = purpose.lines().map(|line| format!("# {line}\n")).collect();
    text.push_str(&wrap_comment(&provenance, 100));
    for (pin, hashes) in &resolved.pins {
        text.push_str(pin);
        for hash in hashes {
            text.push_str(&format!(" \\\n    --hash=sha256:{hash}"));
        }
        text.push('\n');
    }
    text
}

/// `text` as `# ` comment lines of at most `width` characters (a longer word alone on its line).
fn wrap_comment(text: &str, width: usize) -> String {
    let mut lines = vec![String::from("#")];
    for word in text.split_whitespace() {
        let line = lines.last_mut().expect("one line at least");
        if line.len() > 1 && line.len() + 1 + word.len() > width {
            lines.push(format!("# {word}"));
        } else {
            line.push(' ');
            line.push_str(word);
        }
    }
    lines.into_iter().map(|line| line + "\n").collect()
}

/// Sorts `name==version` pins as a lock lists them: by name, case aside (not by the whole pin, where `-`
/// and `.` sort before `=`: `pytest-cov` would come before `pytest`).
fn sort_pins(pins: &mut [String]) {
    pins.sort_by_key(|pin| pin.split_once("==").map_or(pin.as_str(), |(name, _)| name).to_lowercase());
}

/// The requirement lines of a requirements file (no comments, no blank lines).
pub fn requirement_lines(text: &str) -> Vec<String> {
    text.lines().map(str::trim).filter(|line| !line.is_empty() && !line.starts_with('#')).map(String::from).collect()
}

/// What pip resolved on PyPI for some requirements.
struct Resolution {
    packages: Vec<Package>,
    /// The platform it resolved for (`linux x86_64, CPython 3.11.7`): where markers and wheels differ by
    /// system or Python, another one may need other packages.
    environment: String,
}

impl Resolution {
    /// Each package as `name==version`.
    fn pins(&self) -> Vec<String> {
        self.packages.iter().map(|p| format!("{}=={}", p.name, p.version)).collect()
    }
}

/// One package of a [`Resolution`].
struct Package {
    name: String,
    version: String,
    /// Its `Requires-Dist` lines.
    requires_dist: Vec<String>,
}

/// What pip would install for `requirements` on this machine, resolved against PyPI: `cargo xtask lock`'s
/// resolution. pip downloads every wheel it picks, `--dry-run` or not (the index serves no metadata files
/// here); the checks of the locks read them without ([`REPORT_SCRIPT`]). PyPI's index only, whatever pip
/// is configured with: the hashes come from PyPI's.
fn pip_resolve(sh: &Shell, requirements: &[String]) -> Result<Resolution> {
    let python = python::system_python();
    let scratch = tempfile::tempdir()?;
    let report = scratch.path().join("report.json");
    on_pypi_only(cmd!(sh, "{python} -m pip install --dry-run --ignore-installed --only-binary=:all: --quiet --disable-pip-version-check --index-url {PYPI_SIMPLE} --report {report} {requirements...}"))
        .run()
        .with_context(|| format!("pip could not resolve {} on PyPI", requirements.join(" ")))?;
    parse_report(&sh.read_file(&report)?)
}

/// `pip` (given `--index-url` [`PYPI_SIMPLE`]) without the settings that would add other indexes or
/// folders, or take PyPI away: the files it finds are PyPI's, whose hashes the locks pin.
fn on_pypi_only(pip: xshell::Cmd<'_>) -> xshell::Cmd<'_> {
    pip.env_remove("PIP_EXTRA_INDEX_URL").env_remove("PIP_FIND_LINKS").env_remove("PIP_NO_INDEX")
}

/// Sets `sh` up so that what it runs to read PyPI beside pip (curl, [`REPORT_SCRIPT`]) goes through the
/// proxy pip is set up with, where it is: pip's `proxy` setting (`--proxy`, `PIP_PROXY`, `proxy =` in a
/// pip.conf), which pip takes for every host over `https_proxy` and `no_proxy`, so the shell is given it
/// as `https_proxy`, and no `no_proxy` (pip, which reads its own setting, goes on as before). Without it,
/// they read `https_proxy` and `no_proxy` themselves, as pip then does. Asked once, as the commands
/// begin: asking pip for each of a lock's pins took 0.34 s a pin.
fn use_pips_proxy(sh: &Shell) -> Result<()> {
    let python = python::system_python();
    let settings = cmd!(sh, "{python} -m pip config list").quiet().read().context("asking pip for its settings")?;
    if let Some(proxy) = pips_proxy(&settings) {
        // An empty variable names nothing to curl and to Python alike.
        for name in ["HTTPS_PROXY", "no_proxy", "NO_PROXY"] {
            sh.set_var(name, "");
        }
        sh.set_var("https_proxy", proxy);
    }
    Ok(())
}

/// The proxy `pip install` takes from `pip config list`'s `settings`: an environment variable's
/// (`:env:.proxy`) before the `install` section's before the `global` one, as pip reads them.
fn pips_proxy(settings: &str) -> Option<String> {
    let value = |key: &str| {
        settings.lines().find_map(|line| {
            let quoted = line.strip_prefix(key)?.strip_prefix('=')?;
            // pip prints each value as Python's repr: in single quotes, or double where it holds one.
            let value = quoted.strip_prefix(['\'', '"'])?.strip_suffix(['\'', '"'])?;
            (!value.is_empty()).then(|| value.to_string())
        })
    };
    [":env:.proxy", "install.proxy", "global.proxy"].into_iter().find_map(value)
}

/// A [`Resolution`] from pip's installation report (`pip install --report`, format 1).
fn parse_report(report: &str) -> Result<Resolution> {
    let report: serde_json::Value = serde_json::from_str(report).context("reading pip's report")?;
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    let packages = report["install"]
        .as_array()
        .context("pip's report lists no packages to install")?
        .iter()
        .map(|package| {
            let metadata = &package["metadata"];
            let field = |key: &str| {
                metadata[key]
                    .as_str()
                    .map(String::from)
                    .with_context(|| format!("pip's report gives a package without its {key}"))
            };
            let requires_dist = metadata["requires_dist"].as_array().map(|r| r.iter().map(text).collect()).unwrap_or_default();
            Ok(Package { name: field("name")?, version: field("version")?, requires_dist })
        })
        .collect::<Result<_>>()?;
    let environment = &report["environment"];
    let environment = format!(
        "{} {}, {} {}",
        text(&environment["sys_platform"]),
        text(&environment["platform_machine"]),
        text(&environment["platform_python_implementation"]),
        text(&environment["python_full_version"])
    );
    Ok(Resolution { packages, environment })
}

/// The requirements among `requires_dist` (a wheel's `Requires-Dist` lines) that any of `extras` adds
/// (`nvidia-cudnn-cu13~=9.0; extra == "cudnn"` -> `nvidia-cudnn-cu13~=9.0`).
fn extra_requirements(requires_dist: &[String], extras: &[&str]) -> Vec<String> {
    requires_dist
        .iter()
        .filter_map(|requirement| requirement.split_once(';'))
        .filter(|(_, marker)| {
            let marker = marker.replace('\'', "\"").replace(' ', "");
            extras.iter().any(|extra| marker.contains(&format!("extra==\"{extra}\"")))
        })
        .map(|(requirement, _)| requirement.trim().to_string())
        .collect()
}

/// The script that gives pip's report of the wheels a lock installs, without downloading them
/// ([`locked_reports`]).
const REPORT_SCRIPT: &str = "scripts/lock_report.py";
/// The script that walks a lock's dependencies with the markers of another Python and machine
/// ([`check_closure`]).
const CLOSURE_SCRIPT: &str = "scripts/lock_closure.py";
/// The scripts' name for the Python that runs them, where a check is made for this machine.
const THIS_PYTHON: &str = "this";

/// The scripts' name for CPython `version` (`3.13`) on Linux `machine` (`aarch64`).
fn platform(version: &str, machine: &str) -> String {
    format!("{version}/{machine}")
}

/// What pip would install from the lock file `lock` on each of `targets` ([`platform`]s or
/// [`THIS_PYTHON`]), as pip's reports, written into `folder`, one a target: the wheel it would pick of
/// each pin, which must be one whose SHA-256 the lock gives, and its metadata. [`REPORT_SCRIPT`] reads
/// them from PyPI's index and, with range requests, from the wheels' own zip directories: pip downloads
/// each wheel it picks, gigabytes for the venv's lock on each platform (PyTorch, NVIDIA's libraries),
/// `--dry-run` or not.
fn locked_reports(sh: &Shell, lock: &Path, targets: &[String], folder: &Path) -> Result<Vec<PathBuf>> {
    let reports: Vec<PathBuf> = (0..targets.len()).map(|i| folder.join(format!("report-{i}.json"))).collect();
    let pairs = targets.iter().zip(&reports).flat_map(|(target, report)| [target.clone(), report.display().to_string()]);
    let (python, glibc_minor) = (python::system_python(), python::GLIBC_MINOR.to_string());
    script_output(cmd!(sh, "{python} {REPORT_SCRIPT} {PYPI_SIMPLE} {lock} {glibc_minor} {pairs...}"))
        .with_context(|| format!("{} does not give a wheel of each pin for {}", lock.display(), targets.join(", ")))?;
    Ok(reports)
}

/// Checks with [`CLOSURE_SCRIPT`] that the pins of `report` ([`locked_reports`]' for `target`) hold
/// everything `roots` (a requirements file) need there and, `exact`, nothing more.
fn check_closure(sh: &Shell, report: &Path, roots: &Path, target: &str, exact: bool) -> Result<()> {
    let python = python::system_python();
    let exact = exact.then_some("--exact");
    let said = script_output(cmd!(sh, "{python} {CLOSURE_SCRIPT} {report} {roots} {target} {exact...}"))?;
    print!("{said}");
    Ok(())
}

/// What one of the lock scripts printed, or an error that says it (each prints what it found missing),
/// with what it wrote to stderr.
fn script_output(script: xshell::Cmd<'_>) -> Result<String> {
    let output = script.ignore_status().output()?;
    let said = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!("{}{}", said, String::from_utf8_lossy(&output.stderr).trim_end());
    }
    Ok(said)
}

/// Whether the lock file `lock` installs on each of `platforms`, CPython `version` (`3.13`) on Linux
/// `machine` (`aarch64`): a wheel of each pin there among the lock's hashes ([`locked_reports`]), and
/// everything `roots` (a requirements file) need there pinned ([`check_closure`]); the first that fails.
/// pip alone cannot say the second: it evaluates the markers it reads (`python_version >= "3.13"`,
/// `platform_machine == "x86_64"`) for the Python it runs on, whatever version and platform it picks
/// wheels for.
fn installs_on(sh: &Shell, lock: &Path, roots: &str, platforms: &[(&str, &str)]) -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let targets: Vec<String> = platforms.iter().map(|(version, machine)| platform(version, machine)).collect();
    let reports = locked_reports(sh, lock, &targets, scratch.path())?;
    platforms.iter().zip(targets.iter().zip(&reports)).try_for_each(|((version, machine), (target, report))| {
        check_closure(sh, report, Path::new(roots), target, false)
            .with_context(|| format!("the lock lacks what {roots} need on CPython {version} on Linux {machine}"))
    })
}

/// Each of `versions` on each of [`python::INTEROP_MACHINES`], for [`installs_on`].
fn each_platform<'a>(versions: &[&'a str]) -> Vec<(&'a str, &'static str)> {
    versions.iter().flat_map(|version| python::INTEROP_MACHINES.map(|machine| (*version, machine))).collect()
}

/// The SHA-256 of every file of `name` `version` on PyPI's index, from its JSON form (with curl, which
/// trusts the system's certificates as pip is set up to).
fn pypi_hashes(sh: &Shell, name: &str, version: &str) -> Result<Vec<String>> {
    let url = format!("{PYPI_SIMPLE}/{}/", normalized_name(name));
    let curl =
        cmd!(sh, "curl --fail --silent --show-error --location --header 'Accept: application/vnd.pypi.simple.v1+json' {url}");
    let index = curl.quiet().read().with_context(|| format!("reading {url}"))?;
    let index: serde_json::Value = serde_json::from_str(&index).with_context(|| format!("{url} is not PyPI's JSON index"))?;
    let mut hashes: Vec<String> = index["files"]
        .as_array()
        .with_context(|| format!("{url} lists no files"))?
        .iter()
        .filter(|file| file["filename"].as_str().and_then(file_version) == Some(version))
        .filter_map(|file| file["hashes"]["sha256"].as_str().map(String::from))
        .collect();
    if hashes.is_empty() {
        bail!("{url} lists no file of {name} {version} with a SHA-256");
    }
    hashes.sort();
    Ok(hashes)
}

/// A project's name as the simple index spells it (PEP 503): lower case, each run of `-`, `_` and `.`
/// one `-`.
fn normalized_name(name: &str) -> String {
    let lower = name.to_lowercase();
    lower.split(['-', '_', '.']).filter(|part| !part.is_empty()).collect::<Vec<_>>().join("-")
}

/// A `name==version` pin with its name as the simple index spells it; None for another requirement.
#[cfg(test)]
fn normalized_pin(pin: &str) -> Option<String> {
    pin.split_once("==").map(|(name, version)| format!("{}=={version}", normalized_name(name)))
}

/// The version of a distribution file: a wheel's second dash-separated field (PEP 427 escapes dashes in
/// names and versions), an sdist's text after its name's last dash.
fn file_version(file_name: &str) -> Option<&str> {
    if let Some(wheel) = file_name.strip_suffix(".whl") {
        return wheel.split('-').nth(1);
    }
    let sdist = [".tar.gz", ".zip"].iter().find_map(|extension| file_name.strip_suffix(extension))?;
    sdist.rsplit_once('-').map(|(_, version)| version)
}

/// The pins of the lock at `path`, under the workspace root: each `name==version` with its hashes.
#[cfg(test)]
pub fn lock_pins(path: &str) -> Vec<(String, Vec<String>)> {
    pins_in(&std::fs::read_to_string(vggq_core::places::workspace_root().join(path)).unwrap())
}

/// The pins of a lock's text: each `name==version` with its hashes.
#[cfg(test)]
fn pins_in(text: &str) -> Vec<(String, Vec<String>)> {
    let mut pins: Vec<(String, Vec<String>)> = Vec::new();
    for line in text.lines().map(|line| line.trim().trim_end_matches('\\').trim()) {
        if let Some(hash) = line.strip_prefix("--hash=sha256:") {
            pins.last_mut().expect("a hash follows its pin").1.push(hash.to_string());
        } else if !line.is_empty() && !line.starts_with('#') {
            pins.push((line.to_string(), Vec::new()));
        }
    }
    pins
}

#[cfg(test)]
mod tests {
    use super::*;
    use vggq_core::places::workspace_root;

    /// Whether `lock` holds what its roots depend on too.
    fn with_dependencies(lock: &Lock) -> bool {
        !matches!(lock.roots, Roots::Wheel(_))
    }

    /// A shell as `cargo xtask lock` sets it up.
    fn shell() -> Shell {
        let sh = Shell::new().unwrap();
        sh.change_dir(workspace_root());
        use_pips_proxy(&sh).unwrap();
        sh
    }

    /// Two pins with their hashes, resolved from roots described in `what`.
    fn resolved(what: &str) -> Resolved {
        let pins =
            vec![("a==1.0".to_string(), vec!["0".repeat(64), "1".repeat(64)]), ("b-c==2.0.1".to_string(), vec!["2".repeat(64)])];
        Resolved { what: what.to_string(), pins }
    }

    /// A lock as `cargo xtask lock` writes it reads back as the pins and hashes it was given, and the day
    /// it was written.
    #[test]
    fn a_written_lock_reads_back() {
        let resolved = resolved(&"word ".repeat(40));
        let text = lock_text("What it is.\nWho reads it.", "2026-12-05", &resolved);
        assert!(text.lines().take_while(|line| line.starts_with('#')).all(|line| line.len() <= 100), "{text}");
        assert!(
            text.starts_with("# What it is.\n# Who reads it.\n# Written by `cargo xtask lock` on 2026-12-05: word"),
            "{text}"
        );
        assert_eq!(written_on(&text), Some("2026-12-05"));
        assert_eq!(pins_in(&text), resolved.pins);
        assert_eq!(requirement_lines(&text).first().map(String::as_str), Some("a==1.0 \\"));
    }

    /// A lock written again on another day with the same pins, hashes and words keeps its file, date
    /// included; one with anything else changed is written with the new day.
    #[test]
    fn a_lock_keeps_its_date_until_it_changes() {
        let same = resolved("a==1.0 alone");
        let text_on = |date: &str| lock_text("What it is.", date, &same);
        let written = text_on("2026-12-05");
        assert_eq!(text_to_write(Some(&written), "2027-01-02", text_on), None);
        assert_eq!(text_to_write(None, "2027-01-02", text_on), Some(text_on("2027-01-02")));
        let mut rehashed = resolved("a==1.0 alone");
        rehashed.pins[1].1.push("3".repeat(64));
        let rehashed_on = |date: &str| lock_text("What it is.", date, &rehashed);
        assert_eq!(text_to_write(Some(&written), "2027-01-02", rehashed_on), Some(rehashed_on("2027-01-02")));
        let reworded_on = |date: &str| lock_text("What it is, reworded.", date, &same);
        assert_eq!(text_to_write(Some(&written), "2027-01-02", reworded_on), Some(reworded_on("2027-01-02")));
        let undated = written.replace("on 2026-12-05", "today");
        assert_eq!(text_to_write(Some(&undated), "2027-01-02", text_on), Some(text_on("2027-01-02")));
    }

    /// A requirements file's lock pins each of its lines: one changed without `cargo xtask lock` would
    /// leave the venv at what the lock still pins.
    #[test]
    fn each_requirements_lock_pins_its_requirements() {
        for lock in &LOCKS {
            if let Roots::Requirements(path) = lock.roots {
                let pins: Vec<_> = lock_pins(lock.path).iter().map(|(pin, _)| normalized_pin(pin)).collect();
                for requirement in requirement_lines(&std::fs::read_to_string(workspace_root().join(path)).unwrap()) {
                    assert!(
                        normalized_pin(&requirement).is_some_and(|pin| pins.contains(&Some(pin))),
                        "{path} asks for {requirement}, which {} does not pin: `cargo xtask lock` writes it again",
                        lock.path
                    );
                }
            }
        }
    }

    /// A lock lists its pins by name, whatever follows a name that begins another.
    #[test]
    fn pins_are_sorted_by_name() {
        let mut pins = ["pytest-cov==5.0", "zope.interface==7.0", "pytest==8.0", "zope==2.0", "Jinja2==3.1.6"].map(String::from);
        sort_pins(&mut pins);
        assert_eq!(pins, ["Jinja2==3.1.6", "pytest==8.0", "pytest-cov==5.0", "zope==2.0", "zope.interface==7.0"]);
    }

    /// pip's report gives each package's name, version and dependencies; one without a name or version is
    /// an error here, not a request for PyPI's index of "".
    #[test]
    fn pips_report_is_read_whole() {
        let report = |metadata: &str| {
            format!(
                r#"{{"install": [{{"metadata": {metadata}}}], "environment": {{"sys_platform": "linux", "platform_machine": "x86_64", "platform_python_implementation": "CPython", "python_full_version": "3.11.7"}}}}"#
            )
        };
        let resolution =
            parse_report(&report(r#"{"name": "Jinja2", "version": "3.1.6", "requires_dist": ["MarkupSafe>=2.0"]}"#)).unwrap();
        assert_eq!(resolution.pins(), ["Jinja2==3.1.6"]);
        assert_eq!(resolution.packages[0].requires_dist, ["MarkupSafe>=2.0"]);
        assert_eq!(resolution.environment, "linux x86_64, CPython 3.11.7");
        let error = parse_report(&report(r#"{"name": "Jinja2"}"#)).err().unwrap();
        assert!(format!("{error:#}").contains("without its version"), "{error:#}");
    }

    /// Distribution files' versions and projects' names, as PyPI's index spells them.
    #[test]
    fn files_are_matched_to_versions() {
        assert_eq!(file_version("nvidia_cudnn_cu13-9.28.1.4-py3-none-manylinux_2_27_x86_64.whl"), Some("9.28.1.4"));
        assert_eq!(file_version("torch-2.15.0-1-cp311-cp311-linux_x86_64.whl"), Some("2.15.0"));
        assert_eq!(file_version("jinja2-3.1.6.tar.gz"), Some("3.1.6"));
        assert_eq!(file_version("ml-dtypes-0.7.0.zip"), Some("0.7.0"));
        assert_eq!(file_version("README.md"), None);
        assert_eq!(normalized_name("Jinja2"), "jinja2");
        assert_eq!(normalized_name("typing_extensions"), "typing-extensions");
        assert_eq!(normalized_name("zope..interface"), "zope-interface");
    }

    /// The `Requires-Dist` lines of onnxruntime_gpu-1.31.1's METADATA, as PyPI serves them.
    const GPU_REQUIRES_DIST: [&str; 11] = [
        "flatbuffers",
        "numpy>=1.21.6",
        "packaging",
        "protobuf>=4.25.8",
        "sympy; extra == \"symbolic\"",
        "ml_dtypes; extra == \"quantization\"",
        "nvidia-cuda-nvrtc~=13.0; extra == \"cuda\"",
        "nvidia-cuda-runtime~=13.0; extra == \"cuda\"",
        "nvidia-cufft~=12.0; extra == \"cuda\"",
        "nvidia-curand~=10.0; extra == \"cuda\"",
        "nvidia-cudnn-cu13~=9.0; extra == \"cudnn\"",
    ];

    #[test]
    fn the_extras_requirements_come_from_the_metadata() {
        let requires_dist = GPU_REQUIRES_DIST.map(String::from);
        assert_eq!(
            extra_requirements(&requires_dist, &GPU_EXTRAS),
            [
                "nvidia-cuda-nvrtc~=13.0",
                "nvidia-cuda-runtime~=13.0",
                "nvidia-cufft~=12.0",
                "nvidia-curand~=10.0",
                "nvidia-cudnn-cu13~=9.0"
            ]
        );
        assert_eq!(extra_requirements(&requires_dist, &["symbolic"]), ["sympy"]);
        assert_eq!(extra_requirements(&["a; python_version >= '3.8' and extra == 'cuda'".into()], &["cuda"]), ["a"]);
        assert!(extra_requirements(&requires_dist, &["tensorrt"]).is_empty());
    }

    /// Each lock pins exact versions, each with hashes of the right form; a wheel's lock pins it alone.
    #[test]
    fn the_locks_pin_versions_with_hashes() {
        let sh = shell();
        for lock in &LOCKS {
            let pins = lock_pins(lock.path);
            if !with_dependencies(lock) {
                let pinned: Vec<String> = pins.iter().map(|(pin, _)| pin.clone()).collect();
                assert_eq!(pinned, lock.root_requirements(&sh).unwrap(), "{}", lock.path);
            }
            for (pin, hashes) in pins {
                assert!(pin.split_once("==").is_some_and(|(_, version)| !version.is_empty()), "{}: {pin}", lock.path);
                assert!(!hashes.is_empty(), "{}: {pin} has no hash", lock.path);
                for hash in hashes {
                    assert!(hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()), "{}: {pin}: {hash}", lock.path);
                }
            }
        }
    }

    /// Every lock resolves on PyPI: the file pip would pick of each pin on this machine is one whose
    /// SHA-256 on PyPI's index the lock gives, and a lock without that hash is refused. Needs PyPI, as
    /// `cargo xtask setup` does.
    #[test]
    fn the_locks_hashes_are_pypis() {
        let sh = shell();
        let scratch = tempfile::tempdir().unwrap();
        let this = [THIS_PYTHON.to_string()];
        let mut reports = Vec::new();
        for lock in &LOCKS {
            reports = locked_reports(&sh, &workspace_root().join(lock.path), &this, scratch.path()).unwrap();
        }
        let picked: serde_json::Value = serde_json::from_str(&sh.read_file(&reports[0]).unwrap()).unwrap();
        let sha256 = picked["install"][0]["download_info"]["archive_info"]["hashes"]["sha256"].as_str().unwrap().to_string();
        let text = std::fs::read_to_string(workspace_root().join(LOCKS[LOCKS.len() - 1].path)).unwrap();
        let forged = scratch.path().join("forged.txt");
        std::fs::write(&forged, text.replace(&sha256, &"0".repeat(64))).unwrap();
        let error = locked_reports(&sh, &forged, &this, scratch.path()).unwrap_err();
        assert!(format!("{error:#}").contains(&format!("whose SHA-256 {sha256} is not among the lock's")), "{error:#}");
    }

    /// The lock check reaches PyPI through the proxy `https_proxy` names, as pip does: a tunnel to the
    /// index and one to the wheels' host, each asked with the URL's credentials (percent-decoded), and
    /// the report the one it gives without. Needs PyPI.
    #[test]
    fn the_lock_check_goes_through_the_https_proxy() {
        let sh = shell();
        let scratch = tempfile::tempdir().unwrap();
        let lock = workspace_root().join(LOCKS[0].path);
        let this = [THIS_PYTHON.to_string()];
        let (straight, proxied) = (scratch.path().join("straight"), scratch.path().join("proxied"));
        std::fs::create_dir_all(&straight).unwrap();
        std::fs::create_dir_all(&proxied).unwrap();
        let straight = locked_reports(&sh, &lock, &this, &straight).unwrap();
        let (proxy, hosts) = tunnelling_proxy();
        sh.set_var("https_proxy", proxy.replace("http://", "http://vggq:s%40cret@"));
        sh.set_var("no_proxy", "");
        let proxied = locked_reports(&sh, &lock, &this, &proxied).unwrap();
        assert_eq!(sh.read_file(&proxied[0]).unwrap(), sh.read_file(&straight[0]).unwrap());
        let tunnels = std::mem::take(&mut *hosts.lock().unwrap());
        for host in ["pypi.org:443", "files.pythonhosted.org:443"] {
            assert!(tunnels.iter().any(|(tunnelled, _)| tunnelled == host), "no tunnel to {host}: {tunnels:?}");
        }
        // `vggq:s@cret` in base64.
        let credentials = "Basic dmdncTpzQGNyZXQ=";
        assert!(tunnels.iter().all(|(_, authorization)| authorization == credentials), "{tunnels:?}");

        // pip's own setting, in a pip.conf, goes before `https_proxy` (here no proxy at all) and for
        // every host, `no_proxy`'s too.
        let configured = scratch.path().join("configured");
        std::fs::create_dir_all(&configured).unwrap();
        let pip_conf = scratch.path().join("pip.conf");
        std::fs::write(&pip_conf, format!("[global]\nproxy = {}\n", proxy.replace("http://", "http://vggq:s%40cret@"))).unwrap();
        sh.set_var("PIP_CONFIG_FILE", &pip_conf);
        sh.set_var("https_proxy", "http://127.0.0.1:9");
        sh.set_var("no_proxy", "pypi.org,files.pythonhosted.org");
        use_pips_proxy(&sh).unwrap();
        let configured = locked_reports(&sh, &lock, &this, &configured).unwrap();
        assert_eq!(sh.read_file(&configured[0]).unwrap(), sh.read_file(&straight[0]).unwrap());
        let tunnels = hosts.lock().unwrap();
        assert!(tunnels.iter().any(|(tunnelled, _)| tunnelled == "pypi.org:443"), "no tunnel to PyPI: {tunnels:?}");
        assert!(tunnels.iter().all(|(_, authorization)| authorization == credentials), "{tunnels:?}");
    }

    /// pip's proxy setting as pip takes it: an environment variable's before a command's section's
    /// before the global one; none where pip has none.
    #[test]
    fn pips_proxy_is_the_one_pip_takes() {
        let settings = "global.cert='/etc/ssl/certs/ca-certificates.crt'\nglobal.proxy='http://global:3128'\n";
        assert_eq!(pips_proxy(settings).as_deref(), Some("http://global:3128"));
        let install = format!("{settings}install.proxy=\"http://it's:3128\"\n");
        assert_eq!(pips_proxy(&install).as_deref(), Some("http://it's:3128"));
        let env = format!(":env:.proxy='http://env:1'\n{install}");
        assert_eq!(pips_proxy(&env).as_deref(), Some("http://env:1"));
        assert_eq!(pips_proxy(":env:.find-links='/opt/wheels'\nglobal.proxies='x'\n"), None);
    }

    /// Each tunnel of [`tunnelling_proxy`]: the host, and the request's `Proxy-Authorization`.
    type Tunnels = std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>;

    /// A proxy on this machine that answers each CONNECT by joining its client to the host it names:
    /// its `http://` address, and the tunnels it made.
    fn tunnelling_proxy() -> (String, Tunnels) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let hosts = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let joined = hosts.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let joined = joined.clone();
                std::thread::spawn(move || tunnel(client, &joined));
            }
        });
        (format!("http://{address}"), hosts)
    }

    /// One tunnel of [`tunnelling_proxy`], until either side closes.
    fn tunnel(client: std::net::TcpStream, joined: &std::sync::Mutex<Vec<(String, String)>>) -> std::io::Result<()> {
        use std::io::{BufRead, Write};
        let mut request = std::io::BufReader::new(client.try_clone()?);
        let mut line = String::new();
        request.read_line(&mut line)?;
        let host = line.strip_prefix("CONNECT ").and_then(|rest| rest.split_whitespace().next()).unwrap_or_default().to_string();
        // The request's headers, to the blank line after them.
        let mut authorization = String::new();
        while {
            line.clear();
            request.read_line(&mut line)? > 2
        } {
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("proxy-authorization") {
                    authorization = value.trim().to_string();
                }
            }
        }
        let server = std::net::TcpStream::connect(&host)?;
        joined.lock().unwrap().push((host, authorization));
        (&client).write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
        let (mut from_server, mut to_client) = (server.try_clone()?, client);
        std::thread::spawn(move || std::io::copy(&mut from_server, &mut to_client));
        std::io::copy(&mut request, &mut &server)?;
        server.shutdown(std::net::Shutdown::Write)
    }

    /// Each lock with dependencies is still the closure of its roots on PyPI, on this machine: their
    /// dependencies, read from the pinned wheels, need exactly the lock's pins: none missing (a package it
    /// lacks would come in at PyPI's newest) and none more. Needs PyPI, as `cargo xtask setup` does.
    #[test]
    fn the_locks_are_their_roots_closures() {
        let sh = shell();
        for lock in LOCKS.iter().filter(|lock| with_dependencies(lock)) {
            let text = std::fs::read_to_string(workspace_root().join(lock.path)).unwrap();
            is_closure(&sh, lock, &text).unwrap_or_else(|e| panic!("{}: {e:#}; `cargo xtask lock` writes it again", lock.path));
        }
        let cuda = LOCKS.iter().find(|lock| lock.path == CUDA_LIBRARIES_LOCK).unwrap();
        let text = std::fs::read_to_string(workspace_root().join(cuda.path)).unwrap();
        let error = is_closure(&sh, cuda, &without_pin(&text, "nvidia-nvjitlink")).unwrap_err();
        assert!(format!("{error:#}").contains("the lock does not pin nvidia-nvjitlink"), "cuFFT's dependency: {error:#}");
        let six: String =
            pypi_hashes(&sh, "six", "1.16.0").unwrap().iter().map(|hash| format!(" \\\n    --hash=sha256:{hash}")).collect();
        let error = is_closure(&sh, cuda, &format!("{text}six==1.16.0{six}\n")).unwrap_err();
        assert!(format!("{error:#}").contains("six==1.16.0: the roots need it nowhere"), "a pin nothing needs: {error:#}");
    }

    /// The closure script counts a dependency where the markers of the version and machine it is given,
    /// and the extras asked for, ask for it: here `a` needs `b>=2` on CPython 3.13 and later, `d` on
    /// aarch64, and `c` with `[x]`.
    #[test]
    fn the_closure_follows_the_markers_of_the_version_and_machine_given() {
        let scratch = tempfile::tempdir().unwrap();
        let package = |name: &str, version: &str, requires: &[&str]| serde_json::json!({"metadata": {"name": name, "version": version, "requires_dist": requires}});
        let report = serde_json::json!({"install": [
            package("a", "1.0", &["b>=2; python_version >= \"3.13\"", "c; extra == \"x\"", "d; platform_machine == \"aarch64\""]),
            package("b", "1.0", &[]),
        ]});
        let report_path = scratch.path().join("report.json");
        std::fs::write(&report_path, report.to_string()).unwrap();
        let closure = |roots: &str, version: &str, machine: &str| {
            let roots_path = scratch.path().join("roots.txt");
            std::fs::write(&roots_path, format!("# the roots\n{roots}\n")).unwrap();
            let output = std::process::Command::new(python::system_python())
                .arg(workspace_root().join(CLOSURE_SCRIPT))
                .args([&report_path, &roots_path])
                .arg(platform(version, machine))
                .output()
                .expect("python3");
            (output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned())
        };
        let holds = "CPython 3.12 on x86_64: the 2 pins hold everything their roots need\n";
        assert_eq!(closure("a==1.0", "3.12", "x86_64"), (true, holds.into()));
        let newer_b = "CPython 3.13 on x86_64: b>=2 (for a==1.0): the lock pins b==1.0\n";
        assert_eq!(closure("a==1.0", "3.13", "x86_64"), (false, newer_b.into()));
        let no_d = "CPython 3.12 on aarch64: d (for a==1.0): the lock does not pin d\n";
        assert_eq!(closure("a==1.0", "3.12", "aarch64"), (false, no_d.into()));
        let no_c = "CPython 3.12 on x86_64: c (for a==1.0): the lock does not pin c\n";
        assert_eq!(closure("a[x]==1.0", "3.12", "x86_64"), (false, no_c.into()));
        let other_a = "CPython 3.12 on x86_64: a==2.0 (for the roots): the lock pins a==1.0\n";
        assert_eq!(closure("a==2.0", "3.12", "x86_64"), (false, other_a.into()));
    }

    /// The venv's lock installs on each Python and machine it names, and a lock without a pin that a pin
    /// depends on does not. Needs PyPI, as `cargo xtask setup` does.
    #[test]
    fn the_interop_lock_installs_on_each_python_and_machine_it_names() {
        let sh = shell();
        let lock = workspace_root().join(python::INTEROP_LOCK);
        // Jinja2 (PyTorch's) needs MarkupSafe, which none of the roots asks for itself.
        let text = std::fs::read_to_string(&lock).unwrap();
        let without = without_pin(&text, "markupsafe");
        let without_path = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(without_path.path(), without).unwrap();
        let newest = python::INTEROP_PYTHONS[python::INTEROP_PYTHONS.len() - 1];
        let machine = python::INTEROP_MACHINES[python::INTEROP_MACHINES.len() - 1];
        installs_on(&sh, &lock, python::REQUIREMENTS, &each_platform(&python::INTEROP_PYTHONS)).unwrap();
        let error = installs_on(&sh, without_path.path(), python::REQUIREMENTS, &[(newest, machine)]).unwrap_err();
        let expected = format!("the lock lacks what {} need on CPython {newest} on Linux {machine}", python::REQUIREMENTS);
        assert!(format!("{error:#}").contains(&expected), "{error:#}");
    }

    /// A lock's `text` without the pin of `name` (as the index spells it) and its hashes.
    fn without_pin(text: &str, name: &str) -> String {
        let mut in_pin = false;
        let without: String = text
            .lines()
            .filter(|line| {
                if !line.starts_with(' ') {
                    in_pin =
                        normalized_pin(line.trim_end_matches(" \\")).is_some_and(|pin| pin.starts_with(&format!("{name}==")));
                }
                !in_pin
            })
            .map(|line| format!("{line}\n"))
            .collect();
        assert_eq!(pins_in(&without).len() + 1, pins_in(text).len(), "one pin, and its hashes, left out");
        without
    }

    /// Whether the lock `text` is exactly the closure of `lock`'s roots on this machine.
    fn is_closure(sh: &Shell, lock: &Lock, text: &str) -> Result<()> {
        let scratch = tempfile::tempdir()?;
        let lock_path = scratch.path().join("lock.txt");
        std::fs::write(&lock_path, text)?;
        let roots = match lock.roots {
            Roots::Requirements(path) => workspace_root().join(path),
            _ => {
                let roots = scratch.path().join("roots.txt");
                std::fs::write(&roots, lock.root_requirements(sh)?.iter().map(|root| format!("{root}\n")).collect::<String>())?;
                roots
            }
        };
        let reports = locked_reports(sh, &lock_path, &[THIS_PYTHON.to_string()], scratch.path())?;
        check_closure(sh, &reports[0], &roots, THIS_PYTHON, true)
    }
}
