use crate::helpers::*;

#[tokio::test]
async fn health_readiness_docs_and_unknown_routes() {
    let app = spawn_app().await;
    assert_eq!(app.get("/healthz", None).await.body["status"], "ok");
    assert_eq!(app.get("/readyz", None).await.body["status"], "ok");
    let spec = app.get("/openapi.json", None).await;
    assert_eq!(spec.status, 200);
    assert!(spec.body["openapi"].as_str().unwrap().starts_with("3.1"));
    assert!(spec.body["paths"]["/v1/feeds/{id}/pipeline"]["put"].is_object());
    let docs = app.client.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    assert!(
        docs.text().await.unwrap().contains("swagger"),
        "Swagger UI is served from the binary"
    );
    let missing = app.get("/v2/nothing", None).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.headers["content-type"], "application/problem+json");
    assert_eq!(
        app.call(reqwest::Method::PUT, "/v1/catalog", None, None)
            .await
            .status,
        405
    );
}

#[test]
fn the_committed_openapi_document_matches_the_code() {
    let generated = wharf_api::openapi().to_pretty_json().unwrap() + "\n";
    // Where cargo runs the test, not where it was compiled (a shared target directory
    // serves every checkout).
    let path = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap())
        .join("openapi/openapi.json");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi/openapi.json is stale: run `UPDATE_OPENAPI=1 cargo test --test api openapi`"
    );
}

/// Every `$ref` string anywhere in `value`.
fn refs<'a>(value: &'a serde_json::Value, found: &mut Vec<&'a str>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("$ref", serde_json::Value::String(r)) => found.push(r),
                    _ => refs(v, found),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| refs(v, found)),
        _ => {}
    }
}

#[test]
fn the_openapi_document_names_each_operation_once_and_defines_every_schema_it_refers_to() {
    let spec = serde_json::to_value(wharf_api::openapi()).unwrap();
    let mut ids: Vec<&str> = spec["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|ops| ops.as_object().unwrap().values())
        .filter_map(|op| op["operationId"].as_str())
        .collect();
    ids.sort_unstable();
    let mut twice: Vec<&str> = ids
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0])
        .collect();
    twice.dedup();
    assert!(twice.is_empty(), "operationIds used twice: {twice:?}");
    let mut found = Vec::new();
    refs(&spec, &mut found);
    let missing: Vec<&str> = found
        .into_iter()
        .filter_map(|r| r.strip_prefix("#/components/schemas/"))
        .filter(|name| spec["components"]["schemas"][*name].is_null())
        .collect();
    assert!(missing.is_empty(), "$refs to missing schemas: {missing:?}");
}
