//! Billing runs, invoices, payouts and payment customers (`BillingStore`).

use crate::support::*;

pub async fn a_subscribers_payment_customer_is_recorded_once(store: &dyn Store) {
    let subscriber = UserId::new();
    assert_eq!(store.payment_customer(&subscriber).await.unwrap(), None);
    let first = PaymentCustomer {
        customer: "cus_first".into(),
        payment_method: None,
    };
    assert_eq!(
        store
            .put_payment_customer(&subscriber, "cus_first")
            .await
            .unwrap(),
        first
    );
    assert_eq!(
        store
            .put_payment_customer(&subscriber, "cus_second")
            .await
            .unwrap(),
        first,
        "a second customer made by a racing push is not recorded"
    );
    assert_eq!(
        store.payment_customer(&subscriber).await.unwrap(),
        Some(first)
    );
    assert_eq!(store.payment_customer(&UserId::new()).await.unwrap(), None);
    store
        .set_payment_method(&subscriber, "pm_saved")
        .await
        .unwrap();
    assert_eq!(
        store.payment_customer(&subscriber).await.unwrap(),
        Some(PaymentCustomer {
            customer: "cus_first".into(),
            payment_method: Some("pm_saved".into()),
        }),
        "the saved payment method reads back with the customer"
    );
    assert_not_found(
        store.set_payment_method(&UserId::new(), "pm_x").await,
        "payment customer",
    );
}

pub async fn an_invoice_is_stored_once_and_reads_back_equal(store: &dyn Store) {
    let (vendor, subscriber, sub) = (VendorId::new(), UserId::new(), SubscriptionId::new());
    let first = invoice(
        &vendor,
        &subscriber,
        "2026-11",
        vec![
            line(&sub, LineKind::Fee, "2026-11", "0.5"),
            line(&sub, LineKind::Usage, "2026-11", "120"),
        ],
    );
    assert_eq!(
        store
            .put_invoices(std::slice::from_ref(&first))
            .await
            .unwrap(),
        1
    );
    let changed = Invoice {
        total: money("99.00"),
        lines: vec![line(&sub, LineKind::Usage, "2026-11", "999")],
        ..first.clone()
    };
    assert_eq!(
        store.put_invoices(&[changed]).await.unwrap(),
        0,
        "the id is taken"
    );
    assert_eq!(store.get_invoice(&first.id).await.unwrap(), first);
    assert_eq!(
        billed(store, "2026-11", &[&sub]).await,
        vec![(sub.clone(), 120)],
        "the refused copy billed nothing"
    );
    assert_not_found(
        store.get_invoice(&wharf_core::InvoiceId::new()).await,
        "invoice",
    );
}

