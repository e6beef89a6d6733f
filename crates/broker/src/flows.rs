//! The ephemeral records of a login and what follows it, kept in the session store:
//! pending authorization requests, upstream hops (our `state`), SSO sessions, authorization
//! codes and token families. Secrets (session ids, codes, refresh tokens) are stored under
//! their SHA-256, so a dump of the store holds nothing usable.
//!
//! Single use is enforced with the store's atomic primitives: `take` for codes and hops
//! (of many concurrent redemptions exactly one wins, across instances) and
//! `put_if_absent` markers for refresh-token rotation and code-reuse detection.

use crate::AppState;
use homeroom_core::crypto::{self, sha256_hex};
use homeroom_core::{AccountId, ClientId, ProviderId, RefId, TenantId};
use homeroom_session::StoreError;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

fn ttl(expires_at: i64, now: i64) -> u64 {
    u64::try_from((expires_at - now).max(1)).unwrap_or(1)
}

/// A validated `/oauth2/authorize` request waiting for the user to sign in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthRequest {
    pub id: String,
    pub ref_id: RefId,
    pub client_id: ClientId,
    pub tenant: TenantId,
    pub redirect_uri: String,
    pub scope: Vec<String>,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub prompt: Vec<String>,
    pub max_age: Option<i64>,
    pub login_hint: Option<String>,
    pub idp_hint: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
}

/// One hop to an upstream provider: keyed by the `state` we sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpstreamHop {
    pub ref_id: RefId,
    pub auth_request: Option<String>,
    pub tenant: TenantId,
    pub provider: ProviderId,
    pub nonce: String,
    pub pkce_verifier: String,
    pub redirect_uri: String,
    /// SHA-256 of the value of the browser's flow cookie.
    pub binding_hash: String,
    /// A portal launch: where to send the student once signed in.
    #[serde(default)]
    pub launch: Option<Launch>,
    pub created_at: i64,
    pub expires_at: i64,
}

/// The app a tile launch is for, and the page of it the portal asked for (allowlisted).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Launch {
    pub app: ClientId,
    pub target: Option<String>,
}

/// An SSO session (the browser's sign-in at Homeroom).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SsoSession {
    pub tenant: TenantId,
    pub account: AccountId,
    pub provider: Option<ProviderId>,
    pub upstream_label: String,
    pub auth_time: i64,
    pub created_at: i64,
    pub last_seen: i64,
    pub idle_secs: i64,
    pub absolute_secs: i64,
    pub ref_id: RefId,
}

impl SsoSession {
    pub fn expires_at(&self) -> i64 {
        (self.last_seen + self.idle_secs).min(self.created_at + self.absolute_secs)
    }
}

/// An authorization code's grant.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthCode {
    pub client_id: ClientId,
    pub tenant: TenantId,
    pub redirect_uri: String,
    pub scope: Vec<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub account: AccountId,
    pub session_hash: String,
    pub auth_time: i64,
    pub ref_id: RefId,
    /// The token family the code's tokens will belong to (known before redemption, so a
    /// second redemption can revoke what the first issued).
    pub family: String,
    /// The guardian family chosen for this sign-in (see `crate::family::gate`).
    #[serde(default)]
    pub guardian_family: Option<String>,
    pub expires_at: i64,
}

/// A token family: everything issued from one code, through every refresh. Deleting the
/// record revokes the family: its access tokens go inactive and its refresh tokens fail.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Family {
    pub id: String,
    pub client_id: ClientId,
    pub tenant: TenantId,
    pub account: AccountId,
    pub session_hash: String,
    pub scope: Vec<String>,
    pub auth_time: i64,
    pub nonce: Option<String>,
    /// The guardian family chosen at sign-in, carried to every token of the family.
    #[serde(default)]
    pub guardian_family: Option<String>,
    pub expires_at: i64,
}

/// One refresh token of a family.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefreshRecord {
    pub family: String,
    pub client_id: ClientId,
    pub expires_at: i64,
}

