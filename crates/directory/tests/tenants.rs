//! Tenants and domain lookup, on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
mod common;

use common::*;
use homeroom_core::TenantId;
use homeroom_directory::*;

on_both_backends!(
    upsert_is_idempotent,
    domain_lookup_is_case_insensitive,
    domains_are_unique_across_tenants
);

async fn upsert_is_idempotent(dir: Directory) {
    assert!(dir.list_tenants().await.unwrap().is_empty());
    assert_eq!(dir.get_tenant(&TenantId::new("d1")).await.unwrap(), None);

    let d1 = tenant("d1", &["example.org", "students.example.org"]);
    let d2 = tenant("d2", &["other.edu"]);
    // "Config imported twice": same rows afterwards.
    for _ in 0..2 {
        dir.upsert_tenant(&d1).await.unwrap();
        dir.upsert_tenant(&d2).await.unwrap();
    }
    assert_eq!(
        dir.list_tenants().await.unwrap(),
        vec![d1.clone(), d2.clone()]
    );
    assert_eq!(dir.get_tenant(&d1.id).await.unwrap(), Some(d1.clone()));

    // An update replaces fields and the domain list.
    let mut changed = d1.clone();
    changed.name = "Renamed".into();
    changed.session_idle_secs = 900;
    changed.domains = vec!["new.example.org".into()];
    dir.upsert_tenant(&changed).await.unwrap();
    assert_eq!(dir.get_tenant(&d1.id).await.unwrap(), Some(changed));
    assert_eq!(dir.tenant_by_domain("example.org").await.unwrap(), None);
    assert_eq!(
        dir.tenant_by_domain("new.example.org")
            .await
            .unwrap()
            .unwrap()
            .id,
        d1.id
    );
    assert_eq!(dir.list_tenants().await.unwrap().len(), 2);
}

async fn domain_lookup_is_case_insensitive(dir: Directory) {
    // Stored normalised, whatever the configured case and spacing.
    let d1 = tenant("d1", &["Example.ORG", " example.org ", "@Kids.Example.org"]);
    dir.upsert_tenant(&d1).await.unwrap();
    let stored = dir.get_tenant(&d1.id).await.unwrap().unwrap();
    assert_eq!(stored.domains, vec!["example.org", "kids.example.org"]);
    for query in [
        "example.org",
        "EXAMPLE.org",
        "  Example.Org",
        "@example.org",
        "KIDS.example.ORG",
    ] {
        let found = dir.tenant_by_domain(query).await.unwrap();
        assert_eq!(found.map(|t| t.id), Some(d1.id.clone()), "{query}");
    }
    assert_eq!(dir.tenant_by_domain("gmail.com").await.unwrap(), None);
    assert_eq!(dir.tenant_by_domain("").await.unwrap(), None);
}

async fn domains_are_unique_across_tenants(dir: Directory) {
    dir.upsert_tenant(&tenant("d1", &["shared.org"]))
        .await
        .unwrap();
    let err = dir
        .upsert_tenant(&tenant("d2", &["own.org", "SHARED.org"]))
        .await
        .unwrap_err();
    assert!(matches!(err, DirectoryError::Conflict { .. }), "{err:?}");
    // All or nothing: d2 was not created, its own domain not claimed.
    assert_eq!(dir.get_tenant(&TenantId::new("d2")).await.unwrap(), None);
    assert_eq!(dir.tenant_by_domain("own.org").await.unwrap(), None);
    assert_eq!(
        dir.tenant_by_domain("shared.org")
            .await
            .unwrap()
            .unwrap()
            .id,
        TenantId::new("d1")
    );
}
