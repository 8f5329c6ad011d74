//! The conformance suite of the storage boundary: every backend-agnostic guarantee of
//! `kaged_store::Backend`, as one list of cases run against SQLite (a temporary file) and
//! PostgreSQL (a fresh database per test in the cluster named by `KAGED_TEST_POSTGRES_URL`;
//! see `harness.rs`). Tests of one backend's own machinery stay beside it (`src/sqlite/tests.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod approvals;
mod basics;
mod copy;
mod events;
mod fixtures;
mod harness;
mod plugin_storage;
mod resilience;

/// Each case (a `fn(&Db)`) becomes a test in `sqlite::` and one in `postgres::`.
macro_rules! conformance {
    ($($module:ident :: $case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $case() {
                    super::$module::$case(&super::harness::Db::sqlite());
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $case() {
                    if let Some(db) = super::harness::Db::postgres(stringify!($case)) {
                        super::$module::$case(&db);
                    }
                }
            )*
        }
    };
}

conformance! {
    basics::a_new_database_gets_the_latest_schema,
    basics::an_old_database_is_upgraded_and_keeps_its_rows,
    basics::a_newer_database_is_refused_and_left_untouched,
    basics::audit_records_read_newest_first_and_the_database_refuses_changing_them,
    basics::tokens_are_stored_by_hash_found_until_revoked_and_revoked_once,
    basics::an_unclean_previous_run_is_reported,
    basics::what_was_accepted_for_a_project_survives_until_its_root_changes,
    basics::sessions_keep_every_transition_and_live_ones_are_found,
    basics::pruned_transcripts_are_recorded_on_the_row_once,
    events::events_are_appended_in_order_only_and_read_back_as_written,
    events::a_version_7_database_gains_the_event_log_and_keeps_its_sessions,
    events::a_resumed_conversation_loses_its_earlier_end,
    events::the_store_appends_and_replays_through_its_async_handle,
    events::racing_writers_of_one_log_never_interleave,
    approvals::the_first_decision_wins_and_is_kept_across_a_reopen,
    approvals::racing_decisions_have_exactly_one_winner,
    approvals::the_database_refuses_to_change_a_decided_approval_and_unknown_sessions,
    approvals::listing_filters_newest_first_and_grants_are_per_session_agent_and_tool,
    plugin_storage::plugin_values_round_trip_as_compact_json_replace_and_delete,
    plugin_storage::a_listing_matches_its_prefix_literally_in_byte_order,
    plugin_storage::plugins_never_see_or_change_each_others_keys,
    plugin_storage::a_plugin_past_its_key_quota_is_refused_and_others_are_not,
    plugin_storage::a_plugin_past_its_byte_quota_is_refused_counting_bytes_not_characters,
    plugin_storage::racing_writers_never_pass_the_key_quota_together,
    plugin_storage::a_version_10_database_gains_plugin_storage_and_keeps_its_sessions,
    plugin_storage::the_store_serves_plugin_storage_through_its_async_handle,
    resilience::a_second_daemon_is_refused_with_who_holds_the_database,
    resilience::a_second_daemon_is_refused_before_it_migrates,
    resilience::transition_ids_are_committed_in_order_under_concurrent_writers,
}

/// PostgreSQL's own: connections lost and refused, a foreign database, a database collation
/// that is not byte order.
mod postgres_only {
    use super::harness::Db;
    use super::{plugin_storage, resilience};

    #[test]
    fn plugin_keys_list_in_byte_order_whatever_the_database_collation() {
        // ICU English sorts `_x a B é z`; the keys must still come back as bytes sort.
        let icu = "LOCALE_PROVIDER icu ICU_LOCALE 'en' TEMPLATE template0";
        if let Some(db) = Db::postgres_created_with("icu_collation", icu) {
            plugin_storage::a_listing_matches_its_prefix_literally_in_byte_order(&db);
        }
    }

    #[test]
    fn a_lost_connection_is_storage_trouble_and_the_next_call_reconnects() {
        if let Some(db) = Db::postgres("lost_connection") {
            resilience::a_lost_connection_is_storage_trouble_and_the_next_call_reconnects(&db);
        }
    }

    #[test]
    fn a_server_that_refuses_connections_is_storage_trouble() {
        if let Some(db) = Db::postgres("refused") {
            resilience::a_server_that_refuses_connections_is_storage_trouble(&db);
        }
    }

    #[test]
    fn the_unix_socket_form_connects() {
        if let Some(db) = Db::postgres("socket") {
            resilience::the_unix_socket_form_connects(&db);
        }
    }

    #[test]
    fn the_password_is_sent_and_never_shown() {
        if let Some(db) = Db::postgres("password") {
            resilience::the_password_is_sent_and_never_shown(&db);
        }
    }

    #[test]
    fn tls_is_used_and_the_server_certificate_verified() {
        if let Some(db) = Db::postgres("tls") {
            resilience::tls_is_used_and_the_server_certificate_verified(&db);
        }
    }

    #[test]
    fn the_pool_is_bounded_and_shared() {
        if let Some(db) = Db::postgres("pool") {
            resilience::the_pool_is_bounded_and_shared(&db);
        }
    }

    #[test]
    fn a_database_with_tables_of_another_application_is_refused_untouched() {
        if let Some(db) = Db::postgres("foreign") {
            resilience::a_database_with_tables_of_another_application_is_refused_untouched(&db);
        }
    }
}
