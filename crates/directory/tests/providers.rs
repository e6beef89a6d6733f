//! Provider records, on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
mod common;

use common::*;
use homeroom_core::{ProviderId, TenantId};
use homeroom_directory::*;

on_both_backends!(
    providers_round_trip_and_upsert_is_idempotent,
    provider_needs_its_tenant
);

async fn providers_round_trip_and_upsert_is_idempotent(dir: Directory) {
    dir.upsert_tenant(&tenant("d1", &["a.org"])).await.unwrap();
    dir.upsert_tenant(&tenant("d2", &["b.org"])).await.unwrap();
    let g = provider("google", "d1");
    let mut local = provider("local", "d1");
    local.kind = "local".into();
    local.enabled = false;
    local.config = serde_json::json!({});
    let ms = provider("microsoft-d2", "d2");
    for _ in 0..2 {
        for p in [&g, &local, &ms] {
            dir.upsert_provider(p).await.unwrap();
        }
    }
    assert_eq!(dir.get_provider(&g.id).await.unwrap(), Some(g.clone()));
    assert_eq!(
        dir.get_provider(&local.id).await.unwrap(),
        Some(local.clone())
    );
    assert_eq!(
        dir.get_provider(&ProviderId::new("nope")).await.unwrap(),
        None
    );
    assert_eq!(
        dir.list_providers(None).await.unwrap(),
        vec![g.clone(), local.clone(), ms.clone()]
    );
    assert_eq!(
        dir.list_providers(Some(&TenantId::new("d1")))
            .await
            .unwrap(),
        vec![g.clone(), local.clone()]
    );
    assert_eq!(
        dir.list_providers(Some(&TenantId::new("d3")))
            .await
            .unwrap(),
        vec![]
    );

    let mut changed = g.clone();
    changed.display_name = "Google Workspace".into();
    changed.enabled = false;
    changed.config = serde_json::json!({ "client_id": "xyz" });
    dir.upsert_provider(&changed).await.unwrap();
    assert_eq!(dir.get_provider(&g.id).await.unwrap(), Some(changed));
    assert_eq!(dir.list_providers(None).await.unwrap().len(), 3);
}

async fn provider_needs_its_tenant(dir: Directory) {
    let err = dir
        .upsert_provider(&provider("google", "missing"))
        .await
        .unwrap_err();
    assert!(matches!(err, DirectoryError::NotFound { .. }), "{err:?}");
    assert!(dir.list_providers(None).await.unwrap().is_empty());
}
