//! From files to typed rows: one function per file kind (`orgs`, `users`, `roles`,
//! `classes`, `enrollments`), each checking its columns, required values, enumerations,
//! booleans, dates and duplicate sourcedIds, and recording every problem with its line
//! and column. References between files are checked later, by `plan`, against the state
//! the import would produce.

use crate::manifest::{FileMode, Manifest, Version};
use crate::problem::Problems;
use crate::source::{PackageFile, PackageFiles};
use crate::table::{self, Columns, Row};
use crate::values::{self, DateTimeForm, RowStatus};
use homeroom_directory::{RosterClass, RosterEnrollment, RosterOrg, RosterRole};
use std::collections::HashMap;

/// Longest sourcedId accepted (ids are otherwise opaque, case-sensitive strings).
pub const MAX_SOURCED_ID_LEN: usize = 1_024;

/// One row of a file, after the checks common to every file.
#[derive(Debug, Clone, PartialEq)]
pub struct Rec<T> {
    pub line: u64,
    pub sourced_id: String,
    /// `tobedeleted` in a delta file. (In a bulk file such rows are dropped.)
    pub deleted: bool,
    /// `dateLastModified` (delta files only; ignored in bulk files).
    pub date: Option<i64>,
    /// The row's data; `None` for deleted rows.
    pub data: Option<T>,
}

/// The rows of one file.
#[derive(Debug, Clone, PartialEq)]
pub struct FileRows<T> {
    /// The name as written in the package (`users.csv`).
    pub file: String,
    pub mode: FileMode,
    pub rows: Vec<Rec<T>>,
}

impl<T> FileRows<T> {
    fn absent(file: &str) -> Self {
        FileRows {
            file: file.to_owned(),
            mode: FileMode::Absent,
            rows: Vec::new(),
        }
    }
}

/// A `users.csv` row (1.1 or 1.2).
#[derive(Debug, Clone, PartialEq)]
pub struct UserRow {
    pub enabled: bool,
    pub username: String,
    /// Normalised; `None` when blank or not an address (a warning).
    pub email: Option<String>,
    pub given_name: String,
    pub family_name: String,
    pub middle_name: Option<String>,
    pub preferred_given_name: Option<String>,
    pub preferred_family_name: Option<String>,
    pub identifier: Option<String>,
    pub user_master_identifier: Option<String>,
    /// 1.1 only: `role` in spec spelling.
    pub role_1p1: Option<String>,
    /// 1.1 only: `orgSourcedIds`.
    pub org_sourced_ids: Vec<String>,
    /// 1.2 only.
    pub primary_org_sourced_id: Option<String>,
    pub grades: Vec<String>,
    pub user_ids: Vec<String>,
    pub agent_sourced_ids: Vec<String>,
    pub extra: serde_json::Value,
}

/// A package's rows, parsed and checked file by file.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub manifest: Manifest,
    pub orgs: FileRows<RosterOrg>,
    pub users: FileRows<UserRow>,
    pub roles: FileRows<RosterRole>,
    pub classes: FileRows<RosterClass>,
    pub enrollments: FileRows<RosterEnrollment>,
}

impl Parsed {
    pub fn version(&self) -> Version {
        self.manifest.version
    }
}

/// Called while reading: (file name, rows so far). Every [`PROGRESS_EVERY`] rows and at
/// the end of each file.
pub type RowProgress<'a> = dyn FnMut(&str, usize) + 'a;
pub const PROGRESS_EVERY: usize = 10_000;

const ORGS: Columns = Columns {
    known: &[
        "sourcedId",
        "status",
        "dateLastModified",
        "name",
        "type",
        "identifier",
        "parentSourcedId",
    ],
    required: &["sourcedId", "name", "type"],
    expected: &[],
};

