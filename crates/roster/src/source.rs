//! Reading a package: a zip file or a folder, with `manifest.csv` at its root or one
//! folder down (a common export deviation). Only the files directly beside the manifest
//! are read; everything else is listed as ignored. File names are matched
//! case-insensitively. Sizes are capped so a zip bomb cannot exhaust memory.

use crate::problem::Problems;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// Largest single file read from a package (uncompressed).
pub const MAX_FILE_BYTES: u64 = 1 << 30;

/// Every OneRoster CSV file name of 1.1 and 1.2 (without `.csv`), as the spec spells them.
pub const ONEROSTER_FILES: &[&str] = &[
    "manifest",
    "academicSessions",
    "categories",
    "classes",
    "classResources",
    "courses",
    "courseResources",
    "demographics",
    "enrollments",
    "lineItems",
    "orgs",
    "resources",
    "results",
    "users",
    "lineItemLearningObjectiveIds",
    "lineItemScoreScales",
    "resultLearningObjectiveIds",
    "resultScoreScales",
    "roles",
    "scoreScales",
    "userProfiles",
    "userResources",
];

/// One file of a package.
#[derive(Debug, Clone)]
pub struct PackageFile {
    /// The name as written in the package (`Users.csv`).
    pub name: String,
    /// Path inside the package (`export/Users.csv`).
    pub path: String,
    pub bytes: Vec<u8>,
}

/// The files of a package, by OneRoster name (`users`, `orgs`, ...).
#[derive(Debug, Clone, Default)]
pub struct PackageFiles {
    pub files: BTreeMap<&'static str, PackageFile>,
    /// Paths (relative to the package) that are not OneRoster files beside the manifest.
    pub ignored: Vec<String>,
}

/// The OneRoster name of a file name (`Users.CSV` → `users`).
pub fn oneroster_name(file_name: &str) -> Option<&'static str> {
    let lower = file_name.to_ascii_lowercase();
    let stem = lower.strip_suffix(".csv")?;
    ONEROSTER_FILES
        .iter()
        .copied()
        .find(|n| n.to_ascii_lowercase() == stem)
}

/// An entry found in the package, before reading.
struct Entry {
    /// Path relative to the package root, `/`-separated.
    path: String,
    /// Index in the zip, or the full path on disk.
    loc: Loc,
}

enum Loc {
    Zip(usize),
    Disk(std::path::PathBuf),
}

/// Reads a package from a zip file or a folder. Problems (unreadable, no manifest, ...)
/// are recorded as errors against `path` and `None` is returned.
pub fn read_path(path: &Path, problems: &mut Problems) -> Option<PackageFiles> {
    let label = path.display().to_string();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            problems.error(&label, None, None, "package", format!("cannot read: {e}"));
            return None;
        }
    };
    if meta.is_dir() {
        read_folder(path, &label, problems)
    } else {
        match std::fs::File::open(path) {
            Ok(f) => read_zip(f, &label, problems),
            Err(e) => {
                problems.error(&label, None, None, "package", format!("cannot open: {e}"));
                None
            }
        }
    }
}

/// Reads a zipped package held in memory (an upload through the admin API).
pub fn read_zip_bytes(
    bytes: Vec<u8>,
    label: &str,
    problems: &mut Problems,
) -> Option<PackageFiles> {
    read_zip(std::io::Cursor::new(bytes), label, problems)
}

