//! Accounts and provider links, on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
mod common;

use common::*;
use homeroom_core::{AccountId, ProviderId, TenantId};
use homeroom_directory::*;

on_both_backends!(
    create_and_find_accounts,
    email_lookup_is_normalised,
    duplicate_link_is_a_conflict_and_writes_nothing,
    add_link_rules,
    concurrent_sign_ins_are_all_counted,
    status_and_counts,
    roles_email_stems_schools_and_roster_links,
);

async fn setup(dir: &Directory) {
    dir.upsert_tenant(&tenant("d1", &["example.org"]))
        .await
        .unwrap();
    dir.upsert_tenant(&tenant("d2", &["other.edu"]))
        .await
        .unwrap();
}

async fn create_and_find_accounts(dir: Directory) {
    setup(&dir).await;
    let ada = account("acc_ada", "d1", Some("ada@example.org"), 1000);
    let ada_link = link("acc_ada", "google", "g-123", 1000);
    dir.create_account(&ada, Some(&ada_link)).await.unwrap();
    let bob = account("acc_bob", "d1", None, 1001);
    dir.create_account(&bob, None).await.unwrap();

    assert_eq!(dir.get_account(&ada.id).await.unwrap(), Some(ada.clone()));
    assert_eq!(dir.get_account(&bob.id).await.unwrap(), Some(bob.clone()));
    assert_eq!(
        dir.get_account(&AccountId::new("acc_nope")).await.unwrap(),
        None
    );

    let found = dir
        .find_account_by_link(&ProviderId::new("google"), "g-123")
        .await
        .unwrap();
    assert_eq!(found, Some(ada.clone()));
    assert_eq!(
        dir.find_account_by_link(&ProviderId::new("google"), "G-123")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        dir.find_account_by_link(&ProviderId::new("clever"), "g-123")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        dir.links_for_account(&ada.id).await.unwrap(),
        vec![ada_link]
    );
    assert!(dir.links_for_account(&bob.id).await.unwrap().is_empty());

    // Same id again: conflict.
    let err = dir.create_account(&ada, None).await.unwrap_err();
    assert!(matches!(err, DirectoryError::Conflict { .. }), "{err:?}");
    // A link for another account than the one created is refused up front.
    let wrong = link("acc_other", "google", "g-999", 1);
    let err = dir
        .create_account(&account("acc_new", "d1", None, 1), Some(&wrong))
        .await
        .unwrap_err();
    assert!(matches!(err, DirectoryError::Invalid(_)), "{err:?}");
    assert_eq!(
        dir.get_account(&AccountId::new("acc_new")).await.unwrap(),
        None
    );
    // The tenant must exist.
    let err = dir
        .create_account(&account("acc_x", "missing", None, 1), None)
        .await
        .unwrap_err();
    assert!(matches!(err, DirectoryError::NotFound { .. }), "{err:?}");
    // With a first link too (one statement on PostgreSQL): nothing is written.
    let err = dir
        .create_account(
            &account("acc_y", "missing", None, 1),
            Some(&link("acc_y", "google", "g-y", 1)),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, DirectoryError::NotFound { .. }), "{err:?}");
    assert_eq!(
        dir.find_account_by_link(&ProviderId::new("google"), "g-y")
            .await
            .unwrap(),
        None
    );
}

async fn email_lookup_is_normalised(dir: Directory) {
    setup(&dir).await;
    dir.create_account(&account("acc_1", "d1", Some("Ada@Example.org"), 1), None)
        .await
        .unwrap();
    dir.create_account(&account("acc_2", "d1", Some("ada@example.org"), 2), None)
        .await
        .unwrap();
    dir.create_account(&account("acc_3", "d2", Some("ada@example.org"), 3), None)
        .await
        .unwrap();
    dir.create_account(&account("acc_4", "d1", Some("bob@example.org"), 4), None)
        .await
        .unwrap();
    for query in ["ada@example.org", "  ADA@example.ORG ", "Ada@Example.org"] {
        let ids: Vec<_> = dir
            .find_accounts_by_email(&TenantId::new("d1"), query)
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.id.0)
            .collect();
        assert_eq!(ids, vec!["acc_1", "acc_2"], "{query}");
    }
    assert!(
        dir.find_accounts_by_email(&TenantId::new("d1"), "nobody@example.org")
            .await
            .unwrap()
            .is_empty()
    );
    // The tenant scopes the lookup.
    let other = dir
        .find_accounts_by_email(&TenantId::new("d2"), "ADA@EXAMPLE.ORG")
        .await
        .unwrap();
    assert_eq!(other.len(), 1);
    assert_eq!(other[0].id, AccountId::new("acc_3"));
}

