//! Import planning: what the package means for the tenant's stored roster. Merges each
//! file with what is stored (bulk: replace the set; delta: apply changes, skipping rows
//! older than the stored ones; absent: keep), checks every reference against the state
//! the import would produce, finds email conflicts, and turns the difference into a
//! [`RosterChanges`] set: only rows that actually change are written, so re-importing
//! the same package writes nothing but its log row.
//!
//! Conflicts are reported, never guessed: a roster person caught in one is neither
//! created nor updated, and a person whose removal is part of one is not deactivated.

use crate::manifest::{FileMode, Version};
use crate::parse::{FileRows, Parsed, UserRow};
use crate::problem::Problems;
use crate::values::homeroom_role;
use homeroom_core::{AccountId, Role, TenantId};
use homeroom_directory::{
    Account, AccountStatus, AccountUpdate, RosterChanges, RosterClass, RosterEnrollment,
    RosterImport, RosterOrg, RosterRole, RosterSnapshot, RosterUser, RosterUserStatus,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};

/// What the planner needs besides the package and the stored state.
#[derive(Debug, Clone)]
pub struct PlanContext {
    pub tenant: TenantId,
    /// Unix seconds: `created_at` of new accounts, `removed_at` of removed people.
    pub now: i64,
    pub import_id: String,
    /// Tenant mapping of `ext:*` roles.
    pub ext_roles: BTreeMap<String, Role>,
    /// Link a new roster person to the one existing, not yet rostered account of the
    /// tenant with the same email instead of reporting a conflict.
    pub adopt_existing: bool,
}

/// Where a roster person comes from, for reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRef {
    pub sourced_id: String,
    /// `users.csv` line when the row is in this package; `None` for a stored person.
    pub line: Option<u64>,
}

/// A conflict: reported, not resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Conflict {
    /// Several roster people would have the same email.
    DuplicateEmail { email: String, users: Vec<UserRef> },
    /// The email belongs to an account of the tenant that no roster person drives.
    EmailInUse {
        email: String,
        user: UserRef,
        account: String,
    },
    /// A person with a new sourcedId has the email of a person the roster knew under
    /// another sourcedId (now absent or deleted): the same person re-keyed, or a recycled
    /// address. Neither is created, updated nor deactivated.
    SourcedIdChanged {
        email: String,
        old_sourced_id: String,
        user: UserRef,
        account: String,
    },
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = |u: &UserRef| match u.line {
            Some(l) => format!("{} (users.csv:{l})", u.sourced_id),
            None => format!("{} (stored)", u.sourced_id),
        };
        match self {
            Conflict::DuplicateEmail { email, users } => write!(
                f,
                "email {email} is shared by roster users {}",
                users.iter().map(at).collect::<Vec<_>>().join(", ")
            ),
            Conflict::EmailInUse {
                email,
                user,
                account,
            } => write!(
                f,
                "email {email} of roster user {} is already used by account {account}, which the roster does not manage",
                at(user)
            ),
            Conflict::SourcedIdChanged {
                email,
                old_sourced_id,
                user,
                account,
            } => write!(
                f,
                "email {email} belonged to roster user {old_sourced_id} (account {account}) and now comes with sourcedId {}: changed sourcedId?",
                at(user)
            ),
        }
    }
}

/// Changes to one kind of record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindCounts {
    pub added: usize,
    pub updated: usize,
    pub removed: usize,
    pub unchanged: usize,
    /// Delta rows older than the stored row: skipped.
    pub stale: usize,
}

/// Changes to roster people and their accounts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserCounts {
    /// New roster people (with a new or adopted account).
    pub added: usize,
    /// Roster people whose data or account changed (includes `reactivated`).
    pub updated: usize,
    /// Roster people removed (tobedeleted, or absent from a bulk file); account archived.
    pub deactivated: usize,
    /// Removed people who are back.
    pub reactivated: usize,
    /// New people linked to an existing account (`adopt_existing`).
    pub adopted: usize,
    pub unchanged: usize,
    pub stale: usize,
    /// People not written because of a conflict.
    pub in_conflict: usize,
}

