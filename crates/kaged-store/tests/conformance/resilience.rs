//! Cases of the daemon's claim on its database, of ids under concurrent writers, and (for
//! PostgreSQL) of connections lost or refused and databases that are not kaged's.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kaged_store::{Backend, PostgresBackend, StoreError, Trouble};

use crate::fixtures::{audit, change, session};
use crate::harness::{Db, pg_client};

pub fn a_second_daemon_is_refused_with_who_holds_the_database(db: &Db) {
    let first = db.open();
    first.lock_for_daemon().unwrap();
    first.lock_for_daemon().unwrap();
    let second = db.open();
    let err = second.lock_for_daemon().unwrap_err();
    assert!(matches!(err, StoreError::InUse { .. }), "{err:?}");
    assert!(err.trouble().is_none());
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("kaged pid {} on ", std::process::id())),
        "names the holder: {msg}"
    );
    assert!(msg.contains("stop that daemon first"), "{msg}");
    // The refused one still reads and writes (the daemon decides to stop).
    second.append_audit(&audit("a")).unwrap();
    first.ping().unwrap();
    drop(first);
    // Released with its holder (PostgreSQL: once the server saw the connection close).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match second.lock_for_daemon() {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => {
                assert!(matches!(e, StoreError::InUse { .. }), "{e:?}");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("never released: {e}"),
        }
    }
}

/// A daemon opens its database claimed: a second daemon (a newer kaged, say) is refused
/// before its migrations could change the schema under the first.
pub fn a_second_daemon_is_refused_before_it_migrates(db: &Db) {
    let first = db.open_at(7);
    first.lock_for_daemon().unwrap();
    let err = db.try_open_for_daemon().err().unwrap();
    assert!(matches!(err, StoreError::InUse { .. }), "{err:?}");
    assert_eq!(db.raw_schema_version(), 7, "untouched");
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    let b = loop {
        match db.try_open_for_daemon() {
            Ok(b) => break b,
            Err(e) if Instant::now() < deadline => {
                assert!(matches!(e, StoreError::InUse { .. }), "{e:?}");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("never released: {e}"),
        }
    };
    assert_eq!(b.schema_version().unwrap(), kaged_store::LATEST_SCHEMA);
    b.lock_for_daemon().unwrap();
    assert!(matches!(
        db.open().lock_for_daemon().unwrap_err(),
        StoreError::InUse { .. }
    ));
}

/// Transition ids are the event stream's cursor: a reader that follows them while several
/// writers store changes must never skip one (an id committed after a higher one was read).
pub fn transition_ids_are_committed_in_order_under_concurrent_writers(db: &Db) {
    let b: Arc<dyn Backend> = Arc::from(db.open());
    let writers = 4;
    let per_writer = 40;
    for w in 0..writers {
        session(b.as_ref(), &format!("w{w}"));
    }
    let done = AtomicBool::new(false);
    let seen = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut cursor = 0;
            let mut seen = Vec::new();
            loop {
                let finished = done.load(Ordering::SeqCst);
                let page = b.transitions_after(cursor, None, 1000).unwrap();
                if let Some(last) = page.last() {
                    cursor = last.id;
                }
                seen.extend(page.into_iter().map(|t| t.id));
                if finished {
                    return seen;
                }
            }
        });
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let b = Arc::clone(&b);
                s.spawn(move || {
                    for i in 0..per_writer {
                        b.change_state(&change(&format!("w{w}"), "running", i, false))
                            .unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        done.store(true, Ordering::SeqCst);
        reader.join().unwrap()
    });
    let all: Vec<i64> = b
        .transitions_after(0, None, 10_000)
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(all.len(), writers * (per_writer as usize + 1));
    let first_change = all[writers];
    let seen: Vec<i64> = seen.into_iter().filter(|id| *id >= first_change).collect();
    assert_eq!(seen, all[writers..], "the follower skipped a transition");
}

pub fn a_lost_connection_is_storage_trouble_and_the_next_call_reconnects(db: &Db) {
    let b = db.open();
    b.lock_for_daemon().unwrap();
    b.append_audit(&audit("before")).unwrap();
    assert!(db.kill_connections() >= 2, "the pool's and the lock's");
    let err = b.recent_audit(1).unwrap_err();
    assert_eq!(err.trouble(), Some(Trouble::Failing), "{err:?}");
    assert!(err.to_string().contains(&b.describe()), "{err}");
    // The broken connection was dropped: the next call opens another.
    assert_eq!(b.recent_audit(1).unwrap()[0].event.kind, "before");
    b.append_audit(&audit("after")).unwrap();
    // The readiness ping notices the lock's connection is gone and takes the lock again.
    b.ping().unwrap();
    let other = db.open();
    assert!(matches!(
        other.lock_for_daemon().unwrap_err(),
        StoreError::InUse { .. }
    ));
}

