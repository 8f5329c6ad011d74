//! Cases of plugins' key-value storage: values round trip as compact JSON, a set replaces, a
//! delete says whether the key was there, a listing matches its prefix literally (`%` and `_`
//! too) in byte order, plugins never see each other's keys, and the per-plugin quota (keys
//! and bytes) refuses a write past it, also when writers race.

use std::sync::Arc;

use kaged_store::{
    Backend, PLUGIN_STORAGE_MAX_BYTES, PLUGIN_STORAGE_MAX_KEYS, PluginQuota, Store, StoreError,
};
use serde_json::json;

use crate::fixtures::session;
use crate::harness::Db;

/// `count` keys `k00001`.. holding `1`, written for `plugin` without kaged (fast), as a full
/// plugin would have written them one by one.
fn fill_keys(db: &Db, plugin: &str, count: u64) {
    let sql = if db.is_postgres() {
        format!(
            "INSERT INTO plugin_storage (plugin, key, value, updated_at_ms)
             SELECT '{plugin}', 'k' || lpad(i::text, 5, '0'), '1', 0
             FROM generate_series(1, {count}) AS i"
        )
    } else {
        format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {count})
             INSERT INTO plugin_storage (plugin, key, value, updated_at_ms)
             SELECT '{plugin}', printf('k%05d', i), '1', 0 FROM n"
        )
    };
    db.exec(&sql).unwrap();
}

fn quota(e: &StoreError) -> Option<PluginQuota> {
    match e {
        StoreError::QuotaExceeded { limit, .. } => Some(*limit),
        _ => None,
    }
}

