//! The billing port on SQLite. Invoices and payouts are JSON documents keyed by their derived
//! ids and inserted with `ON CONFLICT DO NOTHING`, so a repeated run stores nothing twice; an
//! invoice's billed usage quantities go into `billed_usage` in the same transaction.

use crate::db::sql_error;
use crate::store::{SqliteStore, decode_doc, from_doc, run, to_doc};
use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use wharf_core::domain::InvoiceFilter;
use wharf_core::domain::{
    BillingRun, Invoice, InvoiceChange, LineKind, PaymentCustomer, Payout, PayoutAccount,
};
use wharf_core::ports::BillingStore;
use wharf_core::{CoreError, InvoiceId, Page, PageRequest, SubscriptionId, UserId, VendorId};

type Result<T> = std::result::Result<T, CoreError>;

/// The whole-number deliveries of a usage or adjustment line, as SQLite stores integers.
fn deliveries(quantity: &wharf_core::money::Amount) -> Result<i64> {
    i64::try_from(quantity.whole_units()?).map_err(CoreError::internal)
}

#[async_trait]
impl BillingStore for SqliteStore {
    async fn list_billing_runs(&self) -> Result<Vec<BillingRun>> {
        self.db
            .read(|c| {
                let mut stmt = c
                    .prepare_cached("SELECT doc FROM billing_runs ORDER BY period")
                    .map_err(sql_error)?;
                let mut rows = stmt.query([]).map_err(sql_error)?;
                let mut runs = Vec::new();
                while let Some(row) = rows.next().map_err(sql_error)? {
                    runs.push(from_doc(&row.get::<_, String>(0).map_err(sql_error)?)?);
                }
                Ok(runs)
            })
            .await
    }

    async fn put_billing_run(&self, billing_run: &BillingRun) -> Result<()> {
        let (period, doc) = (billing_run.period.clone(), to_doc(billing_run)?);
        self.db
            .write(move |tx| {
                run(
                    tx,
                    "INSERT INTO billing_runs (period, doc) VALUES (?, ?)
                     ON CONFLICT (period) DO UPDATE SET doc = excluded.doc",
                    params![period, doc],
                )
                .map(|_| ())
            })
            .await
    }

