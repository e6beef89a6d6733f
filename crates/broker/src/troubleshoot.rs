//! The sign-in troubleshooter: for a person (email, username or name) or an attempt's
//! reference id, the answers IT would otherwise collect by hand, each with a next step.
//! Used by the admin API and the CLI; reads only the directory (and the audit log).

use homeroom_core::{LoginError, RefId, TenantId, clock::rfc3339};
use homeroom_directory::{
    Account, AccountStatus, AuditEvent, AuditFilter, Directory, DirectoryError,
};
use serde::Serialize;

/// One finding: what was checked, what was found, what to do.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Finding {
    pub check: String,
    pub ok: bool,
    pub found: String,
    pub next_step: Option<String>,
}

fn finding(check: &str, ok: bool, found: impl Into<String>, next: Option<&str>) -> Finding {
    Finding {
        check: check.into(),
        ok,
        found: found.into(),
        next_step: next.map(str::to_owned),
    }
}

/// The troubleshooter's answer for one account.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AccountReport {
    pub account_id: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub findings: Vec<Finding>,
    /// Other accounts that look like the same person (roles missing from one account often
    /// live on the duplicate).
    pub look_alikes: Vec<LookAlike>,
    /// The last refused attempts of this account, newest first.
    pub recent_failures: Vec<FailureLine>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LookAlike {
    pub account_id: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub roles: Vec<String>,
    pub status: String,
    pub why: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FailureLine {
    pub at: String,
    pub code: String,
    pub reference: Option<String>,
    pub provider: Option<String>,
    pub app: Option<String>,
}

/// Email reduced for look-alike comparison: lower case, dots and `+tags` of the local part
/// removed, domain aliases kept apart only by their first label.
pub fn email_key(e: &str) -> String {
    let e = e.trim().to_lowercase();
    let Some((local, domain)) = e.split_once('@') else {
        return e;
    };
    let local: String = local
        .split('+')
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| *c != '.')
        .collect();
    let org = domain.split('.').rev().nth(1).unwrap_or(domain);
    format!("{local}@{org}")
}

/// Finds the accounts matching a query in a tenant.
pub async fn find(
    dir: &Directory,
    tenant: &TenantId,
    query: &str,
) -> Result<Vec<Account>, DirectoryError> {
    if query.contains('@') {
        let exact = dir.find_accounts_by_email(tenant, query).await?;
        if !exact.is_empty() {
            return Ok(exact);
        }
    }
    dir.search_accounts(tenant, query, None, 20).await
}

