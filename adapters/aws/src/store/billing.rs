//! Billing runs, invoices, billed usage, payouts and payment customers.
//!
//! An invoice is written in one transaction with one billed-usage item per usage or
//! adjustment line (under the line's service month), and only if its id is new, so a run
//! repeated after a crash stores nothing twice and `billed_totals` never counts twice.

use super::*;
use async_trait::async_trait;
use wharf_core::domain::InvoiceFilter;
use wharf_core::domain::{
    BillingRun, Invoice, InvoiceChange, LineKind, PaymentCustomer, Payout, PayoutAccount,
};
use wharf_core::ports::BillingStore;
use wharf_core::{InvoiceId, SubscriptionId, UserId, VendorId};

fn invoice_pk(id: &InvoiceId) -> String {
    format!("INV#{id}")
}

fn invoice_item(invoice: &Invoice) -> Result<Item> {
    let mut item = item(invoice_pk(&invoice.id), "INVOICE", "invoice", invoice)?;
    item.insert("gsi1pk".into(), s(format!("INVOICES#{}", invoice.period)));
    item.insert("gsi1sk".into(), s(invoice.id.as_str()));
    item.insert("gsi2pk".into(), s("INVOICES"));
    item.insert("gsi2sk".into(), s(invoice.id.as_str()));
    Ok(item)
}

fn payouts_pk(vendor: &VendorId) -> String {
    format!("T#{vendor}#PAYOUT")
}

/// A payout under its vendor, and in the index of every vendor's payouts by month.
fn payout_item(payout: &Payout) -> Result<Item> {
    let mut item = item(
        payouts_pk(&payout.vendor_id),
        format!("{}#{}", payout.period, payout.id),
        "payout",
        payout,
    )?;
    item.insert("gsi1pk".into(), s("PAYOUTS"));
    item.insert(
        "gsi1sk".into(),
        s(format!(
            "{}#{}#{}",
            payout.period, payout.vendor_id, payout.id
        )),
    );
    Ok(item)
}

#[async_trait]
impl BillingStore for DynamoStore {
    async fn list_billing_runs(&self) -> Result<Vec<BillingRun>> {
        let query = Query::table("BILLING").sort(Sort::BeginsWith("RUN#".into()));
        self.query_all(&query, None)
            .await?
            .iter()
            .map(from_item)
            .collect()
    }

    async fn put_billing_run(&self, run: &BillingRun) -> Result<()> {
        self.put(item(
            "BILLING",
            format!("RUN#{}", run.period),
            "billing_run",
            run,
        )?)
        .await
    }

    async fn put_invoices(&self, invoices: &[Invoice]) -> Result<u64> {
        let mut seen = std::collections::HashSet::new();
        let mut groups = Vec::new();
        for invoice in invoices.iter().filter(|i| seen.insert(i.id.clone())) {
            let mut group = vec![put_op(invoice_item(invoice)?, self.table(), true)?];
            for line in &invoice.lines {
                if !matches!(line.kind, LineKind::Usage | LineKind::Adjustment) {
                    continue;
                }
                let mut billed = key(
                    format!("BILLED#{}", line.service_period),
                    format!("{}#{}#{}", line.subscription_id, invoice.id, group.len()),
                );
                billed.insert("kind".into(), s("billed"));
                billed.insert("subscription_id".into(), s(line.subscription_id.as_str()));
                billed.insert("deliveries".into(), n(line.quantity.whole_units()?));
                group.push(put_op(billed, self.table(), false)?);
            }
            groups.push(group);
        }
        let written = self.write_new_groups(groups).await?;
        Ok(written.iter().filter(|w| **w).count() as u64)
    }

    async fn get_invoice(&self, id: &InvoiceId) -> Result<Invoice> {
        self.get_doc(&invoice_pk(id), "INVOICE", "invoice").await
    }

    async fn list_invoices(
        &self,
        filter: &InvoiceFilter,
        page: &PageRequest,
    ) -> Result<Page<Invoice>> {
        let query = match &filter.period {
            Some(period) => Query::index("gsi1", format!("INVOICES#{period}")),
            None => Query::index("gsi2", "INVOICES"),
        };
        let page = self
            .query_page(&query, page, |items: Vec<Item>| {
                let mut kept = Vec::new();
                for item in items {
                    let invoice: Invoice = match from_item(&item) {
                        Ok(invoice) => invoice,
                        Err(e) => return ready(Err(e)),
                    };
                    if filter
                        .vendor
                        .as_ref()
                        .is_none_or(|v| *v == invoice.vendor_id)
                        && filter
                            .subscriber
                            .as_ref()
                            .is_none_or(|s| *s == invoice.subscriber_id)
                        && filter.status.is_none_or(|s| s == invoice.status)
                    {
                        kept.push(item);
                    }
                }
                ready(Ok(kept))
            })
            .await?;
        docs(page)
    }

    async fn update_invoice(&self, id: &InvoiceId, change: &InvoiceChange) -> Result<Invoice> {
        // Read, change, and write back only if nobody wrote in between (a payment event and
        // a push can meet); a lost race reads again.
        for _ in 0..8 {
            let stored = self
                .get(&invoice_pk(id), "INVOICE")
                .await?
                .ok_or(CoreError::NotFound("invoice"))?;
            let mut invoice: Invoice = from_item(&stored)?;
            change.apply(&mut invoice);
            let before = stored.get("doc").cloned().unwrap_or_else(|| s(""));
            let sent = self
                .db()
                .put_item()
                .table_name(self.table())
                .set_item(Some(invoice_item(&invoice)?))
                .condition_expression("#doc = :before")
                .expression_attribute_names("#doc", "doc")
                .expression_attribute_values(":before", before)
                .send()
                .await;
            if written(sent, "changing an invoice")? {
                return Ok(invoice);
            }
        }
        Err(CoreError::unavailable(
            "an invoice kept changing while it was updated",
        ))
    }