/// Counts of a plan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub users: UserCounts,
    pub orgs: KindCounts,
    pub roles: KindCounts,
    pub classes: KindCounts,
    pub enrollments: KindCounts,
}

/// The outcome of planning (when the package has no errors).
#[derive(Debug, Clone)]
pub struct Plan {
    pub changes: RosterChanges,
    pub conflicts: Vec<Conflict>,
    pub counts: Counts,
}

trait Keyed {
    fn sid(&self) -> &str;
    fn date(&self) -> Option<i64>;
}

macro_rules! keyed {
    ($($t:ty),*) => {$(
        impl Keyed for $t {
            fn sid(&self) -> &str { &self.sourced_id }
            fn date(&self) -> Option<i64> { self.date_last_modified }
        }
    )*};
}
keyed!(RosterOrg, RosterRole, RosterClass, RosterEnrollment);

/// One kind merged: the final set (with the package line of rows from the package).
struct Merged<'a, T> {
    fin: HashMap<&'a str, (&'a T, Option<u64>)>,
    upsert: Vec<T>,
    delete: Vec<String>,
    counts: KindCounts,
}

fn merge<'a, T: Keyed + Clone + PartialEq>(
    rows: &'a FileRows<T>,
    stored: &'a [T],
    problems: &mut Problems,
) -> Merged<'a, T> {
    let ex: HashMap<&str, &T> = stored.iter().map(|t| (t.sid(), t)).collect();
    let mut m = Merged {
        fin: HashMap::new(),
        upsert: Vec::new(),
        delete: Vec::new(),
        counts: KindCounts::default(),
    };
    if rows.mode != FileMode::Bulk {
        m.fin = stored.iter().map(|t| (t.sid(), (t, None))).collect();
    }
    match rows.mode {
        FileMode::Absent => {}
        FileMode::Bulk => {
            for rec in &rows.rows {
                let Some(data) = &rec.data else { continue };
                m.fin.insert(data.sid(), (data, Some(rec.line)));
                match ex.get(data.sid()) {
                    Some(old) if *old == data => m.counts.unchanged += 1,
                    Some(_) => {
                        m.counts.updated += 1;
                        m.upsert.push(data.clone());
                    }
                    None => {
                        m.counts.added += 1;
                        m.upsert.push(data.clone());
                    }
                }
            }
            for t in stored {
                if !m.fin.contains_key(t.sid()) {
                    m.delete.push(t.sid().to_owned());
                    m.counts.removed += 1;
                }
            }
        }
        FileMode::Delta => {
            for rec in &rows.rows {
                let old = ex.get(rec.sourced_id.as_str());
                if let (Some(old_date), Some(new_date)) = (old.and_then(|o| o.date()), rec.date)
                    && new_date < old_date
                {
                    m.counts.stale += 1;
                    problems.warn(
                        &rows.file,
                        Some(rec.line),
                        Some("dateLastModified"),
                        "stale_row",
                        format!("{} is older than the stored row; skipped", rec.sourced_id),
                    );
                    continue;
                }
                match &rec.data {
                    None => {
                        if old.is_some() && m.fin.remove(rec.sourced_id.as_str()).is_some() {
                            m.delete.push(rec.sourced_id.clone());
                            m.counts.removed += 1;
                        }
                    }
                    Some(data) => {
                        m.fin.insert(data.sid(), (data, Some(rec.line)));
                        match old {
                            Some(o) if *o == data => m.counts.unchanged += 1,
                            Some(_) => {
                                m.counts.updated += 1;
                                m.upsert.push(data.clone());
                            }
                            None => {
                                m.counts.added += 1;
                                m.upsert.push(data.clone());
                            }
                        }
                    }
                }
            }
        }
    }
    m
}

/// Drops a stored row (cascade) from a merged set.
fn cascade<T: Keyed>(m: &mut Merged<'_, T>, sid: &str) {
    if m.fin.remove(sid).is_some() {
        m.upsert.retain(|t| t.sid() != sid);
        m.delete.push(sid.to_owned());
        m.counts.removed += 1;
    }
}