    async fn put_invoices(&self, invoices: &[Invoice]) -> Result<u64> {
        let rows = invoices
            .iter()
            .map(|invoice| {
                let billed = invoice
                    .lines
                    .iter()
                    .filter(|l| matches!(l.kind, LineKind::Usage | LineKind::Adjustment))
                    .map(|l| {
                        Ok((
                            l.subscription_id.to_string(),
                            l.service_period.clone(),
                            deliveries(&l.quantity)?,
                        ))
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok((invoice.clone(), to_doc(invoice)?, billed))
            })
            .collect::<Result<Vec<_>>>()?;
        self.db
            .write(move |tx| {
                let mut stored = 0;
                for (invoice, doc, billed) in &rows {
                    let new = run(
                        tx,
                        "INSERT INTO invoices (id, period, vendor_id, subscriber_id, status, doc)
                         VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                        params![
                            invoice.id.as_str(),
                            invoice.period,
                            invoice.vendor_id.as_str(),
                            invoice.subscriber_id.as_str(),
                            invoice.status.as_str(),
                            doc
                        ],
                    )? == 1;
                    if !new {
                        continue;
                    }
                    stored += 1;
                    for (sub, period, n) in billed {
                        run(
                            tx,
                            "INSERT INTO billed_usage (invoice_id, subscription_id, service_period, deliveries)
                             VALUES (?, ?, ?, ?)",
                            params![invoice.id.as_str(), sub, period, n],
                        )?;
                    }
                }
                Ok(stored)
            })
            .await
    }

    async fn get_invoice(&self, id: &InvoiceId) -> Result<Invoice> {
        let id = id.clone();
        self.db
            .read(move |c| {
                let doc: Option<String> = c
                    .query_row(
                        "SELECT doc FROM invoices WHERE id = ?",
                        [id.as_str()],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(sql_error)?;
                doc.map(|d| from_doc(&d))
                    .transpose()?
                    .ok_or(CoreError::NotFound("invoice"))
            })
            .await
    }

    async fn list_invoices(
        &self,
        filter: &InvoiceFilter,
        page: &PageRequest,
    ) -> Result<Page<Invoice>> {
        let period = filter.period.clone().unwrap_or_default();
        let vendor = filter
            .vendor
            .as_ref()
            .map(|v| v.to_string())
            .unwrap_or_default();
        let subscriber = filter
            .subscriber
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default();
        let status = filter
            .status
            .map(|s| s.as_str().to_owned())
            .unwrap_or_default();
        self.list::<_, InvoiceId>(
            "SELECT id, doc FROM invoices
             WHERE (? = '' OR period = ?) AND (? = '' OR vendor_id = ?)
               AND (? = '' OR subscriber_id = ?) AND (? = '' OR status = ?) AND id > ?
             ORDER BY id LIMIT ?",
            vec![
                period.clone(),
                period,
                vendor.clone(),
                vendor,
                subscriber.clone(),
                subscriber,
                status.clone(),
                status,
            ],
            page,
            decode_doc,
        )
        .await
    }

    async fn update_invoice(&self, id: &InvoiceId, change: &InvoiceChange) -> Result<Invoice> {
        let (id, change) = (id.clone(), change.clone());
        self.db
            .write(move |tx| {
                let doc: Option<String> = tx
                    .query_row(
                        "SELECT doc FROM invoices WHERE id = ?",
                        [id.as_str()],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(sql_error)?;
                let mut invoice: Invoice = from_doc(&doc.ok_or(CoreError::NotFound("invoice"))?)?;
                change.apply(&mut invoice);
                run(
                    tx,
                    "UPDATE invoices SET status = ?, doc = ? WHERE id = ?",
                    params![invoice.status.as_str(), to_doc(&invoice)?, id.as_str()],
                )?;
                Ok(invoice)
            })
            .await
    }

    async fn billed_totals(&self, service_period: &str) -> Result<Vec<(SubscriptionId, u64)>> {
        let period = service_period.to_owned();
        self.db
            .read(move |c| {
                let mut stmt = c
                    .prepare_cached(
                        "SELECT subscription_id, SUM(deliveries) FROM billed_usage
                         WHERE service_period = ? GROUP BY subscription_id ORDER BY subscription_id",
                    )
                    .map_err(sql_error)?;
                let mut rows = stmt.query([period]).map_err(sql_error)?;
                let mut billed = Vec::new();
                while let Some(row) = rows.next().map_err(sql_error)? {
                    let id: String = row.get(0).map_err(sql_error)?;
                    let n: i64 = row.get(1).map_err(sql_error)?;
                    billed.push((
                        SubscriptionId::parse(&id).map_err(CoreError::internal)?,
                        u64::try_from(n).map_err(CoreError::internal)?,
                    ));
                }
                Ok(billed)
            })
            .await
    }

    async fn put_payout(&self, payout: &Payout) -> Result<bool> {
        let doc = to_doc(payout)?;
        let payout = payout.clone();
        self.db
            .write(move |tx| {
                Ok(run(
                    tx,
                    "INSERT INTO payouts (id, vendor_id, period, doc) VALUES (?, ?, ?, ?)
                     ON CONFLICT (id) DO NOTHING",
                    params![
                        payout.id.as_str(),
                        payout.vendor_id.as_str(),
                        payout.period,
                        doc
                    ],
                )? == 1)
            })
            .await
    }

    async fn update_payout(&self, payout: &Payout) -> Result<()> {
        let doc = to_doc(payout)?;
        let (id, before) = (payout.id.clone(), payout.revision.saturating_sub(1));
        let before = i64::try_from(before).map_err(CoreError::internal)?;
        self.db
            .write(move |tx| {
                let changed = run(
                    tx,
                    "UPDATE payouts SET doc = ?1 WHERE id = ?2
                     AND COALESCE(json_extract(doc, '$.revision'), 0) = ?3",
                    params![doc, id.as_str(), before],
                )?;
                if changed == 1 {
                    return Ok(());
                }
                let exists = tx
                    .query_row("SELECT 1 FROM payouts WHERE id = ?", [id.as_str()], |_| {
                        Ok(())
                    })
                    .optional()
                    .map_err(sql_error)?;
                Err(match exists {
                    Some(()) => CoreError::Conflict("the payout changed meanwhile".into()),
                    None => CoreError::NotFound("payout"),
                })
            })
            .await
    }

    async fn payout_account(&self, vendor: &VendorId) -> Result<Option<PayoutAccount>> {
        let vendor = vendor.clone();
        self.db.read(move |c| read_account(c, &vendor)).await
    }

    async fn put_payout_account(&self, vendor: &VendorId, account: &str) -> Result<PayoutAccount> {
        let (vendor, account) = (vendor.clone(), account.to_owned());
        self.db
            .write(move |tx| {
                run(
                    tx,
                    "INSERT INTO payout_accounts (vendor_id, account_id) VALUES (?, ?)
                     ON CONFLICT (vendor_id) DO NOTHING",
                    params![vendor.as_str(), account],
                )?;
                read_account(tx, &vendor)?.ok_or_else(|| {
                    CoreError::internal("a payout account vanished after it was stored")
                })
            })
            .await
    }

    async fn set_payouts_enabled(&self, vendor: &VendorId, enabled: bool) -> Result<()> {
        let vendor = vendor.clone();
        self.db
            .write(move |tx| {
                match run(
                    tx,
                    "UPDATE payout_accounts SET payouts_enabled = ? WHERE vendor_id = ?",
                    params![enabled, vendor.as_str()],
                )? {
                    0 => Err(CoreError::NotFound("payout account")),
                    _ => Ok(()),
                }
            })
            .await
    }

    async fn list_payouts(
        &self,
        period: Option<&str>,
        vendor: Option<&VendorId>,
    ) -> Result<Vec<Payout>> {
        let period = period.unwrap_or_default().to_owned();
        let vendor = vendor.map(|v| v.to_string()).unwrap_or_default();
        self.db
            .read(move |c| {
                let mut stmt = c
                    .prepare_cached(
                        "SELECT doc FROM payouts WHERE (?1 = '' OR period = ?1)
                         AND (?2 = '' OR vendor_id = ?2) ORDER BY period, vendor_id, id",
                    )
                    .map_err(sql_error)?;
                let mut rows = stmt.query(params![period, vendor]).map_err(sql_error)?;
                let mut payouts = Vec::new();
                while let Some(row) = rows.next().map_err(sql_error)? {
                    payouts.push(from_doc(&row.get::<_, String>(0).map_err(sql_error)?)?);
                }
                Ok(payouts)
            })
            .await
    }

    async fn payment_customer(&self, subscriber: &UserId) -> Result<Option<PaymentCustomer>> {
        let subscriber = subscriber.clone();
        self.db.read(move |c| read_customer(c, &subscriber)).await
    }

    async fn put_payment_customer(
        &self,
        subscriber: &UserId,
        customer: &str,
    ) -> Result<PaymentCustomer> {
        let (subscriber, customer) = (subscriber.clone(), customer.to_owned());
        self.db
            .write(move |tx| {
                run(
                    tx,
                    "INSERT INTO payment_customers (subscriber_id, customer_id) VALUES (?, ?)
                     ON CONFLICT (subscriber_id) DO NOTHING",
                    params![subscriber.as_str(), customer],
                )?;
                read_customer(tx, &subscriber)?.ok_or_else(|| {
                    CoreError::internal("a payment customer vanished after it was stored")
                })
            })
            .await
    }

    async fn set_payment_method(&self, subscriber: &UserId, payment_method: &str) -> Result<()> {
        let (subscriber, method) = (subscriber.clone(), payment_method.to_owned());
        self.db
            .write(move |tx| {
                match run(
                    tx,
                    "UPDATE payment_customers SET payment_method = ? WHERE subscriber_id = ?",
                    params![method, subscriber.as_str()],
                )? {
                    0 => Err(CoreError::NotFound("payment customer")),
                    _ => Ok(()),
                }
            })
            .await
    }
}

/// A subscriber's customer row, if it has one.
fn read_customer(c: &rusqlite::Connection, subscriber: &UserId) -> Result<Option<PaymentCustomer>> {
    c.query_row(
        "SELECT customer_id, payment_method FROM payment_customers WHERE subscriber_id = ?",
        [subscriber.as_str()],
        |r| {
            Ok(PaymentCustomer {
                customer: r.get(0)?,
                payment_method: r.get(1)?,
            })
        },
    )
    .optional()
    .map_err(sql_error)
}

/// A vendor's connected account row, if it has one.
fn read_account(c: &rusqlite::Connection, vendor: &VendorId) -> Result<Option<PayoutAccount>> {
    c.query_row(
        "SELECT account_id, payouts_enabled FROM payout_accounts WHERE vendor_id = ?",
        [vendor.as_str()],
        |r| {
            Ok(PayoutAccount {
                account: r.get(0)?,
                payouts_enabled: r.get(1)?,
            })
        },
    )
    .optional()
    .map_err(sql_error)
}
