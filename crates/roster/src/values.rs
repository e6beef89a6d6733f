//! Value vocabularies and formats of OneRoster CSV: booleans, date-times, dates, grades,
//! statuses, org/class/role enumerations, and the OneRoster → Homeroom role mapping.
//! Enumerations are matched case-insensitively and returned in the spec's spelling.

use homeroom_core::Role;
use time::macros::format_description;
use time::{Date, OffsetDateTime, PrimitiveDateTime};

/// `true` / `false`, any case.
pub fn parse_bool(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("true") {
        Some(true)
    } else if s.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// How a date-time was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateTimeForm {
    /// RFC 3339 with a zone.
    Rfc3339,
    /// No zone (`2017-05-06T08:01:05` or `2017-05-06 08:01:05`): assumed UTC.
    NoZone,
    /// A bare date: midnight UTC.
    DateOnly,
}

/// A `dateLastModified` value as Unix seconds, with how it was written.
pub fn parse_datetime(s: &str) -> Option<(i64, DateTimeForm)> {
    if let Ok(t) = OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        return Some((t.unix_timestamp(), DateTimeForm::Rfc3339));
    }
    let no_zone = [
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]"),
        format_description!("[year]-[month]-[day] [hour]:[minute]:[second]"),
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond]"),
        format_description!("[year]-[month]-[day] [hour]:[minute]:[second].[subsecond]"),
        format_description!("[year]-[month]-[day]T[hour]:[minute]"),
        format_description!("[year]-[month]-[day] [hour]:[minute]"),
    ];
    for f in no_zone {
        if let Ok(t) = PrimitiveDateTime::parse(s, &f) {
            return Some((t.assume_utc().unix_timestamp(), DateTimeForm::NoZone));
        }
    }
    // A zone written `+0000` or ` UTC` and other oddities are not guessed.
    let d = parse_date(s)?;
    Some((
        d.midnight().assume_utc().unix_timestamp(),
        DateTimeForm::DateOnly,
    ))
}

/// A `YYYY-MM-DD` date.
pub fn parse_date(s: &str) -> Option<Date> {
    Date::parse(s, format_description!("[year]-[month]-[day]")).ok()
}

/// A CEDS grade as Homeroom stores it: numbers two-digit (`7` → `07`), two-letter codes
/// upper case (`kg` → `KG`), anything else as written.
pub fn normalise_grade(g: &str) -> String {
    let g = g.trim();
    if !g.is_empty()
        && g.bytes().all(|b| b.is_ascii_digit())
        && let Ok(n) = g.parse::<u32>()
    {
        return format!("{n:02}");
    }
    if g.len() == 2 && g.bytes().all(|b| b.is_ascii_alphabetic()) {
        return g.to_ascii_uppercase();
    }
    g.to_owned()
}

/// A row's `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowStatus {
    Active,
    ToBeDeleted,
    /// OneRoster 1.0's `inactive`: accepted as "disabled" with a warning.
    Inactive,
}

pub fn parse_status(s: &str) -> Option<RowStatus> {
    match s.to_ascii_lowercase().as_str() {
        "active" => Some(RowStatus::Active),
        "tobedeleted" => Some(RowStatus::ToBeDeleted),
        "inactive" => Some(RowStatus::Inactive),
        _ => None,
    }
}

/// Finds `s` in `allowed` ignoring case; returns the spec spelling.
pub fn spelled(s: &str, allowed: &[&'static str]) -> Option<&'static str> {
    allowed.iter().copied().find(|a| a.eq_ignore_ascii_case(s))
}

pub const ORG_TYPES: &[&str] = &[
    "department",
    "school",
    "district",
    "local",
    "state",
    "national",
];
pub const CLASS_TYPES: &[&str] = &["homeroom", "scheduled"];
pub const ROLE_TYPES: &[&str] = &["primary", "secondary"];
/// `users.csv` `role` in 1.1.
pub const USER_ROLES_1P1: &[&str] = &[
    "administrator",
    "aide",
    "guardian",
    "parent",
    "proctor",
    "relative",
    "student",
    "teacher",
];
/// `roles.csv` `role` in 1.2 (plus `ext:*`).
pub const USER_ROLES_1P2: &[&str] = &[
    "aide",
    "counselor",
    "districtAdministrator",
    "guardian",
    "parent",
    "principal",
    "proctor",
    "relative",
    "siteAdministrator",
    "student",
    "systemAdministrator",
    "teacher",
];
/// `enrollments.csv` `role` (`aide` tolerated as staff).
pub const ENROLLMENT_ROLES: &[&str] = &["administrator", "proctor", "student", "teacher", "aide"];

/// The Homeroom role of a OneRoster role name (1.1 or 1.2 spelling); `ext:*` names are
/// looked up in the tenant's mapping.
pub fn homeroom_role(
    oneroster: &str,
    ext: &std::collections::BTreeMap<String, Role>,
) -> Option<Role> {
    Some(match oneroster {
        "student" => Role::Student,
        "teacher" => Role::Teacher,
        "aide" | "proctor" | "counselor" => Role::Staff,
        "principal" | "siteAdministrator" => Role::SchoolAdmin,
        "administrator" | "districtAdministrator" | "systemAdministrator" => Role::DistrictAdmin,
        "parent" | "guardian" | "relative" => Role::Guardian,
        other => return ext.get(other).copied(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_in_the_wild() {
        assert_eq!(
            parse_datetime("2017-05-06T08:01:05Z"),
            Some((1_494_057_665, DateTimeForm::Rfc3339))
        );
        assert_eq!(
            parse_datetime("2017-05-06T10:01:05.250+02:00").map(|x| x.0),
            Some(1_494_057_665)
        );
        assert_eq!(
            parse_datetime("2017-05-06 08:01:05"),
            Some((1_494_057_665, DateTimeForm::NoZone))
        );
        assert_eq!(
            parse_datetime("2017-05-06"),
            Some((1_494_028_800, DateTimeForm::DateOnly))
        );
        assert_eq!(parse_datetime("06/05/2017"), None);
        assert_eq!(parse_datetime("2017-13-01"), None);
    }

    #[test]
    fn grades_and_booleans() {
        assert_eq!(normalise_grade("7"), "07");
        assert_eq!(normalise_grade("07"), "07");
        assert_eq!(normalise_grade("kg"), "KG");
        assert_eq!(normalise_grade("Other"), "Other");
        assert_eq!(parse_bool("TRUE"), Some(true));
        assert_eq!(parse_bool("False"), Some(false));
        assert_eq!(parse_bool("yes"), None);
    }

    #[test]
    fn role_mapping() {
        let mut ext = std::collections::BTreeMap::new();
        assert_eq!(
            homeroom_role("siteAdministrator", &ext),
            Some(Role::SchoolAdmin)
        );
        assert_eq!(
            homeroom_role("administrator", &ext),
            Some(Role::DistrictAdmin)
        );
        assert_eq!(homeroom_role("relative", &ext), Some(Role::Guardian));
        assert_eq!(homeroom_role("ext:coach", &ext), None);
        ext.insert("ext:coach".to_owned(), Role::Staff);
        assert_eq!(homeroom_role("ext:coach", &ext), Some(Role::Staff));
        assert_eq!(
            spelled("DISTRICTADMINISTRATOR", USER_ROLES_1P2),
            Some("districtAdministrator")
        );
    }
}