const USERS_1P1: Columns = Columns {
    known: &[
        "sourcedId",
        "status",
        "dateLastModified",
        "enabledUser",
        "orgSourcedIds",
        "role",
        "username",
        "userIds",
        "givenName",
        "familyName",
        "middleName",
        "identifier",
        "email",
        "sms",
        "phone",
        "agentSourcedIds",
        "grades",
        "password",
    ],
    required: &[
        "sourcedId",
        "enabledUser",
        "orgSourcedIds",
        "role",
        "username",
        "givenName",
        "familyName",
    ],
    expected: &[],
};

const USERS_1P2: Columns = Columns {
    known: &[
        "sourcedId",
        "status",
        "dateLastModified",
        "enabledUser",
        "username",
        "userIds",
        "givenName",
        "familyName",
        "middleName",
        "identifier",
        "email",
        "sms",
        "phone",
        "agentSourcedIds",
        "grades",
        "password",
        "userMasterIdentifier",
        "resourceSourcedIds",
        "preferredGivenName",
        "preferredMiddleName",
        "preferredFamilyName",
        "primaryOrgSourcedId",
        "pronouns",
    ],
    required: &[
        "sourcedId",
        "enabledUser",
        "username",
        "givenName",
        "familyName",
    ],
    expected: &[],
};

const ROLES: Columns = Columns {
    known: &[
        "sourcedId",
        "status",
        "dateLastModified",
        "userSourcedId",
        "roleType",
        "role",
        "beginDate",
        "endDate",
        "orgSourcedId",
        "userProfileSourcedId",
    ],
    required: &[
        "sourcedId",
        "userSourcedId",
        "roleType",
        "role",
        "orgSourcedId",
    ],
    expected: &[],
};

const CLASSES: Columns = Columns {
    known: &[
        "sourcedId",
        "status",
        "dateLastModified",
        "title",
        "grades",
        "courseSourcedId",
        "classCode",
        "classType",
        "location",
        "schoolSourcedId",
        "termSourcedIds",
        "subjects",
        "subjectCodes",
        "periods",
    ],
    required: &["sourcedId", "title", "classType", "schoolSourcedId"],
    expected: &["courseSourcedId", "termSourcedIds"],
};

const ENROLLMENTS: Columns = Columns {
    known: &[
        "sourcedId",
        "status",
        "dateLastModified",
        "classSourcedId",
        "schoolSourcedId",
        "userSourcedId",
        "role",
        "primary",
        "beginDate",
        "endDate",
    ],
    required: &[
        "sourcedId",
        "classSourcedId",
        "schoolSourcedId",
        "userSourcedId",
        "role",
    ],
    expected: &[],
};

/// What every row has: sourcedId, status, dateLastModified.
struct Common {
    sourced_id: String,
    deleted: bool,
    inactive: bool,
    date: Option<i64>,
}

fn common(r: &mut Row<'_>, mode: FileMode) -> Option<Common> {
    let sid = r.req("sourcedId");
    if let Some(s) = &sid
        && s.len() > MAX_SOURCED_ID_LEN
    {
        r.error(
            Some("sourcedId"),
            "bad_value",
            format!(
                "sourcedId is {} characters long (at most {MAX_SOURCED_ID_LEN})",
                s.len()
            ),
        );
    }
    let status = match r.get("status") {
        None if mode == FileMode::Delta => {
            r.error(
                Some("status"),
                "missing_value",
                "status is required in a delta file",
            );
            None
        }
        None => Some(RowStatus::Active),
        Some(s) => match values::parse_status(s) {
            Some(st) => Some(st),
            None => {
                r.error(
                    Some("status"),
                    "bad_value",
                    format!("status {s:?} is not active or tobedeleted"),
                );
                None
            }
        },
    };
    if status == Some(RowStatus::Inactive) {
        r.warn(
            Some("status"),
            "status_inactive",
            "status \"inactive\" (OneRoster 1.0) read as active but disabled",
        );
    }
    let mut date = None;
    if mode == FileMode::Delta {
        match r.get("dateLastModified") {
            None => r.error(
                Some("dateLastModified"),
                "missing_value",
                "dateLastModified is required in a delta file",
            ),
            Some(s) => match values::parse_datetime(s) {
                None => r.error(
                    Some("dateLastModified"),
                    "bad_value",
                    format!("dateLastModified {s:?} is not an ISO 8601 date-time"),
                ),
                Some((t, form)) => {
                    if form != DateTimeForm::Rfc3339 {
                        r.warn(
                            Some("dateLastModified"),
                            "date_format",
                            format!("dateLastModified {s:?} has no time zone; read as UTC"),
                        );
                    }
                    date = Some(t);
                }
            },
        }
    }
    let status = status?;
    Some(Common {
        sourced_id: sid?,
        deleted: status == RowStatus::ToBeDeleted,
        inactive: status == RowStatus::Inactive,
        date,
    })
}

