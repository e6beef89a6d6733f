//! Audit events and the batching writer, on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
mod common;

use common::*;
use homeroom_core::{AccountId, ClientId, ProviderId, RefId, TenantId};
use homeroom_directory::*;
use std::time::Duration;

on_both_backends!(
    insert_and_trace_by_ref,
    list_audit_filters,
    writer_batches_and_flushes,
    writer_flushes_by_itself,
    writer_shutdown_drains,
);

async fn insert_and_trace_by_ref(dir: Directory) {
    // Inserted out of order; read back oldest first.
    let events = vec![
        event("01C", Some("HR-A"), 300, "login.success"),
        event("01A", Some("HR-A"), 100, "login.start"),
        event("01X", Some("HR-B"), 150, "login.start"),
        event("01B", Some("HR-A"), 200, "upstream.callback"),
        event("01N", None, 250, "config.imported"),
    ];
    dir.insert_audit_events(&events).await.unwrap();
    let trace = dir.audit_for_ref(&RefId::new("HR-A")).await.unwrap();
    let ids: Vec<_> = trace.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, vec!["01A", "01B", "01C"]);
    assert_eq!(trace[0], events[1]);
    assert!(
        dir.audit_for_ref(&RefId::new("HR-none"))
            .await
            .unwrap()
            .is_empty()
    );

    // Re-inserting (a retried batch) is harmless, and an empty batch is a no-op.
    dir.insert_audit_events(&events).await.unwrap();
    dir.insert_audit_events(&[]).await.unwrap();
    assert_eq!(
        dir.audit_for_ref(&RefId::new("HR-A")).await.unwrap().len(),
        3
    );

    // Large batches (several multi-row chunks) in one go.
    let many: Vec<_> = (0..300)
        .map(|i| event(&format!("02{i:04}"), Some("HR-BIG"), 1000 + i, "step"))
        .collect();
    dir.insert_audit_events(&many).await.unwrap();
    assert_eq!(
        dir.audit_for_ref(&RefId::new("HR-BIG")).await.unwrap(),
        many
    );
}

async fn list_audit_filters(dir: Directory) {
    let mut events = Vec::new();
    for i in 0..30_i64 {
        let mut e = event(
            &format!("03{i:04}"),
            Some(&format!("HR-{}", i % 3)),
            10_000 + i * 10,
            "login.start",
        );
        e.tenant = Some(TenantId::new(if i % 2 == 0 { "d1" } else { "d2" }));
        if i % 5 == 0 {
            e.kind = "login.refused".into();
            e.code = Some("HR-DOMAIN-MISMATCH".into());
        }
        if i % 3 == 0 {
            e.provider = Some(ProviderId::new("google"));
        }
        if i % 4 == 0 {
            e.client = Some(ClientId::new("lms"));
        }
        if i == 7 {
            e.account = Some(AccountId::new("acc_7"));
        }
        events.push(e);
    }
    dir.insert_audit_events(&events).await.unwrap();
    let ids = |v: Vec<AuditEvent>| v.into_iter().map(|e| e.id).collect::<Vec<_>>();
    let expect = |pred: &dyn Fn(&AuditEvent) -> bool| {
        events
            .iter()
            .rev()
            .filter(|e| pred(e))
            .map(|e| e.id.clone())
            .collect::<Vec<_>>()
    };

    // No filter: newest first, default limit applies.
    let all = dir.list_audit(&AuditFilter::default()).await.unwrap();
    assert_eq!(ids(all), expect(&|_| true));
    let f = AuditFilter {
        tenant: Some(TenantId::new("d1")),
        ..Default::default()
    };
    assert_eq!(
        ids(dir.list_audit(&f).await.unwrap()),
        expect(&|e| e.tenant.as_ref().unwrap().0 == "d1")
    );
    let f = AuditFilter {
        code: Some("HR-DOMAIN-MISMATCH".into()),
        ..Default::default()
    };
    assert_eq!(
        ids(dir.list_audit(&f).await.unwrap()),
        expect(&|e| e.code.is_some())
    );
    let f = AuditFilter {
        kind: Some("login.start".into()),
        ..Default::default()
    };
    assert_eq!(
        ids(dir.list_audit(&f).await.unwrap()),
        expect(&|e| e.kind == "login.start")
    );
    let f = AuditFilter {
        provider: Some(ProviderId::new("google")),
        ..Default::default()
    };
    assert_eq!(
        ids(dir.list_audit(&f).await.unwrap()),
        expect(&|e| e.provider.is_some())
    );
    let f = AuditFilter {
        client: Some(ClientId::new("lms")),
        ..Default::default()
    };
    assert_eq!(
        ids(dir.list_audit(&f).await.unwrap()),
        expect(&|e| e.client.is_some())
    );
    let f = AuditFilter {
        account: Some(AccountId::new("acc_7")),
        ..Default::default()
    };
    assert_eq!(
        ids(dir.list_audit(&f).await.unwrap()),
        vec!["030007".to_owned()]
    );
    let f = AuditFilter {
        since_ms: Some(10_100),
        until_ms: Some(10_150),
        ..Default::default()
    };
    assert_eq!(
        ids(dir.list_audit(&f).await.unwrap()),
        expect(&|e| (10_100..=10_150).contains(&e.at_ms))
    );
    // Combined with AND, and limited.
    let f = AuditFilter {
        tenant: Some(TenantId::new("d1")),
        provider: Some(ProviderId::new("google")),
        since_ms: Some(10_050),
        limit: 2,
        ..Default::default()
    };
    let want: Vec<_> = expect(&|e| {
        e.tenant.as_ref().unwrap().0 == "d1" && e.provider.is_some() && e.at_ms >= 10_050
    })
    .into_iter()
    .take(2)
    .collect();
    assert_eq!(want.len(), 2);
    assert_eq!(ids(dir.list_audit(&f).await.unwrap()), want);
    let f = AuditFilter {
        tenant: Some(TenantId::new("nobody")),
        ..Default::default()
    };
    assert!(dir.list_audit(&f).await.unwrap().is_empty());

    // Limits: default 100, capped at 1000.
    let many: Vec<_> = (0..1100)
        .map(|i| event(&format!("04{i:05}"), None, 50_000 + i, "bulk"))
        .collect();
    dir.insert_audit_events(&many).await.unwrap();
    assert_eq!(
        dir.list_audit(&AuditFilter::default()).await.unwrap().len(),
        100
    );
    let f = AuditFilter {
        limit: 5000,
        ..Default::default()
    };
    assert_eq!(dir.list_audit(&f).await.unwrap().len(), 1000);
    let f = AuditFilter {
        limit: -1,
        ..Default::default()
    };
    assert_eq!(dir.list_audit(&f).await.unwrap().len(), 100);
}