/// A roster person in the final state.
struct FinalUser<'a> {
    stored: Option<&'a RosterUser>,
    /// The package row, when the person is in this package.
    row: Option<(&'a UserRow, u64)>,
}

impl FinalUser<'_> {
    fn email(&self) -> Option<&str> {
        match (self.row, self.stored) {
            (Some((r, _)), _) => r.email.as_deref(),
            (None, Some(s)) => s.email.as_deref(),
            (None, None) => None,
        }
    }
    fn line(&self) -> Option<u64> {
        self.row.map(|(_, l)| l)
    }
}

fn reference_error(
    problems: &mut Problems,
    file: &str,
    line: Option<u64>,
    column: &str,
    what: &str,
    target: &str,
    kind: &str,
) {
    let reason = match line {
        Some(_) => format!("{column} {target:?} is not a known {kind}"),
        None => format!(
            "stored {what} refers through {column} to {kind} {target:?}, which this package removes"
        ),
    };
    problems.error(file, line, Some(column), "broken_reference", reason);
}

/// Plans the import. Reference errors are added to `problems`; the caller must not apply
/// the plan when `problems.has_errors()`.
pub fn plan(
    parsed: &Parsed,
    snap: &RosterSnapshot,
    ctx: &PlanContext,
    problems: &mut Problems,
) -> Plan {
    let mut counts = Counts::default();

    // --- merge the simple kinds -------------------------------------------------------
    let orgs = merge(&parsed.orgs, &snap.orgs, problems);
    let mut roles = merge(&parsed.roles, &snap.roles, problems);
    let classes = merge(&parsed.classes, &snap.classes, problems);
    let mut enrollments = merge(&parsed.enrollments, &snap.enrollments, problems);

    // --- users --------------------------------------------------------------------------
    let stored_users: HashMap<&str, &RosterUser> = snap
        .users
        .iter()
        .map(|u| (u.sourced_id.as_str(), u))
        .collect();
    let users_file = &parsed.users;
    let mut present: HashMap<&str, (&UserRow, u64)> = HashMap::new();
    let mut present_dates: HashMap<&str, i64> = HashMap::new();
    let mut removing: Vec<&str> = Vec::new();
    match users_file.mode {
        FileMode::Absent => {}
        FileMode::Bulk => {
            for rec in &users_file.rows {
                if let Some(d) = &rec.data {
                    present.insert(&rec.sourced_id, (d, rec.line));
                }
            }
            for u in &snap.users {
                if u.status == RosterUserStatus::Active
                    && !present.contains_key(u.sourced_id.as_str())
                {
                    removing.push(&u.sourced_id);
                }
            }
        }
        FileMode::Delta => {
            for rec in &users_file.rows {
                let old = stored_users.get(rec.sourced_id.as_str());
                if let (Some(old_date), Some(new_date)) =
                    (old.and_then(|o| o.date_last_modified), rec.date)
                    && new_date < old_date
                {
                    counts.users.stale += 1;
                    problems.warn(
                        &users_file.file,
                        Some(rec.line),
                        Some("dateLastModified"),
                        "stale_row",
                        format!("{} is older than the stored row; skipped", rec.sourced_id),
                    );
                    continue;
                }
                match &rec.data {
                    Some(d) => {
                        present.insert(&rec.sourced_id, (d, rec.line));
                        if let Some(date) = rec.date {
                            present_dates.insert(&rec.sourced_id, date);
                        }
                    }
                    None => {
                        if old.is_some_and(|o| o.status == RosterUserStatus::Active) {
                            removing.push(&rec.sourced_id);
                        }
                    }
                }
            }
        }
    }
    let removing_set: HashSet<&str> = removing.iter().copied().collect();
    let mut fin_users: BTreeMap<&str, FinalUser<'_>> = BTreeMap::new();
    for u in &snap.users {
        if u.status == RosterUserStatus::Active && !removing_set.contains(u.sourced_id.as_str()) {
            fin_users.insert(
                &u.sourced_id,
                FinalUser {
                    stored: Some(u),
                    row: None,
                },
            );
        }
    }
    for (sid, row) in &present {
        fin_users.insert(
            sid,
            FinalUser {
                stored: stored_users.get(sid).copied(),
                row: Some(*row),
            },
        );
    }

    // --- cascades of removed users and classes on stored rows ---------------------------
    let stored_gone = |fin_has: bool, line: Option<u64>| !fin_has && line.is_none();
    let doomed: Vec<String> = enrollments
        .fin
        .iter()
        .filter(|(_, (e, line))| {
            stored_gone(fin_users.contains_key(e.user_sourced_id.as_str()), *line)
                || stored_gone(classes.fin.contains_key(e.class_sourced_id.as_str()), *line)
        })
        .map(|(sid, _)| (*sid).to_owned())
        .collect();
    for sid in doomed {
        cascade(&mut enrollments, &sid);
    }
    let doomed: Vec<String> = roles
        .fin
        .iter()
        .filter(|(_, (r, line))| {
            stored_gone(fin_users.contains_key(r.user_sourced_id.as_str()), *line)
        })
        .map(|(sid, _)| (*sid).to_owned())
        .collect();
    for sid in doomed {
        cascade(&mut roles, &sid);
    }

    // --- references -------------------------------------------------------------------
    let org_file = parsed.orgs.file.as_str();
    let mut sorted_orgs: Vec<_> = orgs.fin.values().collect();
    sorted_orgs.sort_by_key(|(o, l)| (*l, o.sourced_id.as_str()));
    for (o, line) in sorted_orgs {
        if let Some(p) = &o.parent_sourced_id
            && !orgs.fin.contains_key(p.as_str())
        {
            reference_error(
                problems,
                org_file,
                *line,
                "parentSourcedId",
                "org",
                p,
                "org",
            );
        }
    }
    let class_file = parsed.classes.file.as_str();
    let mut sorted_classes: Vec<_> = classes.fin.values().collect();
    sorted_classes.sort_by_key(|(c, l)| (*l, c.sourced_id.as_str()));
    for (c, line) in sorted_classes {
        if !orgs.fin.contains_key(c.school_sourced_id.as_str()) {
            let file = if line.is_some() { class_file } else { org_file };
            reference_error(
                problems,
                file,
                *line,
                "schoolSourcedId",
                "class",
                &c.school_sourced_id,
                "org",
            );
        }
    }
    let user_file = users_file.file.as_str();
    let mut fin_sorted: Vec<(&str, &FinalUser<'_>)> =
        fin_users.iter().map(|(k, v)| (*k, v)).collect();
    fin_sorted.sort_by_key(|(sid, u)| (u.line(), *sid));
    for (_, u) in &fin_sorted {
        let (orgs_of, primary, agents, line) = match (u.row, u.stored) {
            (Some((r, line)), _) => (
                &r.org_sourced_ids,
                r.primary_org_sourced_id.as_ref(),
                Some(&r.agent_sourced_ids),
                Some(line),
            ),
            (None, Some(s)) if s.role_1p1.is_some() => (&s.org_sourced_ids, None, None, None),
            _ => continue,
        };
        let file = if line.is_some() { user_file } else { org_file };
        for o in orgs_of {
            if !orgs.fin.contains_key(o.as_str()) {
                reference_error(problems, file, line, "orgSourcedIds", "user", o, "org");
            }
        }
        if let Some(p) = primary
            && !orgs.fin.contains_key(p.as_str())
        {
            reference_error(
                problems,
                file,
                line,
                "primaryOrgSourcedId",
                "user",
                p,
                "org",
            );
        }
        for a in agents.into_iter().flatten() {
            if !fin_users.contains_key(a.as_str()) {
                problems.warn(
                    user_file,
                    line,
                    Some("agentSourcedIds"),
                    "unknown_agent",
                    format!(
                        "agent {a:?} is not a known user (guardians not exported?); kept as written"
                    ),
                );
            }
        }
    }
    let role_file = parsed.roles.file.as_str();
    let mut sorted_roles: Vec<_> = roles.fin.values().collect();
    sorted_roles.sort_by_key(|(r, l)| (*l, r.sourced_id.as_str()));
    for (r, line) in sorted_roles {
        if line.is_some() && !fin_users.contains_key(r.user_sourced_id.as_str()) {
            reference_error(
                problems,
                role_file,
                *line,
                "userSourcedId",
                "role",
                &r.user_sourced_id,
                "user",
            );
        }
        if !orgs.fin.contains_key(r.org_sourced_id.as_str()) {
            let file = if line.is_some() { role_file } else { org_file };
            reference_error(
                problems,
                file,
                *line,
                "orgSourcedId",
                "role",
                &r.org_sourced_id,
                "org",
            );
        }
    }
    let enr_file = parsed.enrollments.file.as_str();
    let mut sorted_enr: Vec<_> = enrollments.fin.values().collect();
    sorted_enr.sort_by_key(|(e, l)| (*l, e.sourced_id.as_str()));
    for (e, line) in sorted_enr {
        if line.is_some() && !classes.fin.contains_key(e.class_sourced_id.as_str()) {
            reference_error(
                problems,
                enr_file,
                *line,
                "classSourcedId",
                "enrollment",
                &e.class_sourced_id,
                "class",
            );
        }
        if line.is_some() && !fin_users.contains_key(e.user_sourced_id.as_str()) {
            reference_error(
                problems,
                enr_file,
                *line,
                "userSourcedId",
                "enrollment",
                &e.user_sourced_id,
                "user",
            );
        }
        if !orgs.fin.contains_key(e.school_sourced_id.as_str()) {
            let file = if line.is_some() { enr_file } else { org_file };
            reference_error(
                problems,
                file,
                *line,
                "schoolSourcedId",
                "enrollment",
                &e.school_sourced_id,
                "org",
            );
        }
    }

    // --- derived roles and orgs of people ----------------------------------------------
    let mut roles_by_user: HashMap<&str, Vec<&RosterRole>> = HashMap::new();
    for (r, _) in roles.fin.values() {
        roles_by_user
            .entry(r.user_sourced_id.as_str())
            .or_default()
            .push(r);
    }
    for list in roles_by_user.values_mut() {
        list.sort_by_key(|r| (r.role_type != "primary", r.sourced_id.as_str()));
    }
    let derived = |sid: &str, u: &FinalUser<'_>| -> (Vec<Role>, Vec<String>, Option<String>) {
        if let Some(list) = roles_by_user.get(sid) {
            let mut rs = Vec::new();
            let mut os: Vec<String> = Vec::new();
            for r in list {
                if let Some(role) = homeroom_role(&r.role, &ctx.ext_roles)
                    && !rs.contains(&role)
                {
                    rs.push(role);
                }
                if !os.contains(&r.org_sourced_id) {
                    os.push(r.org_sourced_id.clone());
                }
            }
            return (rs, os, None);
        }
        let (role, orgs_of) = match (u.row, u.stored) {
            (Some((r, _)), _) => (r.role_1p1.clone(), r.org_sourced_ids.clone()),
            (None, Some(s)) => (
                s.role_1p1.clone(),
                if s.role_1p1.is_some() {
                    s.org_sourced_ids.clone()
                } else {
                    Vec::new()
                },
            ),
            (None, None) => (None, Vec::new()),
        };
        let rs = role
            .as_deref()
            .and_then(|r| homeroom_role(r, &ctx.ext_roles))
            .into_iter()
            .collect();
        (rs, orgs_of, role)
    };
    if parsed.version() == Version::V1p2 {
        for (sid, u) in &fin_sorted {
            if let Some((r, line)) = u.row
                && r.role_1p1.is_none()
                && !roles_by_user.contains_key(sid)
            {
                problems.warn(
                    user_file,
                    Some(line),
                    None,
                    "no_role",
                    format!("user {sid} has no row in roles.csv; the account gets no role"),
                );
            } else if let Some(list) = roles_by_user.get(sid)
                && list.iter().filter(|r| r.role_type == "primary").count() != 1
                && u.row.is_some()
            {
                problems.warn(
                    role_file,
                    None,
                    Some("roleType"),
                    "primary_role",
                    format!(
                        "user {sid} has {} primary roles (expected one)",
                        list.iter().filter(|r| r.role_type == "primary").count()
                    ),
                );
            }
        }
    }

    // --- conflicts ----------------------------------------------------------------------
    let mut conflicts = Vec::new();
    let mut conflicted: HashSet<&str> = HashSet::new();
    let mut held: HashSet<&str> = HashSet::new();
    let mut by_email: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (sid, u) in &fin_users {
        if let Some(e) = u.email() {
            by_email.entry(e).or_default().push(sid);
        }
    }
    for (email, sids) in &by_email {
        if sids.len() > 1
            && sids
                .iter()
                .any(|s| fin_users.get(s).is_some_and(|u| u.row.is_some()))
        {
            let mut users: Vec<UserRef> = sids
                .iter()
                .map(|s| UserRef {
                    sourced_id: (*s).to_owned(),
                    line: fin_users.get(s).and_then(FinalUser::line),
                })
                .collect();
            users.sort_by_key(|u| (u.line, u.sourced_id.clone()));
            conflicts.push(Conflict::DuplicateEmail {
                email: (*email).to_owned(),
                users,
            });
            conflicted.extend(sids.iter().copied());
        }
    }
    let accounts: HashMap<&str, &Account> =
        snap.accounts.iter().map(|a| (a.id.as_str(), a)).collect();
    let mut accounts_by_email: HashMap<String, Vec<&Account>> = HashMap::new();
    for a in &snap.accounts {
        if let Some(e) = &a.email {
            accounts_by_email
                .entry(homeroom_directory::normalise_email(e))
                .or_default()
                .push(a);
        }
    }
    let roster_by_account: HashMap<&str, &RosterUser> = snap
        .users
        .iter()
        .filter_map(|u| u.account.as_ref().map(|a| (a.as_str(), u)))
        .collect();
    let mut adopt: HashMap<&str, &Account> = HashMap::new();
    for (sid, u) in &fin_sorted {
        if conflicted.contains(sid) {
            continue;
        }
        let Some(email) = u.email() else { continue };
        let own = u
            .stored
            .and_then(|s| s.account.as_ref())
            .map(AccountId::as_str);
        let others: Vec<&Account> = accounts_by_email
            .get(email)
            .map(|v| {
                v.iter()
                    .copied()
                    .filter(|a| Some(a.id.as_str()) != own)
                    .collect()
            })
            .unwrap_or_default();
        let uref = UserRef {
            sourced_id: (*sid).to_owned(),
            line: u.line(),
        };
        let mut unrostered = Vec::new();
        for x in others {
            match roster_by_account.get(x.id.as_str()) {
                None => unrostered.push(x),
                Some(v) => {
                    let v_final = fin_users.get(v.sourced_id.as_str());
                    match v_final {
                        Some(vf) if vf.email() != Some(email) => {} // moving away
                        Some(_) => {} // same email in the final state: a duplicate, reported above
                        None => {
                            conflicts.push(Conflict::SourcedIdChanged {
                                email: email.to_owned(),
                                old_sourced_id: v.sourced_id.clone(),
                                user: uref.clone(),
                                account: x.id.to_string(),
                            });
                            conflicted.insert(sid);
                            if removing_set.contains(v.sourced_id.as_str()) {
                                held.insert(v.sourced_id.as_str());
                            }
                        }
                    }
                }
            }
        }
        if unrostered.is_empty() {
            continue;
        }
        if ctx.adopt_existing && own.is_none() && unrostered.len() == 1 && !conflicted.contains(sid)
        {
            adopt.insert(sid, unrostered[0]);
            continue;
        }
        for x in unrostered {
            conflicts.push(Conflict::EmailInUse {
                email: email.to_owned(),
                user: uref.clone(),
                account: x.id.to_string(),
            });
        }
        conflicted.insert(sid);
    }
    // An account can be adopted once.
    let mut adopted_by: HashMap<&str, Vec<&str>> = HashMap::new();
    for (sid, a) in &adopt {
        adopted_by.entry(a.id.as_str()).or_default().push(sid);
    }
    for (acc, sids) in adopted_by {
        if sids.len() > 1 {
            for s in sids {
                adopt.remove(s);
                conflicted.insert(s);
                conflicts.push(Conflict::EmailInUse {
                    email: fin_users
                        .get(s)
                        .and_then(FinalUser::email)
                        .unwrap_or_default()
                        .to_owned(),
                    user: UserRef {
                        sourced_id: s.to_owned(),
                        line: fin_users.get(s).and_then(FinalUser::line),
                    },
                    account: acc.to_owned(),
                });
            }
        }
    }

    // --- people and accounts to write --------------------------------------------------
    let mut accounts_create = Vec::new();
    let mut accounts_update = Vec::new();
    let mut users_upsert = Vec::new();
    for (sid, u) in &fin_sorted {
        if conflicted.contains(sid) {
            counts.users.in_conflict += 1;
            continue;
        }
        let (roles_of, orgs_of, role_1p1) = derived(sid, u);
        let base: RosterUser = match (u.row, u.stored) {
            (Some((r, _)), stored) => RosterUser {
                tenant: ctx.tenant.clone(),
                sourced_id: (*sid).to_owned(),
                account: stored.and_then(|s| s.account.clone()),
                status: RosterUserStatus::Active,
                enabled: r.enabled,
                username: r.username.clone(),
                email: r.email.clone(),
                given_name: r.given_name.clone(),
                family_name: r.family_name.clone(),
                middle_name: r.middle_name.clone(),
                preferred_given_name: r.preferred_given_name.clone(),
                preferred_family_name: r.preferred_family_name.clone(),
                identifier: r.identifier.clone(),
                user_master_identifier: r.user_master_identifier.clone(),
                role_1p1: role_1p1.clone(),
                roles: Vec::new(),
                org_sourced_ids: Vec::new(),
                primary_org_sourced_id: r.primary_org_sourced_id.clone(),
                grades: r.grades.clone(),
                user_ids: r.user_ids.clone(),
                agent_sourced_ids: r.agent_sourced_ids.clone(),
                date_last_modified: present_dates.get(sid).copied(),
                account_status_set: stored.and_then(|s| s.account_status_set),
                removed_at: None,
                removed_by_import: None,
                extra: r.extra.clone(),
            },
            (None, Some(s)) => s.clone(),
            (None, None) => continue,
        };
        let mut desired = base;
        desired.roles = roles_of;
        desired.org_sourced_ids = orgs_of;
        let stored = u.stored;
        let reactivated = stored.is_some_and(|s| s.status == RosterUserStatus::Removed);
        let target = if desired.enabled {
            AccountStatus::Active
        } else {
            AccountStatus::Suspended
        };
        let display = |given: &str, family: &str| {
            let g = desired.preferred_given_name.as_deref().unwrap_or(given);
            let f = desired.preferred_family_name.as_deref().unwrap_or(family);
            format!("{g} {f}").trim().to_owned()
        };
        let given = desired
            .preferred_given_name
            .clone()
            .unwrap_or_else(|| desired.given_name.clone());
        let family = desired
            .preferred_family_name
            .clone()
            .unwrap_or_else(|| desired.family_name.clone());
        let name = display(&desired.given_name, &desired.family_name);

        let current = desired
            .account
            .as_ref()
            .and_then(|a| accounts.get(a.as_str()).copied())
            .or_else(|| adopt.get(sid).copied());
        let mut account_changed = false;
        match current {
            Some(acc) => {
                let roster_owned = desired.account_status_set == Some(acc.status);
                let status = if roster_owned { target } else { acc.status };
                if roster_owned || status == target {
                    desired.account_status_set = Some(status);
                }
                let upd = AccountUpdate {
                    id: acc.id.clone(),
                    status,
                    email: desired.email.clone().or_else(|| acc.email.clone()),
                    email_verified: if desired.email.is_some() {
                        true
                    } else {
                        acc.email_verified
                    },
                    name: Some(name),
                    given_name: Some(given),
                    family_name: Some(family),
                    username: Some(desired.username.clone()),
                    roles: desired.roles.clone(),
                };
                let same = upd.status == acc.status
                    && upd.email == acc.email
                    && upd.email_verified == acc.email_verified
                    && upd.name == acc.name
                    && upd.given_name == acc.given_name
                    && upd.family_name == acc.family_name
                    && upd.username == acc.username
                    && upd.roles == acc.roles;
                if !same {
                    account_changed = true;
                    accounts_update.push(upd);
                }
                if desired.account.is_none() {
                    desired.account = Some(acc.id.clone());
                    counts.users.adopted += 1;
                }
            }
            None => {
                let id = AccountId::generate();
                accounts_create.push(Account {
                    id: id.clone(),
                    tenant: ctx.tenant.clone(),
                    status: target,
                    email: desired.email.clone(),
                    email_verified: desired.email.is_some(),
                    name: Some(name),
                    given_name: Some(given),
                    family_name: Some(family),
                    username: Some(desired.username.clone()),
                    roles: desired.roles.clone(),
                    created_at: ctx.now,
                    last_sign_in_at: None,
                    sign_in_count: 0,
                });
                desired.account = Some(id);
                desired.account_status_set = Some(target);
                account_changed = true;
            }
        }
        match stored {
            None => counts.users.added += 1,
            Some(s) if *s != desired || account_changed => {
                counts.users.updated += 1;
                if reactivated {
                    counts.users.reactivated += 1;
                }
            }
            Some(_) => counts.users.unchanged += 1,
        }
        if stored != Some(&desired) {
            users_upsert.push(desired);
        }
    }
    for sid in &removing {
        if held.contains(sid) {
            counts.users.in_conflict += 1;
            continue;
        }
        let Some(s) = stored_users.get(sid) else {
            continue;
        };
        let mut r = (*s).clone();
        r.status = RosterUserStatus::Removed;
        r.removed_at = Some(ctx.now);
        r.removed_by_import = Some(ctx.import_id.clone());
        if let Some(acc) = r.account.as_ref().and_then(|a| accounts.get(a.as_str())) {
            if acc.status != AccountStatus::Archived {
                accounts_update.push(AccountUpdate {
                    id: acc.id.clone(),
                    status: AccountStatus::Archived,
                    email: acc.email.clone(),
                    email_verified: acc.email_verified,
                    name: acc.name.clone(),
                    given_name: acc.given_name.clone(),
                    family_name: acc.family_name.clone(),
                    username: acc.username.clone(),
                    roles: acc.roles.clone(),
                });
            }
            r.account_status_set = Some(AccountStatus::Archived);
        }
        users_upsert.push(r);
        counts.users.deactivated += 1;
    }

    counts.orgs = orgs.counts;
    counts.roles = roles.counts;
    counts.classes = classes.counts;
    counts.enrollments = enrollments.counts;
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let changes = RosterChanges {
        tenant: ctx.tenant.clone(),
        accounts_create,
        accounts_update,
        users_upsert,
        orgs_upsert: orgs.upsert,
        orgs_delete: sorted(orgs.delete),
        roles_upsert: roles.upsert,
        roles_delete: sorted(roles.delete),
        classes_upsert: classes.upsert,
        classes_delete: sorted(classes.delete),
        enrollments_upsert: enrollments.upsert,
        enrollments_delete: sorted(enrollments.delete),
        import: RosterImport {
            id: ctx.import_id.clone(),
            tenant: ctx.tenant.clone(),
            started_at: ctx.now,
            finished_at: ctx.now,
            mode: String::new(),
            oneroster_version: Some(parsed.version().as_str().to_owned()),
            status: "ok".into(),
            users_bulk: users_file.mode == FileMode::Bulk,
            added: 0,
            updated: 0,
            deactivated: 0,
            conflicts: 0,
            errors: 0,
            report: serde_json::Value::Null,
        },
    };
    Plan {
        changes,
        conflicts,
        counts,
    }
}