pub fn plugin_values_round_trip_as_compact_json_replace_and_delete(db: &Db) {
    let value = json!({"notes": ["a", "ü ✓"], "n": 1.5, "nested": {"ok": true, "none": null}});
    {
        let b = db.open();
        assert_eq!(b.plugin_storage_get("memo", "k").unwrap(), None);
        b.plugin_storage_set("memo", "k", &value, 10).unwrap();
        assert_eq!(
            b.plugin_storage_get("memo", "k").unwrap(),
            Some(value.clone())
        );
        for scalar in [json!(null), json!(0), json!("text"), json!([])] {
            b.plugin_storage_set("memo", "scalar", &scalar, 11).unwrap();
            assert_eq!(
                b.plugin_storage_get("memo", "scalar").unwrap(),
                Some(scalar)
            );
        }
        // A set replaces the value and its time; the key stays one.
        b.plugin_storage_set("memo", "k", &json!({"v": 2}), 20)
            .unwrap();
        assert_eq!(b.plugin_storage_list("memo", "").unwrap(), ["k", "scalar"]);
        assert!(b.plugin_storage_delete("memo", "scalar").unwrap());
        assert!(!b.plugin_storage_delete("memo", "scalar").unwrap(), "gone");
        assert!(!b.plugin_storage_delete("memo", "never").unwrap());
        assert_eq!(b.plugin_storage_get("memo", "scalar").unwrap(), None);
    }
    // Durable, stored as compact JSON, stamped with the last write's time.
    let b = db.open();
    assert_eq!(
        b.plugin_storage_get("memo", "k").unwrap(),
        Some(json!({"v": 2}))
    );
    assert_eq!(
        db.query_text(
            "SELECT value || ' ' || CAST(updated_at_ms AS TEXT) FROM plugin_storage ORDER BY key"
        ),
        [r#"{"v":2} 20"#]
    );
}

pub fn a_listing_matches_its_prefix_literally_in_byte_order(db: &Db) {
    let b = db.open();
    let keys = [
        "a%b", "a_b", "aXb", "a%", "ab", "a", "B", "b", "é", "z", "100%", "%", "_x", "a\\b",
    ];
    for k in keys {
        b.plugin_storage_set("memo", k, &json!(k), 1).unwrap();
    }
    let mut sorted: Vec<&str> = keys.to_vec();
    sorted.sort_unstable(); // Rust's str order is byte order
    assert_eq!(b.plugin_storage_list("memo", "").unwrap(), sorted);
    let list = |prefix: &str| b.plugin_storage_list("memo", prefix).unwrap();
    assert_eq!(
        list("a%"),
        ["a%", "a%b"],
        "% is a character, not a wildcard"
    );
    assert_eq!(list("a_"), ["a_b"], "_ is a character, not a wildcard");
    assert_eq!(list("%"), ["%"]);
    assert_eq!(list("_"), ["_x"]);
    assert_eq!(list("a\\"), ["a\\b"], "no escape character either");
    assert_eq!(list("a"), ["a", "a%", "a%b", "aXb", "a\\b", "a_b", "ab"]);
    assert_eq!(list("é"), ["é"]);
    assert_eq!(list("e"), Vec::<String>::new());
    assert_eq!(list("a%b-longer"), Vec::<String>::new());
    assert_eq!(list("A"), Vec::<String>::new(), "case counts");
}

pub fn plugins_never_see_or_change_each_others_keys(db: &Db) {
    let b = db.open();
    b.plugin_storage_set("memo", "shared", &json!("memo's"), 1)
        .unwrap();
    b.plugin_storage_set("memo-2", "shared", &json!("memo-2's"), 1)
        .unwrap();
    b.plugin_storage_set("memo-2", "own", &json!(1), 1).unwrap();
    assert_eq!(
        b.plugin_storage_get("memo", "shared").unwrap(),
        Some(json!("memo's"))
    );
    assert_eq!(b.plugin_storage_get("memo", "own").unwrap(), None);
    assert_eq!(b.plugin_storage_list("memo", "").unwrap(), ["shared"]);
    assert_eq!(
        b.plugin_storage_list("memo-2", "").unwrap(),
        ["own", "shared"]
    );
    assert_eq!(
        b.plugin_storage_list("other", "").unwrap(),
        Vec::<String>::new()
    );
    // A plugin whose name or key looks like a pattern reaches nothing more.
    assert_eq!(
        b.plugin_storage_list("memo%", "").unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(
        b.plugin_storage_list("_emo", "").unwrap(),
        Vec::<String>::new()
    );
    assert!(!b.plugin_storage_delete("memo", "own").unwrap());
    assert!(b.plugin_storage_delete("memo", "shared").unwrap());
    assert_eq!(
        b.plugin_storage_get("memo-2", "shared").unwrap(),
        Some(json!("memo-2's"))
    );
    assert_eq!(
        b.plugin_storage_get("memo-2", "own").unwrap(),
        Some(json!(1))
    );
}

pub fn a_plugin_past_its_key_quota_is_refused_and_others_are_not(db: &Db) {
    let b = db.open();
    fill_keys(db, "full", PLUGIN_STORAGE_MAX_KEYS);
    let e = b
        .plugin_storage_set("full", "one-more", &json!(1), 5)
        .unwrap_err();
    assert_eq!(quota(&e), Some(PluginQuota::Keys), "{e}");
    assert!(e.trouble().is_none(), "a refusal is not storage trouble");
    let text = e.to_string();
    assert!(
        text.contains("plugin full's storage is full") && text.contains("at most 10000 keys"),
        "{text}"
    );
    assert_eq!(
        b.plugin_storage_get("full", "one-more").unwrap(),
        None,
        "nothing written"
    );
    // Replacing a key it holds adds none; other plugins have quotas of their own.
    b.plugin_storage_set("full", "k00001", &json!("new"), 6)
        .unwrap();
    b.plugin_storage_set("roomy", "one-more", &json!(1), 6)
        .unwrap();
    // A delete makes room for exactly one.
    assert!(b.plugin_storage_delete("full", "k00002").unwrap());
    b.plugin_storage_set("full", "one-more", &json!(1), 7)
        .unwrap();
    let e = b
        .plugin_storage_set("full", "two-more", &json!(1), 8)
        .unwrap_err();
    assert_eq!(quota(&e), Some(PluginQuota::Keys), "{e}");
    assert_eq!(
        b.plugin_storage_list("full", "").unwrap().len() as u64,
        PLUGIN_STORAGE_MAX_KEYS
    );
}

pub fn a_plugin_past_its_byte_quota_is_refused_counting_bytes_not_characters(db: &Db) {
    let b = db.open();
    // Sixteen values of exactly 1 MiB as compact JSON, in two-byte characters: 16 MiB.
    let mib = 1024 * 1024;
    let big = json!("é".repeat((mib - 2) / 2));
    assert_eq!(big.to_string().len(), mib);
    let pieces = PLUGIN_STORAGE_MAX_BYTES / mib as u64;
    for i in 0..pieces {
        b.plugin_storage_set("hoard", &format!("v{i:02}"), &big, 1)
            .unwrap();
    }
    let e = b
        .plugin_storage_set("hoard", "tiny", &json!(1), 2)
        .unwrap_err();
    assert_eq!(quota(&e), Some(PluginQuota::Bytes), "{e}");
    assert!(e.to_string().contains("16777216 bytes"), "{e}");
    // A replacement counts its new value instead of the old one: one byte more is refused,
    // the same size or less is kept.
    let bigger = json!(format!("{}x", "é".repeat((mib - 2) / 2)));
    let e = b
        .plugin_storage_set("hoard", "v00", &bigger, 3)
        .unwrap_err();
    assert_eq!(quota(&e), Some(PluginQuota::Bytes), "{e}");
    assert_eq!(
        b.plugin_storage_get("hoard", "v00").unwrap(),
        Some(big.clone())
    );
    b.plugin_storage_set("hoard", "v00", &json!("small"), 4)
        .unwrap();
    b.plugin_storage_set("hoard", "tiny", &json!(1), 5).unwrap();
    b.plugin_storage_set("other", "tiny", &big, 5).unwrap();
}

pub fn racing_writers_never_pass_the_key_quota_together(db: &Db) {
    let b: Arc<dyn Backend> = Arc::from(db.open());
    fill_keys(db, "race", PLUGIN_STORAGE_MAX_KEYS - 1);
    for round in 0..3 {
        let outcomes: Vec<Result<(), StoreError>> = std::thread::scope(|s| {
            let racers: Vec<_> = (0..4)
                .map(|i| {
                    let b = Arc::clone(&b);
                    s.spawn(move || {
                        b.plugin_storage_set("race", &format!("r{round}-{i}"), &json!(i), 1)
                    })
                })
                .collect();
            racers.into_iter().map(|r| r.join().unwrap()).collect()
        });
        let winners: Vec<usize> = (0..4).filter(|&i| outcomes[i].is_ok()).collect();
        assert_eq!(winners.len(), 1, "{outcomes:?}");
        assert!(
            outcomes
                .iter()
                .filter_map(|o| o.as_ref().err())
                .all(|e| quota(e) == Some(PluginQuota::Keys)),
            "{outcomes:?}"
        );
        assert_eq!(
            b.plugin_storage_list("race", "").unwrap().len() as u64,
            PLUGIN_STORAGE_MAX_KEYS
        );
        // Room again for the next round's one winner.
        let winner = format!("r{round}-{}", winners[0]);
        assert!(b.plugin_storage_delete("race", &winner).unwrap());
    }
}

pub fn a_version_10_database_gains_plugin_storage_and_keeps_its_sessions(db: &Db) {
    {
        let old = db.open_at(10);
        assert_eq!(old.schema_version().unwrap(), 10);
        session(old.as_ref(), "s_old");
    }
    let b = db.open();
    assert_eq!(b.schema_version().unwrap(), 11);
    assert!(b.get_session("s_old").unwrap().is_some());
    b.plugin_storage_set("memo", "k", &json!(true), 1).unwrap();
    assert_eq!(
        b.plugin_storage_get("memo", "k").unwrap(),
        Some(json!(true))
    );
}

pub fn the_store_serves_plugin_storage_through_its_async_handle(db: &Db) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = Store::open_for_daemon(&db.storage_url()).unwrap();
        let p = || "memo".to_string();
        let k = || "notes/1".to_string();
        store
            .plugin_storage_set(p(), k(), json!({"a": 1}))
            .await
            .unwrap();
        assert_eq!(
            store.plugin_storage_get(p(), k()).await.unwrap(),
            Some(json!({"a": 1}))
        );
        assert_eq!(
            store
                .plugin_storage_list(p(), "notes/".into())
                .await
                .unwrap(),
            ["notes/1"]
        );
        assert!(store.plugin_storage_delete(p(), k()).await.unwrap());
        assert!(!store.plugin_storage_delete(p(), k()).await.unwrap());
        assert!(store.health().failure().is_none());
    });
}