async fn writer_batches_and_flushes(dir: Directory) {
    let writer = AuditWriter::spawn(dir.clone());
    let other = writer.clone();
    // More than one batch (256), from two handles, interleaved refs.
    for i in 0..600_i64 {
        let w = if i % 2 == 0 { &writer } else { &other };
        w.record(event(
            &format!("05{i:05}"),
            Some(if i % 2 == 0 { "HR-EVEN" } else { "HR-ODD" }),
            1000 + i,
            "step",
        ));
    }
    writer.flush().await;
    let even = dir.audit_for_ref(&RefId::new("HR-EVEN")).await.unwrap();
    let odd = dir.audit_for_ref(&RefId::new("HR-ODD")).await.unwrap();
    assert_eq!((even.len(), odd.len()), (300, 300));
    assert!(
        even.windows(2).all(|w| w[0].at_ms < w[1].at_ms),
        "trace must be oldest first"
    );
    assert_eq!(writer.dropped(), 0);
    // Flushing with nothing pending returns at once.
    tokio::time::timeout(Duration::from_secs(5), other.flush())
        .await
        .unwrap();
    writer.shutdown().await;
}

async fn writer_flushes_by_itself(dir: Directory) {
    let writer = AuditWriter::spawn(dir.clone());
    writer.record(event("06A", Some("HR-TIMER"), 1, "login.start"));
    writer.record(event("06B", Some("HR-TIMER"), 2, "login.success"));
    // No flush: the 100 ms batch timer writes the partial batch.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if dir
            .audit_for_ref(&RefId::new("HR-TIMER"))
            .await
            .unwrap()
            .len()
            == 2
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "partial batch never written"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Dropping the last handle ends the task after writing what it holds.
    writer.record(event("06C", Some("HR-TIMER"), 3, "token.issued"));
    drop(writer);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while dir
        .audit_for_ref(&RefId::new("HR-TIMER"))
        .await
        .unwrap()
        .len()
        < 3
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "events lost when the last writer was dropped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn writer_shutdown_drains(dir: Directory) {
    let writer = AuditWriter::spawn(dir.clone());
    let survivor = writer.clone();
    for i in 0..1000_i64 {
        writer.record(event(&format!("07{i:05}"), Some("HR-DRAIN"), i, "step"));
    }
    writer.shutdown().await;
    assert_eq!(
        dir.audit_for_ref(&RefId::new("HR-DRAIN"))
            .await
            .unwrap()
            .len(),
        1000
    );
    // After shutdown, other handles' events are dropped (and counted), never block.
    survivor.record(event("07late", Some("HR-DRAIN"), 2000, "step"));
    assert_eq!(survivor.dropped(), 1);
    tokio::time::timeout(Duration::from_secs(1), survivor.flush())
        .await
        .unwrap();
}

/// On a single-threaded runtime the writer task cannot run while `record` is called in
/// a loop, so the queue's capacity is exactly what fits: the rest is dropped and counted.
#[tokio::test(flavor = "current_thread")]
async fn full_queue_drops_and_counts() {
    let dir = Directory::connect("sqlite::memory:").await.unwrap();
    let writer = AuditWriter::spawn(dir.clone());
    let extra = 100;
    for i in 0..(audit_writer::AUDIT_QUEUE_CAPACITY + extra) {
        writer.record(event(
            &format!("08{i:06}"),
            Some("HR-FULL"),
            i as i64,
            "step",
        ));
    }
    assert_eq!(writer.dropped(), extra as u64);
    writer.flush().await;
    let stored = dir.audit_for_ref(&RefId::new("HR-FULL")).await.unwrap();
    assert_eq!(stored.len(), audit_writer::AUDIT_QUEUE_CAPACITY);
    writer.shutdown().await;
}
