//! Families (guardians): the guardian pages, the sign-in gate, the `family` claims, the
//! mails, and parent access codes.
//!
//! What it owns:
//! - [`gate`]: called once per authorization code ([`crate::pipeline::issue_code`]). A
//!   secondary guardian who has not attested being 18+ goes to `/family/attest`; for apps
//!   that ask for the `family` scope, a guardian of several families picks one
//!   (`/family/switch`, remembered for the SSO session so switching needs no new
//!   sign-in), a primary who has not accepted the tenant's current policies is asked to
//!   (`/family`), and a secondary of such a family is stopped
//!   ([`LoginError::FamilyPoliciesPending`], naming the primary). The chosen family rides
//!   in the code to the tokens.
//! - [`claims`]: the `families` and `family_id` claims of ID tokens and userinfo.
//! - The pages under `/family` (CSRF double-submit on every form, via
//!   [`crate::local::csrf_ok`]): my families, invite (primary only), revoke own
//!   secondaries, accept policies, switch, attest, join by invitation, parent access code.
//! - The rules staff actions follow ([`revoke_secondary`], [`change_primary`]); the admin
//!   API ([`crate::family_admin`]) calls them. Nothing here lets staff add a secondary.
//!
//! It never stores anything itself (the directory does, atomically) and never sends mail
//! (it writes the outbox; [`crate::mail`] delivers).

use crate::AppState;
use crate::audit::{self, Ev};
use crate::flows::{AuthRequest, SsoSession, flows};
use crate::local;
use crate::middleware::ClientIp;
use crate::pages::html;
use crate::pipeline::{self, Refusal, refuse};
use crate::respond::{self, PageCtx};
use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use homeroom_core::crypto::{self, sha256_hex};
use homeroom_core::{AccountId, LoginError, RefId, Role, TenantId};
use homeroom_directory::local::LINK_MARKER;
use homeroom_directory::{
    Account, AccountStatus, CodeUse, DirectoryError, FamilyInvitation, Guardian, GuardianRole,
    InviteUse, MailStatus, Membership, NewMail, ParentCode,
};
use homeroom_session::Gcra;
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;

/// The scope that releases the `families` and `family_id` claims.
pub const FAMILY_SCOPE: &str = "family";

/// A policy the primary guardian of every family of a tenant must accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequiredPolicy {
    pub name: String,
    pub version: String,
    pub url: String,
}

/// Settings of families (the `[family]` config section).
#[derive(Debug, Clone)]
pub struct FamilySettings {
    /// Required policies per tenant (current versions).
    pub policies: HashMap<TenantId, Vec<RequiredPolicy>>,
    /// Days a parent access code stays valid (30), and per-tenant overrides.
    pub parent_code_ttl_days: i64,
    pub parent_code_ttl_days_by_tenant: HashMap<TenantId, i64>,
    /// Code redemptions per minute per guardian and per address, with this burst (5, 5).
    pub redeem_per_minute: u64,
    pub redeem_burst: u64,
    /// Failed redemptions (per guardian, within an hour) that stop further tries (10).
    pub redeem_max_failures: i64,
}

impl Default for FamilySettings {
    fn default() -> Self {
        Self {
            policies: HashMap::new(),
            parent_code_ttl_days: 30,
            parent_code_ttl_days_by_tenant: HashMap::new(),
            redeem_per_minute: 5,
            redeem_burst: 5,
            redeem_max_failures: 10,
        }
    }
}

impl FamilySettings {
    pub fn policies_for(&self, tenant: &TenantId) -> &[RequiredPolicy] {
        self.policies.get(tenant).map(Vec::as_slice).unwrap_or(&[])
    }
    /// Lifetime of a new parent access code of `tenant`, seconds.
    pub fn parent_code_ttl_secs(&self, tenant: &TenantId) -> i64 {
        self.parent_code_ttl_days_by_tenant
            .get(tenant)
            .copied()
            .unwrap_or(self.parent_code_ttl_days)
            .max(1)
            * 86_400
    }
}

