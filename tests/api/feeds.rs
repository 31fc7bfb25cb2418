use crate::helpers::*;
use serde_json::json;

#[tokio::test]
async fn a_feed_is_created_with_pipeline_version_1_and_new_pipelines_bump_it() {
    let app = spawn_app().await;
    let (vendor, token) = app.vendor("Acme").await;
    let source = app.source(&token).await;
    let res = app
        .post(
            "/v1/feeds",
            Some(&token),
            feed_body(&source, "Large trades"),
        )
        .await;
    assert_eq!(res.status, 201);
    assert_eq!(res.body["tenant_id"], vendor.as_str());
    assert_eq!(res.body["pipeline"]["version"], 1);
    assert_eq!(
        res.body["pipeline"]["rules"][0],
        json!({"type": "filter", "expr": "record.price > 100.0"})
    );
    assert_eq!(res.body["plans"][0]["monthly_fee"], "49.00");
    assert_eq!(res.body["plans"][0]["tiers"][1]["unit_price"], "0.0005");
    let id = res.body["id"].as_str().unwrap();
    let v2 = app.put(&format!("/v1/feeds/{id}/pipeline"), Some(&token), json!({"rules": [
        {"type": "enrich", "table": "companies", "key": "record.sym", "as": "company"},
        {"type": "window", "every": "10m", "window": "10m", "group_by": "record.sym",
         "aggregates": {"n": "count()", "vwap": "sum(record.px*record.qty)/sum(record.qty)"}, "having": "n > 0"}
    ]})).await;
    assert_eq!(v2.status, 200, "{:?}", v2.body);
    assert_eq!(v2.body["pipeline"]["version"], 2);
    let bad = app.put(&format!("/v1/feeds/{id}/pipeline"), Some(&token), json!({"rules": [
        {"type": "filter", "expr": "record.x > 1"}, {"type": "filter", "expr": "record.price >"}
    ]})).await;
    assert_eq!(bad.status, 422);
    assert_eq!(bad.paths(), vec!["rules[1].expr"]);
    assert!(
        bad.body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("line 1, column"),
        "{:?}",
        bad.body
    );
    assert_eq!(
        app.get(&format!("/v1/feeds/{id}"), Some(&token)).await.body["pipeline"]["version"],
        2
    );
}

#[tokio::test]
async fn invalid_cel_in_a_new_feed_points_at_the_rule_and_position() {
    let app = spawn_app().await;
    let (_, token) = app.vendor("Acme").await;
    let source = app.source(&token).await;
    let mut body = feed_body(&source, "bad");
    body["pipeline"]["rules"][1]["fields"]["usd"] = json!("record.px * (1.08");
    body["pipeline"]["rules"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "filter", "expr": "nosuchfn(record.x)"}));
    let res = app.post("/v1/feeds", Some(&token), body).await;
    assert_eq!(res.status, 422);
    assert_eq!(
        res.paths(),
        vec!["pipeline.rules[1].fields.usd", "pipeline.rules[2].expr"]
    );
    assert!(
        res.body["errors"][1]["message"]
            .as_str()
            .unwrap()
            .contains("nosuchfn")
    );
    assert_eq!(
        app.get("/v1/feeds", Some(&token)).await.body["items"],
        json!([])
    );
}

#[tokio::test]
async fn bad_plans_are_refused_field_by_field() {
    let app = spawn_app().await;
    let (_, token) = app.vendor("Acme").await;
    let source = app.source(&token).await;
    let cases = [
        (json!({"currency": "usdx"}), "plans[0].currency"),
        (json!({"monthly_fee": 49.0}), "plans[0].monthly_fee"),
        (json!({"monthly_fee": "49.001"}), "plans[0].monthly_fee"),
        (json!({"monthly_fee": "-1"}), "plans[0].monthly_fee"),
        (
            json!({"tiers": [{"up_to": 100, "unit_price": "0.1"}, {"up_to": 50, "unit_price": "0.1"}, {"up_to": null, "unit_price": "0"}]}),
            "plans[0].tiers[1].up_to",
        ),
        (
            json!({"tiers": [{"up_to": 100, "unit_price": "0.1"}]}),
            "plans[0].tiers[0].up_to",
        ),
        (json!({"tiers": []}), "plans[0].tiers"),
        (
            json!({"included_deliveries": -5}),
            "plans[0].included_deliveries",
        ),
    ];
    for (change, path) in cases {
        let mut plan = plan();
        for (k, v) in change.as_object().unwrap() {
            plan[k] = v.clone();
        }
        let mut body = feed_body(&source, "f");
        body["plans"] = json!([plan]);
        let res = app.post("/v1/feeds", Some(&token), body).await;
        assert_eq!(res.status, 422, "{change}: {:?}", res.body);
        assert_eq!(res.paths(), vec![path], "{change}");
    }
    let mut body = feed_body(&source, "f");
    body["plans"] = json!([plan(), plan()]);
    assert_eq!(
        app.post("/v1/feeds", Some(&token), body).await.paths(),
        vec!["plans[1].id"]
    );
    assert_eq!(
        app.get("/v1/feeds", Some(&token)).await.body["items"],
        json!([])
    );
}

