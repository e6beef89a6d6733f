//! The error catalogue: every refusal Homeroom can give, in one enum.
//!
//! Each variant knows its stable [`LoginError::code`] (`family.reason`, never renumbered,
//! safe to search for), a [`LoginError::student_message`] a ten-year-old can act on, an
//! [`LoginError::it_guidance`] for the help desk, an [`LoginError::http_status`], and the
//! OAuth error it becomes when the refusal is reported to an app
//! ([`LoginError::oauth_error`]). The error page, the JSON error body, the audit event and
//! the troubleshooter all read the same variant. A table test walks every variant.

use serde::{Deserialize, Serialize};

/// OAuth 2.0 / OIDC error codes sent to apps (RFC 6749 §4.1.2.1, §5.2; OIDC Core §3.1.2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::Display)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum OAuthErrorCode {
    InvalidRequest,
    UnauthorizedClient,
    AccessDenied,
    UnsupportedResponseType,
    InvalidScope,
    ServerError,
    TemporarilyUnavailable,
    LoginRequired,
    InteractionRequired,
    InvalidClient,
    InvalidGrant,
    UnsupportedGrantType,
    InvalidToken,
}

/// Every refusal. Variants carry the facts the pages need (what account was used, what was
/// expected); nothing in them is secret.
#[derive(
    Debug, Clone, PartialEq, Eq, Serialize, Deserialize, strum::EnumIter, thiserror::Error,
)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum LoginError {
    // ---- requests from apps (Homeroom as an OpenID provider) ----
    #[error("unknown client")]
    ClientUnknown { client_id: String },
    #[error("redirect URI not registered")]
    RedirectUriMismatch { client_id: String },
    #[error("invalid authorization request")]
    InvalidAuthRequest { reason: String },
    #[error("id_token_hint invalid")]
    IdTokenHintInvalid,
    #[error("post_logout_redirect_uri not registered")]
    PostLogoutRedirectInvalid,
    #[error("target not allowed")]
    TargetNotAllowed,
    #[error("app disabled")]
    ClientDisabled { client_id: String },

    // ---- the hop through the upstream provider ----
    #[error("state missing or unknown")]
    StateInvalid,
    #[error("state already used")]
    StateUsed,
    #[error("sign-in took too long")]
    FlowExpired,
    #[error("callback reached a different browser")]
    FlowNotThisBrowser,
    #[error("cookies blocked")]
    CookiesBlocked,
    #[error("provider unknown")]
    ProviderUnknown { provider: String },
    #[error("provider disabled")]
    ProviderDisabled { provider: String },
    #[error("upstream returned an error")]
    UpstreamDenied { provider: String, error: String },
    #[error("nonce invalid")]
    NonceInvalid,
    #[error("issuer invalid")]
    IssuerInvalid,
    #[error("issuer of a different provider")]
    IssuerMismatch,
    #[error("audience invalid")]
    AudienceInvalid,
    #[error("signature invalid")]
    SignatureInvalid,
    #[error("token expired")]
    TokenExpired,
    #[error("token invalid")]
    TokenInvalid { reason: String },
    #[error("subject invalid")]
    SubjectInvalid,
    #[error("code exchange failed")]
    TokenExchangeFailed { provider: String },
    #[error("upstream timeout")]
    UpstreamTimeout { provider: String },
    #[error("upstream unavailable")]
    UpstreamUnavailable { provider: String },
    #[error("upstream response too large")]
    ResponseTooLarge { provider: String },
    #[error("domain mismatch")]
    DomainMismatch { used: String, expected: Vec<String> },
    #[error("tenant mismatch")]
    TenantMismatch { used: String, expected: Vec<String> },
    #[error("email missing")]
    EmailMissing { provider: String },

    // ---- SAML 2.0 responses (Homeroom as a service provider) ----
    #[error("SAML response not signed")]
    SamlSignatureMissing,
    #[error("SAML signature invalid")]
    SamlSignatureInvalid,
    #[error("SAML response with more than one assertion")]
    SamlMultipleAssertions,
    #[error("SAML algorithm not allowed")]
    SamlAlgorithmNotAllowed { algorithm: String },
    #[error("SAML audience invalid")]
    SamlAudienceInvalid,
    #[error("SAML recipient invalid")]
    SamlRecipientInvalid,
    #[error("SAML destination invalid")]
    SamlDestinationInvalid,
    #[error("SAML issuer invalid")]
    SamlIssuerInvalid,
    #[error("SAML assertion expired")]
    SamlExpired,
    #[error("SAML assertion not yet valid")]
    SamlNotYetValid,
    #[error("SAML assertion replayed")]
    SamlReplay,
    #[error("SAML InResponseTo invalid")]
    SamlInResponseToInvalid,
    #[error("unsolicited SAML response refused")]
    SamlUnsolicitedDisabled { provider: String },
    #[error("SAML RelayState not allowed")]
    SamlRelayStateNotAllowed,
    #[error("SAML message with a DTD")]
    SamlDtdForbidden,
    #[error("SAML message invalid")]
    SamlMessageInvalid { reason: String },
    #[error("SAML IdP returned an error status")]
    SamlIdpStatus {
        provider: String,
        status: String,
        message: String,
    },
    #[error("SAML encryption not allowed")]
    SamlEncryptionNotAllowed,

    // ---- accounts and policy ----
    #[error("no school found for email domain")]
    UnknownDomain { domain: String },
    #[error("linking requires a verified email")]
    LinkRequiresVerifiedEmail { email: String },
    #[error("account archived")]
    AccountArchived,
    #[error("account suspended")]
    AccountSuspended,
    #[error("account locked")]
    AccountLocked { until: i64 },
    #[error("app not assigned")]
    AppNotAssigned { app: String },
    #[error("not on the roster")]
    NotRostered {
        used: String,
        provider: String,
        tenant: String,
        last_import: Option<i64>,
    },
    #[error("not in the last roster import")]
    NotInLastImport {
        tenant: String,
        last_import: Option<i64>,
    },

    // ---- local (password) accounts ----
    #[error("username or password wrong")]
    PasswordInvalid,
    #[error("password hashing pool full")]
    PasswordBusy { retry_after: u64 },
    #[error("new password refused")]
    PasswordUnacceptable { reason: String },
    #[error("reset token invalid")]
    ResetTokenInvalid,
    #[error("invitation link invalid")]
    InviteInvalid,

    // ---- classroom sign-in codes ----
    #[error("class code, username or sign-in code wrong")]
    ClassroomCodeInvalid,
    #[error("not a teacher of this class")]
    ClassroomNotYourClass,
    #[error("sign-in codes not enabled")]
    ClassroomCodesDisabled,
    #[error("QR badge unknown")]
    ClassroomBadgeInvalid,
    #[error("QR badge revoked")]
    ClassroomBadgeRevoked,
    #[error("QR badge used outside the school network")]
    ClassroomBadgeNetwork,

    // ---- families (guardians) ----
    #[error("sign in to use the family pages")]
    FamilySignInRequired,
    #[error("family invitation invalid")]
    FamilyInviteInvalid,
    #[error("family invitation refused")]
    FamilyInviteRefused { reason: String },
    #[error("18+ attestation required")]
    FamilyAttestationRequired,
    #[error("family policies not accepted by the primary guardian")]
    FamilyPoliciesPending { primary: String },
    #[error("not a guardian of this family")]
    FamilyNotMember,
    #[error("only the primary guardian may do this")]
    FamilyNotPrimary,
    #[error("parent access code invalid")]
    FamilyParentCodeInvalid,

    // ---- sessions ----
    #[error("CSRF check failed")]
    Csrf,
    #[error("session expired")]
    SessionExpired,
    #[error("session cookie ambiguous")]
    CookieAmbiguous,

    // ---- limits and faults ----
    #[error("redirect loop with an app")]
    RedirectLoop {
        app: String,
        count: u64,
        window_secs: u64,
    },
    #[error("redirect loop with a provider")]
    UpstreamLoop {
        provider: String,
        count: u64,
        window_secs: u64,
    },
    #[error("provider circuit open")]
    CircuitOpen { provider: String, retry_after: u64 },
    #[error("too many attempts")]
    TooManyAttempts { retry_after: u64 },
    #[error("challenge failed")]
    ChallengeFailed,
    #[error("internal error")]
    Internal,
}