pub async fn invoices_list_by_period_vendor_subscriber_and_status_across_pages(store: &dyn Store) {
    let (v1, v2) = (VendorId::new(), VendorId::new());
    let (s1, s2) = (UserId::new(), UserId::new());
    let sub = SubscriptionId::new();
    let lines = || vec![line(&sub, LineKind::Fee, "2026-11", "1")];
    let a = invoice(&v1, &s1, "2026-10", lines());
    let b = invoice(&v1, &s2, "2026-11", lines());
    let c = invoice(&v2, &s1, "2026-11", lines());
    assert_eq!(
        store
            .put_invoices(&[a.clone(), b.clone(), c.clone()])
            .await
            .unwrap(),
        3
    );
    store
        .update_invoice(&c.id, &status(InvoiceStatus::Paid))
        .await
        .unwrap();
    let ids = |page: Page<Invoice>| page.items.into_iter().map(|i| i.id).collect::<Vec<_>>();
    let by =
        |vendor: Option<&VendorId>, subscriber: Option<&UserId>, period: Option<&str>, status| {
            wharf_core::domain::InvoiceFilter {
                period: period.map(str::to_owned),
                vendor: vendor.cloned(),
                subscriber: subscriber.cloned(),
                status,
            }
        };
    let all = PageRequest::first(100);
    let mut of_v1 = vec![a.id.clone(), b.id.clone()];
    of_v1.sort_by(|x, y| x.as_str().cmp(y.as_str()));
    assert_eq!(
        ids(store
            .list_invoices(&by(Some(&v1), None, None, None), &all)
            .await
            .unwrap()),
        of_v1
    );
    assert_eq!(
        ids(store
            .list_invoices(&by(None, Some(&s1), Some("2026-11"), None), &all)
            .await
            .unwrap()),
        vec![c.id.clone()]
    );
    assert_eq!(
        ids(store
            .list_invoices(&by(Some(&v2), None, None, Some(InvoiceStatus::Paid)), &all)
            .await
            .unwrap()),
        vec![c.id.clone()]
    );
    assert!(
        store
            .list_invoices(&by(Some(&v2), None, None, Some(InvoiceStatus::Open)), &all)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let first = store
        .list_invoices(&by(Some(&v1), None, None, None), &PageRequest::first(1))
        .await
        .unwrap();
    assert_eq!(ids(first.clone()), of_v1[..1]);
    let second = store
        .list_invoices(
            &by(Some(&v1), None, None, None),
            &PageRequest {
                limit: 1,
                cursor: first.next_cursor.clone(),
            },
        )
        .await
        .unwrap();
    assert_eq!(ids(second.clone()), of_v1[1..]);
    assert_eq!(second.next_cursor, None);
}

pub async fn an_invoice_status_change_keeps_its_lines_and_records_the_stripe_id(store: &dyn Store) {
    let sub = SubscriptionId::new();
    let inv = invoice(
        &VendorId::new(),
        &UserId::new(),
        "2026-11",
        vec![line(&sub, LineKind::Usage, "2026-11", "7")],
    );
    store
        .put_invoices(std::slice::from_ref(&inv))
        .await
        .unwrap();
    let pushed = InvoiceChange {
        stripe_invoice_id: Some("in_123".into()),
        collection_method: Some(CollectionMethod::SendInvoice),
        hosted_invoice_url: Some("https://invoice.example.com/i/1".into()),
        ..InvoiceChange::default()
    };
    store.update_invoice(&inv.id, &pushed).await.unwrap();
    let failed = InvoiceChange {
        failed_at: Some(at(20)),
        ..status(InvoiceStatus::Failed)
    };
    let answered = store.update_invoice(&inv.id, &failed).await.unwrap();
    assert_eq!(answered.payment_failed_at, Some(at(20)));
    store
        .update_invoice(&inv.id, &status(InvoiceStatus::Paid))
        .await
        .unwrap();
    // A failure Stripe reports after the payment does not undo it.
    store.update_invoice(&inv.id, &failed).await.unwrap();
    let read = store.get_invoice(&inv.id).await.unwrap();
    assert_eq!(
        read,
        Invoice {
            status: InvoiceStatus::Paid,
            stripe_invoice_id: Some("in_123".into()),
            collection_method: Some(CollectionMethod::SendInvoice),
            hosted_invoice_url: Some("https://invoice.example.com/i/1".into()),
            ..inv
        }
    );
    assert_not_found(
        store
            .update_invoice(&wharf_core::InvoiceId::new(), &status(InvoiceStatus::Paid))
            .await,
        "invoice",
    );
}

pub async fn billed_totals_sum_usage_and_adjustment_lines_per_subscription(store: &dyn Store) {
    let sub = SubscriptionId::new();
    let other = SubscriptionId::new();
    let (v, s) = (VendorId::new(), UserId::new());
    let october = invoice(
        &v,
        &s,
        "2026-10",
        vec![
            line(&sub, LineKind::Fee, "2026-10", "1"),
            line(&sub, LineKind::Usage, "2026-10", "100"),
            line(&other, LineKind::Usage, "2026-10", "5"),
        ],
    );
    let november = invoice(
        &v,
        &s,
        "2026-11",
        vec![
            line(&sub, LineKind::Usage, "2026-11", "40"),
            line(&sub, LineKind::Adjustment, "2026-10", "3"),
        ],
    );
    assert_eq!(store.put_invoices(&[october]).await.unwrap(), 1);
    assert_eq!(store.put_invoices(&[november]).await.unwrap(), 1);
    let stranger = SubscriptionId::new();
    assert_eq!(
        billed(store, "2026-10", &[&sub, &other, &stranger]).await,
        vec![(sub.clone(), 103), (other.clone(), 5)]
    );
    assert_eq!(
        billed(store, "2026-11", &[&sub, &other, &stranger]).await,
        vec![(sub.clone(), 40)]
    );
    assert!(billed(store, "2026-09", &[&sub]).await.is_empty());
}

pub async fn a_billing_run_is_replaced_by_its_period(store: &dyn Store) {
    // Periods far in the future, unique to this check, so a shared store's runs do not mix.
    let year = 5000 + (uuid::Uuid::now_v7().as_u128() % 4000) as u32;
    let (p1, p2) = (format!("{year}-01"), format!("{year}-02"));
    let running = BillingRun {
        period: p2.clone(),
        status: RunStatus::Running,
        invoices: 0,
        started_at: at(1),
        completed_at: None,
        problems: vec![],
    };
    store.put_billing_run(&running).await.unwrap();
    let earlier = BillingRun {
        period: p1.clone(),
        status: RunStatus::Completed,
        invoices: 4,
        started_at: at(0),
        completed_at: Some(at(1)),
        problems: vec![],
    };
    store.put_billing_run(&earlier).await.unwrap();
    let done = BillingRun {
        status: RunStatus::Completed,
        invoices: 2,
        completed_at: Some(at(3)),
        problems: vec![],
        ..running
    };
    store.put_billing_run(&done).await.unwrap();
    let ours: Vec<BillingRun> = store
        .list_billing_runs()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.period == p1 || r.period == p2)
        .collect();
    assert_eq!(
        ours,
        vec![earlier, done],
        "one run per period, oldest first"
    );
}

