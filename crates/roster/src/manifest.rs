//! `manifest.csv`: the OneRoster version (1.1 or 1.2) and, per file, `bulk`, `delta` or
//! `absent`. Homeroom's rules: a missing manifest is an error (see `source`), a file in the
//! package that the manifest calls absent (or does not mention) is an error, and a file
//! the manifest calls bulk or delta that is missing is an error.

use crate::problem::Problems;
use crate::source::{ONEROSTER_FILES, PackageFiles};
use crate::table::{self, Columns};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The OneRoster version of a package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Version {
    #[serde(rename = "1.1")]
    V1p1,
    #[serde(rename = "1.2")]
    V1p2,
}

impl Version {
    pub fn as_str(&self) -> &'static str {
        match self {
            Version::V1p1 => "1.1",
            Version::V1p2 => "1.2",
        }
    }
}

/// What the manifest says about one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileMode {
    /// The complete set: anything not in it no longer exists.
    Bulk,
    /// Changes only, each row `active` or `tobedeleted`.
    Delta,
    /// Not in the package: nothing changes.
    Absent,
}

impl FileMode {
    pub fn as_str(&self) -> &'static str {
        match self {
            FileMode::Bulk => "bulk",
            FileMode::Delta => "delta",
            FileMode::Absent => "absent",
        }
    }
}

/// A parsed manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub version: Version,
    /// `file.<name>` values by OneRoster file name, with the manifest line.
    pub files: BTreeMap<&'static str, (FileMode, u64)>,
    pub source_system_name: Option<String>,
    pub source_system_code: Option<String>,
}

impl Manifest {
    /// The mode of a file (`Absent` when the manifest does not mention it).
    pub fn mode(&self, file: &str) -> FileMode {
        self.files.get(file).map_or(FileMode::Absent, |(m, _)| *m)
    }
}

/// The files of 1.1 (1.2 adds the rest of [`ONEROSTER_FILES`]).
const FILES_1P1: &[&str] = &[
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
];

const MANIFEST_COLUMNS: Columns = Columns {
    known: &["propertyName", "value"],
    required: &["propertyName", "value"],
    expected: &[],
};

/// Parses `manifest.csv` and checks it against the files of the package.
pub fn parse(files: &PackageFiles, problems: &mut Problems) -> Option<Manifest> {
    let Some(mf) = files.files.get("manifest") else {
        problems.error(
            "manifest.csv",
            None,
            None,
            "manifest",
            "manifest.csv is missing",
        );
        return None;
    };
    let fname = mf.name.as_str();
    let mut props: BTreeMap<String, (String, u64)> = BTreeMap::new();
    let mut rows: Vec<(String, String, u64)> = Vec::new();
    table::read(fname, &mf.bytes, &MANIFEST_COLUMNS, problems, |r| {
        let Some(name) = r.req("propertyName") else {
            return;
        };
        let value = r.opt("value").unwrap_or_default();
        rows.push((name, value, r.line));
    })?;
    for (name, value, line) in rows {
        let key = name.to_ascii_lowercase();
        if let Some((_, first)) = props.get(&key) {
            problems.error(
                fname,
                Some(line),
                Some("propertyName"),
                "manifest",
                format!("{name} is set twice (first on line {first})"),
            );
            continue;
        }
        props.insert(key, (value, line));
    }

    let version = match props.get("oneroster.version") {
        None => {
            problems.error(
                fname,
                None,
                Some("propertyName"),
                "manifest",
                "oneroster.version is missing",
            );
            None
        }
        Some((v, line)) => match v.as_str() {
            "1.1" | "1.1.0" | "1.1.1" => Some(Version::V1p1),
            "1.2" | "1.2.0" | "1.2.1" => Some(Version::V1p2),
            other => {
                problems.error(
                    fname,
                    Some(*line),
                    Some("value"),
                    "manifest",
                    format!("oneroster.version {other:?} is not supported (1.1 or 1.2)"),
                );
                None
            }
        },
    };
    match props.get("manifest.version") {
        Some((v, _)) if v == "1.0" => {}
        Some((v, line)) => problems.warn(
            fname,
            Some(*line),
            Some("value"),
            "manifest",
            format!("manifest.version {v:?} (expected 1.0)"),
        ),
        None => problems.warn(fname, None, None, "manifest", "manifest.version is missing"),
    }
    let version = version?;

    let mut modes: BTreeMap<&'static str, (FileMode, u64)> = BTreeMap::new();
    let mut ok = true;
    for (key, (value, line)) in &props {
        let Some(rest) = key.strip_prefix("file.") else {
            continue;
        };
        let Some(name) = ONEROSTER_FILES
            .iter()
            .copied()
            .find(|n| *n != "manifest" && n.to_ascii_lowercase() == *rest)
        else {
            problems.warn(
                fname,
                Some(*line),
                Some("propertyName"),
                "manifest",
                format!("file.{rest} is not a OneRoster file; ignored"),
            );
            continue;
        };
        let mode = match value.to_ascii_lowercase().as_str() {
            "bulk" => FileMode::Bulk,
            "delta" => FileMode::Delta,
            "absent" | "" => FileMode::Absent,
            other => {
                problems.error(
                    fname,
                    Some(*line),
                    Some("value"),
                    "bad_value",
                    format!("file.{name} is {other:?} (bulk, delta or absent)"),
                );
                ok = false;
                continue;
            }
        };
        if version == Version::V1p1 && !FILES_1P1.contains(&name) && mode != FileMode::Absent {
            problems.warn(
                fname,
                Some(*line),
                Some("propertyName"),
                "manifest",
                format!("file.{name} is not a OneRoster 1.1 file; ignored"),
            );
            continue;
        }
        modes.insert(name, (mode, *line));
    }

    for (name, file) in &files.files {
        if *name == "manifest" {
            continue;
        }
        match modes.get(name) {
            Some((FileMode::Bulk | FileMode::Delta, _)) => {}
            Some((FileMode::Absent, line)) => {
                problems.error(
                    fname,
                    Some(*line),
                    Some("value"),
                    "manifest",
                    format!(
                        "{} is in the package but the manifest says file.{name} is absent",
                        file.name
                    ),
                );
                ok = false;
            }
            None => {
                if version == Version::V1p1 && !FILES_1P1.contains(name) {
                    continue; // a 1.2 file in a 1.1 package: ignored
                }
                problems.error(
                    fname,
                    None,
                    Some("propertyName"),
                    "manifest",
                    format!(
                        "{} is in the package but the manifest has no file.{name} row",
                        file.name
                    ),
                );
                ok = false;
            }
        }
    }
    for (name, (mode, line)) in &modes {
        if *mode != FileMode::Absent && !files.files.contains_key(name) {
            problems.error(
                fname,
                Some(*line),
                Some("value"),
                "manifest",
                format!(
                    "the manifest says file.{name} is {} but {name}.csv is not in the package",
                    mode.as_str()
                ),
            );
            ok = false;
        }
    }

    ok.then(|| Manifest {
        version,
        files: modes,
        source_system_name: props.get("source.systemname").map(|(v, _)| v.clone()),
        source_system_code: props.get("source.systemcode").map(|(v, _)| v.clone()),
    })
}
