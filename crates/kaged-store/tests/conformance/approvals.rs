//! Cases of approvals: the first decision wins (also when two race), a decided approval never
//! changes (the database refuses it too), the listing's filters and order, grants per session.

use std::sync::Arc;

use kaged_store::{ApprovalFilter, Backend, Decided};

use crate::fixtures::{decision, pending, session};
use crate::harness::Db;

pub fn the_first_decision_wins_and_is_kept_across_a_reopen(db: &Db) {
    {
        let b = db.open();
        session(b.as_ref(), "s1");
        b.create_approval(&pending("apr_1", "s1", "shell.bash", 10))
            .unwrap();
        assert_eq!(
            b.get_approval("apr_1").unwrap().unwrap(),
            pending("apr_1", "s1", "shell.bash", 10)
        );
        let Decided::Now(first) = b
            .decide_approval("apr_1", &decision("denied", "deny", "user:ann"))
            .unwrap()
        else {
            panic!("the first decision must win")
        };
        assert_eq!(first.state, "denied");
        assert_eq!(first.message.as_deref(), Some("use make clean"));
        assert_eq!(first.decided_at_ms, Some(500));
        let Decided::Already(kept) = b
            .decide_approval("apr_1", &decision("approved", "approve", "bob"))
            .unwrap()
        else {
            panic!("a second decision must lose")
        };
        assert_eq!(kept, first);
        assert_eq!(
            b.decide_approval("apr_nope", &decision("approved", "approve", "bob"))
                .unwrap(),
            Decided::Unknown
        );
        assert!(b.get_approval("apr_nope").unwrap().is_none());
    }
    let b = db.open();
    let again = b.get_approval("apr_1").unwrap().unwrap();
    assert_eq!(again.decided_by.as_deref(), Some("user:ann"));
    assert_eq!(
        again.arguments,
        serde_json::json!({"command": "rm -rf build"})
    );
}

pub fn racing_decisions_have_exactly_one_winner(db: &Db) {
    let b: Arc<dyn Backend> = Arc::from(db.open());
    session(b.as_ref(), "s1");
    for round in 0..5 {
        let id = format!("apr_{round}");
        b.create_approval(&pending(&id, "s1", "shell.bash", round))
            .unwrap();
        let outcomes: Vec<Decided> = std::thread::scope(|s| {
            let racers: Vec<_> = ["ann", "bob", "cat"]
                .into_iter()
                .map(|who| {
                    let (b, id) = (Arc::clone(&b), id.clone());
                    s.spawn(move || b.decide_approval(&id, &decision("approved", "approve", who)))
                })
                .collect();
            racers
                .into_iter()
                .map(|r| r.join().unwrap().unwrap())
                .collect()
        });
        let winners: Vec<_> = outcomes
            .iter()
            .filter_map(|o| match o {
                Decided::Now(a) => Some(a.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(winners.len(), 1, "{outcomes:?}");
        for o in &outcomes {
            if let Decided::Already(a) = o {
                assert_eq!(a, &winners[0]);
            }
        }
    }
}

pub fn the_database_refuses_to_change_a_decided_approval_and_unknown_sessions(db: &Db) {
    let b = db.open();
    session(b.as_ref(), "s1");
    b.create_approval(&pending("apr_1", "s1", "shell.bash", 10))
        .unwrap();
    let dup = b.create_approval(&pending("apr_1", "s1", "shell.bash", 10));
    assert!(dup.unwrap_err().trouble().is_none(), "ids are unique");
    b.decide_approval("apr_1", &decision("approved", "approve", "ann"))
        .unwrap();
    let err = db
        .exec("UPDATE approvals SET state = 'pending' WHERE id = 'apr_1'")
        .unwrap_err();
    assert!(err.contains("decided once"), "{err}");
    let orphan = b.create_approval(&pending("apr_2", "no-such-session", "shell.bash", 10));
    assert!(
        orphan.unwrap_err().trouble().is_none(),
        "an approval needs its session"
    );
    let mut bad = pending("apr_3", "s1", "shell.bash", 10);
    bad.state = "maybe".into();
    assert!(b.create_approval(&bad).unwrap_err().trouble().is_none());
}

pub fn listing_filters_newest_first_and_grants_are_per_session_agent_and_tool(db: &Db) {
    let b = db.open();
    session(b.as_ref(), "s1");
    session(b.as_ref(), "s2");
    b.create_approval(&pending("apr_a", "s1", "shell.bash", 10))
        .unwrap();
    b.create_approval(&pending("apr_b", "s1", "file.write", 20))
        .unwrap();
    b.create_approval(&pending("apr_c", "s2", "shell.bash", 30))
        .unwrap();
    // Same time as apr_c: the later-stored comes first.
    b.create_approval(&pending("apr_0", "s2", "file.read", 30))
        .unwrap();
    b.decide_approval("apr_a", &decision("approved", "approve_session", "ann"))
        .unwrap();
    let ids = |f: ApprovalFilter| -> Vec<String> {
        b.list_approvals(&f)
            .unwrap()
            .into_iter()
            .map(|a| a.id)
            .collect()
    };
    let all = ApprovalFilter {
        limit: 10,
        ..Default::default()
    };
    assert_eq!(ids(all.clone()), ["apr_0", "apr_c", "apr_b", "apr_a"]);
    let pending_only = ApprovalFilter {
        state: Some("pending".into()),
        ..all.clone()
    };
    assert_eq!(ids(pending_only), ["apr_0", "apr_c", "apr_b"]);
    let of_s1 = ApprovalFilter {
        session: Some("s1".into()),
        limit: 1,
        ..all.clone()
    };
    assert_eq!(ids(of_s1), ["apr_b"]);
    let other_project = ApprovalFilter {
        project: Some("other".into()),
        ..all
    };
    assert!(ids(other_project).is_empty());
    assert!(
        b.granted_for_session("s1", "primary", "shell.bash")
            .unwrap()
    );
    assert!(
        !b.granted_for_session("s1", "primary", "file.write")
            .unwrap()
    );
    assert!(
        !b.granted_for_session("s2", "primary", "shell.bash")
            .unwrap()
    );
    assert!(!b.granted_for_session("s1", "helper", "shell.bash").unwrap());
}