pub fn a_server_that_refuses_connections_is_storage_trouble(db: &Db) {
    let Db::Postgres { url, .. } = db else {
        panic!("PostgreSQL only")
    };
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut nowhere = url.clone();
    nowhere.host = kaged_config::PostgresHost::Tcp("127.0.0.1".into());
    nowhere.port = closed.local_addr().unwrap().port();
    nowhere.password = Some(kaged_config::ConfigSecret::new("sw0rdfish".into()));
    drop(closed);
    let started = Instant::now();
    let err = PostgresBackend::open(&nowhere).err().unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(err.trouble(), Some(Trouble::Failing), "{err:?}");
    let msg = format!("{err} {err:?}");
    assert!(msg.contains(&nowhere.to_string()), "{msg}");
    assert!(!msg.contains("sw0rdfish"), "{msg}");
}

pub fn a_database_with_tables_of_another_application_is_refused_untouched(db: &Db) {
    db.exec("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('keep me')")
        .unwrap();
    let err = db.try_open().err().unwrap();
    assert!(matches!(err, StoreError::NotKaged { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("notes") && msg.contains("createdb"), "{msg}");
    let Db::Postgres { url, .. } = db else {
        panic!("PostgreSQL only")
    };
    let mut c = pg_client(url);
    let kaged: bool = c
        .query_one("SELECT to_regclass('schema_migrations') IS NULL", &[])
        .unwrap()
        .get(0);
    assert!(kaged, "nothing of kaged's was created");
    let body: String = c.query_one("SELECT body FROM notes", &[]).unwrap().get(0);
    assert_eq!(body, "keep me");
}

pub fn the_unix_socket_form_connects(db: &Db) {
    let Db::Postgres { admin, url } = db else {
        panic!("PostgreSQL only")
    };
    let mut c = pg_client(admin);
    let dirs: String = c
        .query_one("SHOW unix_socket_directories", &[])
        .unwrap()
        .get(0);
    let port: String = c.query_one("SHOW port", &[]).unwrap().get(0);
    let dir = dirs.split(',').next().unwrap().trim().to_string();
    let shown = format!(
        "postgres://{}@/{}?host={dir}&port={port}",
        url.user, url.database
    );
    let socket = kaged_config::PostgresUrl::parse(&shown).unwrap();
    assert_eq!(socket.host, kaged_config::PostgresHost::Socket(dir.into()));
    let b = PostgresBackend::open(&socket).unwrap();
    assert_eq!(b.describe(), shown);
    b.append_audit(&audit("over a socket")).unwrap();
    assert_eq!(
        db.open().recent_audit(1).unwrap()[0].event.kind,
        "over a socket"
    );
}

/// The role `kaged_password_test` must give its password over TCP (scripts/postgres's
/// `pg_hba.conf`): kaged sends the one it was given, and a refusal names no password.
pub fn the_password_is_sent_and_never_shown(db: &Db) {
    let Db::Postgres { admin, url } = db else {
        panic!("PostgreSQL only")
    };
    const ROLE: &str = "kaged_password_test";
    let password = format!("pw-{}-{}", std::process::id(), url.database.len());
    let mut c = pg_client(admin);
    let exists: bool = c
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)",
            &[&ROLE],
        )
        .unwrap()
        .get(0);
    let verb = if exists { "ALTER" } else { "CREATE" };
    c.batch_execute(&format!(
        "{verb} ROLE {ROLE} LOGIN PASSWORD '{password}';
         ALTER DATABASE \"{}\" OWNER TO {ROLE}",
        url.database
    ))
    .unwrap();
    let mut as_role = url.clone();
    as_role.user = ROLE.into();
    as_role.host = kaged_config::PostgresHost::Tcp("127.0.0.1".into());
    for wrong in [None, Some("not-it")] {
        as_role.password = wrong.map(|p| kaged_config::ConfigSecret::new(p.into()));
        let err = PostgresBackend::open(&as_role).err().unwrap();
        assert_eq!(err.trouble(), Some(Trouble::Failing), "{err:?}");
        let msg = format!("{err} {err:?}");
        assert!(!msg.contains("not-it") && !msg.contains(&password), "{msg}");
    }
    as_role.password = Some(kaged_config::ConfigSecret::new(password.clone()));
    let b = PostgresBackend::open(&as_role).unwrap();
    b.lock_for_daemon().unwrap();
    b.append_audit(&audit("with a password")).unwrap();
    assert!(!b.describe().contains(&password), "{}", b.describe());
}

