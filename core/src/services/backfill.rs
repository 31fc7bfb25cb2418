//! Backfill: the history a new subscription asks for, found by reading the feed's output
//! backwards from its newest record in widening spans, through the subscription's filter.

use super::Services;
use crate::domain::*;
use crate::error::Problems;
use crate::{CoreError, Timestamp};

/// Positions read in the first span back from the feed's newest output; each further span
/// reaches four times as far.
const FIRST_SPAN: u64 = 256;

/// Records read per store call.
const PAGE: usize = 1000;

impl Services {
    /// Checks a backfill request against the channel: history goes out on the channels Wharf
    /// sends or serves, not on those a feed's topic carries (it carries only new records).
    pub(super) fn check_backfill(
        &self,
        request: Option<&Backfill>,
        channel: &Channel,
        p: &mut Problems,
    ) {
        let Some(request) = request else {
            return;
        };
        let most = self.settings.limits.quotas.records_per_backfill;
        request.validate(self.clock.now(), most, p);
        if self.is_native(channel) {
            p.add(
                "backfill",
                format!(
                    "`{}` records are sent by the feed's topic, which carries only new records; \
                     backfill needs a webhook, pull or websocket channel",
                    channel.kind()
                ),
            );
        }
    }

    /// The history `request` grants `sub` (being created): the feed's records up to its
    /// newest now that the filter admits, output at or after `from` or the newest `records`
    /// of them. A `from` reaching more than `records_per_backfill` records back is refused
    /// (422), as is one reaching further than ten times that many records of the feed; a
    /// `records` count is filled from at most that many.
    pub(super) async fn grant_backfill(
        &self,
        sub: &Subscription,
        request: Option<&Backfill>,
    ) -> Result<Option<BackfillGrant>, CoreError> {
        let Some(request) = request else {
            return Ok(None);
        };
        let most = self.settings.limits.quotas.records_per_backfill;
        let readable = u64::from(most) * 10;
        let head = self.store.output_head(&sub.tenant_id, &sub.feed_id).await?;
        // Admitted records, by position, with when they were output.
        let mut found: Vec<(u64, Timestamp)> = Vec::new();
        let (mut start, mut span, mut read) = (head, FIRST_SPAN, 0u64);
        let mut oldest_read: Option<Timestamp> = None;
        loop {
            let enough = match (request.records, request.from) {
                (Some(n), _) => found.len() >= n as usize,
                (None, Some(from)) => oldest_read.is_some_and(|t| t < from),
                (None, None) => true,
            };
            if enough || start == 0 || read >= readable {
                break;
            }
            let lower = start.saturating_sub(span);
            let span_read = self.read_span(sub, lower, start).await?;
            read += span_read.read;
            if let Some(first) = span_read.first_output {
                oldest_read = Some(oldest_read.map_or(first, |t| t.min(first)));
            }
            found.splice(0..0, span_read.admitted);
            start = lower;
            span = span.saturating_mul(4);
        }
        let chosen: &[(u64, Timestamp)] = match (request.records, request.from) {
            (Some(n), _) => &found[found.len().saturating_sub(n as usize)..],
            (None, Some(from)) => {
                if start > 0 && oldest_read.is_none_or(|t| t >= from) {
                    return Err(CoreError::invalid(
                        "backfill.from",
                        format!(
                            "reaches further back than the feed's newest {readable} records; \
                             choose a later instant"
                        ),
                    ));
                }
                let first = found.partition_point(|(_, at)| *at < from);
                &found[first..]
            }
            (None, None) => &[],
        };
        if chosen.len() > most as usize {
            return Err(CoreError::invalid(
                "backfill.from",
                format!(
                    "{} records were output since then, more than the {most} a backfill may \
                     hold (`records_per_backfill`); choose a later instant or ask for `records`",
                    chosen.len()
                ),
            ));
        }
        Ok(Some(BackfillGrant {
            after: chosen.first().map_or(head, |(p, _)| p - 1),
            through: head,
            records: chosen.len() as u64,
            since: chosen.first().map(|(_, at)| *at),
        }))
    }

    /// Ends the grant of a subscription being resumed where its deliveries stand: it skips
    /// what came while it was paused, and with it the backfill not delivered yet, which no
    /// cursor may then reach (it would be read without being counted).
    pub(super) async fn end_undelivered_backfill(
        &self,
        sub: &mut Subscription,
    ) -> Result<(), CoreError> {
        let Some(grant) = sub.backfill.as_mut() else {
            return Ok(());
        };
        let at = self
            .store
            .delivery_position(&sub.tenant_id, &sub.id)
            .await?;
        if at < grant.through {
            grant.through = at.max(grant.after);
        }
        Ok(())
    }

    /// The feed's records at positions `lower < p <= upper`, read through `sub`'s filter.
    async fn read_span(
        &self,
        sub: &Subscription,
        lower: u64,
        upper: u64,
    ) -> Result<SpanRead, CoreError> {
        let mut admitted = Vec::new();
        let mut after = lower;
        let mut read = 0;
        let mut first_output = None;
        while after < upper {
            let mut rows = self
                .store
                .output_after(&sub.tenant_id, &sub.feed_id, after, PAGE)
                .await?;
            let full = rows.len() == PAGE;
            let Some((last, _)) = rows.last() else {
                break;
            };
            after = *last;
            rows.retain(|(p, _)| *p <= upper);
            read += rows.len() as u64;
            first_output = first_output.or(rows.first().map(|(_, r)| r.created_at));
            admitted.extend(
                self.admitted(sub, rows)
                    .await?
                    .into_iter()
                    .map(|(p, r)| (p, r.created_at)),
            );
            if !full {
                break;
            }
        }
        Ok(SpanRead {
            admitted,
            read,
            first_output,
        })
    }
}

/// What reading one span of a feed's output found.
struct SpanRead {
    /// The records the filter admits, by position, with when each was output.
    admitted: Vec<(u64, Timestamp)>,
    /// Records read.
    read: u64,
    /// When the span's first record was output.
    first_output: Option<Timestamp>,
}