/// Why a family action was not done (admin API and pages map these).
#[derive(Debug, thiserror::Error)]
pub enum FamilyError {
    #[error("no such family")]
    NoFamily,
    #[error("no such account")]
    NoAccount,
    #[error("the account is not a live secondary guardian of this family")]
    NotSecondary,
    #[error("the account is already the primary guardian of this family")]
    AlreadyPrimary,
    #[error("the account is not a guardian of this family")]
    NotGuardian,
    #[error("randomness unavailable")]
    Random,
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    #[error(transparent)]
    Local(#[from] local::LocalError),
}

// ---------------------------------------------------------------------------------------
// Mail
// ---------------------------------------------------------------------------------------

#[allow(clippy::too_many_arguments)]
fn mail_to(
    state: &AppState,
    tenant: &TenantId,
    account: Option<&AccountId>,
    to: &str,
    kind: &str,
    subject: String,
    body: String,
    link: Option<&str>,
) -> NewMail {
    let sendable = state.settings.smtp_url.is_some();
    NewMail {
        id: ulid::Ulid::new().to_string(),
        tenant: Some(tenant.clone()),
        account: account.cloned(),
        kind: kind.to_owned(),
        to: to.to_owned(),
        subject,
        body,
        link: if sendable {
            link.map(str::to_owned)
        } else {
            None
        },
        status: if sendable {
            MailStatus::Pending
        } else {
            MailStatus::Unsent
        },
        created_at: state.now(),
    }
}

fn label(a: &Account) -> String {
    a.name
        .clone()
        .filter(|n| !n.trim().is_empty())
        .or_else(|| a.email.clone())
        .or_else(|| a.username.clone())
        .unwrap_or_else(|| a.id.to_string())
}

async fn account(state: &AppState, id: &AccountId) -> Option<Account> {
    state.directory.get_account(id).await.ok().flatten()
}

/// The mail a guardian gets when their access to `family` ends.
fn revoked_mail(
    state: &AppState,
    who: &Account,
    family: &str,
    why: &str,
    kind: &str,
) -> Option<NewMail> {
    let to = who.email.as_deref()?;
    Some(mail_to(
        state,
        &who.tenant,
        Some(&who.id),
        to,
        kind,
        format!("Your access to the family {family} has changed"),
        format!("Hello,\n\n{why}\n\nIf you think this is a mistake, contact the school.\n"),
        None,
    ))
}

// ---------------------------------------------------------------------------------------
// The gate and the claims
// ---------------------------------------------------------------------------------------

/// What [`gate`] decided.
pub enum Gate {
    /// Issue the code, carrying this family (if any).
    Go(Option<String>),
    /// Show this page (a guardian page to act on, or a refusal) instead.
    Stop(Response),
}

fn sel_key(session_hash: &str) -> String {
    format!("famsel:{session_hash}")
}

/// The family selected for this SSO session, if any.
async fn selected(state: &AppState, session_hash: &str) -> Option<String> {
    state
        .sessions
        .get_json::<String>(&sel_key(session_hash))
        .await
        .ok()
        .flatten()
}

async fn live_memberships(
    state: &AppState,
    account: &AccountId,
    tenant: &TenantId,
) -> Result<Vec<Membership>, DirectoryError> {
    Ok(state
        .directory
        .memberships_of(account)
        .await?
        .into_iter()
        .filter(|m| &m.family.tenant == tenant)
        .collect())
}

/// The current policies of the tenant the family's primary has not accepted.
async fn pending_policies(
    state: &AppState,
    m: &Membership,
) -> Result<Vec<RequiredPolicy>, DirectoryError> {
    let required = state.settings.family.policies_for(&m.family.tenant);
    if required.is_empty() {
        return Ok(Vec::new());
    }
    let accepted = state
        .directory
        .accepted_family_policies(&m.family.id, &m.family.primary)
        .await?;
    Ok(required
        .iter()
        .filter(|p| {
            !accepted
                .iter()
                .any(|(n, v)| n == &p.name && v == &p.version)
        })
        .cloned()
        .collect())
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Sends the browser to a family page that comes back to `req` (`/family/continue`). The
/// request is (re)stored: a request satisfied by a live SSO session was never stored.
async fn send_to(state: &AppState, req: &AuthRequest, path: &str) -> Gate {
    if let Err(e) = flows(state).put_auth_request(req).await {
        let ctx = PageCtx::default().app(req.client_id.as_str());
        return Gate::Stop(refuse(
            state,
            &req.ref_id,
            &Refusal::new(LoginError::Internal, format!("session store: {e}")),
            &ctx,
            Ev::default(),
        ));
    }
    Gate::Stop(respond::redirect(
        StatusCode::SEE_OTHER,
        &format!("{path}?req={}", enc(&req.id)),
    ))
}

/// The family checks before a code is issued (see the module docs).
pub async fn gate(
    state: &AppState,
    req: &AuthRequest,
    session_hash: &str,
    session: &SsoSession,
) -> Gate {
    let ctx = PageCtx::default().app(req.client_id.as_str());
    let ev = Ev {
        tenant: Some(req.tenant.clone()),
        client: Some(req.client_id.clone()),
        account: Some(session.account.clone()),
        ..Default::default()
    };
    let internal = |e: DirectoryError, ev: Ev| {
        Gate::Stop(refuse(
            state,
            &req.ref_id,
            &Refusal::new(LoginError::Internal, format!("directory: {e}")),
            &ctx,
            ev,
        ))
    };
    let ms = match live_memberships(state, &session.account, &req.tenant).await {
        Ok(m) => m,
        Err(e) => return internal(e, ev),
    };
    if ms.is_empty() {
        return Gate::Go(None);
    }
    if ms
        .iter()
        .any(|m| m.guardian.role == GuardianRole::Secondary)
    {
        match state.directory.adult_attested_at(&session.account).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                audit::record(state, Some(&req.ref_id), "family.attestation_asked", ev);
                return send_to(state, req, "/family/attest").await;
            }
            Err(e) => return internal(e, ev),
        }
    }
    if !req.scope.iter().any(|s| s == FAMILY_SCOPE) {
        return Gate::Go(None);
    }
    let chosen = selected(state, session_hash).await;
    let m = match chosen.and_then(|c| ms.iter().find(|m| m.family.id == c)) {
        Some(m) => m,
        None if ms.len() == 1 => &ms[0],
        None => return send_to(state, req, "/family/switch").await,
    };
    let pending = match pending_policies(state, m).await {
        Ok(p) => p,
        Err(e) => return internal(e, ev),
    };
    if !pending.is_empty() {
        if m.guardian.role == GuardianRole::Primary {
            return send_to(state, req, "/family").await;
        }
        let primary = account(state, &m.family.primary)
            .await
            .map(|a| label(&a))
            .unwrap_or_else(|| "the primary guardian".into());
        return Gate::Stop(refuse(
            state,
            &req.ref_id,
            &Refusal::new(
                LoginError::FamilyPoliciesPending { primary },
                format!(
                    "family {}: primary {} has not accepted {}",
                    m.family.id,
                    m.family.primary,
                    pending
                        .iter()
                        .map(|p| format!("{} v{}", p.name, p.version))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            &ctx,
            ev,
        ));
    }
    Gate::Go(Some(m.family.id.clone()))
}

/// The `families` (and, when one is selected and still live, `family_id`) claims, when
/// `scope` holds `family`. Computed fresh for every token and userinfo answer, so a
/// revoked guardian loses the family at the next refresh.
pub async fn claims(
    state: &AppState,
    account: &Account,
    scope: &[String],
    selected: Option<&str>,
) -> Result<serde_json::Map<String, Value>, DirectoryError> {
    let mut out = serde_json::Map::new();
    if !scope.iter().any(|s| s == FAMILY_SCOPE) {
        return Ok(out);
    }
    let ms = live_memberships(state, &account.id, &account.tenant).await?;
    let mut list = Vec::with_capacity(ms.len());
    let mut selected_live = None;
    for m in &ms {
        let students: Vec<String> = state
            .directory
            .family_students(&m.family.id)
            .await?
            .into_iter()
            .map(|s| s.account.to_string())
            .collect();
        let is_selected = selected == Some(m.family.id.as_str());
        if is_selected {
            selected_live = Some(m.family.id.clone());
        }
        list.push(json!({
            "id": m.family.id,
            "name": m.family.name,
            "role": m.guardian.role.as_str(),
            "access": m.guardian.access.as_str(),
            "selected": is_selected,
            "students": students,
        }));
    }
    out.insert("families".into(), Value::Array(list));
    if let Some(f) = selected_live {
        out.insert("family_id".into(), json!(f));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Staff actions (the admin API calls these)
// ---------------------------------------------------------------------------------------

/// Revokes a secondary guardian; both the secondary and the primary are emailed (in the
/// same transaction). `by`: `account:<id>` of the primary or the staff actor.
pub async fn revoke_secondary(
    state: &AppState,
    family: &str,
    secondary: &AccountId,
    by: &str,
) -> Result<Guardian, FamilyError> {
    let f = state
        .directory
        .get_family(family)
        .await?
        .ok_or(FamilyError::NoFamily)?;
    let who = account(state, secondary)
        .await
        .ok_or(FamilyError::NotSecondary)?;
    let primary = account(state, &f.primary).await;
    let mut mails = Vec::new();
    mails.extend(revoked_mail(
        state,
        &who,
        &f.name,
        &format!(
            "Your view-only access to the family {} in Homeroom was removed.",
            f.name
        ),
        "family_revoked",
    ));
    if let Some(p) = &primary {
        mails.extend(revoked_mail(
            state,
            p,
            &f.name,
            &format!(
                "{} no longer has access to your family {} in Homeroom.",
                label(&who),
                f.name
            ),
            "family_revoked_notice",
        ));
    }
    let g = state
        .directory
        .revoke_secondary(family, secondary, by, state.now(), &mails)
        .await?
        .ok_or(FamilyError::NotSecondary)?;
    audit::record(
        state,
        None,
        "family.secondary_revoked",
        Ev {
            tenant: Some(f.tenant.clone()),
            account: Some(secondary.clone()),
            ..Default::default()
        }
        .detail(json!({"family": f.id, "by": by, "mailed": mails.len()})),
    );
    Ok(g)
}

/// Makes `new_primary` the family's primary guardian: every guardian's access is revoked
/// (the new primary must invite again), pending invitations are revoked, and everyone
/// affected (each revoked guardian and the new primary) is emailed, in one transaction.
pub async fn change_primary(
    state: &AppState,
    family: &str,
    new_primary: &AccountId,
    by: &str,
) -> Result<Vec<Guardian>, FamilyError> {
    // A merged family has no primary to change: it lives on only as a record.
    let f = state
        .directory
        .get_family(family)
        .await?
        .filter(|f| f.merged_into.is_none())
        .ok_or(FamilyError::NoFamily)?;
    let np = match account(state, new_primary).await {
        Some(a) if a.tenant == f.tenant => a,
        _ => return Err(FamilyError::NoAccount),
    };
    if &f.primary == new_primary {
        return Err(FamilyError::AlreadyPrimary);
    }
    // Everyone who may be affected, read before the transaction (mail texts need names).
    let mut people: HashMap<AccountId, Account> = HashMap::new();
    for g in state.directory.family_guardians(family, false).await? {
        if let Some(a) = account(state, &g.account).await {
            people.insert(g.account.clone(), a);
        }
    }
    let np_for_mail = np.clone();
    let fname = f.name.clone();
    let st = state.clone();
    let revoked = state
        .directory
        .change_family_primary(family, new_primary, by, state.now(), move |revoked| {
            let mut mails = Vec::new();
            for g in revoked {
                if g.account == np_for_mail.id {
                    continue;
                }
                if let Some(a) = people.get(&g.account) {
                    mails.extend(revoked_mail(
                        &st,
                        a,
                        &fname,
                        &format!(
                            "The primary guardian of the family {fname} changed to {}. Your access to the family was removed; the new primary guardian can invite you again.",
                            label(&np_for_mail)
                        ),
                        "family_primary_changed",
                    ));
                }
            }
            mails.extend(revoked_mail(
                &st,
                &np_for_mail,
                &fname,
                &format!(
                    "You are now the primary guardian of the family {fname} in Homeroom. Every other guardian's access was removed: invite them again from your family page ({}).",
                    st.settings.url("/family")
                ),
                "family_primary_changed",
            ));
            mails
        })
        .await
        .map_err(|e| match e {
            DirectoryError::Invalid(_) => FamilyError::AlreadyPrimary,
            e => FamilyError::Directory(e),
        })?;
    audit::record(
        state,
        None,
        "family.primary_changed",
        Ev {
            tenant: Some(f.tenant.clone()),
            account: Some(new_primary.clone()),
            ..Default::default()
        }
        .detail(json!({
            "family": f.id, "by": by, "old_primary": f.primary,
            "revoked": revoked.iter().map(|g| g.account.as_str()).collect::<Vec<_>>(),
        })),
    );
    Ok(revoked)
}

/// Merges family `from` into `into` (staff): learners move, `from`'s guardians (its primary
/// too) and `into`'s secondaries lose access, `into`'s primary stays and invites again;
/// everyone affected is emailed (in the merge's transaction). The revoked memberships.
pub async fn merge(
    state: &AppState,
    from: &str,
    into: &str,
    by: &str,
) -> Result<Vec<Guardian>, FamilyError> {
    let f = state
        .directory
        .get_family(from)
        .await?
        .filter(|f| f.merged_into.is_none())
        .ok_or(FamilyError::NoFamily)?;
    let i = state
        .directory
        .get_family(into)
        .await?
        .filter(|i| i.merged_into.is_none() && i.tenant == f.tenant && i.id != f.id)
        .ok_or(FamilyError::NoFamily)?;
    let mut people: HashMap<AccountId, Account> = HashMap::new();
    for g in state
        .directory
        .family_guardians(from, false)
        .await?
        .into_iter()
        .chain(state.directory.family_guardians(into, false).await?)
    {
        if let Some(a) = account(state, &g.account).await {
            people.insert(g.account.clone(), a);
        }
    }
    let primary = people.get(&i.primary).cloned();
    let (from_name, into_name) = (f.name.clone(), i.name.clone());
    let st = state.clone();
    let revoked = state
        .directory
        .merge_families(from, into, by, state.now(), move |revoked| {
            let mut mails = Vec::new();
            for g in revoked {
                if let Some(a) = people.get(&g.account) {
                    mails.extend(revoked_mail(
                        &st,
                        a,
                        &from_name,
                        &format!(
                            "The school merged the family {from_name} into {into_name}. Your access was removed; the primary guardian of {into_name} can invite you again."
                        ),
                        "family_merged",
                    ));
                }
            }
            if let Some(p) = &primary {
                mails.extend(revoked_mail(
                    &st,
                    p,
                    &into_name,
                    &format!(
                        "The school merged the family {from_name} into your family {into_name}. Its learners are now in your family, and every other guardian's access was removed: invite them again from your family page ({}).",
                        st.settings.url("/family")
                    ),
                    "family_merged",
                ));
            }
            mails
        })
        .await?;
    audit::record(
        state,
        None,
        "family.merged",
        Ev {
            tenant: Some(f.tenant.clone()),
            ..Default::default()
        }
        .detail(json!({
            "from": f.id, "into": i.id, "by": by,
            "revoked": revoked.iter().map(|g| g.account.as_str()).collect::<Vec<_>>(),
        })),
    );
    Ok(revoked)
}

/// Sends a reset-password link to one guardian of the family (their own email address).
pub async fn reset_guardian(
    state: &AppState,
    family: &str,
    guardian: &AccountId,
    by: &str,
) -> Result<local::IssuedLink, FamilyError> {
    let gs = state.directory.family_guardians(family, false).await?;
    if !gs.iter().any(|g| &g.account == guardian) {
        return Err(FamilyError::NotGuardian);
    }
    Ok(local::issue_reset(state, guardian, by).await?)
}

// ---------------------------------------------------------------------------------------
// Parent access codes
// ---------------------------------------------------------------------------------------

const CODE_ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/// A fresh 12-character code, shown as `XXXX-XXXX-XXXX` (60 bits).
fn new_parent_code() -> Result<String, FamilyError> {
    let bytes = crypto::random_bytes(12).map_err(|_| FamilyError::Random)?;
    let chars: Vec<char> = bytes
        .iter()
        .map(|b| char::from(CODE_ALPHABET[usize::from(b % 32)]))
        .collect();
    Ok(chars
        .chunks(4)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-"))
}

/// The canonical form a code is hashed in: upper case, no dashes or spaces.
fn normalise_code(code: &str) -> String {
    code.chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .flat_map(char::to_uppercase)
        .collect()
}

fn code_hash(code: &str) -> String {
    sha256_hex(&format!("parent-code:{}", normalise_code(code)))
}

fn seal_binding(learner: &AccountId) -> AccountId {
    AccountId::new(format!("parent-code:{learner}"))
}

/// The learner's current parent access code for the classroom CSV: the usable one, or a
/// new one (valid for the tenant's period). Codes are shown again only when the classroom
/// key is configured (they are sealed with it); without it the column stays empty.
pub async fn parent_code_for_csv(state: &AppState, learner: &AccountId, by: &str) -> String {
    match current_or_new_code(state, learner, by).await {
        Ok(c) => c.unwrap_or_default(),
        Err(e) => {
            tracing::warn!(error = %e, "parent access code unavailable");
            String::new()
        }
    }
}

async fn current_or_new_code(
    state: &AppState,
    learner: &AccountId,
    by: &str,
) -> Result<Option<String>, FamilyError> {
    let Some(key) = state.settings.classroom.key.as_ref() else {
        return Ok(None);
    };
    let a = account(state, learner)
        .await
        .ok_or(FamilyError::NoAccount)?;
    let now = state.now();
    if let Some(c) = state.directory.usable_parent_code(learner, now).await?
        && let Some(sealed) = &c.code_enc
        && let Ok(code) = crate::classroom::open(key, &seal_binding(learner), sealed)
    {
        return Ok(Some(code));
    }
    let code = new_parent_code()?;
    let sealed = crate::classroom::seal(key, &seal_binding(learner), &code)
        .map_err(|_| FamilyError::Random)?;
    state
        .directory
        .put_parent_code(&ParentCode {
            code_hash: code_hash(&code),
            tenant: a.tenant.clone(),
            account: learner.clone(),
            code_enc: Some(sealed),
            created_at: now,
            created_by: by.to_owned(),
            expires_at: now + state.settings.family.parent_code_ttl_secs(&a.tenant),
            used_at: None,
            used_by: None,
            revoked_at: None,
        })
        .await?;
    audit::record(
        state,
        None,
        "family.parent_code_issued",
        Ev {
            tenant: Some(a.tenant.clone()),
            account: Some(learner.clone()),
            ..Default::default()
        }
        .detail(json!({"by": by})),
    );
    Ok(Some(code))
}

/// Issues a new parent access code for a learner (replacing the old one); the code, shown
/// once. For tools and tests; teachers get codes through the classroom CSV.
pub async fn issue_parent_code(
    state: &AppState,
    learner: &AccountId,
    by: &str,
) -> Result<String, FamilyError> {
    let a = account(state, learner)
        .await
        .ok_or(FamilyError::NoAccount)?;
    let code = new_parent_code()?;
    let now = state.now();
    let sealed = match state.settings.classroom.key.as_ref() {
        Some(k) => Some(
            crate::classroom::seal(k, &seal_binding(learner), &code)
                .map_err(|_| FamilyError::Random)?,
        ),
        None => None,
    };
    state
        .directory
        .put_parent_code(&ParentCode {
            code_hash: code_hash(&code),
            tenant: a.tenant.clone(),
            account: learner.clone(),
            code_enc: sealed,
            created_at: now,
            created_by: by.to_owned(),
            expires_at: now + state.settings.family.parent_code_ttl_secs(&a.tenant),
            used_at: None,
            used_by: None,
            revoked_at: None,
        })
        .await?;
    audit::record(
        state,
        None,
        "family.parent_code_issued",
        Ev {
            tenant: Some(a.tenant.clone()),
            account: Some(learner.clone()),
            ..Default::default()
        }
        .detail(json!({"by": by})),
    );
    Ok(code)
}

// ---------------------------------------------------------------------------------------
// Pages
// ---------------------------------------------------------------------------------------

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/family", get(home))
        .route("/family/invite", post(invite_submit))
        .route("/family/invite/{token}", get(join_form))
        .route("/family/join", post(join_submit))
        .route("/family/revoke", post(revoke_submit))
        .route("/family/policies", post(policies_submit))
        .route("/family/switch", get(switch_form).post(switch_submit))
        .route("/family/attest", get(attest_form).post(attest_submit))
        .route("/family/link", get(link_form).post(link_submit))
        .route("/family/continue", get(continue_to_app))
}

struct PendingView {
    name: String,
    version: String,
    url: String,
}

struct GuardianView {
    account: String,
    label: String,
    role: &'static str,
    removable: bool,
}

struct FamilyView {
    id: String,
    name: String,
    role: &'static str,
    access_text: &'static str,
    selected: bool,
    is_primary: bool,
    blocked: String,
    guardians: Vec<GuardianView>,
    students: Vec<String>,
    pending: Vec<PendingView>,
}

#[derive(Template)]
#[template(path = "family.html")]
struct HomePage<'a> {
    notice: &'a str,
    continue_href: &'a str,
    csrf: &'a str,
    req: &'a str,
    families: Vec<FamilyView>,
}

#[derive(Template)]
#[template(path = "family_attest.html")]
struct AttestPage<'a> {
    csrf: &'a str,
    req: &'a str,
}

struct SwitchOption {
    id: String,
    name: String,
    role: &'static str,
    selected: bool,
}

#[derive(Template)]
#[template(path = "family_switch.html")]
struct SwitchPage<'a> {
    csrf: &'a str,
    req: &'a str,
    options: Vec<SwitchOption>,
}

#[derive(Template)]
#[template(path = "family_link.html")]
struct LinkPage<'a> {
    csrf: &'a str,
}