fn read_folder(root: &Path, label: &str, problems: &mut Problems) -> Option<PackageFiles> {
    let mut entries = Vec::new();
    let top = match std::fs::read_dir(root) {
        Ok(d) => d,
        Err(e) => {
            problems.error(
                label,
                None,
                None,
                "package",
                format!("cannot list folder: {e}"),
            );
            return None;
        }
    };
    for item in top.flatten() {
        let name = item.file_name().to_string_lossy().into_owned();
        let p = item.path();
        if p.is_dir() {
            if let Ok(sub) = std::fs::read_dir(&p) {
                for s in sub.flatten() {
                    let sname = s.file_name().to_string_lossy().into_owned();
                    let sp = s.path();
                    let rel = if sp.is_dir() {
                        format!("{name}/{sname}/")
                    } else {
                        format!("{name}/{sname}")
                    };
                    entries.push(Entry {
                        path: rel,
                        loc: Loc::Disk(sp),
                    });
                }
            }
        } else {
            entries.push(Entry {
                path: name,
                loc: Loc::Disk(p),
            });
        }
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    select(entries, label, problems, |loc| match loc {
        Loc::Disk(p) => read_limited(std::fs::File::open(p)?),
        Loc::Zip(_) => Err(std::io::Error::other("not a zip entry")),
    })
}

fn read_zip<R: Read + std::io::Seek>(
    reader: R,
    label: &str,
    problems: &mut Problems,
) -> Option<PackageFiles> {
    let mut zip = match zip::ZipArchive::new(reader) {
        Ok(z) => z,
        Err(e) => {
            problems.error(
                label,
                None,
                None,
                "package",
                format!("not a readable zip file or folder: {e}"),
            );
            return None;
        }
    };
    let mut entries = Vec::new();
    for i in 0..zip.len() {
        if let Ok(f) = zip.by_index_raw(i) {
            if f.is_dir() {
                continue;
            }
            entries.push(Entry {
                path: f.name().replace('\\', "/"),
                loc: Loc::Zip(i),
            });
        }
    }
    select(entries, label, problems, |loc| match loc {
        Loc::Zip(i) => {
            let f = zip.by_index(*i).map_err(std::io::Error::other)?;
            read_limited(f)
        }
        Loc::Disk(_) => Err(std::io::Error::other("not a folder entry")),
    })
}

fn read_limited<R: Read>(r: R) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    r.take(MAX_FILE_BYTES + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > MAX_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_FILE_BYTES} bytes"
        )));
    }
    Ok(buf)
}

/// Finds the manifest (root, or exactly one sub-folder), reads the OneRoster files beside
/// it and lists the rest.
fn select(
    entries: Vec<Entry>,
    label: &str,
    problems: &mut Problems,
    mut load: impl FnMut(&Loc) -> std::io::Result<Vec<u8>>,
) -> Option<PackageFiles> {
    let split = |p: &str| -> (String, String) {
        match p.rsplit_once('/') {
            Some((dir, name)) => (format!("{dir}/"), name.to_owned()),
            None => (String::new(), p.to_owned()),
        }
    };
    let manifests: Vec<String> = entries
        .iter()
        .filter(|e| !e.path.ends_with('/'))
        .filter_map(|e| {
            let (dir, name) = split(&e.path);
            let depth = dir.matches('/').count();
            (name.eq_ignore_ascii_case("manifest.csv")
                && depth <= 1
                && !dir.starts_with("__MACOSX"))
            .then_some(dir)
        })
        .collect();
    let base = if manifests.iter().any(String::is_empty) {
        String::new()
    } else if manifests.len() == 1 {
        manifests[0].clone()
    } else if manifests.is_empty() {
        problems.error(
            label,
            None,
            None,
            "package",
            "no manifest.csv at the root of the package (nor in a single sub-folder)",
        );
        return None;
    } else {
        problems.error(
            label,
            None,
            None,
            "package",
            format!(
                "several sub-folders hold a manifest.csv ({}); put one package at the root",
                manifests.join(", ")
            ),
        );
        return None;
    };

    let mut out = PackageFiles::default();
    for e in &entries {
        let (dir, name) = split(&e.path);
        let kind = if dir == base {
            oneroster_name(&name)
        } else {
            None
        };
        let Some(kind) = kind else {
            out.ignored.push(e.path.clone());
            continue;
        };
        if kind == "userProfiles" {
            // May carry application passwords: never read.
            out.ignored.push(e.path.clone());
            continue;
        }
        if out.files.contains_key(kind) {
            problems.error(
                &name,
                None,
                None,
                "package",
                format!("two files named {kind}.csv (differing only in case)"),
            );
            continue;
        }
        match load(&e.loc) {
            Ok(bytes) => {
                out.files.insert(
                    kind,
                    PackageFile {
                        name,
                        path: e.path.clone(),
                        bytes,
                    },
                );
            }
            Err(err) => problems.error(&name, None, None, "package", format!("cannot read: {err}")),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_case_insensitively() {
        assert_eq!(oneroster_name("Users.CSV"), Some("users"));
        assert_eq!(
            oneroster_name("academicsessions.csv"),
            Some("academicSessions")
        );
        assert_eq!(oneroster_name("users.txt"), None);
        assert_eq!(oneroster_name("notes.csv"), None);
    }
}
