//! The contract every adapter of a port must honour, as executable checks, one function per
//! behaviour and one module per port. An adapter's tests expand each check into a test of
//! its own with [`store_contract!`], [`change_log_contract!`] and [`object_contract!`], so
//! a failure names itself and `cargo test -p <adapter> <check>` runs one check alone.
//!
//! Checks create their own objects under fresh random ids (and a random word in searchable
//! names), so they pass on a database shared with other tests and never depend on what else
//! is stored; they assert exact values, not just success.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    missing_docs
)]

pub mod accounts;
pub mod api_keys;
pub mod billing;
pub mod catalog;
pub mod change_log;
pub mod cursors;
pub mod deliveries;
pub mod feeds;
pub mod idempotency;
pub mod models;
pub mod objects;
pub mod records;
pub mod references;
pub mod sources;
pub mod subscriptions;
mod support;

/// Expands every `Store` check into a `#[tokio::test]` of its own, in one module per port.
/// `$make` is an expression, evaluated in each test, whose `.await` gives a fresh handle that
/// dereferences to a `dyn Store` (an `Arc<dyn Store>`, say); it is resolved in the module
/// that invokes the macro.
#[macro_export]
macro_rules! store_contract {
    ($make:expr) => {
        $crate::__checks!(
            $make,
            accounts,
            [
                the_store_answers_ping,
                a_created_vendor_reads_back_equal,
                a_duplicate_vendor_id_is_a_conflict,
                an_unknown_vendor_is_not_found,
                vendor_status_changes_only_from_the_expected_state,
                setting_the_status_of_an_unknown_vendor_is_not_found,
                vendors_list_by_status_in_id_order_across_pages,
                a_deleted_vendor_is_gone,
                a_created_subscriber_reads_back_equal,
                a_duplicate_subscriber_id_is_a_conflict,
                an_unknown_subscriber_is_not_found,
            ]
        );
        $crate::__checks!(
            $make,
            api_keys,
            [
                an_api_key_reads_back_by_tenant_and_by_id_alone,
                a_duplicate_api_key_id_is_a_conflict,
                api_keys_list_per_tenant_in_id_order_across_pages,
                cross_tenant_api_key_access_is_not_found_and_changes_nothing,
                a_deleted_api_key_is_gone,
            ]
        );
        $crate::__checks!(
            $make,
            sources,
            [
                a_created_source_reads_back_equal,
                a_duplicate_source_id_is_a_conflict,
                sources_list_per_tenant_in_id_order_across_pages,
                a_list_that_fills_its_last_page_exactly_ends_without_a_cursor,
                an_updated_source_reads_back_updated,
                cross_tenant_source_access_is_not_found_and_changes_nothing,
                a_source_used_by_a_feed_cannot_be_deleted,
                unknown_sources_are_not_found,
            ]
        );
        $crate::__checks!(
            $make,
            feeds,
            [
                a_created_feed_reads_back_equal_and_is_located_by_id_alone,
                a_duplicate_feed_id_is_a_conflict,
                deprecated_feeds_are_listed_across_tenants,
                a_feed_on_another_tenants_source_is_not_found,
                feeds_list_per_tenant_in_id_order_across_pages,
                a_feed_update_needs_the_next_revision,
                cross_tenant_feed_read_is_not_found,
                cross_tenant_feed_update_and_delete_are_not_found_and_change_nothing,
                a_feed_with_subscriptions_cannot_be_deleted,
                a_deleted_feed_is_gone,
                unknown_feeds_are_not_found,
            ]
        );
        $crate::__checks!(
            $make,
            catalog,
            [
                the_catalog_lists_only_published_public_feeds_of_active_vendors,
                the_catalog_without_a_query_includes_published_feeds,
                catalog_queries_match_name_or_description_ignoring_case,
                catalog_queries_take_wildcards_literally,
                catalog_pages_cover_every_entry_once,
            ]
        );
        $crate::__checks!(
            $make,
            references,
            [
                a_reference_row_is_new_once_then_replaced,
                reference_rows_are_separate_per_tenant_and_table,
            ]
        );
        $crate::__checks!(
            $make,
            subscriptions,
            [
                a_created_subscription_reads_back_with_its_secrets,
                a_duplicate_subscription_id_is_a_conflict,
                subscriptions_list_per_subscriber_across_tenants_and_pages,
                subscriptions_list_per_feed_across_pages,
                a_subscription_update_needs_the_next_revision,
                signing_secrets_are_replaced_atomically_with_the_subscription,
                cross_tenant_subscription_access_is_not_found_and_changes_nothing,
                unknown_subscriptions_are_not_found,
                active_subscriptions_list_across_tenants_oldest_first,
            ]
        );
        $crate::__checks!(
            $make,
            idempotency,
            [
                a_new_idempotency_key_starts,
                a_completed_idempotency_key_replays_its_response,
                an_idempotency_key_reused_with_another_request_conflicts,
                an_idempotency_key_in_progress_conflicts,
                a_stale_idempotency_reservation_is_taken_over,
                abandoning_an_idempotency_key_frees_it,
                idempotency_keys_are_separate_per_scope,
                an_idempotency_key_older_than_a_day_starts_anew,
            ]
        );
        $crate::__checks!(
            $make,
            records,
            [
                appending_raw_records_skips_ids_already_stored,
                raw_records_between_two_times_come_in_event_time_order,
                appending_output_records_is_idempotent,
                appending_a_units_output_records_again_stores_nothing,
                output_records_after_a_position_are_per_tenant_and_feed,
                output_records_between_two_times_come_in_position_order_after_a_position,
                the_output_head_is_the_newest_position_of_the_feed,
                output_records_read_by_position_come_in_the_order_asked,
                feed_errors_list_newest_first_across_pages_per_tenant_and_feed,
                feed_errors_recorded_before_the_cut_expire,
                expiring_removes_only_expired_records_and_never_reuses_positions,
            ]
        );
        $crate::__checks!(
            $make,
            models,
            [
                model_versions_list_by_name_then_version_within_their_vendor,
                a_model_version_is_written_once_and_deleted_by_its_vendor,
            ]
        );
        $crate::__checks!(
            $make,
            deliveries,
            [
                a_new_subscription_starts_at_its_feeds_output_head,
                advancing_moves_the_position_and_counts_usage_in_the_hour_of_the_acknowledgement,
                advancing_from_a_stale_position_is_a_conflict_and_changes_nothing,
                advancing_another_tenants_subscription_is_not_found_and_changes_nothing,
                parked_deliveries_come_due_in_due_order,
                acknowledging_a_pending_delivery_counts_it_once,
                acknowledged_replays_are_not_counted,
                backfill_starts_below_the_head_and_is_counted_apart,
                rescheduling_changes_when_a_delivery_is_due,
                dropping_a_pending_delivery_removes_it_without_counting,
                skipping_to_head_moves_the_position_to_the_feeds_newest_output,
                the_delivery_log_lists_newest_first_and_filters_by_status,
                delivery_attempts_logged_before_the_cut_expire,
                usage_filters_by_tenant_subscriber_subscription_and_hour,
            ]
        );
        $crate::__checks!($make, cursors, [malformed_cursors_are_rejected,]);
        $crate::__checks!(
            $make,
            billing,
            [
                a_subscribers_payment_customer_is_recorded_once,
                a_vendors_payout_account_is_recorded_once_and_enabled_by_its_events,
                an_invoice_is_stored_once_and_reads_back_equal,
                invoices_list_by_period_vendor_subscriber_and_status_across_pages,
                an_invoice_status_change_keeps_its_lines_and_records_the_stripe_id,
                billed_totals_sum_usage_and_adjustment_lines_per_subscription,
                a_billing_run_is_replaced_by_its_period,
                payouts_are_stored_once_and_filter_by_period_and_vendor,
                every_subscription_is_listed_whatever_its_status,
            ]
        );
    };
}