#[derive(Template)]
#[template(path = "family_join.html")]
struct JoinPage<'a> {
    family: &'a str,
    inviter: &'a str,
    email: &'a str,
    who: &'a str,
    csrf: &'a str,
    token: &'a str,
}

#[derive(Template)]
#[template(path = "local_set_password.html")]
struct NewGuardianPage<'a> {
    heading: &'a str,
    who: &'a str,
    notice: &'a str,
    action: &'a str,
    csrf: &'a str,
    token: &'a str,
    min_len: usize,
}

#[derive(Deserialize, Default)]
struct PageQuery {
    req: Option<String>,
    done: Option<String>,
}

/// A signed-in guardian: the session, its hash and the account.
struct Signed {
    hash: String,
    account: Account,
}

fn fail(state: &AppState, err: LoginError, detail: &str, ev: Ev, headers: &HeaderMap) -> Response {
    let ctx = PageCtx::from_headers(headers).retry("/family", "Back to your families");
    refuse(
        state,
        &RefId::generate(),
        &Refusal::new(err, detail),
        &ctx,
        ev,
    )
}

fn internal(state: &AppState, headers: &HeaderMap, e: impl std::fmt::Display) -> Response {
    fail(
        state,
        LoginError::Internal,
        &e.to_string(),
        Ev::default(),
        headers,
    )
}