#[tokio::test]
async fn feed_status_follows_draft_published_archived() {
    let app = spawn_app().await;
    let (_, token) = app.vendor("Acme").await;
    let source = app.source(&token).await;
    let mut body = feed_body(&source, "f");
    body["status"] = json!("draft");
    body["plans"] = json!([]);
    let id = app.post("/v1/feeds", Some(&token), body).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/feeds/{id}");
    let no_plan = app
        .patch(&path, Some(&token), json!({"status": "published"}))
        .await;
    assert_eq!(no_plan.status, 422);
    assert_eq!(no_plan.paths(), vec!["plans"]);
    let published = app
        .patch(
            &path,
            Some(&token),
            json!({"status": "published", "plans": [plan()], "name": "Renamed"}),
        )
        .await;
    assert_eq!(published.status, 200);
    assert_eq!(published.body["name"], "Renamed");
    assert_eq!(published.body["revision"], 2);
    assert_eq!(
        app.patch(&path, Some(&token), json!({"status": "draft"}))
            .await
            .status,
        409
    );
    assert_eq!(
        app.patch(&path, Some(&token), json!({"status": "archived"}))
            .await
            .body["status"],
        "archived"
    );
    assert_eq!(
        app.patch(&path, Some(&token), json!({"status": "published"}))
            .await
            .status,
        409
    );
    assert_eq!(
        app.put(
            &format!("{path}/pipeline"),
            Some(&token),
            json!({"rules": []})
        )
        .await
        .status,
        409
    );
}

#[tokio::test]
async fn a_feed_with_subscriptions_cannot_be_deleted_and_a_plan_in_use_taken_off_sale_is_retired() {
    let app = spawn_app().await;
    let (_, token) = app.vendor("Acme").await;
    let feed = app.feed(&token, "f").await;
    let lonely = app.feed(&token, "g").await;
    let (_, sub) = app.subscriber("bob").await;
    let subscription = app.subscribe(&sub, &feed).await;
    let subs = app
        .get(&format!("/v1/feeds/{feed}/subscriptions"), Some(&token))
        .await;
    assert_eq!(subs.body["items"][0]["id"], subscription.as_str());
    assert_eq!(
        app.delete(&format!("/v1/feeds/{feed}"), Some(&token))
            .await
            .status,
        409
    );
    let mut other = plan();
    other["id"] = json!("basic");
    let res = app
        .patch(
            &format!("/v1/feeds/{feed}"),
            Some(&token),
            json!({"plans": [other]}),
        )
        .await;
    assert_eq!(res.status, 200, "{:?}", res.body);
    let now = app.get(&format!("/v1/feeds/{feed}"), Some(&token)).await;
    assert_eq!(now.body["plans"][0]["id"], "basic");
    assert_eq!(
        now.body["retired_plans"][0]["id"], "pro",
        "still rateable for the subscription on it"
    );
    assert_eq!(
        app.delete(&format!("/v1/feeds/{lonely}"), Some(&token))
            .await
            .status,
        204
    );
    assert_eq!(
        app.get(&format!("/v1/feeds/{lonely}"), Some(&token))
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn a_feed_needs_a_source_of_its_own_tenant() {
    let app = spawn_app().await;
    let (_, a) = app.vendor("A").await;
    let (_, b) = app.vendor("B").await;
    let theirs = app.source(&b).await;
    let res = app
        .post("/v1/feeds", Some(&a), feed_body(&theirs, "f"))
        .await;
    assert_eq!(res.status, 422);
    assert_eq!(res.paths(), vec!["source_id"]);
}
