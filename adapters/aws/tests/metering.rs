//! Exactly-once metering against a real moto table.

mod moto;

use wharf_aws::bootstrap::bootstrap;
use wharf_aws::metering::{Acknowledged, count_once, hourly_count};
use wharf_core::{DeliveryId, SubscriptionId, UserId, VendorId};

#[tokio::test]
async fn a_delivery_counts_once_however_often_it_is_acknowledged() {
    let moto = moto::Moto::start();
    let clients = moto.clients().await;
    bootstrap(&clients).await.expect("bootstrap");
    let at = time::macros::datetime!(2031-01-15 10:20 UTC);
    let ack = |delivery: &DeliveryId, records: u64, tenant: &VendorId, sub: &SubscriptionId| {
        Acknowledged {
            tenant: tenant.clone(),
            subscription: sub.clone(),
            subscriber: UserId::new(),
            delivery: delivery.clone(),
            at,
            records,
        }
    };
    let (tenant, sub) = (VendorId::new(), SubscriptionId::new());

    let first = DeliveryId::new();
    assert!(
        count_once(&clients, &ack(&first, 3, &tenant, &sub))
            .await
            .expect("count")
    );
    assert!(
        !count_once(&clients, &ack(&first, 3, &tenant, &sub))
            .await
            .expect("again")
    );
    assert_eq!(
        hourly_count(&clients, &tenant, &sub, at)
            .await
            .expect("read"),
        3
    );

    // Acknowledged eight times: counted once. (In sequence: moto undoes a failed
    // transaction by restoring a copy of the whole table, which under concurrency also undoes
    // other transactions' writes; DynamoDB's own transactions are isolated.)
    let second = DeliveryId::new();
    let mut counted = 0;
    for _ in 0..8 {
        if count_once(&clients, &ack(&second, 2, &tenant, &sub))
            .await
            .expect("count")
        {
            counted += 1;
        }
    }
    assert_eq!(counted, 1);
    assert_eq!(
        hourly_count(&clients, &tenant, &sub, at)
            .await
            .expect("read"),
        5
    );

    // Another hour, another subscription and another tenant count apart.
    let later = at + time::Duration::hours(1);
    assert_eq!(
        hourly_count(&clients, &tenant, &sub, later)
            .await
            .expect("read"),
        0
    );
    let other_sub = SubscriptionId::new();
    assert!(
        count_once(&clients, &ack(&first, 7, &tenant, &other_sub))
            .await
            .expect("count")
    );
    assert_eq!(
        hourly_count(&clients, &tenant, &other_sub, at)
            .await
            .expect("read"),
        7
    );
    assert_eq!(
        hourly_count(&clients, &VendorId::new(), &sub, at)
            .await
            .expect("read"),
        0
    );
    assert_eq!(
        hourly_count(&clients, &tenant, &sub, at)
            .await
            .expect("read"),
        5
    );
}