/// The signed-in account, or the page to show instead.
async fn signed_in(state: &AppState, headers: &HeaderMap) -> Result<Option<Signed>, Response> {
    let s = pipeline::current_session(state, headers)
        .await
        .map_err(|r| {
            refuse(
                state,
                &RefId::generate(),
                &r,
                &PageCtx::from_headers(headers),
                Ev::default(),
            )
        })?;
    let Some((hash, session)) = s else {
        return Ok(None);
    };
    match state.directory.get_account(&session.account).await {
        Ok(Some(a)) if a.status == AccountStatus::Active => Ok(Some(Signed { hash, account: a })),
        Ok(_) => Ok(None),
        Err(e) => Err(internal(state, headers, e)),
    }
}

async fn require_signed_in(state: &AppState, headers: &HeaderMap) -> Result<Signed, Response> {
    match signed_in(state, headers).await? {
        Some(s) => Ok(s),
        None => Err(fail(
            state,
            LoginError::FamilySignInRequired,
            "family page without a live session",
            Ev::default(),
            headers,
        )),
    }
}

fn ev_of(a: &Account) -> Ev {
    Ev {
        tenant: Some(a.tenant.clone()),
        account: Some(a.id.clone()),
        ..Default::default()
    }
}

fn bad_csrf(state: &AppState, headers: &HeaderMap, what: &str) -> Response {
    fail(
        state,
        LoginError::Csrf,
        &format!("{what} POST without a valid CSRF token or from another origin"),
        Ev::default(),
        headers,
    )
}

