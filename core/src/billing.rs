//! Billing rules, pure: calendar-month periods, proration by time active, graduated tiers and
//! rounding. Amounts are `rust_decimal` values, never floats; each line is rounded half-up to
//! its currency's minor unit once, and a total is the sum of rounded lines.

use crate::Timestamp;
use crate::domain::{Plan, StatusChange, SubscriptionStatus};
use crate::money::Currency;
use rust_decimal::{Decimal, RoundingStrategy};
use std::fmt;
use time::{Month, OffsetDateTime};

/// A billing period: one calendar month in UTC, written `2026-11`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    year: i32,
    month: Month,
}

impl Period {
    /// Parses `YYYY-MM`.
    pub fn parse(s: &str) -> Result<Period, String> {
        let bad = || format!("`{s}` is not a month like \"2026-11\"");
        let (y, m) = s.split_once('-').ok_or_else(bad)?;
        if y.len() != 4 || m.len() != 2 {
            return Err(bad());
        }
        let year: i32 = y.parse().map_err(|_| bad())?;
        let month: u8 = m.parse().map_err(|_| bad())?;
        let month = Month::try_from(month).map_err(|_| bad())?;
        if !(2000..=9998).contains(&year) {
            return Err(bad());
        }
        Ok(Period { year, month })
    }

    /// The period containing `t`.
    pub fn of(t: Timestamp) -> Period {
        let t = t.to_offset(time::UtcOffset::UTC);
        Period {
            year: t.year(),
            month: t.month(),
        }
    }

    /// The first instant of the period.
    pub fn start(&self) -> Timestamp {
        time::Date::from_calendar_date(self.year, self.month, 1)
            .map(|d| d.midnight().assume_utc())
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    /// The first instant after the period.
    pub fn end(&self) -> Timestamp {
        self.next().start()
    }

    /// The following month.
    pub fn next(&self) -> Period {
        match self.month {
            Month::December => Period {
                year: self.year + 1,
                month: Month::January,
            },
            m => Period {
                year: self.year,
                month: m.next(),
            },
        }
    }

    /// The month before.
    pub fn previous(&self) -> Period {
        match self.month {
            Month::January => Period {
                year: self.year - 1,
                month: Month::December,
            },
            m => Period {
                year: self.year,
                month: m.previous(),
            },
        }
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, u8::from(self.month))
    }
}

/// Rounds half-up (away from zero at the midpoint) to the currency's minor unit.
pub fn round(amount: Decimal, currency: Currency) -> Decimal {
    amount.round_dp_with_strategy(
        currency.minor_units(),
        RoundingStrategy::MidpointAwayFromZero,
    )
}

/// Seconds of `[from, to)` a subscription spent active, from its status history (oldest
/// first; the first entry is its creation).
pub fn active_seconds(history: &[StatusChange], from: Timestamp, to: Timestamp) -> i64 {
    let mut total = 0;
    for (i, change) in history.iter().enumerate() {
        if change.status != SubscriptionStatus::Active {
            continue;
        }
        let until = history.get(i + 1).map_or(to, |next| next.at);
        let (start, end) = (change.at.max(from), until.min(to));
        if end > start {
            total += (end - start).whole_seconds();
        }
    }
    total
}

/// The share of the period a subscription was active, between 0 and 1.
pub fn active_share(history: &[StatusChange], period: Period) -> Decimal {
    let length = (period.end() - period.start()).whole_seconds();
    let active = active_seconds(history, period.start(), period.end());
    if length <= 0 {
        return Decimal::ZERO;
    }
    (Decimal::from(active) / Decimal::from(length)).min(Decimal::ONE)
}

/// The monthly fee for `share` of a month, rounded.
pub fn prorated_fee(plan: &Plan, share: Decimal) -> Decimal {
    round(plan.monthly_fee.0 * share, plan.currency)
}

/// The price of `deliveries` in a month, unrounded: the first `included_deliveries` are
/// free, the rest go through the graduated tiers (each tier's `up_to` counts billable
/// deliveries, cumulatively).
pub fn usage_price(plan: &Plan, deliveries: u64) -> Decimal {
    let mut billable = deliveries.saturating_sub(plan.included_deliveries);
    let mut priced_up_to = 0u64;
    let mut total = Decimal::ZERO;
    for tier in &plan.tiers {
        if billable == 0 {
            break;
        }
        let room = tier
            .up_to
            .map_or(u64::MAX, |up| up.saturating_sub(priced_up_to));
        let here = billable.min(room);
        total += Decimal::from(here) * tier.unit_price.0;
        billable -= here;
        priced_up_to = priced_up_to.saturating_add(here);
    }
    total
}