/// The full report for one account.
pub async fn account_report(
    dir: &Directory,
    account: &Account,
    now: i64,
) -> Result<AccountReport, DirectoryError> {
    let mut f = Vec::new();
    let tenant = dir.get_tenant(&account.tenant).await?;
    f.push(finding(
        "Account exists",
        true,
        format!(
            "{} in tenant {}",
            account.id,
            tenant
                .as_ref()
                .map(|t| t.name.clone())
                .unwrap_or_else(|| account.tenant.to_string())
        ),
        None,
    ));
    let status_next = match account.status {
        AccountStatus::Active => None,
        AccountStatus::Suspended => Some("Activate the account if the person should sign in."),
        AccountStatus::Archived => Some(
            "Restore (activate) the account if the person is still at the school; if the roster archived it, fix the roster first.",
        ),
    };
    f.push(finding(
        "Account is active",
        account.status == AccountStatus::Active,
        account.status.as_str(),
        status_next,
    ));
    match dir.roster_user_for_account(&account.id).await? {
        Some(r) => {
            let last = dir.last_successful_bulk_import(&account.tenant).await?;
            let in_last = r.removed_at.is_none();
            f.push(finding(
                "Rostered",
                in_last,
                format!(
                    "sourcedId {}{}",
                    r.sourced_id,
                    last.map(|i| format!(
                        "; last successful bulk import {}",
                        rfc3339(i.finished_at)
                    ))
                    .unwrap_or_default()
                ),
                (!in_last).then_some(
                    "The person was not in the last bulk roster import: check the SIS export.",
                ),
            ));
        }
        None => f.push(finding(
            "Rostered",
            true,
            "not a roster account (created by sign-in or by hand)",
            None,
        )),
    }
    let links = dir.links_for_account(&account.id).await?;
    f.push(finding(
        "Linked providers",
        !links.is_empty(),
        if links.is_empty() { "none".into() } else { links.iter().map(|l| format!("{} ({})", l.provider, l.email.clone().unwrap_or_default())).collect::<Vec<_>>().join(", ") },
        links.is_empty().then_some("The person has never signed in through a school provider; check which button they use."),
    ));
    f.push(finding(
        "Email verified",
        account.email_verified || account.email.is_none(),
        format!("{} ({})", account.email.clone().unwrap_or_else(|| "no email".into()), if account.email_verified { "verified" } else { "not verified" }),
        (!account.email_verified && account.email.is_some()).then_some("Unverified emails never link a new sign-in to this account; link it by hand or through the roster."),
    ));
    f.push(finding(
        "Sign-ins",
        account.sign_in_count > 0,
        format!(
            "{} sign-in(s){}",
            account.sign_in_count,
            account.last_sign_in_at.map(|t| format!(", last {}", rfc3339(t))).unwrap_or_default()
        ),
        (account.sign_in_count == 0).then_some("Never signed in: walk the student through the first sign-in, or check the recent failures below."),
    ));
    f.push(finding(
        "Roles",
        !account.roles.is_empty(),
        account
            .roles
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        None,
    ));
    // Look-alikes: same name, or an email equal up to case, dots, +tags or domain alias.
    let mut look_alikes = Vec::new();
    let mut candidates = Vec::new();
    if let Some(name) = account
        .family_name
        .as_ref()
        .or(account.name.as_ref())
        .filter(|n| n.chars().count() >= 3)
    {
        candidates.extend(dir.search_accounts(&account.tenant, name, None, 50).await?);
    }
    if let Some(e) = &account.email {
        let local: String = e
            .split('@')
            .next()
            .unwrap_or("")
            .split('+')
            .next()
            .unwrap_or("")
            .chars()
            .filter(|c| *c != '.')
            .take(12)
            .collect();
        if local.chars().count() >= 3 {
            candidates.extend(
                dir.search_accounts(&account.tenant, &local[..local.len().min(6)], None, 50)
                    .await?,
            );
        }
    }
    for c in candidates {
        if c.id == account.id
            || look_alikes
                .iter()
                .any(|l: &LookAlike| l.account_id == c.id.as_str())
        {
            continue;
        }
        let same_name = c.name.is_some()
            && c.name.as_deref().map(str::to_lowercase)
                == account.name.as_deref().map(str::to_lowercase);
        let same_email = matches!((&c.email, &account.email), (Some(a), Some(b)) if email_key(a) == email_key(b));
        if same_name || same_email {
            look_alikes.push(LookAlike {
                account_id: c.id.to_string(),
                name: c.name.clone(),
                email: c.email.clone(),
                roles: c.roles.iter().map(|r| r.to_string()).collect(),
                status: c.status.as_str().into(),
                why: match (same_name, same_email) {
                    (true, true) => "same name and an email that differs only in case, dots, +tag or domain alias",
                    (true, false) => "same name",
                    _ => "email differs only in case, dots, +tag or domain alias",
                }
                .into(),
            });
        }
    }
    if !look_alikes.is_empty() {
        f.push(finding(
            "Possible duplicate accounts",
            false,
            format!("{} account(s) look like the same person", look_alikes.len()),
            Some("Roles missing from this account may live on a duplicate; merge them or add the role here."),
        ));
    }
    let failures = dir
        .list_audit(&AuditFilter {
            account: Some(account.id.clone()),
            kind: Some("login.refused".into()),
            limit: 10,
            ..Default::default()
        })
        .await?;
    let recent_failures = failures.iter().map(failure_line).collect();
    let _ = now;
    Ok(AccountReport {
        account_id: account.id.to_string(),
        name: account.name.clone(),
        email: account.email.clone(),
        findings: f,
        look_alikes,
        recent_failures,
    })
}