/// A secondary who has not attested yet goes to the attestation page first.
async fn needs_attestation(state: &AppState, s: &Signed) -> Result<bool, DirectoryError> {
    let ms = live_memberships(state, &s.account.id, &s.account.tenant).await?;
    Ok(ms
        .iter()
        .any(|m| m.guardian.role == GuardianRole::Secondary)
        && state
            .directory
            .adult_attested_at(&s.account.id)
            .await?
            .is_none())
}

fn notice_for(done: Option<&str>) -> &'static str {
    match done {
        Some("invited") => "Invitation sent.",
        Some("revoked") => "Access removed. Both of you were emailed.",
        Some("accepted") => "Thank you: the policies are accepted.",
        Some("switched") => "Family switched.",
        Some("joined") => "You joined the family (view-only access).",
        Some("linked") => "The learner was added to your family.",
        _ => "",
    }
}

fn req_param(req: &str) -> String {
    req.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        .take(128)
        .collect()
}

/// GET `/family`.
async fn home(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Response {
    let s = match require_signed_in(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let req = req_param(q.req.as_deref().unwrap_or(""));
    match needs_attestation(&state, &s).await {
        Ok(true) => {
            return respond::redirect(
                StatusCode::SEE_OTHER,
                &format!("/family/attest?req={}", enc(&req)),
            );
        }
        Ok(false) => {}
        Err(e) => return internal(&state, &headers, e),
    }
    let ms = match live_memberships(&state, &s.account.id, &s.account.tenant).await {
        Ok(m) => m,
        Err(e) => return internal(&state, &headers, e),
    };
    let chosen = selected(&state, &s.hash).await;
    let mut views = Vec::with_capacity(ms.len());
    let mut anything_pending = false;
    for m in &ms {
        let view = match family_view(&state, &s, m, chosen.as_deref(), ms.len()).await {
            Ok(v) => v,
            Err(e) => return internal(&state, &headers, e),
        };
        anything_pending |= !view.pending.is_empty() || !view.blocked.is_empty();
        views.push(view);
    }
    let Some((csrf, fresh)) = local::csrf_token(&state, &headers) else {
        return internal(&state, &headers, "randomness unavailable");
    };
    let continue_href = if !req.is_empty() && !anything_pending {
        format!("/family/continue?req={}", enc(&req))
    } else {
        String::new()
    };
    let resp = html(
        StatusCode::OK,
        &HomePage {
            notice: notice_for(q.done.as_deref()),
            continue_href: &continue_href,
            csrf: &csrf,
            req: &req,
            families: views,
        },
    );
    local::with_csrf(&state, resp, &csrf, fresh)
}

async fn family_view(
    state: &AppState,
    s: &Signed,
    m: &Membership,
    chosen: Option<&str>,
    count: usize,
) -> Result<FamilyView, DirectoryError> {
    let is_primary = m.guardian.role == GuardianRole::Primary;
    let mut guardians = Vec::new();
    for g in state
        .directory
        .family_guardians(&m.family.id, false)
        .await?
    {
        let a = account(state, &g.account).await;
        guardians.push(GuardianView {
            account: g.account.to_string(),
            label: a
                .as_ref()
                .map(label)
                .unwrap_or_else(|| g.account.to_string()),
            role: g.role.as_str(),
            removable: is_primary && g.role == GuardianRole::Secondary,
        });
    }
    let mut students = Vec::new();
    for st in state.directory.family_students(&m.family.id).await? {
        students.push(
            account(state, &st.account)
                .await
                .map(|a| label(&a))
                .unwrap_or_else(|| st.account.to_string()),
        );
    }
    let pending = pending_policies(state, m).await?;
    let blocked = if !is_primary && !pending.is_empty() {
        let p = account(state, &m.family.primary)
            .await
            .map(|a| label(&a))
            .unwrap_or_default();
        format!(
            "Your access is paused: the primary guardian ({p}) must accept the school's family policies first."
        )
    } else {
        String::new()
    };
    let _ = s;
    Ok(FamilyView {
        id: m.family.id.clone(),
        name: m.family.name.clone(),
        role: m.guardian.role.as_str(),
        access_text: if is_primary {
            "full access"
        } else {
            "view-only access"
        },
        selected: chosen == Some(m.family.id.as_str()) || (chosen.is_none() && count == 1),
        is_primary,
        blocked,
        guardians,
        students,
        pending: if is_primary {
            pending
                .into_iter()
                .map(|p| PendingView {
                    name: p.name,
                    version: p.version,
                    url: p.url,
                })
                .collect()
        } else {
            Vec::new()
        },
    })
}

/// The form of a POST, checked for CSRF, with the signed-in guardian.
async fn posted(
    state: &AppState,
    request: Request,
    what: &str,
) -> Result<(HeaderMap, HashMap<String, String>, Signed), Response> {
    let (headers, form) = local::read_form(request).await;
    let form = match form {
        Ok(f) => f,
        Err(reason) => {
            return Err(fail(
                state,
                LoginError::InvalidAuthRequest { reason },
                "family form unreadable",
                Ev::default(),
                &headers,
            ));
        }
    };
    let token = form.get("csrf").map(String::as_str).unwrap_or("");
    if !local::csrf_ok(state, &headers, token) {
        return Err(bad_csrf(state, &headers, what));
    }
    let s = require_signed_in(state, &headers).await?;
    Ok((headers, form, s))
}

/// The live membership of `s` in `family`, or the refusal page.
async fn membership(
    state: &AppState,
    headers: &HeaderMap,
    s: &Signed,
    family: &str,
    primary_only: bool,
) -> Result<Membership, Response> {
    let ms = live_memberships(state, &s.account.id, &s.account.tenant)
        .await
        .map_err(|e| internal(state, headers, e))?;
    let Some(m) = ms.into_iter().find(|m| m.family.id == family) else {
        return Err(fail(
            state,
            LoginError::FamilyNotMember,
            &format!("no live membership of family {family:?}"),
            ev_of(&s.account),
            headers,
        ));
    };
    if primary_only && m.guardian.role != GuardianRole::Primary {
        return Err(fail(
            state,
            LoginError::FamilyNotPrimary,
            &format!("secondary guardian tried a primary action on family {family}"),
            ev_of(&s.account),
            headers,
        ));
    }
    Ok(m)
}

fn valid_email(e: &str) -> bool {
    let e = e.trim();
    e.len() <= 320
        && e.split_once('@').is_some_and(|(l, d)| {
            !l.is_empty() && d.contains('.') && !d.starts_with('.') && !d.ends_with('.')
        })
        && !e.chars().any(|c| c.is_whitespace() || c.is_control())
        && e.matches('@').count() == 1
}

/// POST `/family/invite`: the primary invites a secondary by email.
async fn invite_submit(State(state): State<AppState>, request: Request) -> Response {
    let (headers, form, s) = match posted(&state, request, "family invitation").await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let m = match membership(&state, &headers, &s, field("family"), true).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    let email = homeroom_directory::normalise_email(field("email"));
    let refused = |reason: &str| {
        fail(
            &state,
            LoginError::FamilyInviteRefused {
                reason: reason.to_owned(),
            },
            reason,
            ev_of(&s.account),
            &headers,
        )
    };
    if !valid_email(&email) {
        return refused("that does not look like an email address.");
    }
    if s.account.email.as_deref() == Some(email.as_str()) {
        return refused("you cannot invite yourself.");
    }
    match state.directory.family_guardians(&m.family.id, false).await {
        Ok(gs) => {
            for g in gs {
                if account(&state, &g.account)
                    .await
                    .is_some_and(|a| a.email.as_deref() == Some(email.as_str()))
                {
                    return refused("that person is already a guardian of this family.");
                }
            }
        }
        Err(e) => return internal(&state, &headers, e),
    }
    let Ok(token) = crypto::random_token(32) else {
        return internal(&state, &headers, "randomness unavailable");
    };
    let url = state.settings.url(&format!("/family/invite/{token}"));
    let body = format!(
        "Hello,\n\n{} invited you to see the family {} in Homeroom (view-only access). Open this link to accept:\n\n{LINK_MARKER}\n\nThe link does not expire and works once. If you already have a Homeroom account, sign in first; otherwise the link lets you choose a password.\n\nIf you did not expect this, you can ignore this email.\n",
        label(&s.account),
        m.family.name
    );
    let mail = mail_to(
        &state,
        &m.family.tenant,
        None,
        &email,
        "family_invitation",
        format!("Invitation to the family {} in Homeroom", m.family.name),
        body,
        Some(&url),
    );
    let inv = FamilyInvitation {
        token_hash: sha256_hex(&token),
        family: m.family.id.clone(),
        tenant: m.family.tenant.clone(),
        email: email.clone(),
        invited_by: s.account.id.clone(),
        created_at: state.now(),
        used_at: None,
        used_by: None,
        revoked_at: None,
    };
    if let Err(e) = state
        .directory
        .create_family_invitation(&inv, Some(&mail))
        .await
    {
        return internal(&state, &headers, e);
    }
    audit::record(
        &state,
        None,
        "family.invited",
        ev_of(&s.account).detail(json!({"family": m.family.id, "email": email, "mail": mail.id})),
    );
    respond::redirect(StatusCode::SEE_OTHER, "/family?done=invited")
}

async fn invitation(
    state: &AppState,
    headers: &HeaderMap,
    token: &str,
) -> Result<FamilyInvitation, Response> {
    let invalid = |detail: &str| {
        fail(
            state,
            LoginError::FamilyInviteInvalid,
            detail,
            Ev::default(),
            headers,
        )
    };
    if !local::token_ok(token) {
        return Err(invalid("malformed family invitation token"));
    }
    match state
        .directory
        .family_invitation_by_hash(&sha256_hex(token))
        .await
    {
        Ok(Some(i)) if i.usable() => Ok(i),
        Ok(Some(i)) if i.revoked_at.is_some() => Err(invalid(
            "family invitation revoked (the family's primary guardian changed)",
        )),
        Ok(Some(_)) => Err(invalid("family invitation already used")),
        Ok(None) => Err(invalid("unknown family invitation token")),
        Err(e) => Err(internal(state, headers, e)),
    }
}

/// GET `/family/invite/{token}`.
async fn join_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Response {
    let inv = match invitation(&state, &headers, &token).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    let Some((csrf, fresh)) = local::csrf_token(&state, &headers) else {
        return internal(&state, &headers, "randomness unavailable");
    };
    let family = state
        .directory
        .get_family(&inv.family)
        .await
        .ok()
        .flatten()
        .map(|f| f.name)
        .unwrap_or_default();
    let signed = match signed_in(&state, &headers).await {
        Ok(s) => s.filter(|s| s.account.tenant == inv.tenant),
        Err(r) => return r,
    };
    let resp = if let Some(s) = signed {
        let inviter = account(&state, &inv.invited_by)
            .await
            .map(|a| label(&a))
            .unwrap_or_default();
        html(
            StatusCode::OK,
            &JoinPage {
                family: &family,
                inviter: &inviter,
                email: &inv.email,
                who: &label(&s.account),
                csrf: &csrf,
                token: &token,
            },
        )
    } else {
        let existing = match state
            .directory
            .find_accounts_by_email(&inv.tenant, &inv.email)
            .await
        {
            Ok(v) => !v.is_empty(),
            Err(e) => return internal(&state, &headers, e),
        };
        if existing {
            let href = format!(
                "/login/password?tenant={}&login={}",
                enc(inv.tenant.as_str()),
                enc(&inv.email)
            );
            return crate::pages::message(
                StatusCode::OK,
                "Sign in to accept",
                &format!(
                    "{} already has a Homeroom account. Sign in with it, then open the invitation link again to join the family {family}.",
                    inv.email
                ),
                Some((&href, "Sign in")),
            );
        }
        html(
            StatusCode::OK,
            &NewGuardianPage {
                heading: &format!("Join the family {family}: choose your password"),
                who: &inv.email,
                notice: "",
                action: "/family/join",
                csrf: &csrf,
                token: &token,
                min_len: state.settings.local.min_password_chars,
            },
        )
    };
    local::with_csrf(&state, resp, &csrf, fresh)
}

/// POST `/family/join`: uses the invitation for the signed-in account, or creates the
/// invited guardian's local account with the chosen password.
async fn join_submit(State(state): State<AppState>, request: Request) -> Response {
    let (headers, form) = local::read_form(request).await;
    let form = form.unwrap_or_default();
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    if !local::csrf_ok(&state, &headers, field("csrf")) {
        return bad_csrf(&state, &headers, "family join");
    }
    let token = field("token");
    let inv = match invitation(&state, &headers, token).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    let signed = match signed_in(&state, &headers).await {
        Ok(s) => s.filter(|s| s.account.tenant == inv.tenant),
        Err(r) => return r,
    };
    let hash = sha256_hex(token);
    let now = state.now();
    let (account_id, outcome, new) = if let Some(s) = &signed {
        (
            s.account.id.clone(),
            state
                .directory
                .use_family_invitation(&hash, &s.account.id, None, now)
                .await,
            false,
        )
    } else {
        match state
            .directory
            .find_accounts_by_email(&inv.tenant, &inv.email)
            .await
        {
            Ok(v) if v.is_empty() => {}
            Ok(_) => {
                return fail(
                    &state,
                    LoginError::FamilySignInRequired,
                    "invited address has an account: sign in before joining",
                    Ev::default(),
                    &headers,
                );
            }
            Err(e) => return internal(&state, &headers, e),
        }
        let (password, confirm) = (field("password"), field("confirm"));
        if let Some(problem) = local::new_password_problem(&state, password, confirm) {
            let Some((csrf, fresh)) = local::csrf_token(&state, &headers) else {
                return internal(&state, &headers, "randomness unavailable");
            };
            let resp = html(
                StatusCode::BAD_REQUEST,
                &NewGuardianPage {
                    heading: "Join the family: choose your password",
                    who: &inv.email,
                    notice: &format!("We can't use that password: {problem}"),
                    action: "/family/join",
                    csrf: &csrf,
                    token,
                    min_len: state.settings.local.min_password_chars,
                },
            );
            return local::with_csrf(&state, resp, &csrf, fresh);
        }
        let ctx = PageCtx::from_headers(&headers);
        let phc = match local::hash_new(&state, password, &ctx, Ev::default()).await {
            Ok(h) => h,
            Err(resp) => return resp,
        };
        let a = Account {
            id: AccountId::generate(),
            tenant: inv.tenant.clone(),
            status: AccountStatus::Active,
            email: Some(inv.email.clone()),
            // The invitation link reached this mailbox.
            email_verified: true,
            name: None,
            given_name: None,
            family_name: None,
            username: None,
            roles: vec![Role::Guardian],
            created_at: now,
            last_sign_in_at: None,
            sign_in_count: 0,
        };
        (
            a.id.clone(),
            state
                .directory
                .use_family_invitation(&hash, &a.id, Some((&a, &phc)), now)
                .await,
            true,
        )
    };
    let ev = Ev {
        tenant: Some(inv.tenant.clone()),
        account: Some(account_id.clone()),
        ..Default::default()
    };
    match outcome {
        Ok(InviteUse::Joined { family }) => {
            audit::record(
                &state,
                None,
                "family.invitation_used",
                ev.detail(
                    json!({"family": family, "new_account": new, "invited_by": inv.invited_by}),
                ),
            );
            if new {
                respond::redirect(
                    StatusCode::SEE_OTHER,
                    &format!(
                        "/login/password?tenant={}&done=invited",
                        enc(inv.tenant.as_str())
                    ),
                )
            } else {
                respond::redirect(StatusCode::SEE_OTHER, "/family?done=joined")
            }
        }
        Ok(InviteUse::AlreadyMember { family }) => fail(
            &state,
            LoginError::FamilyInviteRefused {
                reason: "you are already a guardian of this family.".into(),
            },
            &format!("already a member of {family}; invitation left unused"),
            ev,
            &headers,
        ),
        Ok(other) => fail(
            &state,
            LoginError::FamilyInviteInvalid,
            &format!("invitation not usable at join: {other:?}"),
            ev,
            &headers,
        ),
        Err(DirectoryError::Conflict { what }) => fail(
            &state,
            LoginError::FamilyInviteInvalid,
            &format!("conflict at join (used concurrently?): {what}"),
            ev,
            &headers,
        ),
        Err(e) => internal(&state, &headers, e),
    }
}

/// POST `/family/revoke`: the primary removes one of their secondaries.
async fn revoke_submit(State(state): State<AppState>, request: Request) -> Response {
    let (headers, form, s) = match posted(&state, request, "family revoke").await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let m = match membership(&state, &headers, &s, field("family"), true).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    match revoke_secondary(
        &state,
        &m.family.id,
        &AccountId::new(field("account")),
        &format!("account:{}", s.account.id),
    )
    .await
    {
        Ok(_) => respond::redirect(StatusCode::SEE_OTHER, "/family?done=revoked"),
        Err(FamilyError::NotSecondary) => fail(
            &state,
            LoginError::FamilyNotMember,
            "revoke: not a live secondary of this family",
            ev_of(&s.account),
            &headers,
        ),
        Err(e) => internal(&state, &headers, e),
    }
}

/// POST `/family/policies`: the primary accepts every current policy version.
async fn policies_submit(State(state): State<AppState>, request: Request) -> Response {
    let (headers, form, s) = match posted(&state, request, "family policies").await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let m = match membership(&state, &headers, &s, field("family"), true).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    if field("accept") != "yes" {
        return fail(
            &state,
            LoginError::FamilyPoliciesPending {
                primary: label(&s.account),
            },
            "policies form sent without the acceptance box",
            ev_of(&s.account),
            &headers,
        );
    }
    let list: Vec<(String, String)> = state
        .settings
        .family
        .policies_for(&m.family.tenant)
        .iter()
        .map(|p| (p.name.clone(), p.version.clone()))
        .collect();
    match state
        .directory
        .accept_family_policies(&m.family.id, &s.account.id, &list, state.now())
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            return fail(
                &state,
                LoginError::FamilyNotPrimary,
                "policy acceptance by a non-primary",
                ev_of(&s.account),
                &headers,
            );
        }
        Err(e) => return internal(&state, &headers, e),
    }
    audit::record(
        &state,
        None,
        "family.policies_accepted",
        ev_of(&s.account).detail(json!({"family": m.family.id, "policies": list})),
    );
    let req = req_param(field("req"));
    if req.is_empty() {
        respond::redirect(StatusCode::SEE_OTHER, "/family?done=accepted")
    } else {
        respond::redirect(
            StatusCode::SEE_OTHER,
            &format!("/family/continue?req={}", enc(&req)),
        )
    }
}

