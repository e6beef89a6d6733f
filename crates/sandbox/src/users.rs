//! The people of the emulated "Demo District": stable subjects, names and the claims each
//! flavour adds (`hd` for Google, `tid`/`oid`/`xms_edov` for Entra), and the same people as
//! the school portals know them ([`PortalUser`]: Clever, ClassLink, GG4L), with the
//! district / tenant ids the portal emulators and the demo configure.

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

/// The Demo District's Clever district id.
pub const DEMO_CLEVER_DISTRICT_ID: &str = "5e8f1c2a9b3d4e0012a7c0de";
/// The Demo District's ClassLink `TenantId` (a number on the wire).
pub const DEMO_CLASSLINK_TENANT_ID: &str = "2291";
/// The Demo District's GG4L district GUID.
pub const DEMO_GG4L_DISTRICT_ID: &str = "0d4e7c1a-2b3f-4a5e-8c9d-6f7a8b9c0d1e";
/// The Demo District's GG4L `org_id`.
pub const DEMO_GG4L_ORG_ID: u64 = 512044;
/// The Demo District's one school (Clever / GG4L school id).
pub const DEMO_SCHOOL_ID: &str = "5e8f1c2a9b3d4e0012a7d001";

/// One person as a school portal knows them. Each portal emulator renders it in its own
/// wire format (Clever `/v3.0/users/{id}`, ClassLink `/v2/my/info`, GG4L `auth_token`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortalUser {
    /// The portal's user id: Clever v3 `id`, ClassLink `UserId` (digits), GG4L `guid`.
    pub id: String,
    /// The user's district: Clever district id, ClassLink `TenantId`, GG4L district GUID.
    pub org: String,
    /// GG4L `org_id` (a number); ignored by the other portals.
    #[serde(default)]
    pub org_number: Option<u64>,
    /// Given name.
    pub given_name: String,
    /// Family name.
    pub family_name: String,
    /// Email, if the portal has one (many Clever students have none).
    #[serde(default)]
    pub email: Option<String>,
    /// Roles / user types as the portal spells them (`student`, `Teacher`, ...); Clever
    /// multi-role users have several.
    pub roles: Vec<String>,
    /// School id.
    #[serde(default)]
    pub school: Option<String>,
    /// Grade (Clever student `grade`).
    #[serde(default)]
    pub grade: Option<String>,
    /// SIS id / OneRoster `sourcedId` (Clever `sis_id`, ClassLink `SourcedId`).
    #[serde(default)]
    pub sourced_id: Option<String>,
    /// District username (Clever `district_username`, ClassLink `LoginId`, GG4L `username`).
    #[serde(default)]
    pub username: Option<String>,
}

impl PortalUser {
    /// A user with the given id, district, names, email and one role.
    pub fn new(
        id: &str,
        org: &str,
        given: &str,
        family: &str,
        email: Option<&str>,
        role: &str,
    ) -> Self {
        Self {
            id: id.to_owned(),
            org: org.to_owned(),
            org_number: None,
            given_name: given.to_owned(),
            family_name: family.to_owned(),
            email: email.map(str::to_owned),
            roles: vec![role.to_owned()],
            school: None,
            grade: None,
            sourced_id: None,
            username: None,
        }
    }

    /// "Given Family".
    pub fn display_name(&self) -> String {
        format!("{} {}", self.given_name, self.family_name)
    }
}

/// (sourcedId, given, family, email local part, role, grade) of the Demo District people.
const PEOPLE: [(&str, &str, &str, &str, &str, &str); 6] = [
    (
        "demo-student-1001",
        "Maya",
        "Chen",
        "maya.chen",
        "student",
        "7",
    ),
    (
        "demo-student-1002",
        "Leo",
        "Okafor",
        "leo.okafor",
        "student",
        "7",
    ),
    (
        "demo-student-1003",
        "Ana",
        "Ruiz",
        "ana.ruiz",
        "student",
        "8",
    ),
    (
        "demo-student-1004",
        "Sam",
        "Patel",
        "sam.patel",
        "student",
        "8",
    ),
    (
        "demo-teacher-2001",
        "Grace",
        "Hopper",
        "grace.hopper",
        "teacher",
        "",
    ),
    (
        "demo-teacher-2002",
        "Omar",
        "Haddad",
        "omar.haddad",
        "teacher",
        "",
    ),
];

fn demo_portal_people(
    id: impl Fn(usize) -> String,
    org: &str,
    role: impl Fn(&str) -> String,
) -> Vec<PortalUser> {
    PEOPLE
        .iter()
        .enumerate()
        .map(|(i, (sourced, given, family, local, r, grade))| {
            let mut u = PortalUser::new(
                &id(i),
                org,
                given,
                family,
                Some(&format!("{local}@{DEMO_DOMAIN}")),
                &role(r),
            );
            u.school = Some(DEMO_SCHOOL_ID.to_owned());
            u.grade = (!grade.is_empty()).then(|| (*grade).to_owned());
            u.sourced_id = Some((*sourced).to_owned());
            u.username = Some(local.replace('.', ""));
            u
        })
        .collect()
}

