//! GraphQL over HTTP as the spec has it: media type negotiation and status
//! codes, the alias limit, Accept-Language, and a readiness probe that
//! looks at what the gateway needs.

mod common;

use common::spawn_app;
use reqwest::header::{ACCEPT, ACCEPT_LANGUAGE, CONTENT_TYPE};
use serde_json::{Value, json};

const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";

async fn post(app: &common::TestApp, accept: Option<&str>, query: &str) -> (u16, String, Value) {
    let mut request = app.http.post(&app.url).json(&json!({ "query": query }));
    if let Some(accept) = accept {
        request = request.header(ACCEPT, accept);
    }
    let response = request.send().await.expect("the gateway answers");
    let status = response.status().as_u16();
    let media = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, media, body)
}

#[tokio::test]
async fn status_codes_and_media_types_follow_what_the_client_accepts() {
    let app = spawn_app().await;
    let valid = "{ regions { code } }";
    let broken = "{ regions { code }";
    let unknown = "{ noSuchField }";

    let (status, media, body) = post(&app, Some(GRAPHQL_RESPONSE), valid).await;
    assert_eq!((status, media.as_str()), (200, GRAPHQL_RESPONSE), "{body}");
    assert!(body["data"]["regions"].is_array());
    for query in [broken, unknown] {
        let (status, media, body) = post(&app, Some(GRAPHQL_RESPONSE), query).await;
        assert_eq!(
            (status, media.as_str()),
            (400, GRAPHQL_RESPONSE),
            "{query}: {body}"
        );
        assert!(body["errors"][0]["message"].is_string());
        // Legacy clients get 200 and application/json.
        let (status, media, _) = post(&app, Some("application/json"), query).await;
        assert_eq!(status, 200, "{query}");
        assert!(media.starts_with("application/json"), "{media}");
        let (status, _, _) = post(&app, None, query).await;
        assert_eq!(status, 200, "{query} without Accept");
    }
    // A field error (here: not logged in) keeps 200: the request ran.
    let (status, _, body) = post(
        &app,
        Some(GRAPHQL_RESPONSE),
        "{ booking(id: \"not-an-id\") { id } }",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");

    let (status, _, body) = post(&app, Some("text/html"), valid).await;
    assert_eq!(status, 406, "{body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "NOT_ACCEPTABLE");
}

#[tokio::test]
async fn too_many_aliases_are_refused_before_anything_runs() {
    let app = spawn_app().await;
    let fields = |n: usize| {
        (0..n)
            .map(|i| format!("r{i}: regions {{ code }}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let many = |n: usize| format!("{{ {} }}", fields(n));
    let (status, _, body) = post(&app, Some(GRAPHQL_RESPONSE), &many(30)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["data"]["r29"].is_array());
    let (status, _, body) = post(&app, Some(GRAPHQL_RESPONSE), &many(31)).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    // Hidden in a fragment they count too.
    let fragment = format!("query {{ ...F }} fragment F on Query {{ {} }}", fields(31));
    let (status, _, body) = post(&app, Some(GRAPHQL_RESPONSE), &fragment).await;
    assert_eq!(status, 400, "{fragment}: {body}");
}

#[tokio::test]
async fn names_follow_accept_language_unless_asked_otherwise() {
    let app = spawn_app().await;
    let ask = |lang: &'static str, query: &'static str| {
        let app = &app;
        async move {
            let body: Value = app
                .http
                .post(&app.url)
                .header(ACCEPT_LANGUAGE, lang)
                .json(&json!({ "query": query }))
                .send()
                .await
                .expect("answers")
                .json()
                .await
                .expect("json");
            body["data"]["regions"][0]["name"].clone()
        }
    };
    let beijing = "{ regions { name } }";
    assert_eq!(ask("en-GB,en;q=0.9", beijing).await, "Beijing");
    assert_eq!(ask("zh-CN", beijing).await, "北京市");
    assert_eq!(ask("en", "{ regions { name(lang: ZH) } }").await, "北京市");
}

#[tokio::test]
async fn a_gateway_whose_services_do_not_answer_is_not_ready() {
    let app = common::spawn_parts(common::test_settings(), &[duikou::Part::Gateway]).await;
    let ready = app
        .http
        .get(app.url.replace("/graphql", "/readyz"))
        .send()
        .await
        .expect("answers");
    assert_eq!(ready.status().as_u16(), 503);
    let body: Value = ready.json().await.expect("json");
    assert_eq!(body["database"], "ok", "{body}");
    assert!(
        body["services"]
            .as_str()
            .is_some_and(|s| s.starts_with("failing")),
        "{body}"
    );
}

#[tokio::test]
async fn readiness_says_what_the_gateway_depends_on() {
    let app = spawn_app().await;
    let ready = app
        .http
        .get(app.url.replace("/graphql", "/readyz"))
        .send()
        .await
        .expect("answers");
    assert_eq!(ready.status().as_u16(), 200);
    let body: Value = ready.json().await.expect("json");
    assert_eq!(
        body,
        json!({ "ready": true, "database": "ok", "services": "ok" })
    );
}
