//! The people of the emulated "Demo District": stable subjects, names and the claims each
//! flavour adds (`hd` for Google, `tid`/`oid`/`xms_edov` for Entra).

use serde::{Deserialize, Serialize};

/// The Demo District's email domain (and Google `hd`).
pub const DEMO_DOMAIN: &str = "demo.homeroom.test";
/// The Demo District's Entra tenant id.
pub const DEMO_TENANT_ID: &str = "7d3c1e52-4a8b-4f0e-9c6d-2b1a0e9f8d71";

/// One account at the emulated IdP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxUser {
    /// Stable subject (`sub`); also accepted as `login_hint`.
    pub sub: String,
    /// Display name.
    pub name: String,
    /// Given name.
    pub given_name: String,
    /// Family name.
    pub family_name: String,
    /// Email address (also accepted as `login_hint`).
    pub email: String,
    /// `email_verified` claim (generic and Google flavours; Entra never sends it).
    pub email_verified: bool,
    /// `student`, `teacher`, ... (sent as `role` by the generic flavour).
    pub role: String,
    /// Google flavour: the `hd` claim (absent for consumer accounts).
    #[serde(default)]
    pub hd: Option<String>,
    /// Entra flavour: the user's tenant (`tid`); defaults to the IdP's tenant.
    #[serde(default)]
    pub tid: Option<String>,
    /// Entra flavour: the user's object id (`oid`); absent means no `oid` claim.
    #[serde(default)]
    pub oid: Option<String>,
    /// Entra flavour: `xms_edov` exactly as sent (`true`, `"1"`, ...); absent when `None`.
    #[serde(default)]
    pub xms_edov: Option<serde_json::Value>,
}

impl SandboxUser {
    /// A user with the given subject, names and email; no flavour claims.
    pub fn new(sub: &str, given: &str, family: &str, email: &str, role: &str) -> Self {
        Self {
            sub: sub.to_owned(),
            name: format!("{given} {family}"),
            given_name: given.to_owned(),
            family_name: family.to_owned(),
            email: email.to_owned(),
            email_verified: true,
            role: role.to_owned(),
            hd: None,
            tid: None,
            oid: None,
            xms_edov: None,
        }
    }
}

/// Four students and two teachers of the Demo District, `@demo.homeroom.test`, with
/// stable subjects, `hd`, `tid`, `oid` and `xms_edov: true`.
pub fn demo_district_users() -> Vec<SandboxUser> {
    let people = [
        (
            "demo-student-1001",
            "Maya",
            "Chen",
            "maya.chen",
            "student",
            "0b6f2a4e-1c3d-4e5f-8a9b-000000001001",
        ),
        (
            "demo-student-1002",
            "Leo",
            "Okafor",
            "leo.okafor",
            "student",
            "0b6f2a4e-1c3d-4e5f-8a9b-000000001002",
        ),
        (
            "demo-student-1003",
            "Ana",
            "Ruiz",
            "ana.ruiz",
            "student",
            "0b6f2a4e-1c3d-4e5f-8a9b-000000001003",
        ),
        (
            "demo-student-1004",
            "Sam",
            "Patel",
            "sam.patel",
            "student",
            "0b6f2a4e-1c3d-4e5f-8a9b-000000001004",
        ),
        (
            "demo-teacher-2001",
            "Grace",
            "Hopper",
            "grace.hopper",
            "teacher",
            "0b6f2a4e-1c3d-4e5f-8a9b-000000002001",
        ),
        (
            "demo-teacher-2002",
            "Omar",
            "Haddad",
            "omar.haddad",
            "teacher",
            "0b6f2a4e-1c3d-4e5f-8a9b-000000002002",
        ),
    ];
    people
        .iter()
        .map(|(sub, given, family, local, role, oid)| {
            let mut u =
                SandboxUser::new(sub, given, family, &format!("{local}@{DEMO_DOMAIN}"), role);
            u.hd = Some(DEMO_DOMAIN.to_owned());
            u.tid = Some(DEMO_TENANT_ID.to_owned());
            u.oid = Some((*oid).to_owned());
            u.xms_edov = Some(serde_json::Value::Bool(true));
            u
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_district_has_students_and_teachers_with_unique_subjects() {
        let users = demo_district_users();
        assert_eq!(users.iter().filter(|u| u.role == "student").count(), 4);
        assert_eq!(users.iter().filter(|u| u.role == "teacher").count(), 2);
        let mut subs: Vec<_> = users.iter().map(|u| u.sub.clone()).collect();
        subs.dedup();
        assert_eq!(subs.len(), 6);
        assert!(
            users
                .iter()
                .all(|u| u.email.ends_with("@demo.homeroom.test"))
        );
    }
}