fn enum_req(r: &mut Row<'_>, col: &str, allowed: &[&'static str]) -> Option<&'static str> {
    let v = r.req(col)?;
    match values::spelled(&v, allowed) {
        Some(s) => Some(s),
        None => {
            r.error(
                Some(col),
                "bad_value",
                format!("{col} {v:?} is not one of {}", allowed.join(", ")),
            );
            None
        }
    }
}

/// A `role` value: the spec's vocabulary, or an `ext:` role the tenant maps.
fn role_value(
    r: &mut Row<'_>,
    allowed: &[&'static str],
    ext_roles: &std::collections::BTreeMap<String, homeroom_core::Role>,
    version: &str,
) -> Option<String> {
    let v = r.req("role")?;
    if let Some(s) = values::spelled(&v, allowed) {
        return Some(s.to_owned());
    }
    if ext_roles.contains_key(&v) {
        return Some(v);
    }
    if v.starts_with("ext:") {
        r.error(
            Some("role"),
            "unmapped_role",
            format!("extension role {v:?} has no Homeroom mapping for this tenant"),
        );
    } else {
        r.error(
            Some("role"),
            "bad_value",
            format!(
                "role {v:?} is not a OneRoster {version} role ({})",
                allowed.join(", ")
            ),
        );
    }
    None
}

fn date_opt(r: &mut Row<'_>, col: &str) -> Option<String> {
    let v = r.get(col)?;
    if values::parse_date(v).is_none() && values::parse_datetime(v).is_none() {
        r.error(
            Some(col),
            "bad_value",
            format!("{col} {v:?} is not a date (YYYY-MM-DD)"),
        );
        return None;
    }
    Some(v.to_owned())
}

fn grades(r: &Row<'_>) -> Vec<String> {
    r.list("grades")
        .iter()
        .map(|g| values::normalise_grade(g))
        .collect()
}

/// Reads one file with `cols`, turning rows into records with `build` (called only for
/// rows that are not deleted); drops bulk `tobedeleted` rows; reports duplicate ids.
fn read_file<T>(
    kind: &str,
    files: &PackageFiles,
    manifest: &Manifest,
    cols: &Columns,
    problems: &mut Problems,
    progress: &mut RowProgress<'_>,
    mut build: impl FnMut(&mut Row<'_>, &Common) -> Option<T>,
) -> FileRows<T> {
    let default_name = format!("{kind}.csv");
    let mode = manifest.mode(kind);
    let Some(PackageFile { name, bytes, .. }) = files.files.get(kind) else {
        return FileRows::absent(&default_name);
    };
    if mode == FileMode::Absent {
        return FileRows::absent(name);
    }
    let mut rows = Vec::new();
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut count = 0usize;
    table::read(name, bytes, cols, problems, |r| {
        count += 1;
        if count.is_multiple_of(PROGRESS_EVERY) {
            progress(name, count);
        }
        let Some(c) = common(r, mode) else {
            // Still build, to report the row's other problems too.
            let dummy = Common {
                sourced_id: String::new(),
                deleted: false,
                inactive: false,
                date: None,
            };
            let _ = build(r, &dummy);
            return;
        };
        if let Some(first) = seen.get(&c.sourced_id) {
            r.error(
                Some("sourcedId"),
                "duplicate_id",
                format!("sourcedId {:?} is already on line {first}", c.sourced_id),
            );
        } else {
            seen.insert(c.sourced_id.clone(), r.line);
        }
        let data = if c.deleted { None } else { build(r, &c) };
        if r.failed {
            return;
        }
        if c.deleted && mode == FileMode::Bulk {
            return; // "tobedeleted" in a bulk file: the row is simply not in the set
        }
        if !c.deleted && data.is_none() {
            return;
        }
        rows.push(Rec {
            line: r.line,
            sourced_id: c.sourced_id,
            deleted: c.deleted,
            date: c.date,
            data,
        });
    });
    progress(name, count);
    FileRows {
        file: name.clone(),
        mode,
        rows,
    }
}

/// Parses the five files Homeroom reads. Problems are recorded; rows with errors are
/// dropped (the import fails anyway when there is any error).
pub fn parse(
    files: &PackageFiles,
    manifest: Manifest,
    ext_roles: &std::collections::BTreeMap<String, homeroom_core::Role>,
    problems: &mut Problems,
    progress: &mut RowProgress<'_>,
) -> Parsed {
    let version = manifest.version;
    let orgs = read_file(
        "orgs",
        files,
        &manifest,
        &ORGS,
        problems,
        progress,
        |r, c| {
            let name = r.req("name");
            let org_type = enum_req(r, "type", values::ORG_TYPES);
            Some(RosterOrg {
                sourced_id: c.sourced_id.clone(),
                name: name?,
                org_type: org_type?.to_owned(),
                identifier: r.opt("identifier"),
                parent_sourced_id: r.opt("parentSourcedId"),
                date_last_modified: c.date,
                extra: r.extra(),
            })
        },
    );

    let user_cols = match version {
        Version::V1p1 => &USERS_1P1,
        Version::V1p2 => &USERS_1P2,
    };
    let users = read_file(
        "users",
        files,
        &manifest,
        user_cols,
        problems,
        progress,
        |r, c| {
            let enabled = match r.req("enabledUser") {
                None => None,
                Some(v) => match values::parse_bool(&v) {
                    Some(b) => Some(b),
                    None => {
                        r.error(
                            Some("enabledUser"),
                            "bad_value",
                            format!("enabledUser {v:?} is not true or false"),
                        );
                        None
                    }
                },
            };
            let username = r.req("username");
            let given = r.req("givenName");
            let family = r.req("familyName");
            let (role_1p1, org_ids) = if version == Version::V1p1 {
                let role = role_value(r, values::USER_ROLES_1P1, ext_roles, "1.1");
                let orgs = r.list("orgSourcedIds");
                if orgs.is_empty() && r.get("orgSourcedIds").is_some() {
                    r.error(
                        Some("orgSourcedIds"),
                        "missing_value",
                        "orgSourcedIds lists no org",
                    );
                } else if orgs.is_empty() {
                    r.error(
                        Some("orgSourcedIds"),
                        "missing_value",
                        "orgSourcedIds is required",
                    );
                }
                (role, orgs)
            } else {
                (None, Vec::new())
            };
            let email = match r.get("email") {
                None => None,
                Some(e) if looks_like_email(e) => Some(homeroom_directory::normalise_email(e)),
                Some(e) => {
                    r.warn(
                        Some("email"),
                        "bad_email",
                        format!("email {e:?} is not an address; the user is imported without one"),
                    );
                    None
                }
            };
            Some(UserRow {
                enabled: enabled? && !c.inactive,
                username: username?,
                email,
                given_name: given?,
                family_name: family?,
                middle_name: r.opt("middleName"),
                preferred_given_name: r.opt("preferredGivenName"),
                preferred_family_name: r.opt("preferredFamilyName"),
                identifier: r.opt("identifier"),
                user_master_identifier: r.opt("userMasterIdentifier"),
                role_1p1: if version == Version::V1p1 {
                    Some(role_1p1?)
                } else {
                    None
                },
                org_sourced_ids: org_ids,
                primary_org_sourced_id: r.opt("primaryOrgSourcedId"),
                grades: grades(r),
                user_ids: r.list("userIds"),
                agent_sourced_ids: r.list("agentSourcedIds"),
                extra: r.extra(),
            })
        },
    );

    let roles = if version == Version::V1p2 {
        read_file(
            "roles",
            files,
            &manifest,
            &ROLES,
            problems,
            progress,
            |r, c| {
                let user = r.req("userSourcedId");
                let role_type = enum_req(r, "roleType", values::ROLE_TYPES);
                let org = r.req("orgSourcedId");
                let role = role_value(r, values::USER_ROLES_1P2, ext_roles, "1.2");
                let begin = date_opt(r, "beginDate");
                let end = date_opt(r, "endDate");
                Some(RosterRole {
                    sourced_id: c.sourced_id.clone(),
                    user_sourced_id: user?,
                    role_type: role_type?.to_owned(),
                    role: role?,
                    org_sourced_id: org?,
                    begin_date: begin,
                    end_date: end,
                    user_profile: r.opt("userProfileSourcedId"),
                    date_last_modified: c.date,
                    extra: r.extra(),
                })
            },
        )
    } else {
        FileRows::absent("roles.csv")
    };

    let classes = read_file(
        "classes",
        files,
        &manifest,
        &CLASSES,
        problems,
        progress,
        |r, c| {
            let title = r.req("title");
            let class_type = enum_req(r, "classType", values::CLASS_TYPES);
            let school = r.req("schoolSourcedId");
            let subjects = r.list("subjects");
            let subject_codes = r.list("subjectCodes");
            if !subject_codes.is_empty() && subject_codes.len() != subjects.len() {
                r.warn(
                    Some("subjectCodes"),
                    "list_length",
                    "subjectCodes and subjects have different lengths",
                );
            }
            Some(RosterClass {
                sourced_id: c.sourced_id.clone(),
                title: title?,
                class_code: r.opt("classCode"),
                class_type: class_type?.to_owned(),
                location: r.opt("location"),
                school_sourced_id: school?,
                course_sourced_id: r.opt("courseSourcedId"),
                term_sourced_ids: r.list("termSourcedIds"),
                grades: grades(r),
                subjects,
                subject_codes,
                periods: r.list("periods"),
                date_last_modified: c.date,
                extra: r.extra(),
            })
        },
    );

    let enrollments = read_file(
        "enrollments",
        files,
        &manifest,
        &ENROLLMENTS,
        problems,
        progress,
        |r, c| {
            let class = r.req("classSourcedId");
            let school = r.req("schoolSourcedId");
            let user = r.req("userSourcedId");
            let role = enum_req(r, "role", values::ENROLLMENT_ROLES);
            let primary = match r.get("primary") {
                None => None,
                Some(v) => match values::parse_bool(v) {
                    Some(b) => Some(b),
                    None => {
                        r.error(
                            Some("primary"),
                            "bad_value",
                            format!("primary {v:?} is not true or false"),
                        );
                        None
                    }
                },
            };
            let begin = date_opt(r, "beginDate");
            let end = date_opt(r, "endDate");
            Some(RosterEnrollment {
                sourced_id: c.sourced_id.clone(),
                class_sourced_id: class?,
                school_sourced_id: school?,
                user_sourced_id: user?,
                role: role?.to_owned(),
                primary,
                begin_date: begin,
                end_date: end,
                date_last_modified: c.date,
                extra: r.extra(),
            })
        },
    );

    Parsed {
        manifest,
        orgs,
        users,
        roles,
        classes,
        enrollments,
    }
}

/// `local@domain` with no spaces: enough to tell an address from "none" or a name.
fn looks_like_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !s.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_shapes() {
        assert!(looks_like_email("a.b@example.org"));
        assert!(!looks_like_email("none"));
        assert!(!looks_like_email("a b@example.org"));
        assert!(!looks_like_email("@example.org"));
        assert!(!looks_like_email("a@b@c"));
    }
}