/// Expands every `ChangeLog` check into a test of its own. `$make` gives a fresh
/// `(store, log)` pair on one database.
#[macro_export]
macro_rules! change_log_contract {
    ($make:expr) => {
        mod change_log {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test]
            async fn the_change_log_lists_raw_records_in_storage_order_once() {
                let (store, log) = $make.await;
                $crate::change_log::the_change_log_lists_raw_records_in_storage_order_once(
                    &*store, &*log,
                )
                .await;
            }

            #[tokio::test]
            async fn each_tenant_reads_its_own_records_and_tenants_with_new_ones_are_listed() {
                let (store, log) = $make.await;
                $crate::change_log::each_tenant_reads_its_own_records_and_tenants_with_new_ones_are_listed(
                    &*store, &*log,
                )
                .await;
            }

            #[tokio::test]
            async fn consumer_positions_round_trip_per_consumer() {
                let (_store, log) = $make.await;
                $crate::change_log::consumer_positions_round_trip_per_consumer(&*log).await;
            }

            #[tokio::test]
            async fn raw_positions_are_not_reused_after_expiry() {
                let (store, log) = $make.await;
                $crate::change_log::raw_positions_are_not_reused_after_expiry(&*store, &*log).await;
            }
        }
    };
}

/// Expands every `ObjectStore` check into a test of its own. `$make` gives a fresh handle
/// that dereferences to a `dyn ObjectStore`.
#[macro_export]
macro_rules! object_contract {
    ($make:expr) => {
        $crate::__checks!(
            $make,
            objects,
            [
                objects_round_trip_and_a_put_replaces,
                missing_objects_are_not_found,
                listing_is_sorted_and_keeps_to_its_prefix,
                a_deleted_object_is_gone_and_deleting_twice_is_fine,
                keys_that_could_escape_are_refused,
            ]
        );
    };
}

/// One module of tests, one per check, each on a fresh handle from `$make`.
#[doc(hidden)]
#[macro_export]
macro_rules! __checks {
    ($make:expr, $module:ident, [$($check:ident),* $(,)?]) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test]
                async fn $check() {
                    let handle = $make.await;
                    $crate::$module::$check(&*handle).await;
                }
            )*
        }
    };
}

#[cfg(test)]
mod tests {
    /// Every public check of every module is listed in the macros above, so no check is
    /// silently left out of the adapters' runs.
    #[test]
    fn every_check_is_expanded_by_a_macro() {
        // Read where cargo runs the test (not where this was compiled: a shared target
        // directory serves every checkout of the workspace).
        let dir =
            std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("src");
        let lib = std::fs::read_to_string(dir.join("lib.rs")).unwrap();
        let macros = lib.split("#[cfg(test)]").next().unwrap_or_default();
        let words: std::collections::HashSet<&str> = macros
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .collect();
        let mut missing = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            for line in text.lines() {
                if let Some(rest) = line.strip_prefix("pub async fn ") {
                    let name = rest.split('(').next().unwrap_or_default();
                    if !words.contains(name) {
                        missing.push(name.to_owned());
                    }
                }
            }
        }
        assert!(missing.is_empty(), "checks no macro runs: {missing:?}");
    }
}