/// The usage amount of a month, rounded.
pub fn usage_amount(plan: &Plan, deliveries: u64) -> Decimal {
    round(usage_price(plan, deliveries), plan.currency)
}

/// What late deliveries of an already billed month add: the price of the month's new total
/// minus the price already billed, rounded, so tiers crossed late are priced right.
pub fn adjustment_amount(plan: &Plan, billed: u64, now_counted: u64) -> Decimal {
    round(
        usage_price(plan, now_counted) - usage_price(plan, billed),
        plan.currency,
    )
}

/// The price of `backfill` records delivered in a month with `deliveries` of the month's
/// own, rounded: at the plan's `backfill_unit_price`, or else through its tiers as if they
/// came after the month's deliveries (what the included quantity leaves, then the tiers).
pub fn backfill_amount(plan: &Plan, deliveries: u64, backfill: u64) -> Decimal {
    match plan.backfill_unit_price {
        Some(price) => round(Decimal::from(backfill) * price.0, plan.currency),
        None => adjustment_amount(plan, deliveries, deliveries.saturating_add(backfill)),
    }
}

/// The price of one of `backfill` records in the month of [`backfill_amount`], unrounded to
/// the currency: the plan's backfill price, or the tiers' average over those records.
pub fn backfill_unit_price(plan: &Plan, deliveries: u64, backfill: u64) -> Decimal {
    match plan.backfill_unit_price {
        Some(price) => price.0,
        None if backfill == 0 => Decimal::ZERO,
        None => {
            let through = deliveries.saturating_add(backfill);
            ((usage_price(plan, through) - usage_price(plan, deliveries)) / Decimal::from(backfill))
                .round_dp(8)
        }
    }
}