/// Outcome of presenting a refresh token.
#[derive(Debug)]
pub enum Rotation {
    Rotated {
        family: Arc<Family>,
        new_token: String,
    },
    /// Unknown, expired, revoked or from another client.
    Invalid,
    /// A rotated token came back: the whole family was revoked.
    Reused,
    /// The request asked for scopes the family was not granted; nothing was spent.
    ScopeWidened,
}

/// Typed operations over the session store.
#[derive(Clone)]
pub struct Flows<'a> {
    state: &'a AppState,
}

pub fn flows(state: &AppState) -> Flows<'_> {
    Flows { state }
}

impl Flows<'_> {
    fn now(&self) -> i64 {
        self.state.now()
    }

    // ---- authorization requests ----
    pub async fn put_auth_request(&self, r: &AuthRequest) -> Result<(), StoreError> {
        self.state
            .sessions
            .put_json(
                &format!("authreq:{}", r.id),
                r,
                ttl(r.expires_at, self.now()),
            )
            .await
    }
    pub async fn get_auth_request(&self, id: &str) -> Result<Option<AuthRequest>, StoreError> {
        let r: Option<AuthRequest> = self
            .state
            .sessions
            .get_json(&format!("authreq:{id}"))
            .await?;
        Ok(r.filter(|r| r.expires_at > self.now()))
    }
    pub async fn delete_auth_request(&self, id: &str) -> Result<(), StoreError> {
        self.state
            .sessions
            .delete(&format!("authreq:{id}"))
            .await
            .map(|_| ())
    }

    // ---- upstream hops ----
    pub async fn put_hop(&self, state_param: &str, hop: &UpstreamHop) -> Result<(), StoreError> {
        self.state
            .sessions
            .put_json(
                &format!("flow:{state_param}"),
                hop,
                ttl(hop.expires_at, self.now()),
            )
            .await
    }
    pub async fn peek_hop(&self, state_param: &str) -> Result<Option<UpstreamHop>, StoreError> {
        self.state
            .sessions
            .get_json(&format!("flow:{state_param}"))
            .await
    }
    /// Consumes the hop (single use) and leaves a marker so a replay is recognised.
    pub async fn take_hop(&self, state_param: &str) -> Result<Option<UpstreamHop>, StoreError> {
        let hop: Option<UpstreamHop> = self
            .state
            .sessions
            .take_json(&format!("flow:{state_param}"))
            .await?;
        if hop.is_some() {
            self.state
                .sessions
                .put_json(
                    &format!("flowused:{state_param}"),
                    &true,
                    u64::try_from(self.state.settings.flow_ttl.max(1)).unwrap_or(600),
                )
                .await?;
        }
        Ok(hop)
    }
    pub async fn hop_was_used(&self, state_param: &str) -> Result<bool, StoreError> {
        Ok(self
            .state
            .sessions
            .get_json::<bool>(&format!("flowused:{state_param}"))
            .await?
            .is_some())
    }

    // ---- SSO sessions ----
    /// Creates a session and returns its raw id (for the cookie).
    pub async fn create_session(&self, s: &SsoSession) -> Result<String, StoreError> {
        let raw = crypto::random_token(32).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let key = format!("sso:{}", sha256_hex(&raw));
        self.state
            .sessions
            .put_json(&key, s, ttl(s.expires_at(), self.now()))
            .await?;
        Ok(raw)
    }

    /// Loads a live session by raw cookie value and refreshes its idle timer.
    pub async fn load_session(
        &self,
        raw: &str,
    ) -> Result<Option<(String, SsoSession)>, StoreError> {
        if raw.len() > 128 {
            return Ok(None);
        }
        let hash = sha256_hex(raw);
        let key = format!("sso:{hash}");
        let Some(mut s) = self.state.sessions.get_json::<SsoSession>(&key).await? else {
            return Ok(None);
        };
        let now = self.now();
        if s.expires_at() <= now {
            self.end_session(&hash).await?;
            return Ok(None);
        }
        if now - s.last_seen >= 30 {
            s.last_seen = now;
            self.state
                .sessions
                .put_json(&key, &s, ttl(s.expires_at(), now))
                .await?;
        }
        Ok(Some((hash, s)))
    }

    /// Mints a status token for a session (see `cookies::STATUS`).
    pub async fn status_token(
        &self,
        session_hash: &str,
        s: &SsoSession,
    ) -> Result<String, StoreError> {
        let raw = crypto::random_token(32).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let until = s.created_at + s.absolute_secs;
        self.state
            .sessions
            .put_json(
                &format!("sstat:{}", sha256_hex(&raw)),
                &session_hash,
                ttl(until, self.now()),
            )
            .await?;
        Ok(raw)
    }

    /// The session a status token belongs to; `touch` refreshes its idle timer.
    pub async fn session_by_status_token(
        &self,
        raw: &str,
        touch: bool,
    ) -> Result<Option<SsoSession>, StoreError> {
        if raw.len() > 128 {
            return Ok(None);
        }
        let Some(hash) = self
            .state
            .sessions
            .get_json::<String>(&format!("sstat:{}", sha256_hex(raw)))
            .await?
        else {
            return Ok(None);
        };
        let key = format!("sso:{hash}");
        let Some(mut s) = self.state.sessions.get_json::<SsoSession>(&key).await? else {
            return Ok(None);
        };
        let now = self.now();
        if s.expires_at() <= now {
            return Ok(None);
        }
        if touch && now - s.last_seen >= 30 {
            s.last_seen = now;
            self.state
                .sessions
                .put_json(&key, &s, ttl(s.expires_at(), now))
                .await?;
        }
        Ok(Some(s))
    }

    /// Reads a session without touching its idle timer (status checks).
    pub async fn peek_session(&self, raw: &str) -> Result<Option<SsoSession>, StoreError> {
        if raw.len() > 128 {
            return Ok(None);
        }
        let s: Option<SsoSession> = self
            .state
            .sessions
            .get_json(&format!("sso:{}", sha256_hex(raw)))
            .await?;
        Ok(s.filter(|s| s.expires_at() > self.now()))
    }

    /// Ends a session and revokes every token family issued under it.
    pub async fn end_session(&self, hash: &str) -> Result<(), StoreError> {
        self.state.sessions.delete(&format!("sso:{hash}")).await?;
        let fams = self
            .state
            .sessions
            .backend()
            .set_members(&format!("sessfam:{hash}"))
            .await?;
        for f in fams {
            self.revoke_family(&f).await?;
        }
        self.state
            .sessions
            .delete(&format!("sessfam:{hash}"))
            .await?;
        Ok(())
    }

    // ---- authorization codes ----
    pub async fn put_code(&self, c: &AuthCode) -> Result<String, StoreError> {
        let raw = crypto::random_token(32).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        self.state
            .sessions
            .put_json(
                &format!("code:{}", sha256_hex(&raw)),
                c,
                ttl(c.expires_at, self.now()),
            )
            .await?;
        Ok(raw)
    }

    /// Redeems a code once. `Err(Some(family))` when the code was already redeemed (the
    /// caller revokes that family), `Err(None)` when it never existed or expired.
    pub async fn redeem_code(
        &self,
        raw: &str,
    ) -> Result<Result<AuthCode, Option<String>>, StoreError> {
        if raw.len() > 256 {
            return Ok(Err(None));
        }
        let hash = sha256_hex(raw);
        match self
            .state
            .sessions
            .take_json::<AuthCode>(&format!("code:{hash}"))
            .await?
        {
            Some(code) => {
                // Remember the redemption for a day so a replay revokes the family.
                self.state
                    .sessions
                    .put_json(&format!("codeused:{hash}"), &code.family, 86_400)
                    .await?;
                Ok(Ok(code))
            }
            None => Ok(Err(self
                .state
                .sessions
                .get_json::<String>(&format!("codeused:{hash}"))
                .await?)),
        }
    }

    // ---- token families ----
    pub async fn put_family(&self, f: &Family) -> Result<(), StoreError> {
        let now = self.now();
        let fam_key = format!("fam:{}", f.id);
        let sess_key = format!("sessfam:{}", f.session_hash);
        // Two independent writes sent together (one round trip on Redis's multiplexed
        // connection). The family also goes into this instance's cache of write-once
        // records: the userinfo or introspection that follows a token exchange is often
        // answered here, and then needs no read back.
        let (family, index) = tokio::join!(
            self.state.sessions.put_json_shared(
                &fam_key,
                Arc::new(f.clone()),
                ttl(f.expires_at, now)
            ),
            self.state
                .sessions
                .backend()
                .set_add(&sess_key, &f.id, ttl(f.expires_at, now))
        );
        family.and(index)
    }
    /// A live family. Families are written once and only deleted (by
    /// [`Flows::revoke_family`]), so the read may be answered from the session store's
    /// local cache, which every instance's revocation reaches before the revoke returns.
    pub async fn get_family(&self, id: &str) -> Result<Option<Arc<Family>>, StoreError> {
        let f = self
            .state
            .sessions
            .get_json_shared::<Family>(&format!("fam:{id}"))
            .await?;
        Ok(f.filter(|f| f.expires_at > self.now()))
    }
    pub async fn revoke_family(&self, id: &str) -> Result<(), StoreError> {
        self.state
            .sessions
            .delete_announced(&format!("fam:{id}"))
            .await
            .map(|_| ())
    }

    /// Issues a refresh token in `family`.
    pub async fn issue_refresh(&self, family: &Family) -> Result<String, StoreError> {
        let raw = crypto::random_token(32).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let rec = RefreshRecord {
            family: family.id.clone(),
            client_id: family.client_id.clone(),
            expires_at: family.expires_at,
        };
        self.state
            .sessions
            .put_json(
                &format!("rt:{}", sha256_hex(&raw)),
                &rec,
                ttl(family.expires_at, self.now()),
            )
            .await?;
        Ok(raw)
    }

    /// Rotates a refresh token presented by `client`: the old one is spent (atomically, so
    /// two concurrent presentations cannot both rotate), a spent one revokes the family.
    /// A request for wider scopes is refused before anything is spent.
    pub async fn rotate_refresh(
        &self,
        raw: &str,
        client: &ClientId,
        requested_scope: Option<&[String]>,
    ) -> Result<Rotation, StoreError> {
        if raw.len() > 256 {
            return Ok(Rotation::Invalid);
        }
        let hash = sha256_hex(raw);
        let Some(rec) = self
            .state
            .sessions
            .get_json::<RefreshRecord>(&format!("rt:{hash}"))
            .await?
        else {
            return Ok(Rotation::Invalid);
        };
        if &rec.client_id != client || rec.expires_at <= self.now() {
            return Ok(Rotation::Invalid);
        }
        let Some(family) = self.get_family(&rec.family).await? else {
            return Ok(Rotation::Invalid);
        };
        if requested_scope.is_some_and(|req| req.iter().any(|s| !family.scope.contains(s))) {
            return Ok(Rotation::ScopeWidened);
        }
        let first = self
            .state
            .sessions
            .put_json_if_absent(
                &format!("rtused:{hash}"),
                &true,
                ttl(rec.expires_at, self.now()),
            )
            .await?;
        if !first {
            self.revoke_family(&family.id).await?;
            return Ok(Rotation::Reused);
        }
        let new_token = self.issue_refresh(&family).await?;
        Ok(Rotation::Rotated { family, new_token })
    }

    /// Looks up the family of a refresh token without spending it (revocation).
    pub async fn refresh_family(&self, raw: &str) -> Result<Option<RefreshRecord>, StoreError> {
        if raw.len() > 256 {
            return Ok(None);
        }
        self.state
            .sessions
            .get_json(&format!("rt:{}", sha256_hex(raw)))
            .await
    }
}