/// TLS: verified against the cluster's own CA (`scripts/postgres` makes one beside the
/// server's certificate), to an IP address or a name; refused against the system's roots
/// (which never signed it), as storage trouble; an unreadable root file named.
pub fn tls_is_used_and_the_server_certificate_verified(db: &Db) {
    let Db::Postgres { admin, url } = db else {
        panic!("PostgreSQL only")
    };
    let mut c = pg_client(admin);
    let on: String = c.query_one("SHOW ssl", &[]).unwrap().get(0);
    assert_eq!(
        on, "on",
        "the test cluster serves TLS (scripts/postgres serve)"
    );
    let cert: String = c.query_one("SHOW ssl_cert_file", &[]).unwrap().get(0);
    let ca = std::path::Path::new(&cert).with_file_name("ca.crt");
    assert!(ca.is_file(), "{}", ca.display());
    let verified = kaged_config::PostgresTls::Verify {
        root_cert: Some(ca.clone()),
    };
    for host in ["127.0.0.1", "localhost"] {
        let mut over_tls = url.clone();
        over_tls.host = kaged_config::PostgresHost::Tcp(host.into());
        over_tls.tls = verified.clone();
        let b = PostgresBackend::open(&over_tls).unwrap();
        assert!(
            b.describe().contains("sslmode=verify-full"),
            "{}",
            b.describe()
        );
        b.append_audit(&audit("over TLS")).unwrap();
        let encrypted: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
                 WHERE a.datname = $1 AND s.ssl AND a.application_name LIKE 'kaged pid %'",
                &[&url.database],
            )
            .unwrap()
            .get(0);
        assert!(encrypted >= 1, "{host}: no encrypted kaged connection");
    }
    let mut system_roots = url.clone();
    system_roots.tls = kaged_config::PostgresTls::Verify { root_cert: None };
    let err = PostgresBackend::open(&system_roots).err().unwrap();
    assert_eq!(err.trouble(), Some(Trouble::Failing), "{err:?}");
    assert!(err.to_string().contains("UnknownIssuer"), "says why: {err}");
    let mut missing = url.clone();
    missing.tls = kaged_config::PostgresTls::Verify {
        root_cert: Some("/nonexistent/ca.crt".into()),
    };
    let err = PostgresBackend::open(&missing).err().unwrap();
    assert!(matches!(err, StoreError::Setup { .. }), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/ca.crt"), "{err}");
}

/// Many callers at once share at most `POOL_SIZE` connections (plus the lock's), and all of
/// their writes land.
pub fn the_pool_is_bounded_and_shared(db: &Db) {
    let Db::Postgres { admin, url } = db else {
        panic!("PostgreSQL only")
    };
    let b: Arc<dyn Backend> = Arc::from(db.open_for_daemon());
    let done = AtomicBool::new(false);
    let callers = kaged_store::POOL_SIZE * 3;
    let most = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let mut c = pg_client(admin);
            let mut most = 0;
            while !done.load(Ordering::SeqCst) {
                let n: i64 = c
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1",
                        &[&url.database],
                    )
                    .unwrap()
                    .get(0);
                most = most.max(n);
                std::thread::sleep(Duration::from_millis(5));
            }
            most
        });
        let handles: Vec<_> = (0..callers)
            .map(|i| {
                let b = Arc::clone(&b);
                s.spawn(move || {
                    for _ in 0..15 {
                        b.append_audit(&audit(&format!("caller {i}"))).unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        done.store(true, Ordering::SeqCst);
        watcher.join().unwrap()
    });
    assert_eq!(b.recent_audit(10_000).unwrap().len(), callers * 15);
    let most = usize::try_from(most).unwrap();
    assert!(most <= kaged_store::POOL_SIZE + 1, "{most} connections");
    assert!(most >= 3, "callers shared one connection only: {most}");
}
