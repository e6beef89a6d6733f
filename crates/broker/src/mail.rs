//! Outgoing mail: the texts of invitation, reset and "your password lives with <provider>"
//! mails, and the delivery task that sends the directory's outbox over SMTP (`lettre`).
//!
//! Mail is never sent from a request: handlers write it to the outbox in the same
//! transaction as what it announces (see `homeroom_directory::local`), and
//! [`spawn_delivery`] starts the one task that sends it, owned by the server through the
//! returned [`Delivery`] guard (dropping it stops the task). Without `smtp_url` no task
//! runs and mail is written with status `unsent`, without its link: the outbox is the
//! record and IT copies fresh links from the console. With SMTP, a mail's link rests in
//! the outbox only until delivery, then is erased.
//!
//! Several instances may run the task: each mail is claimed by one atomic UPDATE before an
//! attempt, so it is sent once.

use crate::AppState;
use homeroom_core::clock::rfc3339;
use homeroom_directory::local::LINK_MARKER;
use homeroom_directory::{Account, MailStatus, NewMail, OutboxMail};
use lettre::message::header::ContentType;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Why a mail could not be handed to the mail server.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// The SMTP URL does not parse.
    #[error("bad SMTP URL: {0}")]
    Config(String),
    /// The address or message cannot be built; retrying will not help.
    #[error("mail cannot be built: {0}")]
    Permanent(String),
    /// The server refused or could not be reached; worth retrying.
    #[error("mail server: {0}")]
    Transient(String),
}

fn new_mail(
    state: &AppState,
    a: &Account,
    kind: &str,
    subject: String,
    body: String,
    link: Option<&str>,
) -> Option<NewMail> {
    let to = a.email.clone()?;
    let sendable = state.settings.smtp_url.is_some();
    Some(NewMail {
        id: ulid::Ulid::new().to_string(),
        tenant: Some(a.tenant.clone()),
        account: Some(a.id.clone()),
        kind: kind.to_owned(),
        to,
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
    })
}

fn greeting(a: &Account) -> String {
    match a.given_name.as_deref().or(a.name.as_deref()) {
        Some(n) if !n.trim().is_empty() => format!("Hello {},", n.trim()),
        _ => "Hello,".to_owned(),
    }
}

fn login_line(a: &Account) -> String {
    match (&a.username, &a.email) {
        (Some(u), _) => format!("Your username is {u} (you can also use your email address)."),
        (None, Some(e)) => format!("Sign in with your email address, {e}."),
        _ => String::new(),
    }
}

/// The invitation mail (`None` when the account has no email).
pub fn invitation(state: &AppState, a: &Account, tenant: &str, url: &str) -> Option<NewMail> {
    let school = if tenant.is_empty() {
        "your school"
    } else {
        tenant
    };
    let body = format!(
        "{}\n\n{school} has made you a Homeroom account. Open this link to choose your password:\n\n{LINK_MARKER}\n\nThe link does not expire. After you have chosen your password, the same link takes you to the sign-in page.\n{}\n\nIf you did not expect this, you can ignore this email.\n",
        greeting(a),
        login_line(a)
    );
    new_mail(
        state,
        a,
        "invitation",
        format!("Your Homeroom account at {school}"),
        body,
        Some(url),
    )
}

/// The reset mail (`None` when the account has no email).
pub fn reset(
    state: &AppState,
    a: &Account,
    tenant: &str,
    url: &str,
    expires_at: i64,
) -> Option<NewMail> {
    let school = if tenant.is_empty() {
        "your school"
    } else {
        tenant
    };
    let body = format!(
        "{}\n\nSomeone (hopefully you) asked to reset the Homeroom password of your account at {school}. Open this link to choose a new password:\n\n{LINK_MARKER}\n\nThe link works once, until {} (UTC, 6 hours after it was sent).\n{}\n\nIf you did not ask for this, ignore this email: your password stays the same.\n",
        greeting(a),
        rfc3339(expires_at),
        login_line(a)
    );
    new_mail(
        state,
        a,
        "reset",
        "Reset your Homeroom password".into(),
        body,
        Some(url),
    )
}

/// The note to an SSO-only person who asked for a reset: no link, the provider named.
pub fn sso_only(state: &AppState, a: &Account, tenant: &str, providers: &str) -> Option<NewMail> {
    let school = if tenant.is_empty() {
        "your school"
    } else {
        tenant
    };
    let body = format!(
        "{}\n\nSomeone (hopefully you) asked to reset a Homeroom password for this address at {school}. You don't have a Homeroom password: you sign in with {providers}, and your password lives there. Homeroom never sees it and can't change it.\n\nUse {providers}'s own \"forgot password\" help, or ask your school's IT.\n",
        greeting(a)
    );
    new_mail(
        state,
        a,
        "reset_sso_only",
        format!("Signing in at {school}"),
        body,
        None,
    )
}

