//! The Stripe stand-in refuses what Stripe refuses: the collection tests are only as strict
//! as it is. Names are checked against the `stripe` package's parameter definitions, states
//! against Stripe's rules, and idempotency keys as Stripe honours them.

use serde_json::Value;
use wharf_testkit::stripe::StripeStandIn;

const KEY: &str = "sk_test_standin";

/// POSTs a form to the stand-in's API: (status, body).
async fn post(
    client: &reqwest::Client,
    stripe: &StripeStandIn,
    path: &str,
    key: Option<&str>,
    form: &[(&str, &str)],
) -> (u16, Value) {
    let mut req = client
        .post(format!("{}{path}", stripe.url()))
        .bearer_auth(KEY)
        .form(form);
    if let Some(key) = key {
        req = req.header("Idempotency-Key", key);
    }
    let res = req.send().await.expect("the stand-in answers");
    let status = res.status().as_u16();
    (status, res.json().await.expect("JSON"))
}

fn id(body: &Value) -> String {
    body["id"].as_str().expect("an id").to_owned()
}

#[tokio::test]
async fn unknown_and_missing_parameters_are_refused_at_every_depth() {
    let stripe = StripeStandIn::start(KEY, "whsec_x");
    let client = reqwest::Client::new();
    let p = |path, form| post(&client, &stripe, path, None, form);
    let (status, body) = p("/v1/customers", &[("emial", "a@example.com")]).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &"parameter_unknown".into())
    );
    assert_eq!(body["error"]["param"], "emial");
    let (status, body) = p(
        "/v1/checkout/sessions",
        &[
            ("mode", "setup"),
            ("currency", "usd"),
            ("success_url", "https://example.com/"),
            ("setup_intent_data[metdata][x]", "1"),
        ],
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "setup_intent_data[metdata]");
    let (status, body) = p("/v1/account_links", &[("type", "account_onboarding")]).await;
    assert_eq!((status, &body["error"]["param"]), (400, &"account".into()));
    let (status, body) = p("/v1/transfers", &[("amount", "100"), ("currency", "usd")]).await;
    assert_eq!(
        (status, &body["error"]["param"]),
        (400, &"destination".into())
    );
    let (status, body) = p(
        "/v1/checkout/sessions",
        &[("mode", "setup"), ("success_url", "https://example.com/")],
    )
    .await;
    assert_eq!(
        (status, &body["error"]["param"]),
        (400, &"currency".into()),
        "setup mode needs a currency"
    );
    let (status, _) = p("/v1/customers", &[("metadata[anything]", "goes")]).await;
    assert_eq!(status, 200, "metadata is a free map");
    let unauthorized = client
        .post(format!("{}/v1/customers", stripe.url()))
        .bearer_auth("sk_test_wrong")
        .send()
        .await
        .expect("an answer");
    assert_eq!(unauthorized.status(), 401);
}

#[tokio::test]
async fn invoices_move_through_stripes_states_only() {
    let stripe = StripeStandIn::start(KEY, "whsec_x");
    let client = reqwest::Client::new();
    let p = |path: String, form: Vec<(&'static str, String)>| {
        let (client, stripe) = (&client, &stripe);
        async move {
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            post(client, stripe, &path, None, &form).await
        }
    };
    let customer = id(&p("/v1/customers".into(), vec![]).await.1);
    let (status, body) = p(
        "/v1/invoices".into(),
        vec![
            ("customer", customer.clone()),
            ("collection_method", "send_invoice".into()),
        ],
    )
    .await;
    assert_eq!(status, 400, "send_invoice needs days_until_due: {body}");
    let (status, _) = p(
        "/v1/invoices".into(),
        vec![
            ("customer", customer.clone()),
            ("days_until_due", "30".into()),
        ],
    )
    .await;
    assert_eq!(status, 400, "charge_automatically takes no days_until_due");
    let draft = id(&p(
        "/v1/invoices".into(),
        vec![
            ("customer", customer.clone()),
            ("collection_method", "send_invoice".into()),
            ("days_until_due", "30".into()),
        ],
    )
    .await
    .1);
    let (status, _) = p(format!("/v1/invoices/{draft}/send"), vec![]).await;
    assert_eq!(status, 400, "a draft cannot be sent");
    let item = |invoice: String| {
        vec![
            ("customer", customer.clone()),
            ("invoice", invoice),
            ("amount", "100".into()),
            ("currency", "usd".into()),
        ]
    };
    assert_eq!(
        p("/v1/invoiceitems".into(), item(draft.clone())).await.0,
        200
    );
    let (status, body) = p(format!("/v1/invoices/{draft}/finalize"), vec![]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["hosted_invoice_url"].is_string());
    assert_eq!(
        p(format!("/v1/invoices/{draft}/finalize"), vec![]).await.0,
        400,
        "finalized twice"
    );
    assert_eq!(
        p("/v1/invoiceitems".into(), item(draft.clone())).await.0,
        400,
        "items on an open invoice"
    );
    assert_eq!(p(format!("/v1/invoices/{draft}/send"), vec![]).await.0, 200);
    let account = id(&p(
        "/v1/accounts".into(),
        vec![
            ("type", "express".into()),
            ("capabilities[transfers][requested]", "true".into()),
        ],
    )
    .await
    .1);
    let (status, body) = p(
        "/v1/transfers".into(),
        vec![
            ("amount", "100".into()),
            ("currency", "usd".into()),
            ("destination", account),
        ],
    )
    .await;
    assert_eq!(status, 400, "no transfers before onboarding: {body}");
}

#[tokio::test]
async fn an_idempotency_key_answers_its_first_answer_and_refuses_other_parameters() {
    let stripe = StripeStandIn::start(KEY, "whsec_x");
    let client = reqwest::Client::new();
    let form = [("email", "a@example.com")];
    let first = post(&client, &stripe, "/v1/customers", Some("k1"), &form).await;
    let again = post(&client, &stripe, "/v1/customers", Some("k1"), &form).await;
    assert_eq!(first, again, "the same customer, not a second");
    let other = post(
        &client,
        &stripe,
        "/v1/customers",
        Some("k1"),
        &[("email", "b@example.com")],
    )
    .await;
    assert_eq!(other.0, 400);
    assert_eq!(other.1["error"]["type"], "idempotency_error");
}