/// The platform's fee on `gross`, rounded; the vendor is paid the rest.
pub fn platform_fee(gross: Decimal, percent: Decimal, currency: Currency) -> Decimal {
    round(gross * percent / Decimal::ONE_HUNDRED, currency)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Tier;
    use crate::money::Amount;
    use proptest::prelude::*;
    use std::str::FromStr;
    use time::macros::datetime;

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).expect("decimal")
    }

    fn plan(fee: &str, included: u64, tiers: &[(Option<u64>, &str)]) -> Plan {
        Plan {
            version: 1,
            backfill_unit_price: None,
            id: "pro".into(),
            name: "Pro".into(),
            currency: Currency::parse("usd").expect("usd"),
            monthly_fee: Amount(dec(fee)),
            included_deliveries: included,
            tiers: tiers
                .iter()
                .map(|(up_to, price)| Tier {
                    up_to: *up_to,
                    unit_price: Amount(dec(price)),
                })
                .collect(),
        }
    }

    fn change(status: SubscriptionStatus, at: Timestamp) -> StatusChange {
        StatusChange { status, at }
    }

    #[test]
    fn periods_parse_print_and_bound_calendar_months() {
        let p = Period::parse("2026-11").expect("period");
        assert_eq!(p.to_string(), "2026-11");
        assert_eq!(p.start(), datetime!(2026-11-01 00:00 UTC));
        assert_eq!(p.end(), datetime!(2026-12-01 00:00 UTC));
        assert_eq!(
            Period::parse("2026-12").expect("dec").next().to_string(),
            "2027-01"
        );
        assert_eq!(
            Period::parse("2027-01")
                .expect("jan")
                .previous()
                .to_string(),
            "2026-12"
        );
        assert_eq!(
            Period::of(datetime!(2026-02-28 23:59:59 UTC)).to_string(),
            "2026-02"
        );
        for bad in [
            "2026-13", "2026-1", "26-11", "2026/11", "", "2026-00", "abcd-ef",
        ] {
            assert!(Period::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn half_up_rounding_to_the_minor_unit() {
        let usd = Currency::parse("usd").expect("usd");
        let jpy = Currency::parse("jpy").expect("jpy");
        let bhd = Currency::parse("bhd").expect("bhd");
        assert_eq!(round(dec("0.005"), usd), dec("0.01"));
        assert_eq!(round(dec("0.0049999"), usd), dec("0.00"));
        assert_eq!(round(dec("2.5"), jpy), dec("3"));
        assert_eq!(round(dec("1.0005"), bhd), dec("1.001"));
    }

    #[test]
    fn tiers_price_each_delivery_once_at_its_tier() {
        let p = plan(
            "49.00",
            1000,
            &[(Some(100), "0.10"), (Some(300), "0.05"), (None, "0.01")],
        );
        assert_eq!(usage_price(&p, 1000), dec("0"));
        assert_eq!(usage_price(&p, 1100), dec("10.00"));
        // 100 at 0.10 + 200 at 0.05 + 50 at 0.01
        assert_eq!(usage_price(&p, 1350), dec("20.50"));
    }

    #[test]
    fn proration_follows_the_status_history() {
        let nov = Period::parse("2026-11").expect("period");
        // Active from the 1st, paused on the 11th, resumed on the 21st, cancelled on the 26th:
        // 10 + 5 = 15 of 30 days.
        let history = [
            change(SubscriptionStatus::Active, datetime!(2026-10-20 00:00 UTC)),
            change(SubscriptionStatus::Paused, datetime!(2026-11-11 00:00 UTC)),
            change(SubscriptionStatus::Active, datetime!(2026-11-21 00:00 UTC)),
            change(
                SubscriptionStatus::Cancelled,
                datetime!(2026-11-26 00:00 UTC),
            ),
        ];
        assert_eq!(active_share(&history, nov), dec("0.5"));
        let p = plan("49.00", 0, &[(None, "0.01")]);
        assert_eq!(prorated_fee(&p, active_share(&history, nov)), dec("24.50"));
        // Subscribed mid-period and still active at its end.
        let late = [change(
            SubscriptionStatus::Active,
            datetime!(2026-11-16 00:00 UTC),
        )];
        assert_eq!(active_share(&late, nov), dec("0.5"));
        // Cancelled before the period: nothing.
        let gone = [
            change(SubscriptionStatus::Active, datetime!(2026-09-01 00:00 UTC)),
            change(
                SubscriptionStatus::Cancelled,
                datetime!(2026-10-01 00:00 UTC),
            ),
        ];
        assert_eq!(active_share(&gone, nov), Decimal::ZERO);
    }

    /// A hand-computed invoice: two subscriptions of one subscriber to one vendor in
    /// November 2026 (30 days).
    ///
    /// - Subscription A, plan "49.00 + 1,000 included, then 0.0100 up to 5,000 billable, then
    ///   0.0040": active all month, 7,250 deliveries. Fee 49.00. Billable 6,250: 5,000 × 0.01 =
    ///   50.00, 1,250 × 0.004 = 5.00. Usage 55.00.
    /// - Subscription B, plan "19.99, nothing included, 0.0333 per delivery": cancelled on
    ///   the 10th at 12:00, so active 9.5 of 30 days. Fee 19.99 × 9.5 / 30 = 6.330166… → 6.33.
    ///   Usage 101 × 0.0333 = 3.3633 → 3.36.
    ///
    /// Total 49.00 + 55.00 + 6.33 + 3.36 = 113.69.
    #[test]
    fn golden_invoice_matches_to_the_cent() {
        let nov = Period::parse("2026-11").expect("period");
        let a = plan("49.00", 1000, &[(Some(5000), "0.0100"), (None, "0.0040")]);
        let b = plan("19.99", 0, &[(None, "0.0333")]);
        let a_history = [change(
            SubscriptionStatus::Active,
            datetime!(2026-10-03 08:00 UTC),
        )];
        let b_history = [
            change(SubscriptionStatus::Active, datetime!(2026-10-15 00:00 UTC)),
            change(
                SubscriptionStatus::Cancelled,
                datetime!(2026-11-10 12:00 UTC),
            ),
        ];
        let lines = [
            prorated_fee(&a, active_share(&a_history, nov)),
            usage_amount(&a, 7250),
            prorated_fee(&b, active_share(&b_history, nov)),
            usage_amount(&b, 101),
        ];
        assert_eq!(
            lines,
            [dec("49.00"), dec("55.00"), dec("6.33"), dec("3.36")]
        );
        assert_eq!(lines.iter().sum::<Decimal>(), dec("113.69"));
    }

    #[test]
    fn late_usage_is_priced_at_the_tiers_it_falls_in() {
        let p = plan("0", 100, &[(Some(100), "0.10"), (None, "0.01")]);
        // Billed 150 (50 × 0.10 = 5.00); 100 more arrive: 50 × 0.10 + 50 × 0.01 = 5.50.
        assert_eq!(adjustment_amount(&p, 150, 250), dec("5.50"));
        assert_eq!(adjustment_amount(&p, 250, 250), dec("0.00"));
    }

    fn tiers() -> impl Strategy<Value = Plan> {
        (
            0u64..5_000,
            prop::collection::vec((1u64..10_000, 0u64..1_000_000), 0..4),
            0u64..1_000_000,
            0u64..100_000,
        )
            .prop_map(|(included, bounded, last_price, fee_cents)| {
                let mut up_to = 0;
                let mut tiers: Vec<(Option<u64>, String)> = bounded
                    .into_iter()
                    .map(|(width, price)| {
                        up_to += width;
                        (Some(up_to), Decimal::new(price as i64, 6).to_string())
                    })
                    .collect();
                tiers.push((None, Decimal::new(last_price as i64, 6).to_string()));
                let fee = Decimal::new(fee_cents as i64, 2).to_string();
                let refs: Vec<(Option<u64>, &str)> =
                    tiers.iter().map(|(u, p)| (*u, p.as_str())).collect();
                plan(&fee, included, &refs)
            })
    }

    proptest! {
        #[test]
        fn rating_is_monotonic_in_usage(p in tiers(), a in 0u64..200_000, b in 0u64..200_000) {
            let (lo, hi) = (a.min(b), a.max(b));
            prop_assert!(usage_price(&p, lo) <= usage_price(&p, hi));
            prop_assert!(usage_amount(&p, lo) <= usage_amount(&p, hi));
        }

        #[test]
        fn tier_boundaries_price_each_unit_at_its_own_tier(p in tiers(), n in 0u64..200_000) {
            // One more delivery costs exactly the unit price of the tier it lands in.
            let billable = (n + 1).saturating_sub(p.included_deliveries);
            let step = usage_price(&p, n + 1) - usage_price(&p, n);
            let expected = if billable == 0 {
                Decimal::ZERO
            } else {
                p.tiers
                    .iter()
                    .find(|t| t.up_to.is_none_or(|up| billable <= up))
                    .map_or(Decimal::ZERO, |t| t.unit_price.0)
            };
            prop_assert_eq!(step, expected);
        }

        #[test]
        fn rounding_lands_on_the_minor_unit_within_half_of_it(cents in 0i64..10_000_000, extra in 0i64..1_000_000) {
            let usd = Currency::parse("usd").expect("usd");
            let exact = Decimal::new(cents, 2) + Decimal::new(extra, 8);
            let r = round(exact, usd);
            prop_assert!(r.scale() <= 2);
            prop_assert!((r - exact).abs() <= dec("0.005"));
        }

        #[test]
        fn proration_stays_between_nothing_and_the_full_fee(
            p in tiers(),
            start_min in 0i64..80_000,
            len_min in 0i64..80_000,
        ) {
            let nov = Period::parse("2026-11").expect("period");
            let from = datetime!(2026-10-20 00:00 UTC) + time::Duration::minutes(start_min);
            let history = [
                change(SubscriptionStatus::Active, from),
                change(SubscriptionStatus::Cancelled, from + time::Duration::minutes(len_min)),
            ];
            let share = active_share(&history, nov);
            prop_assert!(share >= Decimal::ZERO && share <= Decimal::ONE);
            let fee = prorated_fee(&p, share);
            prop_assert!(fee >= Decimal::ZERO && fee <= p.monthly_fee.0);
        }

        #[test]
        fn late_usage_adjustments_add_up_to_the_full_price(p in tiers(), billed in 0u64..100_000, late in 0u64..100_000) {
            // Within rounding of one line, billing in two steps equals billing at once.
            let once = usage_price(&p, billed + late);
            let steps = usage_amount(&p, billed) + adjustment_amount(&p, billed, billed + late);
            prop_assert!((steps - once).abs() <= dec("0.01"));
        }
    }

    #[test]
    fn backfill_is_priced_at_its_own_price_or_after_the_months_deliveries() {
        let mut p = plan("0", 100, &[(Some(1000), "0.01"), (None, "0.001")]);
        // 60 of the 100 included are left after 40 of the month's: 50 backfill are free.
        assert_eq!(backfill_amount(&p, 40, 50), dec("0.00"));
        // 60 left: 100 backfill make 40 billable at 0.01.
        assert_eq!(backfill_amount(&p, 40, 100), dec("0.40"));
        // 1,100 of the month's fill tier 1 (1,000 billable): 10 backfill are at 0.001.
        assert_eq!(backfill_amount(&p, 1100, 10), dec("0.01"));
        p.backfill_unit_price = Some(Amount(dec("0.0005")));
        assert_eq!(backfill_amount(&p, 40, 100), dec("0.05"));
        assert_eq!(backfill_amount(&p, 40, 0), dec("0.00"));
    }
}