/// One row of the catalogue as published (README, admin API, troubleshooter).
#[derive(Debug, Clone, Serialize)]
pub struct CatalogueEntry {
    pub code: &'static str,
    pub title: &'static str,
    pub http_status: u16,
    pub student_message: String,
    pub it_guidance: String,
}

impl LoginError {
    /// The stable code. Never change one; add a new variant instead.
    pub fn code(&self) -> &'static str {
        use LoginError::*;
        match self {
            ClientUnknown { .. } => "oauth.client_unknown",
            RedirectUriMismatch { .. } => "oauth.redirect_uri_mismatch",
            InvalidAuthRequest { .. } => "oauth.invalid_request",
            IdTokenHintInvalid => "oauth.id_token_hint_invalid",
            PostLogoutRedirectInvalid => "oauth.post_logout_redirect_invalid",
            TargetNotAllowed => "oauth.target_not_allowed",
            ClientDisabled { .. } => "oauth.client_disabled",
            StateInvalid => "upstream.state_invalid",
            StateUsed => "upstream.state_used",
            FlowExpired => "upstream.flow_expired",
            FlowNotThisBrowser => "upstream.flow_not_this_browser",
            CookiesBlocked => "session.cookies_blocked",
            ProviderUnknown { .. } => "upstream.provider_unknown",
            ProviderDisabled { .. } => "upstream.provider_disabled",
            UpstreamDenied { .. } => "upstream.denied",
            NonceInvalid => "upstream.nonce_invalid",
            IssuerInvalid => "upstream.issuer_invalid",
            IssuerMismatch => "upstream.issuer_mismatch",
            AudienceInvalid => "upstream.audience_invalid",
            SignatureInvalid => "upstream.signature_invalid",
            TokenExpired => "upstream.token_expired",
            TokenInvalid { .. } => "upstream.token_invalid",
            SubjectInvalid => "upstream.subject_invalid",
            TokenExchangeFailed { .. } => "upstream.token_exchange_failed",
            UpstreamTimeout { .. } => "upstream.timeout",
            UpstreamUnavailable { .. } => "upstream.unavailable",
            ResponseTooLarge { .. } => "upstream.response_too_large",
            DomainMismatch { .. } => "upstream.domain_mismatch",
            TenantMismatch { .. } => "upstream.tenant_mismatch",
            EmailMissing { .. } => "upstream.email_missing",
            SamlSignatureMissing => "saml.signature_missing",
            SamlSignatureInvalid => "saml.signature_invalid",
            SamlMultipleAssertions => "saml.multiple_assertions",
            SamlAlgorithmNotAllowed { .. } => "saml.algorithm_not_allowed",
            SamlAudienceInvalid => "saml.audience_invalid",
            SamlRecipientInvalid => "saml.recipient_invalid",
            SamlDestinationInvalid => "saml.destination_invalid",
            SamlIssuerInvalid => "saml.issuer_invalid",
            SamlExpired => "saml.expired",
            SamlNotYetValid => "saml.not_yet_valid",
            SamlReplay => "saml.replay",
            SamlInResponseToInvalid => "saml.in_response_to_invalid",
            SamlUnsolicitedDisabled { .. } => "saml.unsolicited_disabled",
            SamlRelayStateNotAllowed => "saml.relaystate_not_allowed",
            SamlDtdForbidden => "saml.dtd_forbidden",
            SamlMessageInvalid { .. } => "saml.message_invalid",
            SamlIdpStatus { .. } => "saml.idp_status",
            SamlEncryptionNotAllowed => "saml.encryption_not_allowed",
            UnknownDomain { .. } => "account.unknown_domain",
            LinkRequiresVerifiedEmail { .. } => "account.link_requires_verified_email",
            AccountArchived => "account.archived",
            AccountSuspended => "account.suspended",
            AccountLocked { .. } => "account.locked",
            AppNotAssigned { .. } => "account.app_not_assigned",
            NotRostered { .. } => "account.not_rostered",
            NotInLastImport { .. } => "account.not_in_last_import",
            PasswordInvalid => "account.password_invalid",
            PasswordBusy { .. } => "account.busy",
            PasswordUnacceptable { .. } => "account.password_unacceptable",
            ResetTokenInvalid => "reset.token_invalid",
            InviteInvalid => "invite.invalid",
            ClassroomCodeInvalid => "classroom.code_invalid",
            ClassroomNotYourClass => "classroom.not_your_class",
            ClassroomCodesDisabled => "classroom.codes_disabled",
            FamilySignInRequired => "family.sign_in_required",
            FamilyInviteInvalid => "family.invite_invalid",
            FamilyInviteRefused { .. } => "family.invite_refused",
            FamilyAttestationRequired => "family.attestation_required",
            FamilyPoliciesPending { .. } => "family.policies_pending",
            FamilyNotMember => "family.not_member",
            FamilyNotPrimary => "family.not_primary",
            FamilyParentCodeInvalid => "family.parent_code_invalid",
            ClassroomBadgeInvalid => "classroom.badge_invalid",
            ClassroomBadgeRevoked => "classroom.badge_revoked",
            ClassroomBadgeNetwork => "classroom.badge_network",
            Csrf => "session.csrf",
            SessionExpired => "session.expired",
            CookieAmbiguous => "session.cookie_ambiguous",
            RedirectLoop { .. } => "loop.app",
            UpstreamLoop { .. } => "loop.upstream",
            CircuitOpen { .. } => "upstream.circuit_open",
            TooManyAttempts { .. } => "limit.too_many_attempts",
            ChallengeFailed => "limit.challenge_failed",
            Internal => "internal.error",
        }
    }

    /// A short headline for the error page.
    pub fn title(&self) -> &'static str {
        use LoginError::*;
        match self {
            ClientUnknown { .. } | RedirectUriMismatch { .. } | InvalidAuthRequest { .. } => {
                "This app's sign-in link is broken"
            }
            ClientDisabled { .. } => "This app is turned off",
            IdTokenHintInvalid | PostLogoutRedirectInvalid => "We could not sign you out safely",
            TargetNotAllowed => "That link is not allowed",
            StateInvalid | StateUsed | FlowNotThisBrowser => "This sign-in link does not match",
            FlowExpired => "Sign-in took too long",
            CookiesBlocked => "Your browser blocked our cookie",
            ProviderUnknown { .. } | ProviderDisabled { .. } => {
                "That sign-in option is not available"
            }
            UpstreamDenied { .. } => "Sign-in was cancelled or refused",
            NonceInvalid
            | IssuerInvalid
            | IssuerMismatch
            | AudienceInvalid
            | SignatureInvalid
            | TokenExpired
            | TokenInvalid { .. }
            | SubjectInvalid
            | TokenExchangeFailed { .. } => "We could not confirm who you are",
            UpstreamTimeout { .. } | UpstreamUnavailable { .. } | ResponseTooLarge { .. } => {
                "Your school's sign-in service is not answering"
            }
            DomainMismatch { .. } | TenantMismatch { .. } => "That's not your school account",
            EmailMissing { .. } => "Your account has no email address",
            SamlSignatureMissing
            | SamlSignatureInvalid
            | SamlMultipleAssertions
            | SamlAlgorithmNotAllowed { .. }
            | SamlAudienceInvalid
            | SamlRecipientInvalid
            | SamlDestinationInvalid
            | SamlIssuerInvalid
            | SamlDtdForbidden
            | SamlMessageInvalid { .. }
            | SamlEncryptionNotAllowed => "We could not confirm who you are",
            SamlExpired | SamlNotYetValid => "Sign-in took too long",
            SamlReplay | SamlInResponseToInvalid => "This sign-in link does not match",
            SamlUnsolicitedDisabled { .. } | SamlRelayStateNotAllowed => {
                "Start from your school's sign-in button"
            }
            SamlIdpStatus { .. } => "Sign-in was cancelled or refused",
            UnknownDomain { .. } => "We don't know that school email",
            LinkRequiresVerifiedEmail { .. } => "We need to check this account first",
            AccountArchived => "This account is archived",
            AccountSuspended => "This account is paused",
            AccountLocked { .. } => "This account is locked for now",
            AppNotAssigned { .. } => "This app is not assigned to you",
            NotRostered { .. } => "You're not on your school's list yet",
            NotInLastImport { .. } => "Your account is not on this year's list",
            PasswordInvalid => "That didn't work",
            PasswordBusy { .. } => "We're very busy right now",
            PasswordUnacceptable { .. } => "Choose another password",
            ResetTokenInvalid => "Reset password token is invalid.",
            InviteInvalid => "This invitation link does not work",
            ClassroomCodeInvalid => "That didn't work",
            ClassroomNotYourClass => "That is not your class",
            ClassroomCodesDisabled => "Sign-in codes are not available",
            FamilySignInRequired => "Please sign in first",
            FamilyInviteInvalid => "This family invitation does not work",
            FamilyInviteRefused { .. } => "We could not send that invitation",
            FamilyAttestationRequired => "You must be 18 or older",
            FamilyPoliciesPending { .. } => "Waiting for the primary guardian",
            FamilyNotMember => "That is not your family",
            FamilyNotPrimary => "Only the primary guardian can do that",
            FamilyParentCodeInvalid => "That parent access code didn't work",
            ClassroomBadgeInvalid => "This badge does not work",
            ClassroomBadgeRevoked => "This badge was replaced",
            ClassroomBadgeNetwork => "Use your badge at school",
            Csrf => "This form expired",
            SessionExpired => "You were signed out",
            CookieAmbiguous => "Please sign in again",
            RedirectLoop { .. } | UpstreamLoop { .. } => "We stopped a sign-in loop",
            CircuitOpen { .. } => "Your school's sign-in service is not answering",
            TooManyAttempts { .. } => "Too many tries",
            ChallengeFailed => "The check did not work",
            Internal => "Something went wrong on our side",
        }
    }

    /// What the student reads: what happened and what to try, in plain words.
    pub fn student_message(&self) -> String {
        use LoginError::*;
        match self {
            ClientUnknown { .. } | RedirectUriMismatch { .. } | InvalidAuthRequest { .. } => {
                "The app sent you here with a sign-in link we don't recognise. Go back to the app and try again. If it happens again, tell your teacher or IT and show them this page.".into()
            }
            ClientDisabled { .. } => "Your school has turned this app off for now. Ask your teacher which app to use.".into(),
            IdTokenHintInvalid | PostLogoutRedirectInvalid => "The app asked us to sign you out, but the request did not check out. Close the browser to be sure you are signed out.".into(),
            TargetNotAllowed => "That link tried to send you somewhere we don't trust. Open the app from your school's portal instead.".into(),
            StateInvalid | StateUsed => "This sign-in page was already used or was opened from an old link. Go back to the app and click Sign in again.".into(),
            FlowExpired => "You took a little too long to finish signing in. Go back to the app and click Sign in again.".into(),
            FlowNotThisBrowser => "This sign-in was started in a different browser or window. Start again from the app in this browser.".into(),
            CookiesBlocked => "Your browser did not send back the small cookie we need to finish signing in. Turn off private or incognito mode, allow cookies for this site, then try again.".into(),
            ProviderUnknown { provider } | ProviderDisabled { provider } => format!("The sign-in option \"{provider}\" is not turned on for your school. Go back and pick another button."),
            UpstreamDenied { provider, .. } => format!("{provider} did not let you sign in (you may have pressed Cancel). Try again; if it keeps happening, tell IT."),
            NonceInvalid | IssuerInvalid | IssuerMismatch | AudienceInvalid | SignatureInvalid
            | TokenExpired | TokenInvalid { .. } | SubjectInvalid => {
                "We could not check the answer from your school's sign-in service. Try again in a minute. If it keeps happening, tell IT and show them this page.".into()
            }
            TokenExchangeFailed { provider } => format!("{provider} would not finish your sign-in. Go back to the app and try again."),
            UpstreamTimeout { provider } | UpstreamUnavailable { provider } | ResponseTooLarge { provider } => {
                format!("{provider} is not answering right now. Wait a minute and try again. If it is still down, tell your teacher.")
            }
            DomainMismatch { used, expected } | TenantMismatch { used, expected } => {
                let want = if expected.is_empty() { "your school account".to_owned() } else { expected.join(" or ") };
                format!("You signed in as {used}, but this needs your school account ({want}). Click \"Use a different account\" and choose your school account.")
            }
            EmailMissing { provider } => format!("{provider} did not tell us your email address. Tell IT so they can fix your account."),
            SamlSignatureMissing | SamlSignatureInvalid | SamlMultipleAssertions
            | SamlAlgorithmNotAllowed { .. } | SamlAudienceInvalid | SamlRecipientInvalid
            | SamlDestinationInvalid | SamlIssuerInvalid | SamlDtdForbidden
            | SamlMessageInvalid { .. } | SamlEncryptionNotAllowed => {
                "We could not check the answer from your school's sign-in service, so we did not sign you in. Go back and try again; if it keeps happening, tell IT and show them this page.".into()
            }
            SamlExpired | SamlNotYetValid => "The answer from your school's sign-in service arrived too late (or your device's clock is off). Go back to the app and sign in again.".into(),
            SamlReplay | SamlInResponseToInvalid => "This sign-in answer was already used, or belongs to a sign-in started in another browser or tab. Go back to the app and click Sign in again.".into(),
            SamlUnsolicitedDisabled { provider } => format!("Your school does not allow starting here from {provider}'s page. Open the app first and click its sign-in button."),
            SamlRelayStateNotAllowed => "Your school's portal tried to send you somewhere we don't trust. Open the app from your school's portal again, or start from the app itself.".into(),
            SamlIdpStatus { provider, .. } => format!("{provider} did not let you sign in (you may have pressed Cancel). Try again; if it keeps happening, tell IT."),
            UnknownDomain { domain } => format!("We don't know a school that uses \"{domain}\". Check the spelling of your school email, or pick a button instead."),
            LinkRequiresVerifiedEmail { .. } => "Your school needs to confirm this account before you can use it. Tell your teacher or IT and show them this page.".into(),
            AccountArchived => "Your account is archived, so you can't sign in. If you are still at this school, tell your teacher or IT.".into(),
            AccountSuspended => "Your account is paused. Tell your teacher or IT.".into(),
            AccountLocked { until } => format!("Your account is locked because of too many tries. It unlocks at {} (UTC), or IT can unlock it sooner.", crate::clock::rfc3339(*until)),
            AppNotAssigned { app } => format!("Your school has not given you access to {app}. If you need it for class, tell your teacher."),
            NotRostered { used, provider, tenant, .. } => format!("You signed in as {used} with {provider}, but you are not on {tenant}'s roster. If you are new, your school may not have added you yet: tell your teacher or IT."),
            NotInLastImport { tenant, .. } => format!("{tenant}'s latest student and staff list does not include you, so your account is paused. If you are still at the school, tell your teacher or IT."),
            PasswordInvalid => "The username or password is not right. Check both and try again. If you forgot your password, use \"Trouble signing in?\".".into(),
            PasswordBusy { retry_after } => format!("Lots of people are signing in right now, so we could not check your password. Wait {retry_after} seconds and try again."),
            PasswordUnacceptable { reason } => format!("We can't use that password: {reason} Go back and choose another one."),
            ResetTokenInvalid => "Reset password token is invalid. The link was already used, is too old (links work for 6 hours), or was copied incompletely. Ask for a new link.".into(),
            InviteInvalid => "This invitation link does not work. Check that you copied the whole link from the email, or ask IT for a new one.".into(),
            ClassroomCodeInvalid => "The class code, username or sign-in code is not right. Check all three and try again. Your teacher can show you your code.".into(),
            ClassroomNotYourClass => "You can only see and change sign-in codes for learners in your own classes. Nothing was changed.".into(),
            ClassroomCodesDisabled => "Your school does not use sign-in codes. Sign in another way, or ask your teacher.".into(),
            FamilySignInRequired => "The family pages are for signed-in guardians. Sign in with your Homeroom account, then open this page again.".into(),
            FamilyInviteInvalid => "This family invitation link does not work: it was already used, the family's primary guardian changed, or the link was copied incompletely. Ask the family's primary guardian for a new invitation.".into(),
            FamilyInviteRefused { reason } => format!("The invitation was not sent: {reason} Nothing was changed."),
            FamilyAttestationRequired => "Family accounts are for adults. You can continue only after confirming that you are 18 years of age or older.".into(),
            FamilyPoliciesPending { primary } => format!("This family's primary guardian ({primary}) has not yet accepted the school's required family policies. Until they do, other guardians cannot open the family account. Ask them to sign in to Homeroom and accept the policies."),
            FamilyNotMember => "You are not a guardian of that family, or your access was removed. Nothing was changed.".into(),
            FamilyNotPrimary => "Only the family's primary guardian can invite or remove guardians, link learners or accept policies. Nothing was changed.".into(),
            FamilyParentCodeInvalid => "That parent access code is not right, was already used, or has expired. Check the code on the paper from school, or ask the teacher for a new one.".into(),
            ClassroomBadgeInvalid => "We don't recognise this badge. Scan it again, or sign in with your class code and sign-in code. Your teacher can help.".into(),
            ClassroomBadgeRevoked => "This badge does not work any more: your teacher made you a new one or a new sign-in code. Ask your teacher for your new card.".into(),
            ClassroomBadgeNetwork => "Badges only work on your school's network. At home, sign in with your class code and sign-in code instead.".into(),
            Csrf => "This page was open too long or was sent from somewhere else. Reload the page and try again.".into(),
            SessionExpired => "You were signed out because you were away for a while. Sign in again.".into(),
            CookieAmbiguous => "Your browser sent us mixed-up sign-in cookies. Sign in again.".into(),
            RedirectLoop { app, .. } => format!("{app} kept sending you back to sign in, over and over, so we stopped it. Close the app's tab, open it again from your school's portal, and if it happens again tell IT and show them this page."),
            UpstreamLoop { provider, .. } => format!("You were sent back and forth to {provider} many times, so we stopped it. Make sure cookies are allowed and your device's clock is right, then try once more. If it happens again, tell IT."),
            CircuitOpen { provider, retry_after } => format!("{provider} is not answering right now, so we paused sign-ins with it for {retry_after} seconds. Try again in a minute."),
            TooManyAttempts { retry_after } => format!("There were too many tries. Wait {retry_after} seconds, then try again."),
            ChallengeFailed => "The quick browser check did not finish correctly (it may have expired). Go back and try again; it only takes a moment.".into(),
            Internal => "Something went wrong on our side. Try again in a minute; if it keeps happening, tell IT and show them this page.".into(),
        }
    }

    /// What IT reads: what to check and where.
    pub fn it_guidance(&self) -> String {
        use LoginError::*;
        match self {
            ClientUnknown { client_id } => format!("The app sent client_id \"{client_id}\", which is not registered. Register the app (Apps in the console or [apps] in the config) or fix the app's client id."),
            RedirectUriMismatch { client_id } => format!("The app \"{client_id}\" sent a redirect_uri that is not registered, character for character. Compare the app's redirect URI with the registered list; matching is exact (no prefixes, no trailing slash forgiveness)."),
            InvalidAuthRequest { reason } => format!("The authorization request is malformed: {reason}. The app needs fixing."),
            ClientDisabled { client_id } => format!("The app \"{client_id}\" is disabled. Enable it in Apps if it should be used."),
            IdTokenHintInvalid => "The logout request's id_token_hint was not issued by this Homeroom (or was altered). The app should send the ID token it received.".into(),
            PostLogoutRedirectInvalid => "post_logout_redirect_uri is not one of the app's registered post-logout URIs (exact match).".into(),
            TargetNotAllowed => "A launch asked for an app alias or target_link_uri that is not allowlisted for the app. Add it to the app's launch settings if it is legitimate.".into(),
            StateInvalid => "The callback carried a state we never issued, or none. Usually an old bookmark or a replayed link; if many students hit it, check for a portal posting codes without state.".into(),
            StateUsed => "The callback's state was already consumed: the same link was opened twice (back button, double click) or replayed.".into(),
            FlowExpired => "The flow state expired before the upstream returned (default 10 minutes). Check for slow upstream sign-in or clock skew.".into(),
            FlowNotThisBrowser => "The state is valid but belongs to another browser (its binding cookie did not match). Possible login CSRF; nothing was signed in.".into(),
            CookiesBlocked => "The return from the provider arrived without Homeroom's flow cookie. Common causes: third-party cookie blocking, private mode, an embedded webview or iframe, or the app opened on another host name than the public URL.".into(),
            ProviderUnknown { provider } => format!("No provider \"{provider}\" is configured for this tenant. Check the tile or link that sent the student here."),
            ProviderDisabled { provider } => format!("Provider \"{provider}\" is disabled. Enable it under Providers."),
            UpstreamDenied { provider, error } => format!("{provider} returned error \"{error}\". For Google, under-18 users may be blocked from third-party apps until the app is trusted in the Admin console; for Entra, check consent and assignment."),
            NonceInvalid => "The upstream ID token's nonce did not match the one we sent. Possible replay or a misbehaving provider.".into(),
            IssuerInvalid => "The upstream ID token's iss does not match the provider's configured issuer. Check the provider's issuer/discovery URL (Entra: tenant id).".into(),
            IssuerMismatch => "The callback's iss parameter names a different provider than the one this flow started with (mix-up attack or misconfigured callback URL).".into(),
            AudienceInvalid => "The upstream ID token was issued to another client id (aud/azp). Check the client id configured for this provider.".into(),
            SignatureInvalid => "The upstream ID token's signature did not verify against the provider's published keys (or used a forbidden algorithm). Check the provider's JWKS and configured algorithm.".into(),
            TokenExpired => "The upstream ID token is expired or not yet valid. Check the clocks of this server and the provider; allowed skew is configurable.".into(),
            TokenInvalid { reason } => format!("The upstream token is malformed: {reason}."),
            SubjectInvalid => "The upstream identity has no stable subject, or userinfo's sub differs from the ID token's.".into(),
            TokenExchangeFailed { provider } => format!("{provider}'s token endpoint refused the code. Check the client secret, the registered redirect URI, and that the code was not used twice."),
            UpstreamTimeout { provider } => format!("{provider} did not answer in time. Check the provider's status page and this server's outbound network."),
            UpstreamUnavailable { provider } => format!("{provider} could not be reached or answered with an error. Use Test connection on the provider's page."),
            ResponseTooLarge { provider } => format!("{provider} answered with a response over the size limit; refused to protect the server."),
            DomainMismatch { used, expected } => format!("The user signed in upstream as {used}; this tenant accepts {}. Usually a personal account or another district's account already signed in on the device; the page offers \"use a different account\".", expected.join(", ")),
            TenantMismatch { used, expected } => format!("The upstream tenant/district \"{used}\" is not one of this provider's allowed tenants ({}).", expected.join(", ")),
            EmailMissing { provider } => format!("{provider} returned no email and the provider is configured to require one."),
            SamlSignatureMissing => "The SAML Response carried no XML signature over the assertion. Configure the IdP to sign the assertion (or the whole Response) with the key published in its metadata.".into(),
            SamlSignatureInvalid => "An XML signature in the SAML Response did not verify against the signing certificate in the IdP's metadata, or it did not cover exactly the assertion that was sent (signature wrapping, a signature in an unexpected place, more than one reference). If the IdP rotated its key, refresh its metadata.".into(),
            SamlMultipleAssertions => "The SAML Response contained more than one assertion (or an assertion hidden elsewhere in the message). Homeroom accepts exactly one signed assertion; this shape is typical of signature-wrapping attacks.".into(),
            SamlAlgorithmNotAllowed { algorithm } => format!("The SAML signature used \"{algorithm}\". Only RSA/ECDSA with SHA-256 or stronger, SHA-256+ digests and canonicalisation without comments are accepted; change the IdP's signing algorithm."),
            SamlAudienceInvalid => "The assertion's AudienceRestriction is missing or does not name this Homeroom's SP entity ID (see /saml/{provider}/metadata). Fix the entity ID registered at the IdP.".into(),
            SamlRecipientInvalid => "The bearer SubjectConfirmationData Recipient is not this provider's ACS URL (/saml/{provider}/acs). Fix the ACS URL registered at the IdP.".into(),
            SamlDestinationInvalid => "The Response's Destination is not this provider's ACS URL (/saml/{provider}/acs). Fix the ACS URL registered at the IdP.".into(),
            SamlIssuerInvalid => "The Issuer of the Response or assertion is not the entity ID in this provider's IdP metadata (a response of another IdP, or stale metadata).".into(),
            SamlExpired => "The assertion is outside its validity window (Conditions NotOnOrAfter, SubjectConfirmationData NotOnOrAfter or IssueInstant too old). Check the clocks of this server and the IdP; allowed skew is at most 3 minutes.".into(),
            SamlNotYetValid => "The assertion's NotBefore (or IssueInstant) lies in the future beyond the allowed clock skew. Check the IdP's clock.".into(),
            SamlReplay => "This assertion ID was already consumed (replay cache): the same SAML Response was posted twice (back button, double submit) or replayed.".into(),
            SamlInResponseToInvalid => "The Response's InResponseTo does not match a sign-in started in this browser (unknown or expired request, a request of another browser, or the flow cookie was not sent back: third-party cookie blocking, private mode).".into(),
            SamlUnsolicitedDisabled { provider } => format!("{provider} sent an IdP-initiated (unsolicited) Response, but IdP-initiated login is not enabled for this provider (allow_idp_initiated). Enable it only if the portal needs it, or have the tile use the SP-initiated URL /launch/{{provider}}."),
            SamlRelayStateNotAllowed => "An IdP-initiated Response carried a RelayState that is not one of the provider's allowlisted app aliases (relay_state_apps). URLs are never followed.".into(),
            SamlDtdForbidden => "The SAML message contained a DOCTYPE (DTD or entity declarations). It was refused before parsing; legitimate IdPs never send one.".into(),
            SamlMessageInvalid { reason } => format!("The SAML message is malformed or oversized: {reason}."),
            SamlIdpStatus { provider, status, message } => format!("{provider} answered with SAML status \"{status}\" ({message}). Check the IdP's logs for this user and the SP registration."),
            SamlEncryptionNotAllowed => "The Response carried an EncryptedAssertion. Homeroom does not accept encrypted assertions (weak algorithms like rsa-1_5 and aes-cbc are common there); configure the IdP to send a signed, unencrypted assertion over HTTPS.".into(),
            UnknownDomain { domain } => format!("Home-realm discovery found no tenant with domain \"{domain}\". Add the domain to the tenant if it belongs to the district."),
            LinkRequiresVerifiedEmail { email } => format!("A new upstream identity claims {email}, which belongs to an existing account, but the provider does not vouch for the address. Link it by hand in the console (or via the roster) if it is the same person."),
            AccountArchived => "The account is archived. Restore it in Users if the person is still active.".into(),
            AccountSuspended => "The account is suspended. Activate it in Users if appropriate.".into(),
            AccountLocked { until } => format!("The account is locked until {} after too many failed attempts. Unlock it in Users after checking the attempts.", crate::clock::rfc3339(*until)),
            AppNotAssigned { app } => format!("{app} is not assigned to this user's role, school or grade. Check the app's assignment rules."),
            NotRostered { used, provider, last_import, .. } => format!("The tenant requires a rostered account. {used} signed in with {provider}, but no roster record matches by provider link, sourcedId or roster-confirmed email. Last successful roster import: {}. Check the SIS export for this person, or a mismatch between the roster email and the provider email.", last_import.map(crate::clock::rfc3339).unwrap_or_else(|| "never".into())),
            NotInLastImport { last_import, .. } => format!("The person's roster record was missing from the last successful bulk import ({}), so the account is blocked. If they are still enrolled, fix the SIS export; the next import restores them.", last_import.map(crate::clock::rfc3339).unwrap_or_else(|| "never".into())),
            PasswordInvalid => "A Homeroom password sign-in failed: the password was wrong or no local account has that username or email (the student sees the same message for both). Each failure counts toward the lockout; Users shows failed attempts, the source address and locked-until. Students who sign in with a school provider have no Homeroom password.".into(),
            PasswordBusy { retry_after } => format!("Every password-hashing worker was busy and the wait queue was full, so the attempt was refused at once (retry in {retry_after} s); nothing was counted. If this happens outside a sign-in surge, raise the hashing workers or queue in the server settings."),
            PasswordUnacceptable { reason } => format!("A new password was refused before hashing: {reason}"),
            ResetTokenInvalid => "The reset link is unknown, already used, replaced by a newer link, or older than its lifetime (6 hours). Users shows pending resets with sent and expiry times; issue a fresh link there if needed.".into(),
            InviteInvalid => "The invitation token is unknown (mistyped or truncated link). Users shows pending invitations; copy a fresh link there.".into(),
            ClassroomCodeInvalid => "A class-code sign-in failed: the class code is unknown, no learner of that class has the username, or the sign-in code was wrong (the learner sees the same message for each). Each failure on a known learner counts toward the lockout. A teacher of the class can show or reset the code.".into(),
            ClassroomNotYourClass => "A teacher asked to see, reset or download sign-in codes of a class (or learner) they do not teach, or a school download without being a lead teacher (school admin). Nothing was changed or shown. Check the roster enrollments of the class.".into(),
            ClassroomCodesDisabled => "Sign-in codes are not enabled for this tenant, or no code-encryption key is configured. Add the tenant to the classroom-code tenants and set the 32-byte key in the server settings.".into(),
            FamilySignInRequired => "A family page (/family...) was opened without a Homeroom session. The guardian signs in (local password or SSO) and opens the page again.".into(),
            FamilyInviteInvalid => "The family invitation token is unknown (mistyped or truncated), already used, or revoked because the family's primary guardian changed (every invitation and secondary access is revoked then). The primary guardian sends a new invitation from /family; staff cannot grant access.".into(),
            FamilyInviteRefused { reason } => format!("A primary guardian's invitation was refused before anything was written: {reason}"),
            FamilyAttestationRequired => "A secondary guardian has not confirmed being 18 or older (the /family/attest page). The attestation is recorded with its time in the directory; without it the guardian cannot continue to any app.".into(),
            FamilyPoliciesPending { .. } => "The tenant's required family policies (server.family.policies) have versions the family's primary guardian has not accepted. Secondaries are stopped until the primary accepts them on /family (they are asked at sign-in). A new policy version stops secondaries again.".into(),
            FamilyNotMember => "A guardian asked for a family they have no live membership of (revoked, or a forged family id). Admin API /admin/api/families shows memberships and revocations.".into(),
            FamilyNotPrimary => "A secondary (view-only) guardian tried a primary-only action: invite, revoke, link a learner or accept policies. Secondaries are view-only by design.".into(),
            FamilyParentCodeInvalid => "A parent access code was unknown in this tenant, already used, replaced by a newer code, or expired (server.family.parent_code_ttl_days). Codes are single use; the classroom CSV shows the learner's current code. Attempts are rate limited per guardian and address.".into(),
            ClassroomBadgeInvalid => "A QR badge link carried a token that was never issued (a mistyped, truncated or made-up link). Nobody was signed in. Print a new class sheet to make fresh badges.".into(),
            ClassroomBadgeRevoked => "The QR badge was revoked: a teacher or IT revoked it, printed a newer sheet (each print replaces the learner's badge), or gave the learner a new sign-in code. Nobody was signed in. Print the class sheet again.".into(),
            ClassroomBadgeNetwork => "A QR badge was used from an address outside the tenant's trusted_networks. Nobody was signed in. Add the school's network to trusted_networks, or set classroom_badges_anywhere for the tenant if badges may be used anywhere.".into(),
            Csrf => "A form was posted without a valid CSRF token or from another origin. Nothing changed.".into(),
            SessionExpired => "The SSO session ended (idle or absolute timeout, or sign-out).".into(),
            CookieAmbiguous => "The request carried more than one session cookie (possible cookie tossing); the session was ignored.".into(),
            RedirectLoop { app, count, window_secs } => format!("The same browser was sent to sign in for {app} {count} times within {window_secs} s and each time came back. Likely causes: the app rejects Homeroom's sign-in (check its client id, redirect URI and clock), the app loses its own session cookie (third-party cookie blocking, iframe, wrong cookie domain), clock skew making tokens look expired, or the wrong account signed in upstream. The trace of earlier attempts shows each code that was issued."),
            UpstreamLoop { provider, count, window_secs } => format!("The browser bounced between Homeroom and {provider} {count} times within {window_secs} s without finishing. Likely causes: cookies blocked for Homeroom (flow cookie lost), a wrong redirect URI registered at {provider}, or clock skew."),
            CircuitOpen { provider, retry_after } => format!("Recent calls to {provider} timed out or failed repeatedly, so Homeroom stops sending students there for {retry_after} s (circuit breaker). Check the provider's status and this server's outbound network; Test connection on the provider's page."),
            TooManyAttempts { retry_after } => format!("A rate limit was hit; it lifts in {retry_after} s. Check the rate-limit page for the key involved."),
            ChallengeFailed => "A proof-of-work answer was wrong, expired, replayed, or sent from another network or browser than the one challenged. Many of these from one address suggest automated traffic; a school network that is challenged often should be listed as a trusted network of its tenant.".into(),
            Internal => "An internal error happened; the server log has the cause under this reference id.".into(),
        }
    }

    /// The HTTP status of the error page or JSON body.
    pub fn http_status(&self) -> u16 {
        use LoginError::*;
        match self {
            ClientUnknown { .. } | RedirectUriMismatch { .. } | InvalidAuthRequest { .. } => 400,
            IdTokenHintInvalid | PostLogoutRedirectInvalid | TargetNotAllowed => 400,
            StateInvalid | StateUsed | FlowExpired | FlowNotThisBrowser | CookiesBlocked => 400,
            ProviderUnknown { .. } => 404,
            ClientDisabled { .. } | ProviderDisabled { .. } => 403,
            UpstreamDenied { .. } => 403,
            NonceInvalid
            | IssuerInvalid
            | IssuerMismatch
            | AudienceInvalid
            | SignatureInvalid
            | TokenExpired
            | TokenInvalid { .. }
            | SubjectInvalid => 401,
            TokenExchangeFailed { .. } | UpstreamUnavailable { .. } | ResponseTooLarge { .. } => {
                502
            }
            UpstreamTimeout { .. } => 504,
            DomainMismatch { .. } | TenantMismatch { .. } | EmailMissing { .. } => 403,
            SamlSignatureMissing
            | SamlSignatureInvalid
            | SamlMultipleAssertions
            | SamlAlgorithmNotAllowed { .. }
            | SamlAudienceInvalid
            | SamlRecipientInvalid
            | SamlDestinationInvalid
            | SamlIssuerInvalid
            | SamlExpired
            | SamlNotYetValid
            | SamlEncryptionNotAllowed => 401,
            SamlReplay
            | SamlInResponseToInvalid
            | SamlRelayStateNotAllowed
            | SamlDtdForbidden
            | SamlMessageInvalid { .. } => 400,
            SamlUnsolicitedDisabled { .. } | SamlIdpStatus { .. } => 403,
            UnknownDomain { .. } => 404,
            LinkRequiresVerifiedEmail { .. }
            | AccountArchived
            | AccountSuspended
            | AccountLocked { .. }
            | AppNotAssigned { .. }
            | NotRostered { .. }
            | NotInLastImport { .. } => 403,
            PasswordInvalid => 401,
            PasswordBusy { .. } => 503,
            PasswordUnacceptable { .. } | ResetTokenInvalid => 400,
            InviteInvalid => 404,
            ClassroomCodeInvalid => 401,
            ClassroomNotYourClass => 403,
            ClassroomCodesDisabled => 403,
            FamilySignInRequired => 401,
            FamilyInviteInvalid => 404,
            FamilyInviteRefused { .. } | FamilyParentCodeInvalid => 400,
            FamilyAttestationRequired
            | FamilyPoliciesPending { .. }
            | FamilyNotMember
            | FamilyNotPrimary => 403,
            ClassroomBadgeInvalid => 404,
            ClassroomBadgeRevoked | ClassroomBadgeNetwork => 403,
            Csrf => 403,
            SessionExpired | CookieAmbiguous => 401,
            RedirectLoop { .. } | UpstreamLoop { .. } => 508,
            CircuitOpen { .. } => 503,
            TooManyAttempts { .. } => 429,
            ChallengeFailed => 403,
            Internal => 500,
        }
    }

    /// The error an app receives when this refusal ends an authorization request it made.
    pub fn oauth_error(&self) -> OAuthErrorCode {
        use LoginError::*;
        match self {
            InvalidAuthRequest { .. } => OAuthErrorCode::InvalidRequest,
            UpstreamTimeout { .. }
            | UpstreamUnavailable { .. }
            | TooManyAttempts { .. }
            | PasswordBusy { .. }
            | CircuitOpen { .. } => OAuthErrorCode::TemporarilyUnavailable,
            Internal => OAuthErrorCode::ServerError,
            SessionExpired => OAuthErrorCode::LoginRequired,
            _ => OAuthErrorCode::AccessDenied,
        }
    }

    /// Whether the page should offer "use a different account".
    pub fn offers_other_account(&self) -> bool {
        matches!(
            self,
            LoginError::DomainMismatch { .. } | LoginError::TenantMismatch { .. }
        )
    }

    /// Seconds to wait before retrying, when the refusal is temporary.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            LoginError::TooManyAttempts { retry_after }
            | LoginError::PasswordBusy { retry_after }
            | LoginError::CircuitOpen { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// Whether the refusal must be shown on Homeroom's own page rather than sent to the app
    /// (RFC 6749 §4.1.2.1: never redirect to an unverified client or redirect URI).
    pub fn never_redirect(&self) -> bool {
        matches!(
            self,
            LoginError::ClientUnknown { .. } | LoginError::RedirectUriMismatch { .. }
        )
    }

    /// The catalogue row for this variant.
    pub fn entry(&self) -> CatalogueEntry {
        CatalogueEntry {
            code: self.code(),
            title: self.title(),
            http_status: self.http_status(),
            student_message: self.student_message(),
            it_guidance: self.it_guidance(),
        }
    }

    /// Every variant, with placeholder data, for the published catalogue and its tests.
    pub fn catalogue() -> Vec<CatalogueEntry> {
        use strum::IntoEnumIterator;
        LoginError::iter().map(|e| e.entry()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use strum::IntoEnumIterator;

    #[test]
    fn every_variant_has_a_unique_code_and_both_texts() {
        let mut seen = HashSet::new();
        let mut count = 0;
        for e in LoginError::iter() {
            count += 1;
            let code = e.code();
            assert!(seen.insert(code), "duplicate code {code}");
            let (family, reason) = code.split_once('.').expect("family.reason");
            assert!(!family.is_empty() && !reason.is_empty());
            assert!(!e.title().is_empty(), "{code} title");
            assert!(e.student_message().len() > 20, "{code} student message");
            assert!(e.it_guidance().len() > 20, "{code} IT guidance");
            assert!((400..600).contains(&e.http_status()), "{code} status");
        }
        assert_eq!(count, seen.len());
        assert!(count >= 40);
    }

    #[test]
    fn only_unverified_client_errors_refuse_to_redirect() {
        assert!(
            LoginError::ClientUnknown {
                client_id: "x".into()
            }
            .never_redirect()
        );
        assert!(
            LoginError::RedirectUriMismatch {
                client_id: "x".into()
            }
            .never_redirect()
        );
        assert!(
            !LoginError::DomainMismatch {
                used: "a".into(),
                expected: vec![]
            }
            .never_redirect()
        );
    }

    #[test]
    fn domain_mismatch_names_both_accounts() {
        let e = LoginError::DomainMismatch {
            used: "kid@gmail.com".into(),
            expected: vec!["lincolnusd.org".into()],
        };
        let m = e.student_message();
        assert!(m.contains("kid@gmail.com") && m.contains("lincolnusd.org"));
        assert!(e.offers_other_account());
        assert_eq!(e.http_status(), 403);
    }

    #[test]
    fn serialises_with_kind_tag() {
        let v = serde_json::to_value(LoginError::AccountLocked { until: 5 }).unwrap();
        assert_eq!(v["kind"], "account_locked");
        let back: LoginError = serde_json::from_value(v).unwrap();
        assert_eq!(back, LoginError::AccountLocked { until: 5 });
    }
}