pub async fn payouts_are_stored_once_and_filter_by_period_and_vendor(store: &dyn Store) {
    let (v1, v2) = (VendorId::new(), VendorId::new());
    let payout = |vendor: &VendorId, period: &str| Payout {
        id: wharf_core::PayoutId::new(),
        vendor_id: vendor.clone(),
        period: period.into(),
        currency: usd(),
        gross: money("100.00"),
        platform_fee_percent: money("12.5"),
        platform_fee: money("12.50"),
        net: money("87.50"),
        invoices: 3,
        status: PayoutStatus::Statement,
        transfer_id: None,
        transfer_error: None,
        transfers_refused: 0,
        transfer_retry_at: None,
        transferable: true,
        revision: 1,
    };
    let a = payout(&v1, "2026-10");
    let b = payout(&v1, "2026-11");
    let c = payout(&v2, "2026-11");
    for p in [&a, &b, &c] {
        assert!(store.put_payout(p).await.unwrap());
    }
    let changed = Payout {
        net: money("1.00"),
        ..a.clone()
    };
    assert!(!store.put_payout(&changed).await.unwrap());
    assert_eq!(
        store.list_payouts(None, Some(&v1)).await.unwrap(),
        vec![a, b.clone()]
    );
    assert_eq!(
        store
            .list_payouts(Some("2026-11"), Some(&v1))
            .await
            .unwrap(),
        vec![b.clone()]
    );
    let november: Vec<Payout> = store
        .list_payouts(Some("2026-11"), None)
        .await
        .unwrap()
        .into_iter()
        .filter(|p| p.vendor_id == v1 || p.vendor_id == v2)
        .collect();
    assert_eq!(november.len(), 2);
    assert!(november.contains(&b) && november.contains(&c));
    let paid = Payout {
        status: PayoutStatus::Transferred,
        transfer_id: Some("tr_1".into()),
        revision: b.revision + 1,
        ..b.clone()
    };
    store.update_payout(&paid).await.unwrap();
    let racing = Payout {
        status: PayoutStatus::Failed,
        transfer_error: Some("a tick that read the payout before".into()),
        ..paid.clone()
    };
    assert_conflict(store.update_payout(&racing).await);
    assert_eq!(
        store
            .list_payouts(Some("2026-11"), Some(&v1))
            .await
            .unwrap(),
        vec![paid],
        "a payout's transfer state changes in place"
    );
    assert_not_found(
        store
            .update_payout(&Payout {
                id: wharf_core::PayoutId::new(),
                revision: c.revision + 1,
                ..c
            })
            .await,
        "payout",
    );
}

pub async fn a_vendors_payout_account_is_recorded_once_and_enabled_by_its_events(
    store: &dyn Store,
) {
    let vendor = VendorId::new();
    assert_eq!(store.payout_account(&vendor).await.unwrap(), None);
    let first = PayoutAccount {
        account: "acct_first".into(),
        payouts_enabled: false,
    };
    assert_eq!(
        store
            .put_payout_account(&vendor, "acct_first")
            .await
            .unwrap(),
        first
    );
    assert_eq!(
        store
            .put_payout_account(&vendor, "acct_second")
            .await
            .unwrap(),
        first,
        "a second account made by a racing call is not recorded"
    );
    store.set_payouts_enabled(&vendor, true).await.unwrap();
    assert_eq!(
        store.payout_account(&vendor).await.unwrap(),
        Some(PayoutAccount {
            account: "acct_first".into(),
            payouts_enabled: true,
        })
    );
    assert_eq!(store.payout_account(&VendorId::new()).await.unwrap(), None);
    assert_not_found(
        store.set_payouts_enabled(&VendorId::new(), true).await,
        "payout account",
    );
}

pub async fn every_subscription_is_listed_whatever_its_status(store: &dyn Store) {
    let (_, _, f) = vendor_with_feed(store).await;
    let subscriber = UserId::new();
    let active = stored_subscription(store, &f, &subscriber).await;
    let cancelled = stored_subscription(store, &f, &subscriber).await;
    let mut gone = cancelled.clone();
    gone.status = SubscriptionStatus::Cancelled;
    gone.revision += 1;
    store.update_subscription(&gone, None).await.unwrap();
    let mut seen = Vec::new();
    let mut page = PageRequest::first(2);
    loop {
        let got = store.list_all_subscriptions(&page).await.unwrap();
        seen.extend(
            got.items
                .into_iter()
                .filter(|s| s.subscriber_id == subscriber),
        );
        match got.next_cursor {
            Some(c) => page.cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), 2);
    assert!(seen.contains(&active));
    assert!(
        seen.iter()
            .any(|s| s.id == cancelled.id && s.status == SubscriptionStatus::Cancelled)
    );
}

/// A change of status only.
fn status(status: InvoiceStatus) -> InvoiceChange {
    InvoiceChange {
        status: Some(status),
        ..InvoiceChange::default()
    }
}
