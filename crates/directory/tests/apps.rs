//! App (OAuth client) records, on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
mod common;

use common::*;
use homeroom_core::{ClientId, TenantId};
use homeroom_directory::*;

on_both_backends!(apps_round_trip_and_upsert_is_idempotent);

async fn apps_round_trip_and_upsert_is_idempotent(dir: Directory) {
    dir.upsert_tenant(&tenant("d1", &["a.org"])).await.unwrap();
    dir.upsert_tenant(&tenant("d2", &["b.org"])).await.unwrap();
    let lms = app("lms", "d1");
    let mut public = app("mobile", "d1");
    public.secret_hash = None;
    public.token_endpoint_auth_method = "none".into();
    public.initiate_login_uri = Some("https://mobile.example/login".into());
    public.start_url = None;
    public.allowed_origins = vec![];
    let other = app("library", "d2");
    for _ in 0..2 {
        for a in [&lms, &public, &other] {
            dir.upsert_app(a).await.unwrap();
        }
    }
    assert_eq!(
        dir.get_app(&lms.client_id).await.unwrap(),
        Some(lms.clone())
    );
    let stored_public = dir.get_app(&public.client_id).await.unwrap().unwrap();
    assert!(stored_public.is_public());
    assert_eq!(stored_public, public);
    assert_eq!(dir.get_app(&ClientId::new("nope")).await.unwrap(), None);
    assert_eq!(
        dir.list_apps(None).await.unwrap(),
        vec![lms.clone(), public.clone(), other.clone()]
    );
    assert_eq!(
        dir.list_apps(Some(&TenantId::new("d2"))).await.unwrap(),
        vec![other.clone()]
    );

    let mut changed = lms.clone();
    changed
        .redirect_uris
        .push("https://lms.example/other".into());
    changed.enabled = false;
    changed.secret_hash = None;
    dir.upsert_app(&changed).await.unwrap();
    assert_eq!(dir.get_app(&lms.client_id).await.unwrap(), Some(changed));
    assert_eq!(dir.list_apps(None).await.unwrap().len(), 3);

    let err = dir.upsert_app(&app("orphan", "missing")).await.unwrap_err();
    assert!(matches!(err, DirectoryError::NotFound { .. }), "{err:?}");
}