async fn duplicate_link_is_a_conflict_and_writes_nothing(dir: Directory) {
    setup(&dir).await;
    dir.create_account(
        &account("acc_first", "d1", None, 1),
        Some(&link("acc_first", "google", "g-1", 1)),
    )
    .await
    .unwrap();
    let second = account("acc_second", "d1", Some("second@example.org"), 2);
    let err = dir
        .create_account(&second, Some(&link("acc_second", "google", "g-1", 2)))
        .await
        .unwrap_err();
    assert!(matches!(err, DirectoryError::Conflict { .. }), "{err:?}");
    // Atomic: the account row was rolled back with the link.
    assert_eq!(dir.get_account(&second.id).await.unwrap(), None);
    assert!(
        dir.find_accounts_by_email(&TenantId::new("d1"), "second@example.org")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(dir.count_accounts(None).await.unwrap(), 1);
    let owner = dir
        .find_account_by_link(&ProviderId::new("google"), "g-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(owner.id, AccountId::new("acc_first"));
    // The id is free to use afterwards.
    dir.create_account(&second, Some(&link("acc_second", "google", "g-2", 2)))
        .await
        .unwrap();
}

async fn add_link_rules(dir: Directory) {
    setup(&dir).await;
    dir.create_account(&account("acc_a", "d1", None, 1), None)
        .await
        .unwrap();
    dir.create_account(&account("acc_b", "d1", None, 2), None)
        .await
        .unwrap();
    let google = link("acc_a", "google", "g-1", 10);
    let clever = link("acc_a", "clever", "c-1", 20);
    dir.add_link(&clever).await.unwrap();
    dir.add_link(&google).await.unwrap();
    assert_eq!(
        dir.links_for_account(&AccountId::new("acc_a"))
            .await
            .unwrap(),
        vec![google.clone(), clever.clone()]
    );

    // Same (provider, subject) again, for the same or another account: conflict.
    for account in ["acc_a", "acc_b"] {
        let err = dir
            .add_link(&link(account, "google", "g-1", 30))
            .await
            .unwrap_err();
        assert!(matches!(err, DirectoryError::Conflict { .. }), "{err:?}");
    }
    assert!(
        dir.links_for_account(&AccountId::new("acc_b"))
            .await
            .unwrap()
            .is_empty()
    );
    // The same subject at another provider is a different identity.
    dir.add_link(&link("acc_b", "clever", "g-1", 40))
        .await
        .unwrap();
    // Unknown account.
    let err = dir
        .add_link(&link("acc_missing", "google", "g-9", 50))
        .await
        .unwrap_err();
    assert!(matches!(err, DirectoryError::NotFound { .. }), "{err:?}");
}

async fn concurrent_sign_ins_are_all_counted(dir: Directory) {
    setup(&dir).await;
    let id = AccountId::new("acc_busy");
    dir.create_account(&account("acc_busy", "d1", None, 1), None)
        .await
        .unwrap();
    let tasks: Vec<_> = (0..20_i64)
        .map(|i| {
            let dir = dir.clone();
            let id = id.clone();
            tokio::spawn(async move { dir.record_sign_in(&id, 5000 + i).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let acc = dir.get_account(&id).await.unwrap().unwrap();
    assert_eq!(acc.sign_in_count, 20);
    // Never moved backwards by a late, older write.
    assert_eq!(acc.last_sign_in_at, Some(5019));
    dir.record_sign_in(&id, 10).await.unwrap();
    let acc = dir.get_account(&id).await.unwrap().unwrap();
    assert_eq!((acc.sign_in_count, acc.last_sign_in_at), (21, Some(5019)));

    let err = dir
        .record_sign_in(&AccountId::new("acc_nope"), 1)
        .await
        .unwrap_err();
    assert!(matches!(err, DirectoryError::NotFound { .. }), "{err:?}");
}

async fn status_and_counts(dir: Directory) {
    setup(&dir).await;
    assert_eq!(dir.count_accounts(None).await.unwrap(), 0);
    for (i, t) in ["d1", "d1", "d1", "d2"].iter().enumerate() {
        dir.create_account(&account(&format!("acc_{i}"), t, None, i as i64), None)
            .await
            .unwrap();
    }
    assert_eq!(dir.count_accounts(None).await.unwrap(), 4);
    assert_eq!(
        dir.count_accounts(Some(&TenantId::new("d1")))
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        dir.count_accounts(Some(&TenantId::new("d9")))
            .await
            .unwrap(),
        0
    );

    let id = AccountId::new("acc_0");
    for status in [
        AccountStatus::Suspended,
        AccountStatus::Archived,
        AccountStatus::Active,
    ] {
        dir.set_account_status(&id, status).await.unwrap();
        assert_eq!(dir.get_account(&id).await.unwrap().unwrap().status, status);
    }
    let err = dir
        .set_account_status(&AccountId::new("acc_nope"), AccountStatus::Archived)
        .await
        .unwrap_err();
    assert!(matches!(err, DirectoryError::NotFound { .. }), "{err:?}");
}

async fn roles_email_stems_schools_and_roster_links(dir: Directory) {
    setup(&dir).await;
    let d1 = TenantId::new("d1");
    let maya = account("acc_maya", "d1", Some("Maya.Chen+x@example.org"), 1);
    dir.create_account(&maya, None).await.unwrap();
    dir.create_account(
        &account("acc_other", "d2", Some("maya.chen@other.edu"), 2),
        None,
    )
    .await
    .unwrap();
    // Dot-less stem: found whatever the dots; other tenants never; LIKE wildcards literal.
    for stem in ["mayachen", "MAYA.CHEN", "may"] {
        let found = dir.accounts_by_email_stem(&d1, stem, 10).await.unwrap();
        assert_eq!(found.len(), 1, "{stem}");
        assert_eq!(found[0].id, maya.id);
    }
    assert!(
        dir.accounts_by_email_stem(&d1, "m_ya", 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        dir.accounts_by_email_stem(&d1, "%", 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        dir.accounts_by_email_stem(&d1, "", 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Roles replaced; unknown account not found.
    let roles = [homeroom_core::Role::Student, homeroom_core::Role::Teacher];
    dir.set_account_roles(&maya.id, &roles).await.unwrap();
    assert_eq!(
        dir.get_account(&maya.id).await.unwrap().unwrap().roles,
        roles.to_vec()
    );
    let err = dir
        .set_account_roles(&AccountId::new("acc_nope"), &roles)
        .await
        .unwrap_err();
    assert!(matches!(err, DirectoryError::NotFound { .. }), "{err:?}");
    // Schools of the roster; an account created for a roster person without one.
    for sql in [
        "INSERT INTO roster_orgs (tenant_id, sourced_id, name, org_type, extra) VALUES ('d1', 's1', 'North School', 'school', '{}')",
        "INSERT INTO roster_orgs (tenant_id, sourced_id, name, org_type, extra) VALUES ('d1', 'dist', 'District', 'district', '{}')",
        "INSERT INTO roster_users (tenant_id, sourced_id, account_id, status, enabled, username, email, email_norm, given_name, family_name, roles, org_sourced_ids, grades, user_ids, agent_sourced_ids, extra) VALUES ('d1', 'u1', NULL, 'active', 1, 'rory', 'rory@example.org', 'rory@example.org', 'Rory', 'Roster', '[]', '[]', '[]', '[]', '[]', '{}')",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(dir.pool())
            .await
            .unwrap();
    }
    let schools = dir.roster_schools(&d1).await.unwrap();
    assert_eq!(schools.len(), 1);
    assert_eq!(schools[0].sourced_id, "s1");
    let rory = account("acc_rory", "d1", Some("rory@example.org"), 3);
    dir.create_account_for_roster_user(&rory, "u1")
        .await
        .unwrap();
    let ru = dir.roster_user(&d1, "u1").await.unwrap().unwrap();
    assert_eq!(ru.account, Some(rory.id.clone()));
    // Linked already, or no such record: a conflict, and no account is written.
    for (id, sid) in [("acc_two", "u1"), ("acc_three", "u404")] {
        let a = account(id, "d1", Some("x@example.org"), 4);
        let err = dir
            .create_account_for_roster_user(&a, sid)
            .await
            .unwrap_err();
        assert!(matches!(err, DirectoryError::Conflict { .. }), "{err:?}");
        assert!(dir.get_account(&a.id).await.unwrap().is_none(), "{id}");
    }
}

/// A first sign-in looks the account up by (tenant, email). On a table PostgreSQL has not
/// analysed yet (a new school's first morning) its generic plan once used the
/// (tenant, username) index with the email as a filter: every account of the tenant read per
/// sign-in. The plan must use the email index whatever the statistics say.
#[tokio::test]
async fn postgres_email_lookup_plans_on_the_email_index() {
    let Some(schema) = PgSchema::create().await else {
        return;
    };
    let dir = Directory::connect(&schema.url).await.unwrap();
    setup(&dir).await;
    for i in 0..50 {
        let a = account(
            &format!("acc_{i}"),
            "d1",
            Some(&format!("s{i}@example.org")),
            1000 + i,
        );
        dir.create_account(&a, None).await.unwrap();
    }
    dir.close().await;
    let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(&schema.url)
        .await
        .unwrap();
    let plans: Vec<String> = sqlx::raw_sql(
        "SET plan_cache_mode = force_generic_plan;
         PREPARE by_email(text, text) AS SELECT * FROM accounts WHERE tenant_id = $1 AND email_norm = $2 ORDER BY created_at, id;
         EXPLAIN EXECUTE by_email('d1', 's7@example.org');",
    )
    .fetch_all(&mut c)
    .await
    .unwrap()
    .iter()
    .filter_map(|row| sqlx::Row::try_get::<String, _>(row, 0).ok())
    .collect();
    let plan = plans.join("\n");
    assert!(
        plan.contains("accounts_tenant_email"),
        "the email lookup must use (tenant_id, email_norm):\n{plan}"
    );
    assert!(!plan.contains("username"), "{plan}");
    let _ = sqlx::Connection::close(c).await;
    schema.drop_schema().await;
}
