//! PostgreSQL's schema migrations: the same numbered steps as SQLite's (`crate::migrations`,
//! one for one, so a schema version means the same tables in both), written for PostgreSQL.
//! Append only: never edit a migration that has shipped. `schema_migrations` records each one
//! applied (`schema.rs`).
//!
//! Differences from SQLite, none visible through [`crate::Backend`]: ids are identity columns;
//! `sessions` and `approvals` carry a `row_order` identity for SQLite's `rowid` tie-breaks;
//! booleans are `BOOLEAN`; JSON columns are `TEXT` checked by a cast to `json` (kept exactly as
//! written); the append-only and decided-once rules are PL/pgSQL triggers.

pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: the audit trail, append-only by triggers (rows and TRUNCATE).
    "CREATE TABLE audit_events (
        id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        ts_ms    BIGINT NOT NULL,
        kind     TEXT   NOT NULL,
        outcome  TEXT   NOT NULL CHECK (outcome IN ('success', 'failure')),
        identity TEXT,
        source   TEXT,
        detail   TEXT   NOT NULL DEFAULT '{}'
     );
     CREATE INDEX audit_events_ts ON audit_events (ts_ms);
     CREATE INDEX audit_events_kind ON audit_events (kind, ts_ms);
     CREATE FUNCTION kaged_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
     BEGIN
       RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
     END $$;
     CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
       FOR EACH ROW EXECUTE FUNCTION kaged_append_only();
     CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
       FOR EACH STATEMENT EXECUTE FUNCTION kaged_append_only();",
    // 2: daemon starts and clean stops.
    "CREATE TABLE daemon_runs (
        id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        pid           BIGINT NOT NULL,
        version       TEXT   NOT NULL,
        mode          TEXT   NOT NULL,
        started_at_ms BIGINT NOT NULL,
        stopped_at_ms BIGINT
     );",
    // 3: bearer tokens by SHA-256 only.
    "CREATE TABLE api_tokens (
        id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        token_hash      TEXT   NOT NULL UNIQUE CHECK (length(token_hash) = 64),
        actor           TEXT   NOT NULL
                        CHECK (length(btrim(actor)) > 0 AND lower(actor) <> 'bootstrap'),
        name            TEXT   CHECK (name IS NULL OR length(btrim(name)) > 0),
        created_at_ms   BIGINT NOT NULL,
        last_used_at_ms BIGINT,
        revoked_at_ms   BIGINT
     );",
    // 4: projects registered with the daemon.
    "CREATE TABLE projects (
        slug         TEXT   PRIMARY KEY,
        root         TEXT   NOT NULL UNIQUE,
        loaded_at_ms BIGINT NOT NULL
     );",
    // 5: sessions and every state change of each (their ids are the event stream's cursor).
    "CREATE TABLE sessions (
        id            TEXT    PRIMARY KEY,
        project       TEXT    NOT NULL,
        kind          TEXT    NOT NULL CHECK (kind IN ('agent', 'terminal', 'task')),
        name          TEXT    NOT NULL,
        command       TEXT    NOT NULL,
        caged         BOOLEAN NOT NULL,
        state         TEXT    NOT NULL,
        exit_code     INTEGER,
        reason        TEXT,
        created_by    TEXT    NOT NULL,
        created_at_ms BIGINT  NOT NULL,
        ended_at_ms   BIGINT,
        row_order     BIGINT  GENERATED ALWAYS AS IDENTITY UNIQUE
     );
     CREATE INDEX sessions_project ON sessions (project, created_at_ms);
     CREATE TABLE session_transitions (
        id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        session_id TEXT   NOT NULL REFERENCES sessions (id),
        state      TEXT   NOT NULL,
        at_ms      BIGINT NOT NULL,
        actor      TEXT   NOT NULL,
        detail     TEXT   NOT NULL DEFAULT '{}'
     );
     CREATE INDEX session_transitions_session ON session_transitions (session_id, id);",
    // 6: what the operator last accepted for each project.
    "ALTER TABLE projects ADD COLUMN accepted_config TEXT;
     ALTER TABLE projects ADD COLUMN had_git BOOLEAN;",
    // 7: transcript retention.
    "ALTER TABLE sessions ADD COLUMN transcript_pruned_at_ms BIGINT;
     ALTER TABLE sessions ADD COLUMN output_bytes BIGINT;
     ALTER TABLE sessions ADD COLUMN dropped_from BIGINT;
     ALTER TABLE sessions ADD COLUMN dropped_to BIGINT;",
    // 8: the event log of model-agent sessions, numbered per session from 1 with no gap.
    "CREATE TABLE session_events (
        session_id     TEXT   NOT NULL REFERENCES sessions (id),
        seq            BIGINT NOT NULL CHECK (seq > 0),
        at_ms          BIGINT NOT NULL,
        kind           TEXT   NOT NULL,
        parent_call_id TEXT,
        body           TEXT   NOT NULL CHECK (body::json IS NOT NULL),
        PRIMARY KEY (session_id, seq)
     );",
    // 9: whether a session is a model agent's conversation.
    "ALTER TABLE sessions ADD COLUMN conversation BOOLEAN NOT NULL DEFAULT false;",
    // 10: approvals, decided once (a trigger refuses any update of a decided one).
    "CREATE TABLE approvals (
        id              TEXT   PRIMARY KEY,
        session_id      TEXT   NOT NULL REFERENCES sessions (id),
        project         TEXT   NOT NULL,
        agent           TEXT   NOT NULL,
        tool            TEXT   NOT NULL,
        call_id         TEXT   NOT NULL,
        parent_call_id  TEXT,
        arguments       TEXT   NOT NULL CHECK (arguments::json IS NOT NULL),
        owner           TEXT   NOT NULL,
        state           TEXT   NOT NULL
                        CHECK (state IN ('pending', 'approved', 'denied', 'cancelled')),
        decision        TEXT   CHECK (decision IN ('approve', 'approve_session', 'deny')),
        message         TEXT,
        decided_by      TEXT,
        reason          TEXT,
        requested_at_ms BIGINT NOT NULL,
        decided_at_ms   BIGINT,
        row_order       BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE
     );
     CREATE INDEX approvals_state ON approvals (state, requested_at_ms);
     CREATE INDEX approvals_session ON approvals (session_id, agent, tool);
     CREATE FUNCTION kaged_decided_once() RETURNS trigger LANGUAGE plpgsql AS $$
     BEGIN
       RAISE EXCEPTION 'an approval is decided once';
     END $$;
     CREATE TRIGGER approvals_decided_once BEFORE UPDATE ON approvals
       FOR EACH ROW WHEN (OLD.state <> 'pending') EXECUTE FUNCTION kaged_decided_once();",
    // 11: each plugin's key-value storage. Keys collate as bytes ("C"), as in SQLite, so
    // the primary key's order is the listing's order.
    "CREATE TABLE plugin_storage (
        plugin        TEXT   NOT NULL,
        key           TEXT   COLLATE \"C\" NOT NULL,
        value         TEXT   NOT NULL CHECK (value::json IS NOT NULL),
        updated_at_ms BIGINT NOT NULL,
        PRIMARY KEY (plugin, key)
     );",
];

#[cfg(test)]
mod tests {
    #[test]
    fn every_sqlite_migration_has_its_postgresql_twin() {
        assert_eq!(
            super::MIGRATIONS.len(),
            crate::migrations::MIGRATIONS.len(),
            "a schema version must mean the same tables in both backends"
        );
    }
}