/// The Demo District at Clever (district [`DEMO_CLEVER_DISTRICT_ID`]): the six demo
/// people with 24-hex Clever ids; Sam Patel has no email (common for young students),
/// Omar Haddad is a multi-role teacher + staff user, plus a district admin.
pub fn demo_clever_district() -> Vec<PortalUser> {
    let mut users = demo_portal_people(
        |i| format!("6502e8a1c3b7a90012f4{:04x}", 0xd000 + i),
        DEMO_CLEVER_DISTRICT_ID,
        str::to_owned,
    );
    for u in &mut users {
        if u.given_name == "Sam" {
            u.email = None;
        }
        if u.given_name == "Omar" {
            u.roles.push("staff".into());
        }
    }
    let mut admin = PortalUser::new(
        "6502e8a1c3b7a90012f4e001",
        DEMO_CLEVER_DISTRICT_ID,
        "Dana",
        "Whitfield",
        Some(&format!("dana.whitfield@{DEMO_DOMAIN}")),
        "district_admin",
    );
    admin.sourced_id = Some("demo-admin-3001".into());
    users.push(admin);
    users
}

/// The Demo District at ClassLink (tenant [`DEMO_CLASSLINK_TENANT_ID`]): numeric
/// `UserId`s, roles `Student` / `Teacher`, students with synthetic emails
/// (`{sourcedId}@students.demo.local`, as ClassLink's own sample), plus a
/// `Tenant Administrator`.
pub fn demo_classlink_tenant() -> Vec<PortalUser> {
    let mut users = demo_portal_people(
        |i| format!("{}", 40718233 + i),
        DEMO_CLASSLINK_TENANT_ID,
        |r| match r {
            "student" => "Student".into(),
            _ => "Teacher".into(),
        },
    );
    for u in &mut users {
        if u.roles[0] == "Student"
            && let Some(s) = &u.sourced_id
        {
            u.email = Some(format!("{s}@students.demo.local"));
        }
        u.grade = None;
        u.school = Some("7".into());
    }
    let mut admin = PortalUser::new(
        "40718300",
        DEMO_CLASSLINK_TENANT_ID,
        "Dana",
        "Whitfield",
        Some(&format!("dana.whitfield@{DEMO_DOMAIN}")),
        "Tenant Administrator",
    );
    admin.username = Some("dwhitfield".into());
    users.push(admin);
    users
}

/// The Demo District at GG4L (district [`DEMO_GG4L_DISTRICT_ID`], `org_id`
/// [`DEMO_GG4L_ORG_ID`]): UUID `guid`s, `type` `student` / `teacher`, plus a school admin.
pub fn demo_gg4l_district() -> Vec<PortalUser> {
    let mut users = demo_portal_people(
        |i| format!("7b2e9d40-1c5a-4f83-b6e2-9a0c4d7f{:04x}", 0x1000 + i),
        DEMO_GG4L_DISTRICT_ID,
        str::to_owned,
    );
    let mut admin = PortalUser::new(
        "7b2e9d40-1c5a-4f83-b6e2-9a0c4d7f3001",
        DEMO_GG4L_DISTRICT_ID,
        "Dana",
        "Whitfield",
        Some(&format!("dana.whitfield@{DEMO_DOMAIN}")),
        "school_admin",
    );
    admin.username = Some("dwhitfield".into());
    users.push(admin);
    for u in &mut users {
        u.org_number = Some(DEMO_GG4L_ORG_ID);
        u.school = Some("5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d".into());
    }
    users
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

    #[test]
    fn portal_districts_have_unique_ids_and_one_district_each() {
        for (users, org) in [
            (demo_clever_district(), DEMO_CLEVER_DISTRICT_ID),
            (demo_classlink_tenant(), DEMO_CLASSLINK_TENANT_ID),
            (demo_gg4l_district(), DEMO_GG4L_DISTRICT_ID),
        ] {
            let mut ids: Vec<_> = users.iter().map(|u| u.id.clone()).collect();
            ids.sort();
            ids.dedup();
            assert_eq!(ids.len(), users.len());
            assert!(users.iter().all(|u| u.org == org));
        }
        assert!(demo_clever_district().iter().any(|u| u.email.is_none()));
        assert!(
            demo_classlink_tenant()
                .iter()
                .all(|u| u.id.bytes().all(|b| b.is_ascii_digit()))
        );
    }
}
