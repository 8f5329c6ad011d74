//! Schema migrations, applied in order at startup. The schema version is SQLite's
//! `PRAGMA user_version`; a database newer than [`LATEST_SCHEMA`] is refused, never touched.
//! Append only: never edit a migration that has shipped.

pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: the audit trail. Triggers make the table append-only at the database level.
    "CREATE TABLE audit_events (
        id       INTEGER PRIMARY KEY AUTOINCREMENT,
        ts_ms    INTEGER NOT NULL,
        kind     TEXT    NOT NULL,
        outcome  TEXT    NOT NULL CHECK (outcome IN ('success', 'failure')),
        identity TEXT,
        source   TEXT,
        detail   TEXT    NOT NULL DEFAULT '{}'
     );
     CREATE INDEX audit_events_ts ON audit_events (ts_ms);
     CREATE INDEX audit_events_kind ON audit_events (kind, ts_ms);
     CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
       BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
     CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
       BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;",
    // 2: daemon starts and clean stops, so a crash is noticed at the next start.
    "CREATE TABLE daemon_runs (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        pid           INTEGER NOT NULL,
        version       TEXT    NOT NULL,
        mode          TEXT    NOT NULL,
        started_at_ms INTEGER NOT NULL,
        stopped_at_ms INTEGER
     );",
    // 3: bearer tokens minted by `kaged tokens create`. Only the SHA-256 is stored.
    "CREATE TABLE api_tokens (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        token_hash      TEXT    NOT NULL UNIQUE CHECK (length(token_hash) = 64),
        actor           TEXT    NOT NULL CHECK (length(trim(actor)) > 0 AND lower(actor) <> 'bootstrap'),
        name            TEXT    CHECK (name IS NULL OR length(trim(name)) > 0),
        created_at_ms   INTEGER NOT NULL,
        last_used_at_ms INTEGER,
        revoked_at_ms   INTEGER
     );",
    // 4: projects registered with the daemon (the files stay in the project directory).
    "CREATE TABLE projects (
        slug         TEXT    PRIMARY KEY,
        root         TEXT    NOT NULL UNIQUE,
        loaded_at_ms INTEGER NOT NULL
     );",
    // 5: sessions (runs of agents, terminals and tasks) and every state change of each. The
    // output itself lives in a transcript file per session; the transitions double as the
    // resumable event stream (their id is the cursor).
    "CREATE TABLE sessions (
        id            TEXT    PRIMARY KEY,
        project       TEXT    NOT NULL,
        kind          TEXT    NOT NULL CHECK (kind IN ('agent', 'terminal', 'task')),
        name          TEXT    NOT NULL,
        command       TEXT    NOT NULL,
        caged         INTEGER NOT NULL,
        state         TEXT    NOT NULL,
        exit_code     INTEGER,
        reason        TEXT,
        created_by    TEXT    NOT NULL,
        created_at_ms INTEGER NOT NULL,
        ended_at_ms   INTEGER
     );
     CREATE INDEX sessions_project ON sessions (project, created_at_ms);
     CREATE TABLE session_transitions (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id TEXT    NOT NULL REFERENCES sessions (id),
        state      TEXT    NOT NULL,
        at_ms      INTEGER NOT NULL,
        actor      TEXT    NOT NULL,
        detail     TEXT    NOT NULL DEFAULT '{}'
     );
     CREATE INDEX session_transitions_session ON session_transitions (session_id, id);",
    // 6: what the operator last accepted for each project (its resolved configuration, and
    // whether it had a .git), so that a restart judges the files against it instead of trusting
    // whatever a run wrote while kaged was down. NULL for rows from before.
    "ALTER TABLE projects ADD COLUMN accepted_config TEXT;
     ALTER TABLE projects ADD COLUMN had_git INTEGER;",
    // 7: transcript retention. When a session's transcript was pruned (the row stays), how long
    // its output was, and the middle range a per-transcript cap dropped (offsets of the output).
    "ALTER TABLE sessions ADD COLUMN transcript_pruned_at_ms INTEGER;
     ALTER TABLE sessions ADD COLUMN output_bytes INTEGER;
     ALTER TABLE sessions ADD COLUMN dropped_from INTEGER;
     ALTER TABLE sessions ADD COLUMN dropped_to INTEGER;",
    // 8: the event log of model-agent sessions: numbered per session from 1 with no gap
    // (the key), `kind` the event's type, `body` its JSON; `parent_call_id` for a subagent's
    // events. Append-only in practice (no statement updates it); a session's rows go with it.
    "CREATE TABLE session_events (
        session_id     TEXT    NOT NULL REFERENCES sessions (id),
        seq            INTEGER NOT NULL CHECK (seq > 0),
        at_ms          INTEGER NOT NULL,
        kind           TEXT    NOT NULL,
        parent_call_id TEXT,
        body           TEXT    NOT NULL CHECK (json_valid(body)),
        PRIMARY KEY (session_id, seq)
     ) WITHOUT ROWID;",
    // 9: whether a session is a model agent's conversation (its output is its event log, and a
    // message to it after its end resumes it).
    "ALTER TABLE sessions ADD COLUMN conversation INTEGER NOT NULL DEFAULT 0;",
    // 10: approvals: a tool call waiting for (or given) the operator's decision. Decided once:
    // the only update is from `pending`, and the first one wins.
    "CREATE TABLE approvals (
        id              TEXT    PRIMARY KEY,
        session_id      TEXT    NOT NULL REFERENCES sessions (id),
        project         TEXT    NOT NULL,
        agent           TEXT    NOT NULL,
        tool            TEXT    NOT NULL,
        call_id         TEXT    NOT NULL,
        parent_call_id  TEXT,
        arguments       TEXT    NOT NULL CHECK (json_valid(arguments)),
        owner           TEXT    NOT NULL,
        state           TEXT    NOT NULL
                        CHECK (state IN ('pending', 'approved', 'denied', 'cancelled')),
        decision        TEXT    CHECK (decision IN ('approve', 'approve_session', 'deny')),
        message         TEXT,
        decided_by      TEXT,
        reason          TEXT,
        requested_at_ms INTEGER NOT NULL,
        decided_at_ms   INTEGER
     );
     CREATE INDEX approvals_state ON approvals (state, requested_at_ms);
     CREATE INDEX approvals_session ON approvals (session_id, agent, tool);
     CREATE TRIGGER approvals_decided_once BEFORE UPDATE ON approvals
     WHEN OLD.state <> 'pending'
     BEGIN SELECT RAISE(ABORT, 'an approval is decided once'); END;",
    // 11: each plugin's key-value storage: its keys (compared as bytes: SQLite's BINARY
    // collation), each value as compact JSON. Every statement names the plugin.
    "CREATE TABLE plugin_storage (
        plugin        TEXT    NOT NULL,
        key           TEXT    NOT NULL,
        value         TEXT    NOT NULL CHECK (json_valid(value)),
        updated_at_ms INTEGER NOT NULL,
        PRIMARY KEY (plugin, key)
     ) WITHOUT ROWID;",
];

/// The schema version this build writes.
pub const LATEST_SCHEMA: u32 = MIGRATIONS.len() as u32;
