//! Writing audit events for an attempt. Every step of a login records one event under the
//! attempt's reference id; the writer batches them off the request path.

use crate::AppState;
use homeroom_core::{AccountId, ClientId, LoginError, ProviderId, RefId, TenantId};
use homeroom_directory::AuditEvent;

/// The facts an event carries; fill what is known.
#[derive(Debug, Default, Clone)]
pub struct Ev {
    pub tenant: Option<TenantId>,
    pub provider: Option<ProviderId>,
    pub client: Option<ClientId>,
    pub account: Option<AccountId>,
    pub code: Option<String>,
    pub detail: serde_json::Value,
}

impl Ev {
    pub fn detail(mut self, d: serde_json::Value) -> Self {
        self.detail = d;
        self
    }
}

/// Records one event (never waits).
pub fn record(state: &AppState, ref_id: Option<&RefId>, kind: &str, ev: Ev) {
    let at_ms = state.now().saturating_mul(1000) + sub_second_ms();
    let event = AuditEvent {
        id: ulid::Ulid::new().to_string(),
        ref_id: ref_id.cloned(),
        at_ms,
        tenant: ev.tenant,
        kind: kind.to_owned(),
        code: ev.code,
        provider: ev.provider,
        client: ev.client,
        account: ev.account,
        detail: if ev.detail.is_null() {
            serde_json::json!({})
        } else {
            ev.detail
        },
    };
    tracing::info!(
        ref_id = ref_id.map(|r| r.as_str()),
        kind,
        code = event.code.as_deref(),
        "audit"
    );
    match kind {
        "login.success" => {
            crate::metrics::login(event.provider.as_ref().map(|p| p.as_str()), "success", None)
        }
        "login.refused" => crate::metrics::login(
            event.provider.as_ref().map(|p| p.as_str()),
            "refused",
            event.code.as_deref(),
        ),
        "loop.broken" => crate::metrics::loop_break(if event.detail["where"] == "upstream" {
            "upstream"
        } else {
            "app"
        }),
        _ => {}
    }
    state.audit.record(event);
}

/// Records a refusal with its catalogue code and private detail.
pub fn refusal(state: &AppState, ref_id: &RefId, err: &LoginError, detail: &str, mut ev: Ev) {
    ev.code = Some(err.code().to_owned());
    let mut d = if ev.detail.is_object() {
        ev.detail.clone()
    } else {
        serde_json::json!({})
    };
    if let Some(obj) = d.as_object_mut() {
        obj.insert(
            "reason".into(),
            serde_json::Value::String(detail.chars().take(2000).collect()),
        );
        obj.insert(
            "error".into(),
            serde_json::to_value(err).unwrap_or_default(),
        );
    }
    ev.detail = d;
    record(state, Some(ref_id), "login.refused", ev);
}

fn sub_second_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::from(d.subsec_millis()))
        .unwrap_or(0)
}

/// Renders the trace of one attempt as text for the CLI troubleshooter: control
/// characters escaped (LOG-03), long values cut.
pub fn format_trace(reference: &str, events: &[homeroom_directory::AuditEvent]) -> String {
    use std::fmt::Write as _;
    let clean = |s: &str| -> String {
        s.chars()
            .take(500)
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
    if events.is_empty() {
        let _ = writeln!(out, "No events for reference {}.", clean(reference));
        return out;
    }
    let _ = writeln!(
        out,
        "Trace of {} ({} events)",
        clean(reference),
        events.len()
    );
    for e in events {
        let when = homeroom_core::clock::rfc3339(e.at_ms / 1000);
        let _ = writeln!(
            out,
            "- {when}  {}{}",
            clean(&e.kind),
            e.code
                .as_deref()
                .map(|c| format!("  [{}]", clean(c)))
                .unwrap_or_default()
        );
        for (label, v) in [
            ("tenant", e.tenant.as_ref().map(|t| t.to_string())),
            ("provider", e.provider.as_ref().map(|p| p.to_string())),
            ("app", e.client.as_ref().map(|c| c.to_string())),
            ("account", e.account.as_ref().map(|a| a.to_string())),
        ] {
            if let Some(v) = v {
                let _ = writeln!(out, "    {label}: {}", clean(&v));
            }
        }
        if let Some(err) = e.detail.get("error") {
            let parsed: Option<LoginError> = serde_json::from_value(err.clone()).ok();
            if let Some(le) = parsed {
                let _ = writeln!(
                    out,
                    "    what the student saw: {}",
                    clean(&le.student_message())
                );
                let _ = writeln!(out, "    what to check: {}", clean(&le.it_guidance()));
            }
        }
        if let Some(obj) = e.detail.as_object() {
            for (k, v) in obj.iter().filter(|(k, _)| k.as_str() != "error") {
                let _ = writeln!(out, "    {}: {}", clean(k), clean(&v.to_string()));
            }
        }
    }
    out
}
