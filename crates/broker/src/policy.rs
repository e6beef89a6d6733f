//! Tenant policy in the Decide step and at code issuance:
//!
//! - **Roster required** (per tenant): an SSO sign-in must map to an active rostered
//!   account, by provider link, then OneRoster `sourcedId`, then an email the roster
//!   confirms; nobody else gets an account. A person missing from the last successful bulk
//!   import is blocked with their own explanation.
//! - **App assignment** (per app): roles, schools (roster org sourcedIds) and grades the app
//!   is assigned to; anyone else gets "this app is not assigned to you".

use crate::AppState;
use crate::pipeline::Refusal;
use crate::registry::Registered;
use homeroom_core::{ClientId, LoginError, Role, UpstreamIdentity};
use homeroom_directory::{Account, ProviderLink};

/// Who an app is assigned to. An empty list does not restrict.
#[derive(Debug, Clone, Default)]
pub struct Assignment {
    pub roles: Vec<Role>,
    pub schools: Vec<String>,
    pub grades: Vec<String>,
}

fn dir_err(e: homeroom_directory::DirectoryError) -> Refusal {
    Refusal::new(LoginError::Internal, format!("directory: {e}"))
}

/// District systems whose addresses are the roster's own (a roster email match is enough);
/// for other providers the provider must vouch for the address.
fn district_system(kind: &str) -> bool {
    matches!(kind, "clever" | "classlink" | "gg4l" | "saml")
}

/// The Decide step for a roster-required tenant.
pub async fn rostered_account(
    state: &AppState,
    reg: &Registered,
    identity: &UpstreamIdentity,
) -> Result<Account, Refusal> {
    let dir = &state.directory;
    let tenant = reg.tenant().clone();
    let tenant_name = dir
        .get_tenant(&tenant)
        .await
        .map_err(dir_err)?
        .map(|t| t.name)
        .unwrap_or_else(|| tenant.to_string());
    let last_import = dir
        .last_successful_bulk_import(&tenant)
        .await
        .map_err(dir_err)?
        .map(|i| i.finished_at);
    let not_rostered = |why: String| {
        Refusal::new(
            LoginError::NotRostered {
                used: identity.label(),
                provider: reg.record.display_name.clone(),
                tenant: tenant_name.clone(),
                last_import,
            },
            why,
        )
    };
    let account = match dir
        .find_account_by_link(&reg.record.id, &identity.subject)
        .await
        .map_err(dir_err)?
    {
        Some(a) => a,
        None => {
            let by_sourced_id = match identity.sourced_id.as_deref().filter(|s| !s.is_empty()) {
                Some(s) => dir.roster_user(&tenant, s).await.map_err(dir_err)?,
                None => None,
            };
            let roster_user = match by_sourced_id {
                Some(u) => Some(u),
                None => match identity.email.as_deref() {
                    Some(e) if identity.email_verified || district_system(&reg.record.kind) => {
                        let mut found = dir
                            .roster_users_by_email(&tenant, e)
                            .await
                            .map_err(dir_err)?;
                        if found.len() > 1 {
                            return Err(not_rostered(format!(
                                "{} roster records share the email {e}; resolve the duplicate in the SIS",
                                found.len()
                            )));
                        }
                        found.pop()
                    }
                    _ => None,
                },
            };
            let Some(ru) = roster_user else {
                return Err(not_rostered(
                    "no roster record matches the provider link, sourcedId or a confirmed email"
                        .into(),
                ));
            };
            let Some(account_id) = ru.account.clone() else {
                return Err(not_rostered(format!(
                    "roster record {} has no account yet (import not finished?)",
                    ru.sourced_id
                )));
            };
            let link = ProviderLink {
                account: account_id.clone(),
                provider: reg.record.id.clone(),
                subject: identity.subject.clone(),
                email: identity.email.clone(),
                created_at: state.now(),
            };
            dir.add_link(&link).await.map_err(dir_err)?;
            dir.get_account(&account_id)
                .await
                .map_err(dir_err)?
                .ok_or_else(|| not_rostered("the roster's account vanished".into()))?
        }
    };
    match dir
        .roster_user_for_account(&account.id)
        .await
        .map_err(dir_err)?
    {
        None => Err(not_rostered(format!(
            "account {} is linked but has no roster record",
            account.id
        ))),
        Some(ru) if ru.removed_at.is_some() => Err(Refusal::new(
            LoginError::NotInLastImport {
                tenant: tenant_name,
                last_import,
            },
            format!(
                "roster record {} was missing from the last bulk import",
                ru.sourced_id
            ),
        )),
        Some(_) => Ok(account),
    }
}

/// Whether the app may be used by this account; the refusal when not.
pub async fn assignment(
    state: &AppState,
    client: &ClientId,
    account: &Account,
) -> Result<(), Refusal> {
    let Some(rule) = state.settings.assignments.get(client) else {
        return Ok(());
    };
    let app_name = state
        .app(client)
        .await
        .ok()
        .flatten()
        .map(|a| a.name.clone())
        .unwrap_or_else(|| client.to_string());
    let refuse = |why: String| {
        Refusal::new(
            LoginError::AppNotAssigned {
                app: app_name.clone(),
            },
            why,
        )
    };
    if !rule.roles.is_empty() && !account.roles.iter().any(|r| rule.roles.contains(r)) {
        return Err(refuse(format!(
            "roles {:?} not among the assigned {:?}",
            account.roles, rule.roles
        )));
    }
    if rule.schools.is_empty() && rule.grades.is_empty() {
        return Ok(());
    }
    let roster = state
        .directory
        .roster_user_for_account(&account.id)
        .await
        .map_err(dir_err)?;
    let Some(ru) = roster else {
        return Err(refuse(
            "the app is assigned by school or grade and the account has no roster record".into(),
        ));
    };
    if !rule.schools.is_empty() && !ru.org_sourced_ids.iter().any(|o| rule.schools.contains(o)) {
        return Err(refuse(format!(
            "schools {:?} not among the assigned {:?}",
            ru.org_sourced_ids, rule.schools
        )));
    }
    if !rule.grades.is_empty() && !ru.grades.iter().any(|g| rule.grades.contains(g)) {
        return Err(refuse(format!(
            "grades {:?} not among the assigned {:?}",
            ru.grades, rule.grades
        )));
    }
    Ok(())
}