/// The text actually sent: the link put back in place of its marker.
pub fn render_body(m: &OutboxMail) -> String {
    match &m.link {
        Some(link) => m.body.replace(LINK_MARKER, link),
        None => m.body.replace(LINK_MARKER, "(link not included)"),
    }
}

/// A connection to the configured mail server.
pub fn transport(url: &str) -> Result<AsyncSmtpTransport<Tokio1Executor>, MailError> {
    Ok(AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
        .map_err(|e| MailError::Config(e.to_string()))?
        .timeout(Some(Duration::from_secs(15)))
        .build())
}

async fn send_one(
    state: &AppState,
    transport: &AsyncSmtpTransport<Tokio1Executor>,
    m: &OutboxMail,
) -> Result<(), MailError> {
    let from = state
        .settings
        .mail_from
        .parse()
        .map_err(|e| MailError::Permanent(format!("from address: {e}")))?;
    let to =
        m.to.parse()
            .map_err(|e| MailError::Permanent(format!("to address: {e}")))?;
    let msg = Message::builder()
        .from(from)
        .to(to)
        .subject(m.subject.clone())
        .message_id(Some(format!("<{}@homeroom>", m.id)))
        .header(ContentType::TEXT_PLAIN)
        .body(render_body(m))
        .map_err(|e| MailError::Permanent(e.to_string()))?;
    match transport.send(msg).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_permanent() => Err(MailError::Permanent(e.to_string())),
        Err(e) => Err(MailError::Transient(e.to_string())),
    }
}

/// Seconds before attempt `n + 1` after `n` failed attempts: 30 s doubling, at most 1 h.
pub fn backoff(attempts: i64) -> i64 {
    let n = u32::try_from(attempts.clamp(1, 20) - 1).unwrap_or(0);
    30_i64.saturating_mul(1_i64 << n.min(10)).min(3600)
}

/// One pass over the due mail: claims, sends and records each. Returns how many were sent.
pub async fn deliver_due(
    state: &AppState,
    transport: &AsyncSmtpTransport<Tokio1Executor>,
) -> usize {
    let now = state.now();
    let due = match state.directory.due_mail(now, 50).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "outbox unreadable");
            return 0;
        }
    };
    let mut sent = 0;
    for m in due {
        match state.directory.claim_mail(&m.id, now, 120).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "cannot claim mail");
                continue;
            }
        }
        let attempts = m.attempts + 1;
        let result = send_one(state, transport, &m).await;
        let now = state.now();
        let recorded = match &result {
            Ok(()) => {
                sent += 1;
                state.directory.mail_sent(&m.id, now).await
            }
            Err(e) => {
                let give_up = matches!(e, MailError::Permanent(_))
                    || attempts >= state.settings.local.mail_max_attempts;
                tracing::warn!(mail = %m.id, kind = %m.kind, attempts, give_up, error = %e, "mail not delivered");
                state
                    .directory
                    .mail_failed(
                        &m.id,
                        &e.to_string(),
                        (!give_up).then(|| now + backoff(attempts)),
                    )
                    .await
            }
        };
        if let Err(e) = recorded {
            tracing::warn!(mail = %m.id, error = %e, "delivery outcome not recorded");
        }
    }
    sent
}

/// Owner of the delivery task: dropping it (or [`Delivery::stop`]) ends the task after
/// the pass in progress.
pub struct Delivery {
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Delivery {
    /// Stops the task and waits for it.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Starts delivering the outbox when `smtp_url` is configured (`None` otherwise, or when
/// the URL is unusable, which is logged).
pub fn spawn_delivery(state: AppState) -> Option<Delivery> {
    let url = state.settings.smtp_url.clone()?;
    let transport = match transport(&url) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "mail delivery not started");
            return None;
        }
    };
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    let every = Duration::from_millis(state.settings.local.mail_poll_ms.max(50));
    let task = tokio::spawn(async move {
        loop {
            deliver_due(&state, &transport).await;
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
            }
        }
    });
    Some(Delivery {
        cancel,
        task: Some(task),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), 30);
        assert_eq!(backoff(2), 60);
        assert_eq!(backoff(3), 120);
        assert_eq!(backoff(12), 3600);
    }

    #[test]
    fn links_go_back_in_only_when_kept() {
        let mut m = OutboxMail {
            id: "m".into(),
            tenant: None,
            account: None,
            kind: "reset".into(),
            to: "a@b.test".into(),
            subject: "s".into(),
            body: format!("open {LINK_MARKER} now"),
            link: Some("https://h/login/reset/T".into()),
            status: MailStatus::Pending,
            attempts: 0,
            created_at: 0,
            next_try_at: 0,
            sent_at: None,
            last_error: None,
        };
        assert_eq!(render_body(&m), "open https://h/login/reset/T now");
        m.link = None;
        assert_eq!(render_body(&m), "open (link not included) now");
    }
}