/// Plain-text rendering of a report for the CLI (control characters escaped).
pub fn format_report(r: &AccountReport) -> String {
    use std::fmt::Write as _;
    let clean = |s: &str| -> String {
        s.chars()
            .take(300)
            .flat_map(|c| {
                if c.is_control() {
                    c.escape_default().collect::<Vec<_>>()
                } else {
                    vec![c]
                }
            })
            .collect()
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Account {} — {} <{}>",
        clean(&r.account_id),
        clean(r.name.as_deref().unwrap_or("(no name)")),
        clean(r.email.as_deref().unwrap_or("no email"))
    );
    for f in &r.findings {
        let _ = writeln!(
            out,
            "  [{}] {}: {}",
            if f.ok { "ok" } else { "!!" },
            clean(&f.check),
            clean(&f.found)
        );
        if let Some(n) = &f.next_step {
            let _ = writeln!(out, "       next: {}", clean(n));
        }
    }
    for l in &r.look_alikes {
        let _ = writeln!(
            out,
            "  look-alike {} ({}, {}): {}",
            clean(&l.account_id),
            clean(l.email.as_deref().unwrap_or("")),
            clean(&l.status),
            clean(&l.why)
        );
    }
    for f in &r.recent_failures {
        let _ = writeln!(
            out,
            "  failed {} {} (ref {})",
            clean(&f.at),
            clean(&f.code),
            clean(f.reference.as_deref().unwrap_or("-"))
        );
    }
    out
}

fn failure_line(e: &AuditEvent) -> FailureLine {
    FailureLine {
        at: rfc3339(e.at_ms / 1000),
        code: e.code.clone().unwrap_or_default(),
        reference: e.ref_id.as_ref().map(ToString::to_string),
        provider: e.provider.as_ref().map(ToString::to_string),
        app: e.client.as_ref().map(ToString::to_string),
    }
}

/// One step of an attempt's trace, with the catalogue texts for refusals.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TraceStep {
    pub at: String,
    pub kind: String,
    pub code: Option<String>,
    pub provider: Option<String>,
    pub app: Option<String>,
    pub account: Option<String>,
    pub student_saw: Option<String>,
    pub it_guidance: Option<String>,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

/// The trace of one attempt, oldest first; only events of `tenant` (or of no tenant yet).
pub async fn trace(
    dir: &Directory,
    reference: &RefId,
    tenant: Option<&TenantId>,
) -> Result<Vec<TraceStep>, DirectoryError> {
    let events = dir.audit_for_ref(reference).await?;
    if let Some(t) = tenant {
        // An attempt of another tenant is not shown at all (no partial leak).
        if events
            .iter()
            .any(|e| e.tenant.as_ref().is_some_and(|et| et != t))
        {
            return Ok(Vec::new());
        }
    }
    Ok(events
        .into_iter()
        .map(|e| {
            let err: Option<LoginError> = e
                .detail
                .get("error")
                .and_then(|v| serde_json::from_value(v.clone()).ok());
            TraceStep {
                at: rfc3339(e.at_ms / 1000),
                kind: e.kind.clone(),
                code: e.code.clone(),
                provider: e.provider.as_ref().map(ToString::to_string),
                app: e.client.as_ref().map(ToString::to_string),
                account: e.account.as_ref().map(ToString::to_string),
                student_saw: err.as_ref().map(LoginError::student_message),
                it_guidance: err.as_ref().map(LoginError::it_guidance),
                detail: e.detail,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_keys_ignore_case_dots_tags_and_domain_alias() {
        assert_eq!(
            email_key("Maya.Chen+x@Lincoln.org"),
            email_key("mayachen@lincoln.k12.org".replace(".k12", "").as_str())
        );
        assert_eq!(
            email_key("maya.chen@students.lincolnusd.org"),
            email_key("mayachen@lincolnusd.org")
        );
        assert_ne!(email_key("maya@a.org"), email_key("maya@b.org"));
    }
}