    async fn billed_totals(&self, service_period: &str) -> Result<Vec<(SubscriptionId, u64)>> {
        let mut totals: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
        for item in self
            .query_all(&Query::table(format!("BILLED#{service_period}")), None)
            .await?
        {
            *totals
                .entry(str_attr(&item, "subscription_id")?.to_owned())
                .or_default() += num_attr(&item, "deliveries")?;
        }
        totals
            .into_iter()
            .map(|(id, n)| Ok((SubscriptionId::parse(&id).map_err(CoreError::internal)?, n)))
            .collect()
    }

    async fn put_payout(&self, payout: &Payout) -> Result<bool> {
        let item = payout_item(payout)?;
        match self.put_new(item, "payout").await {
            Ok(()) => Ok(true),
            Err(CoreError::Conflict(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn update_payout(&self, payout: &Payout) -> Result<()> {
        let key = (
            payouts_pk(&payout.vendor_id),
            format!("{}#{}", payout.period, payout.id),
        );
        let stored = self
            .get(&key.0, &key.1)
            .await?
            .ok_or(CoreError::NotFound("payout"))?;
        let before: Payout = from_item(&stored)?;
        if before.revision + 1 != payout.revision {
            return Err(CoreError::Conflict("the payout changed meanwhile".into()));
        }
        let sent = self
            .db()
            .put_item()
            .table_name(self.table())
            .set_item(Some(payout_item(payout)?))
            .condition_expression("#doc = :before")
            .expression_attribute_names("#doc", "doc")
            .expression_attribute_values(
                ":before",
                stored.get("doc").cloned().unwrap_or_else(|| s("")),
            )
            .send()
            .await;
        if written(sent, "changing a payout")? {
            Ok(())
        } else {
            Err(CoreError::Conflict("the payout changed meanwhile".into()))
        }
    }

    async fn payout_account(&self, vendor: &VendorId) -> Result<Option<PayoutAccount>> {
        match self.get(&format!("T#{vendor}"), "PAYACCT").await? {
            Some(item) => Ok(Some(PayoutAccount {
                account: str_attr(&item, "account")?.to_owned(),
                payouts_enabled: matches!(
                    item.get("payouts_enabled"),
                    Some(AttributeValue::Bool(true))
                ),
            })),
            None => Ok(None),
        }
    }

    async fn put_payout_account(&self, vendor: &VendorId, account: &str) -> Result<PayoutAccount> {
        let mut item = key(format!("T#{vendor}"), "PAYACCT");
        item.insert("kind".into(), s("payout_account"));
        item.insert("account".into(), s(account));
        item.insert("payouts_enabled".into(), AttributeValue::Bool(false));
        match self.put_new(item, "payout account").await {
            Ok(()) | Err(CoreError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
        self.payout_account(vendor)
            .await?
            .ok_or_else(|| CoreError::internal("a payout account vanished after it was stored"))
    }

    async fn set_payouts_enabled(&self, vendor: &VendorId, enabled: bool) -> Result<()> {
        let sent = self
            .db()
            .update_item()
            .table_name(self.table())
            .set_key(Some(key(format!("T#{vendor}"), "PAYACCT")))
            .update_expression("SET payouts_enabled = :on")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":on", AttributeValue::Bool(enabled))
            .send()
            .await;
        if written(sent, "recording whether payouts are enabled")? {
            Ok(())
        } else {
            Err(CoreError::NotFound("payout account"))
        }
    }

    async fn list_payouts(
        &self,
        period: Option<&str>,
        vendor: Option<&VendorId>,
    ) -> Result<Vec<Payout>> {
        let prefix = period.map(|p| format!("{p}#"));
        let mut query = match vendor {
            Some(vendor) => Query::table(payouts_pk(vendor)),
            None => Query::index("gsi1", "PAYOUTS"),
        };
        if let Some(prefix) = prefix {
            query = query.sort(Sort::BeginsWith(prefix));
        }
        self.query_all(&query, None)
            .await?
            .iter()
            .map(from_item)
            .collect()
    }

    async fn payment_customer(&self, subscriber: &UserId) -> Result<Option<PaymentCustomer>> {
        match self.get(&format!("S#{subscriber}"), "PAYCUST").await? {
            Some(item) => Ok(Some(PaymentCustomer {
                customer: str_attr(&item, "customer")?.to_owned(),
                payment_method: match item.get("payment_method") {
                    Some(_) => Some(str_attr(&item, "payment_method")?.to_owned()),
                    None => None,
                },
            })),
            None => Ok(None),
        }
    }

    async fn put_payment_customer(
        &self,
        subscriber: &UserId,
        customer: &str,
    ) -> Result<PaymentCustomer> {
        let mut item = key(format!("S#{subscriber}"), "PAYCUST");
        item.insert("kind".into(), s("payment_customer"));
        item.insert("customer".into(), s(customer));
        match self.put_new(item, "payment customer").await {
            Ok(()) | Err(CoreError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
        self.payment_customer(subscriber)
            .await?
            .ok_or_else(|| CoreError::internal("a payment customer vanished after it was stored"))
    }

    async fn set_payment_method(&self, subscriber: &UserId, payment_method: &str) -> Result<()> {
        let sent = self
            .db()
            .update_item()
            .table_name(self.table())
            .set_key(Some(key(format!("S#{subscriber}"), "PAYCUST")))
            .update_expression("SET payment_method = :pm")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":pm", s(payment_method))
            .send()
            .await;
        if written(sent, "recording a payment method")? {
            Ok(())
        } else {
            Err(CoreError::NotFound("payment customer"))
        }
    }
}