/// GET `/family/switch`.
async fn switch_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Response {
    let s = match require_signed_in(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let ms = match live_memberships(&state, &s.account.id, &s.account.tenant).await {
        Ok(m) => m,
        Err(e) => return internal(&state, &headers, e),
    };
    if ms.is_empty() {
        return fail(
            &state,
            LoginError::FamilyNotMember,
            "switch page without any membership",
            ev_of(&s.account),
            &headers,
        );
    }
    let chosen = selected(&state, &s.hash).await;
    let Some((csrf, fresh)) = local::csrf_token(&state, &headers) else {
        return internal(&state, &headers, "randomness unavailable");
    };
    let req = req_param(q.req.as_deref().unwrap_or(""));
    let resp = html(
        StatusCode::OK,
        &SwitchPage {
            csrf: &csrf,
            req: &req,
            options: ms
                .iter()
                .map(|m| SwitchOption {
                    id: m.family.id.clone(),
                    name: m.family.name.clone(),
                    role: m.guardian.role.as_str(),
                    selected: chosen.as_deref() == Some(m.family.id.as_str()),
                })
                .collect(),
        },
    );
    local::with_csrf(&state, resp, &csrf, fresh)
}

/// POST `/family/switch`: remembers the family for this SSO session.
async fn switch_submit(State(state): State<AppState>, request: Request) -> Response {
    let (headers, form, s) = match posted(&state, request, "family switch").await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let m = match membership(&state, &headers, &s, field("family"), false).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    let ttl = state
        .directory
        .get_tenant(&s.account.tenant)
        .await
        .ok()
        .flatten()
        .map(|t| t.session_absolute_secs)
        .unwrap_or(43_200);
    if let Err(e) = state
        .sessions
        .put_json(
            &sel_key(&s.hash),
            &m.family.id,
            u64::try_from(ttl).unwrap_or(43_200),
        )
        .await
    {
        return internal(&state, &headers, e);
    }
    audit::record(
        &state,
        None,
        "family.switched",
        ev_of(&s.account).detail(json!({"family": m.family.id})),
    );
    let req = req_param(field("req"));
    if req.is_empty() {
        respond::redirect(StatusCode::SEE_OTHER, "/family?done=switched")
    } else {
        respond::redirect(
            StatusCode::SEE_OTHER,
            &format!("/family/continue?req={}", enc(&req)),
        )
    }
}

/// GET `/family/attest`.
async fn attest_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Response {
    if let Err(r) = require_signed_in(&state, &headers).await {
        return r;
    }
    let Some((csrf, fresh)) = local::csrf_token(&state, &headers) else {
        return internal(&state, &headers, "randomness unavailable");
    };
    let req = req_param(q.req.as_deref().unwrap_or(""));
    let resp = html(
        StatusCode::OK,
        &AttestPage {
            csrf: &csrf,
            req: &req,
        },
    );
    local::with_csrf(&state, resp, &csrf, fresh)
}

/// POST `/family/attest`: records "I am 18 or older" (with the time and address).
async fn attest_submit(
    State(state): State<AppState>,
    axum::Extension(ClientIp(ip)): axum::Extension<ClientIp>,
    request: Request,
) -> Response {
    let (headers, form, s) = match posted(&state, request, "family attestation").await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    if field("adult") != "yes" {
        return fail(
            &state,
            LoginError::FamilyAttestationRequired,
            "attestation form sent without the 18+ box",
            ev_of(&s.account),
            &headers,
        );
    }
    let ip = ip.to_string();
    if let Err(e) = state
        .directory
        .attest_adult(&s.account.id, state.now(), Some(&ip))
        .await
    {
        return internal(&state, &headers, e);
    }
    audit::record(
        &state,
        None,
        "family.attested_adult",
        ev_of(&s.account).detail(json!({"ip": ip})),
    );
    let req = req_param(field("req"));
    if req.is_empty() {
        respond::redirect(StatusCode::SEE_OTHER, "/family")
    } else {
        respond::redirect(
            StatusCode::SEE_OTHER,
            &format!("/family/continue?req={}", enc(&req)),
        )
    }
}

/// GET `/family/link`.
async fn link_form(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(r) = require_signed_in(&state, &headers).await {
        return r;
    }
    let Some((csrf, fresh)) = local::csrf_token(&state, &headers) else {
        return internal(&state, &headers, "randomness unavailable");
    };
    let resp = html(StatusCode::OK, &LinkPage { csrf: &csrf });
    local::with_csrf(&state, resp, &csrf, fresh)
}

async fn over_limit(state: &AppState, key: &str) -> Option<u64> {
    let f = &state.settings.family;
    let interval = 60_000 / f.redeem_per_minute.max(1);
    match state
        .sessions
        .backend()
        .gcra(key, interval, f.redeem_burst.max(1))
        .await
    {
        Ok(Gcra::Allowed) => None,
        Ok(Gcra::Limited { retry_after_ms }) => Some(retry_after_ms.div_ceil(1000).max(1)),
        Err(e) => {
            // Fail closed here: codes are guessable only by trying.
            tracing::warn!(error = %e, "rate limiter unavailable; code redemption refused");
            Some(60)
        }
    }
}

/// POST `/family/link`: redeems a parent access code (rate limited per guardian and per
/// address; after too many failures within an hour, the guardian waits).
async fn link_submit(
    State(state): State<AppState>,
    axum::Extension(ClientIp(ip)): axum::Extension<ClientIp>,
    request: Request,
) -> Response {
    let (headers, form, s) = match posted(&state, request, "parent access code").await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let ev = ev_of(&s.account);
    let fail_key = format!("famcode:fail:{}", s.account.id);
    let failures: i64 = state
        .sessions
        .get_json(&fail_key)
        .await
        .ok()
        .flatten()
        .unwrap_or(0);
    let too_many = |retry_after: u64, detail: &str| {
        fail(
            &state,
            LoginError::TooManyAttempts { retry_after },
            detail,
            ev.clone(),
            &headers,
        )
    };
    if failures >= state.settings.family.redeem_max_failures {
        return too_many(3600, "parent code: too many failures for this guardian");
    }
    for key in [
        format!("rl:famcode:a:{}", s.account.id),
        format!("rl:famcode:ip:{ip}"),
    ] {
        if let Some(after) = over_limit(&state, &key).await {
            return too_many(after, &format!("parent code rate limit {key}"));
        }
    }
    let code = form.get("code").map(String::as_str).unwrap_or("");
    let norm = normalise_code(code);
    let well_formed = norm.len() == 12 && norm.bytes().all(|b| CODE_ALPHABET.contains(&b));
    let outcome = if well_formed {
        let name = s
            .account
            .family_name
            .clone()
            .or_else(|| s.account.name.clone())
            .map(|n| format!("{n} family"))
            .unwrap_or_else(|| "My family".into());
        match state
            .directory
            .redeem_parent_code(&code_hash(&norm), &s.account, None, &name, state.now())
            .await
        {
            Ok(o) => o,
            Err(e) => return internal(&state, &headers, e),
        }
    } else {
        CodeUse::Unknown
    };
    match outcome {
        CodeUse::Linked {
            family,
            learner,
            created,
        } => {
            let _ = state.sessions.delete(&fail_key).await;
            audit::record(
                &state,
                None,
                "family.parent_code_used",
                ev.detail(json!({"family": family, "learner": learner, "family_created": created, "ip": ip.to_string()})),
            );
            respond::redirect(StatusCode::SEE_OTHER, "/family?done=linked")
        }
        other => {
            let n = state
                .sessions
                .backend()
                .incr(&fail_key, 1, 3600)
                .await
                .unwrap_or(failures + 1);
            let (err, why) = match other {
                CodeUse::NotPrimary => (
                    LoginError::FamilyNotPrimary,
                    "parent code: guardian is not a primary".to_owned(),
                ),
                o => (
                    LoginError::FamilyParentCodeInvalid,
                    format!("parent code refused: {o:?} (failure {n})"),
                ),
            };
            fail(&state, err, &why, ev, &headers)
        }
    }
}

/// GET `/family/continue?req=`: back to the pending authorization request after a family
/// page (the gate runs again in `issue_code`).
async fn continue_to_app(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Response {
    let req_id = req_param(q.req.as_deref().unwrap_or(""));
    let ctx = PageCtx::from_headers(&headers);
    let session = match pipeline::current_session(&state, &headers).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return fail(
                &state,
                LoginError::FamilySignInRequired,
                "continue without a session",
                Ev::default(),
                &headers,
            );
        }
        Err(r) => return refuse(&state, &RefId::generate(), &r, &ctx, Ev::default()),
    };
    let req = match flows(&state).get_auth_request(&req_id).await {
        Ok(Some(r)) if r.tenant == session.1.tenant => r,
        Ok(_) => {
            return refuse(
                &state,
                &RefId::generate(),
                &Refusal::new(
                    LoginError::FlowExpired,
                    "family continue: authorization request unknown, expired or of another tenant",
                ),
                &ctx,
                Ev::default(),
            );
        }
        Err(e) => return internal(&state, &headers, e),
    };
    pipeline::issue_code(&state, &req, &session.0, &session.1)
        .await
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_codes_are_twelve_unambiguous_characters() {
        let c = new_parent_code().unwrap();
        assert_eq!(c.len(), 14);
        let n = normalise_code(&c);
        assert_eq!(n.len(), 12);
        assert!(n.bytes().all(|b| CODE_ALPHABET.contains(&b)));
        assert_eq!(code_hash(&c.to_lowercase()), code_hash(&n));
        assert_ne!(new_parent_code().unwrap(), c);
    }

    #[test]
    fn emails_are_checked() {
        assert!(valid_email("a.b@example.com"));
        for bad in [
            "",
            "a",
            "a@b",
            "@x.org",
            "a@@x.org",
            "a b@x.org",
            "a@x.org.",
        ] {
            assert!(!valid_email(bad), "{bad}");
        }
    }

    #[test]
    fn code_ttl_has_a_default_and_tenant_overrides() {
        let mut s = FamilySettings::default();
        let t = TenantId::new("t1");
        assert_eq!(s.parent_code_ttl_secs(&t), 30 * 86_400);
        s.parent_code_ttl_days_by_tenant.insert(t.clone(), 7);
        assert_eq!(s.parent_code_ttl_secs(&t), 7 * 86_400);
    }
}
