//! GraphQL over HTTP as the spec has it: media type negotiation and status
//! codes, the alias limit, Accept-Language, and a readiness probe that
//! looks at what the gateway needs.

mod common;

use common::spawn_app;
use reqwest::header::{ACCEPT, ACCEPT_LANGUAGE, CONTENT_TYPE};
use serde_json::{Value, json};

const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";

async fn post(app: &common::TestApp, accept: Option<&str>, query: &str) -> (u16, String, Value) {
    post_json(app, accept, json!({ "query": query })).await
}

/// POSTs `query` (GraphQL-over-HTTP): asserts it is refused before it runs,
/// 400 `BAD_USER_INPUT` with a message saying `words`.
async fn refused_saying(app: &common::TestApp, query: &str, words: &str) {
    let (status, _, body) = post(app, Some(GRAPHQL_RESPONSE), query).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains(words)),
        "{words}: {body}"
    );
}

/// POSTs a GraphQL request given whole (query, variables, operationName):
/// the status, the media type and the body.
async fn post_json(
    app: &common::TestApp,
    accept: Option<&str>,
    request: Value,
) -> (u16, String, Value) {
    let mut request = app.http.post(&app.url).json(&request);
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
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");

    // The upload spec's multipart form (it ran): no file is taken here.
    let form = "--X\r\nContent-Disposition: form-data; name=\"operations\"\r\n\r\n\
                {\"query\": \"{ regions { code } }\"}\r\n--X\r\n\
                Content-Disposition: form-data; name=\"map\"\r\n\r\n{}\r\n--X--\r\n";
    let response = app
        .http
        .post(&app.url)
        .header(CONTENT_TYPE, "multipart/form-data; boundary=X")
        .body(form)
        .send()
        .await
        .expect("the gateway answers");
    assert_eq!(response.status().as_u16(), 415);
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{body}"
    );
    assert!(body["data"].is_null(), "{body}");

    // A `Content-Type` left empty says no type: the body is read as JSON,
    // as with none (it was refused as no GraphQL request).
    let response = app
        .http
        .post(&app.url)
        .header(CONTENT_TYPE, "")
        .body(json!({ "query": "{ regions { code } }" }).to_string())
        .send()
        .await
        .expect("the gateway answers");
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert!(body["data"]["regions"].is_array(), "{body}");
}

/// A field that fails is null in `data`, beside the fields that did not
/// (async-graphql left its key out); a required one makes `data` null, as
/// the spec says. A required variable sent without a value is a request
/// error: 400 for clients of the spec's media type, nothing run (it was
/// the first field using it failing, 200).
#[tokio::test]
async fn a_failed_field_is_null_and_a_missing_variable_refuses_the_request() {
    let app = spawn_app().await;
    let (status, _, body) = post(
        &app,
        Some(GRAPHQL_RESPONSE),
        "{ booking(id: \"0191e6a0-0000-7000-8000-000000000000\") { id } regions(parentCode: \"150400\") { code } }",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let data = body["data"].as_object().expect("data");
    assert_eq!(data.get("booking"), Some(&Value::Null), "{body}");
    assert!(data["regions"].is_array(), "{body}");
    assert_eq!(body["errors"][0]["path"], json!(["booking"]), "{body}");
    // myBookings: BookingConnection!
    let (status, _, body) = post(
        &app,
        Some(GRAPHQL_RESPONSE),
        "{ myBookings(first: 1) { edges { cursor } } regions(parentCode: \"150400\") { code } }",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"], Value::Null, "{body}");
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{body}"
    );

    let needs_id = "query($id: ID!) { booking(id: $id) { id } }";
    let with_default =
        "query($id: ID! = \"0191e6a0-0000-7000-8000-000000000000\") { booking(id: $id) { id } }";
    for (query, variables) in [
        (needs_id, json!({})),
        (needs_id, json!({ "id": null })),
        // A default stands in for a variable left out, not one sent null.
        (with_default, json!({ "id": null })),
    ] {
        for (accept, expected) in [(GRAPHQL_RESPONSE, 400), ("application/json", 200)] {
            let request = json!({ "query": query, "variables": variables });
            let (status, _, body) = post_json(&app, Some(accept), request).await;
            assert_eq!(status, expected, "{variables} {accept}");
            assert!(body.get("data").is_none(), "{body}");
            assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
            let message = body["errors"][0]["message"].as_str().unwrap_or_default();
            assert!(message.starts_with("variable $id "), "{body}");
        }
    }
}

/// Variables as the spec coerces them (§6.4.1), which async-graphql did
/// not: a variable left out takes its default (`@include(if: $w)` read a
/// defaulted `$w` left out as false, `@skip` kept what it should skip), and
/// an argument given a nullable variable left out is no argument, so its
/// own default applies (it was "Expected input type …, found null"). Every
/// root field skipped answers `{}`, not `data: null`; a request that did not
/// run answers no `data` at all, in the media type asked for; a field
/// selected twice that fails is one error (an agency's typed client found
/// each).
#[tokio::test]
async fn variables_defaults_and_request_errors_answer_as_the_spec_says() {
    let app = spawn_app().await;
    let send = |query: &'static str, variables: Value| {
        post_json(
            &app,
            Some(GRAPHQL_RESPONSE),
            json!({ "query": query, "variables": variables }),
        )
    };
    let (_, _, body) = send(
        "query($w: Boolean = true) { regions(parentCode: \"150400\") @include(if: $w) { code } }",
        json!({}),
    )
    .await;
    assert!(body["data"]["regions"].is_array(), "{body}");
    let (_, _, body) = send(
        "query($w: Boolean = true) { regions(parentCode: \"150400\") @skip(if: $w) { code } }",
        json!({}),
    )
    .await;
    assert_eq!(body, json!({ "data": {} }));
    let (_, _, body) = send(
        "query($first: Int) { partnerships(first: $first) { edges { node { id } } } }",
        json!({}),
    )
    .await;
    assert!(body.get("errors").is_none(), "{body}");
    assert!(body["data"]["partnerships"]["edges"].is_array(), "{body}");

    // A document of several operations (GraphiQL sends the whole editor):
    // the one named runs, the others stay as written and valid.
    let (_, _, body) = post_json(
        &app,
        Some(GRAPHQL_RESPONSE),
        json!({
            "query": "query List($first: Int) { partnerships(first: $first) { totalCount } }
                      query Mine($first: Int) { myBookings(first: $first) { ...Page } }
                      fragment Page on BookingConnection { totalCount }",
            "operationName": "List",
            "variables": {}
        }),
    )
    .await;
    assert!(body.get("errors").is_none(), "{body}");
    assert!(
        body["data"]["partnerships"]["totalCount"].is_number(),
        "{body}"
    );

    for (query, variables) in [
        ("{ regions { nope } }", json!({})),
        ("query($id: ID!) { booking(id: $id) { id } }", json!({})),
    ] {
        let (status, media, body) = send(query, variables).await;
        assert_eq!((status, media.as_str()), (400, GRAPHQL_RESPONSE), "{body}");
        assert!(body.get("data").is_none(), "{body}");
    }

    let (_, _, body) = send(
        "{ ...F ...G } fragment F on Query { booking(id: \"0191e6a0-0000-7000-8000-000000000000\") { id } }
         fragment G on Query { booking(id: \"0191e6a0-0000-7000-8000-000000000000\") { status } }",
        json!({}),
    )
    .await;
    assert_eq!(body["errors"].as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(body["data"], json!({ "booking": null }), "{body}");
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

    // One password guess a request: two logins under aliases are refused
    // before either runs; one alone is answered (wrongly guessed here).
    let login = |alias: &str| {
        format!(
            "{alias}: login(email: \"a@example.cn\", password: \"guess-guess-guess\") {{ accessToken }}"
        )
    };
    let two = format!("mutation {{ {} {} }}", login("a"), login("b"));
    let (status, _, body) = post(&app, Some(GRAPHQL_RESPONSE), &two).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    let one = format!("mutation {{ {} }}", login("a"));
    let (_, _, body) = post(&app, Some(GRAPHQL_RESPONSE), &one).await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{body}"
    );

    // A fragment runs each time it is spread (async-graphql does not merge
    // the copies): one login spread twice is two guesses, refused; a
    // field spread 31 times at the root is 31 calls, refused; 30 run.
    let spread = |n: usize, fragment: &str| {
        let operation = if fragment.contains("Mutation") {
            "mutation"
        } else {
            "query"
        };
        format!("{operation} {{ {} }} {fragment}", vec!["...F"; n].join(" "))
    };
    let login_twice = spread(2, &format!("fragment F on Mutation {{ {} }}", login("a")));
    let (status, _, body) = post(&app, Some(GRAPHQL_RESPONSE), &login_twice).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("one password")),
        "{body}"
    );
    let regions = "fragment F on Query { regions { code } }";
    let (status, _, body) = post(&app, Some(GRAPHQL_RESPONSE), &spread(31, regions)).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("31 fields at its root")),
        "{body}"
    );
    let (status, _, body) = post(&app, Some(GRAPHQL_RESPONSE), &spread(30, regions)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["data"]["regions"].is_array(), "{body}");
}

/// Fragments that double at each level are refused by their count before
/// async-graphql follows every spread (22 levels took it ~12 s of a worker
/// each, 29 minutes, before its "too complex"); 12 levels, within the
/// limit, run.
#[tokio::test]
async fn fragments_that_double_at_each_level_are_refused_before_they_are_walked() {
    let app = spawn_app().await;
    refused_saying(
        &app,
        &common::doubling_fragments("query", "regions", "Region", "code", 22),
        "runs 4194305 fields",
    )
    .await;
    let (status, _, body) = post(
        &app,
        Some(GRAPHQL_RESPONSE),
        &common::doubling_fragments("query", "regions", "Region", "code", 12),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["data"]["regions"].is_array(), "{body}");
    // `__typename` runs as no field, but is walked as every other: 29
    // levels of it alone (2^29 selections) are refused too, at once.
    refused_saying(
        &app,
        &common::doubling_fragments("query", "regions", "Region", "__typename", 29),
        "selections",
    )
    .await;
}

/// A query of more names, or values, than a query may run fields is
/// refused before it is parsed (130,000 one-letter fields in 256 KiB parsed
/// to some 40 MB, kept in the gateway's cache of parsed queries though
/// refused after; 85,000 empty lists, no name among them, took seconds of
/// a worker and 50 MB each, and sixteen of them kept in the cache weighed
/// their names' few kilobytes, 700 MB in all).
#[tokio::test]
async fn a_query_of_too_many_names_or_values_is_refused_before_it_is_parsed() {
    let app = spawn_app().await;
    let many = format!("{{ {} }}", "a ".repeat(100_000));
    refused_saying(&app, &many, "more than 10000 names and values").await;
    for value in ["[]", "0 ", "\"\" "] {
        let values = format!("{{ nosuch(a: [{}]) }}", value.repeat(30_000));
        refused_saying(&app, &values, "more than 10000 names and values").await;
    }
}

/// An unknown field is named without a guess at what was meant: the guess
/// compared the name with every field of its type, in time that grows with
/// the name's length — one anonymous request of a 250,000-letter field held
/// a worker for seconds, four of them the whole gateway.
#[tokio::test]
async fn an_unknown_field_or_argument_is_named_without_a_guess() {
    let app = spawn_app().await;
    let (_, _, body) = post(&app, None, "{ regionz { code } }").await;
    assert_eq!(
        body["errors"][0]["message"], "Unknown field \"regionz\" on type \"Query\".",
        "{body}"
    );
    let (_, _, body) = post(&app, None, "{ regions(parentCod: \"15\") { code } }").await;
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("Unknown argument \"parentCod\"") && !message.contains("Did you mean"),
        "{body}"
    );
}

/// A partnership's nested `report` is a call to partnership each: it costs
/// 100 against the complexity limit (a page of 100 pairs with 24 years
/// each was 2,400 calls from one anonymous request); `regionImpact`, which
/// reads a year of bookings, costs 1,000.
#[tokio::test]
async fn nested_partnership_reports_cost_a_call_each() {
    let app = spawn_app().await;
    let years: String = (2020..2044)
        .map(|y| format!(" y{y}: report(year: {y}) {{ year }}"))
        .collect();
    let many = format!("{{ partnerships(first: 100) {{ edges {{ node {{{years} }} }} }} }}");
    refused_saying(&app, &many, "complex").await;
    let few = "{ partnerships(first: 20) { edges { node { report(year: 2026) { year } } } } }";
    let (status, _, body) = post(&app, Some(GRAPHQL_RESPONSE), few).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["data"]["partnerships"]["edges"].is_array(), "{body}");
    // A region's year reads a year of bookings twice: five in a request
    // are too many (thirty aliases were sixty such reads), four are not.
    let regions = |n: i32| -> String {
        let aliases: String = (0..n)
            .map(|i| {
                format!(
                    " r{i}: regionImpact(regionCode: \"110000\", year: {}) {{ year }}",
                    1990 + i
                )
            })
            .collect();
        format!("{{{aliases} }}")
    };
    refused_saying(&app, &regions(5), "complex").await;
    let (status, _, body) = post(&app, Some(GRAPHQL_RESPONSE), &regions(4)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["r3"]["year"], 1993, "{body}");
}

/// A field written many times in one query — 64 copies of `welfareFund {
/// byYear }` by doubling fragments — asks its service once (it was one RPC
/// a copy: 2,048 in a 550-byte query). A mutation's fields are not shared
/// so (a read after a change must see it).
#[tokio::test]
async fn a_query_asks_a_service_the_same_thing_once_however_often_it_is_written() {
    let app = spawn_app().await;
    let asked = || app.metric("duikou_rpc_total", &["method=\"fund_totals\""]);
    let before = asked().await;
    let query =
        common::doubling_fragments("query", "welfareFund", "WelfareFund", "byYear { year }", 6);
    let body = app.graphql(&query, json!({})).await;
    assert!(body["errors"].is_null(), "{body}");
    assert!(body["data"]["welfareFund"]["byYear"].is_array(), "{body}");
    assert_eq!(asked().await - before, 1.0);
}

/// A request wrong in hundreds of places is told the first hundred and how
/// many more (20,000 repeated variable definitions answered 5.5 MB of
/// errors).
#[tokio::test]
async fn an_answer_lists_a_hundred_errors_and_counts_the_rest() {
    let app = spawn_app().await;
    let variables = vec!["$v: Int"; 151].join(", ");
    let query = format!("query({variables}) {{ regions {{ code }} }}");
    let (status, _, body) = post(&app, Some(GRAPHQL_RESPONSE), &query).await;
    assert_eq!(status, 400, "{body}");
    let errors = body["errors"].as_array().cloned().unwrap_or_default();
    assert_eq!(errors.len(), 101, "{body}");
    let last = errors[100]["message"].as_str().unwrap_or_default();
    assert!(
        last.starts_with("… and ") && last.ends_with(" more errors, left out"),
        "{last}"
    );
    assert!(
        errors
            .iter()
            .all(|e| e["extensions"]["code"] == "BAD_USER_INPUT")
    );
}

/// `query` posted with `Accept-Language: lang`; the whole body.
async fn in_language(app: &common::TestApp, lang: &str, query: &str) -> Value {
    app.http
        .post(&app.url)
        .header(ACCEPT_LANGUAGE, lang)
        .json(&json!({ "query": query }))
        .send()
        .await
        .expect("answers")
        .json()
        .await
        .expect("json")
}

#[tokio::test]
async fn names_follow_accept_language_unless_asked_otherwise() {
    let app = spawn_app().await;
    let ask = |lang: &'static str, query: &'static str| {
        let app = &app;
        async move { in_language(app, lang, query).await["data"]["regions"][0]["name"].clone() }
    };
    let beijing = "{ regions { name } }";
    assert_eq!(ask("en-GB,en;q=0.9", beijing).await, "Beijing");
    assert_eq!(ask("zh-CN", beijing).await, "北京市");
    assert_eq!(ask("en", "{ regions { name(lang: ZH) } }").await, "北京市");
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
        json!({ "ready": true, "degraded": false, "database": "ok", "redis": "ok",
                "services": { "inventory": "ok", "booking": "ok", "payment": "ok", "partnership": "ok" } })
    );
}

/// Asked to stop, a gateway first says so on `/readyz` (503, `stopping`)
/// while it goes on answering requests for the drain: a load balancer
/// takes it out before its listener closes. It closed the listener at
/// once, refusing connections the balancer still sent (a review of the
/// deployment with replicas).
#[tokio::test]
async fn a_gateway_asked_to_stop_says_it_is_stopping_and_goes_on_answering() {
    let app = spawn_app().await;
    let readyz = app.url.replace("/graphql", "/readyz");
    let draining = app.app.drain(std::time::Duration::from_secs(30));
    tokio::pin!(draining);
    // The drain's first step is taken on its first poll.
    assert!(
        futures::poll!(draining.as_mut()).is_pending(),
        "the drain did not wait"
    );
    let answer = app.http.get(&readyz).send().await.expect("answers");
    assert_eq!(answer.status().as_u16(), 503);
    let body: Value = answer.json().await.expect("json");
    assert_eq!(body["stopping"], true, "{body}");
    assert_eq!(body["ready"], false, "{body}");
    let search = app
        .graphql("{ regions(parentCode: \"150400\") { code } }", json!({}))
        .await;
    assert!(search["errors"].is_null(), "{search}");
    assert!(
        search["data"]["regions"]
            .as_array()
            .is_some_and(|r| !r.is_empty()),
        "{search}"
    );
}

/// Redis gone mid-run (the test's proxy in front of it drops every
/// connection and each new one): requests answer at once, going on without
/// it — the limit counted in the process meanwhile —, and `/readyz` stays
/// 200 naming it; with Redis back, it is used again. Each request waited
/// for the client's reconnect cycle (seconds, per call), every replica's
/// `/readyz` went 503 on the one shared Redis, and then the limit was off.
#[tokio::test]
async fn a_redis_gone_mid_run_costs_requests_no_wait_and_takes_no_replica_out() {
    let (url, cut) = redis_proxy().await;
    let mut settings = common::test_settings();
    settings.redis_url = Some(url.into());
    // Counted in Redis: every request asks it.
    settings.rate_limit = 8;
    settings.rate_limit_window_seconds = 600;
    let app = common::spawn_app_with(settings).await;
    let readyz = app.url.replace("/graphql", "/readyz");
    let redis_state = || async {
        let answer = app.http.get(&readyz).send().await.expect("answers");
        let status = answer.status().as_u16();
        let body: Value = answer.json().await.expect("json");
        (
            status,
            body["redis"].as_str().unwrap_or_default().to_owned(),
        )
    };
    assert_eq!(redis_state().await, (200, "ok".to_owned()));
    cut.send_replace(true);
    let mut limited = None;
    for n in 0..12 {
        let asked = tokio::time::timeout(
            std::time::Duration::from_secs(3),
            app.graphql_as(None, "{ regions { code } }", json!({})),
        )
        .await;
        let body = asked.unwrap_or_else(|_| panic!("request {n} waited for Redis"));
        if body["errors"].is_null() {
            continue;
        }
        assert_eq!(common::code(&body), "RATE_LIMITED", "{body}");
        limited = Some(n);
        break;
    }
    // The process counts from nothing: eight go through, the ninth waits.
    assert_eq!(limited, Some(8), "the limit while Redis is gone");
    let (status, redis) = redis_state().await;
    assert_eq!(status, 200, "{redis}");
    assert!(redis.starts_with("failing"), "{redis}");
    cut.send_replace(false);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while redis_state().await.1 != "ok" {
        assert!(
            std::time::Instant::now() < deadline,
            "Redis never used again"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A TCP proxy to the tests' Redis: its URL, and a switch that, set, drops
/// every connection through it and each new one at once.
async fn redis_proxy() -> (String, tokio::sync::watch::Sender<bool>) {
    let target = common::redis_url()
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let addr = listener.local_addr().expect("its address");
    let (cut, watching) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let (mut cut, target) = (watching.clone(), target.clone());
            tokio::spawn(async move {
                if *cut.borrow() {
                    return;
                }
                let Ok(mut server) = tokio::net::TcpStream::connect(&target).await else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    _ = cut.wait_for(|cut| *cut) => {}
                }
            });
        }
    });
    (format!("redis://{addr}"), cut)
}

/// A service down is named, and takes no gateway out: every replica shares
/// it, and draining them all would take search and booking down with a
/// partnership restart (a review of the deployment with replicas found
/// every gateway 503). `?all` waits for every service. With no service
/// answering at all, the gateway's own link is in doubt: 503.
#[tokio::test]
async fn readiness_names_each_service_that_does_not_answer() {
    let app = common::spawn_parts(
        common::test_settings(),
        &[duikou::Part::Inventory, duikou::Part::Gateway],
    )
    .await;
    let readyz = app.url.replace("/graphql", "/readyz");
    let ask = |query: &'static str| {
        let (http, url) = (app.http.clone(), format!("{readyz}{query}"));
        async move {
            let answer = http.get(&url).send().await.expect("answers");
            let status = answer.status().as_u16();
            (status, answer.json::<Value>().await.expect("json"))
        }
    };
    let (status, body) = ask("").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ready"], true);
    assert_eq!(body["degraded"], true);
    assert_eq!(body["services"]["inventory"], "ok", "{body}");
    for missing in ["booking", "payment", "partnership"] {
        assert!(
            body["services"][missing]
                .as_str()
                .is_some_and(|s| s.starts_with("failing")),
            "{missing}: {body}"
        );
    }
    for all in ["?all", "?all=true"] {
        let (status, body) = ask(all).await;
        assert_eq!(status, 503, "{all}: {body}");
        assert_eq!(body["ready"], false, "{body}");
    }
    assert_eq!(ask("?all=false").await.0, 200);

    let alone = common::spawn_parts(common::test_settings(), &[duikou::Part::Gateway]).await;
    let answer = alone
        .http
        .get(alone.url.replace("/graphql", "/readyz"))
        .send()
        .await
        .expect("answers");
    assert_eq!(answer.status().as_u16(), 503);
}

#[tokio::test]
async fn a_service_that_lost_its_database_is_named() {
    use sea_orm::ConnectionTrait;
    let app = spawn_app().await;
    let readyz = app.url.replace("/graphql", "/readyz");
    let all = format!("{readyz}?all");
    let admin = sea_orm::Database::connect(common::postgres_url())
        .await
        .expect("postgres");
    let payment = shared::db::database_name(&app.settings, "payment");
    // Payment's database takes no new connection, and its open ones end.
    let set = |allow: bool| format!("ALTER DATABASE \"{payment}\" WITH ALLOW_CONNECTIONS {allow}");
    admin.execute_unprepared(&set(false)).await.expect("locked");
    admin
        .execute_unprepared(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{payment}'"
        ))
        .await
        .expect("terminated");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let body = loop {
        let answer = app.http.get(&all).send().await.expect("answers");
        let status = answer.status().as_u16();
        let body: Value = answer.json().await.expect("json");
        if status == 503 {
            break body;
        }
        assert!(std::time::Instant::now() < deadline, "still ready: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let plain = app.http.get(&readyz).send().await.expect("answers");
    let plain_status = plain.status().as_u16();
    let plain: Value = plain.json().await.expect("json");
    admin
        .execute_unprepared(&set(true))
        .await
        .expect("unlocked");
    assert_eq!(body["ready"], false);
    assert!(
        body["services"]["payment"]
            .as_str()
            .is_some_and(|s| s.contains("database")),
        "{body}"
    );
    for up in ["inventory", "booking", "partnership"] {
        assert_eq!(body["services"][up], "ok", "{body}");
    }
    // The replica itself stays in: payment is every replica's.
    assert_eq!(plain_status, 200, "{plain}");
    assert_eq!(plain["degraded"], true, "{plain}");
    // With its database back, everything is ready again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while app.http.get(&all).send().await.expect("answers").status() != 200 {
        assert!(std::time::Instant::now() < deadline, "not ready again");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Introspection is open, once a request and its lists two deep: thirty
/// aliases of `__schema` nesting a type's fields five deep answered 2.6 MB
/// for 1.4 s of the gateway's CPU, past the complexity limit (a list with
/// no `first` counts once). GraphiQL's query still runs.
#[tokio::test]
async fn introspection_runs_once_a_request_and_two_lists_deep() {
    let app = spawn_app().await;
    let deep = "fields { name type { fields { name type { fields { name } } } } }";
    let aliased: String = (0..30)
        .map(|i| format!("a{i}: __schema {{ types {{ {deep} }} }} "))
        .collect();
    for query in [
        format!("{{ {aliased} }}"),
        format!("{{ __schema {{ types {{ {deep} }} }} }}"),
    ] {
        let (status, _, body) = post(&app, Some(GRAPHQL_RESPONSE), &query).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
            "{body}"
        );
    }
    let (_, _, body) = post(
        &app,
        None,
        "{ __schema { types { name fields { name type { name ofType { name } } } inputFields { name } } } }",
    )
    .await;
    let types = body["data"]["__schema"]["types"]
        .as_array()
        .map_or(0, Vec::len);
    assert!(types > 50, "{body}");
    // Aliases of `types` inside one `__schema` (5.3 MB for 4.5 s).
    let aliased: String = (0..29)
        .map(|i| format!("t{i}: types {{ fields {{ name type {{ fields {{ name }} }} }} }} "))
        .collect();
    let (status, _, body) = post(
        &app,
        Some(GRAPHQL_RESPONSE),
        &format!("{{ __schema {{ {aliased} }} }}"),
    )
    .await;
    assert_eq!(status, 400, "{body}");
}

/// A syntax error in a generated client's long one-line query says why
/// and where, not the parser's picture of the line cut before its reason.
#[tokio::test]
async fn a_syntax_error_in_a_long_query_says_why_and_where() {
    let app = spawn_app().await;
    let query = "query SearchHomestays($region: String!, $checkIn: Date!, $checkOut: Date!) { \
                 searchHomestays(regionCode: $region, checkIn: $checkIn, checkOut: $checkOut, \
                 first: 20) { totalCount edges { cursor node { id name regionCode roomTypes { id \
                 name capacity pricePerNight } } } pageInfo { hasNextPage endCursor } }";
    let (_, _, body) = post(&app, None, query).await;
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("syntax error at line 1, column ") && message.contains("expected"),
        "{body}"
    );
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
}

#[tokio::test]
async fn every_error_has_a_code_and_a_depth_bomb_is_refused() {
    let app = spawn_app().await;
    for query in [
        "{ regions { code }",
        "{ noSuchField }",
        "query($x: Int!) { regions { code } }",
    ] {
        let (_, _, body) = post(&app, None, query).await;
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
            "{query}: {body}"
        );
    }
    // Nested thirty deep: over the depth limit, refused before it runs.
    let mut bomb = String::from("__typename");
    for _ in 0..30 {
        bomb = format!("__schema {{ types {{ fields {{ type {{ {bomb} }} }} }} }}");
    }
    let (status, _, body) = post(&app, Some(GRAPHQL_RESPONSE), &format!("{{ {bomb} }}")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{body}"
    );
    assert!(body["data"].is_null());
    // Past the depth limit but short of the nesting guard: said with the
    // limit ("Query is nested too deep." told none).
    let mut deep = String::from("name");
    for _ in 0..17 {
        deep = format!("ofType {{ {deep} }}");
    }
    let (_, _, body) = post(
        &app,
        None,
        &format!("{{ __type(name: \"Query\") {{ {deep} }} }}"),
    )
    .await;
    assert_eq!(
        body["errors"][0]["message"], "the query is nested too deep: at most 16 levels",
        "{body}"
    );
    // A DateTime without its time and offset: the message says the form.
    let (_, _, body) = post(
        &app,
        None,
        "{ myBookings(filter: { updatedSince: \"2026-12-04\" }) { totalCount } }",
    )
    .await;
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("RFC 3339")),
        "{body}"
    );
    // A day that does not exist, in the query and in a variable: the
    // message says what a Date is (it named only the type).
    for (query, variables) in [
        (
            "{ searchHomestays(checkIn: \"2027-02-30\", checkOut: \"2027-03-02\", guests: 1) { totalCount } }",
            json!({}),
        ),
        (
            "query($d: Date!) { searchHomestays(checkIn: $d, checkOut: \"2027-03-02\", guests: 1) { totalCount } }",
            json!({ "d": "2027-02-30" }),
        ),
    ] {
        let body = app.graphql(query, variables).await;
        common::assert_error(
            &body,
            "BAD_USER_INPUT",
            "a Date is a day that exists, written YYYY-MM-DD",
        );
    }
    // Said once where the request's cost is counted by its dates too (the
    // complexity functions read them and failed a second time).
    let some_id = uuid::Uuid::now_v7().to_string();
    for (query, variables) in [
        (
            "query($id: ID!) { roomCalendar(roomTypeId: $id, from: \"2027-02-30\", to: \"2027-03-02\") { rooms } }",
            json!({ "id": some_id }),
        ),
        (
            "query($id: ID!, $d: Date) { route(id: $id) { departures(from: $d) { id } } }",
            json!({ "id": some_id, "d": "2027-13-01" }),
        ),
        (
            "query($id: ID!) { homestay(id: $id) { roomTypes { calendar(from: \"2027-1-5\", to: \"2027-01-09\") { rooms } } } }",
            json!({ "id": some_id }),
        ),
        // Not a text at all.
        (
            "query($id: ID!) { roomCalendar(roomTypeId: $id, from: 5, to: \"2027-03-02\") { rooms } }",
            json!({ "id": some_id }),
        ),
    ] {
        let body = app.graphql(query, variables).await;
        assert_eq!(common::code(&body), "BAD_USER_INPUT", "{body}");
        assert_eq!(body["errors"].as_array().map(Vec::len), Some(1), "{body}");
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("Invalid value for argument")),
            "{body}"
        );
    }
    // An Int past 32 bits passes the validator and is reported by the
    // complexity function alone: kept beside a bad Date.
    let body = app
        .graphql(
            "query($id: ID!) { roomCalendar(roomTypeId: $id, from: \"2027-02-30\", to: \"2027-03-02\") { rooms } \
             regionListings(regionCode: \"150400\", first: 3000000000) { totalCount } }",
            json!({ "id": some_id }),
        )
        .await;
    assert_eq!(body["errors"].as_array().map(Vec::len), Some(2), "{body}");
    // Too costly (30 pages of 100 offers): said with the limit and what to do.
    let wide = (0..30)
        .map(|i| {
            format!(
                "f{i}: searchHomestays(checkIn: \"2030-01-01\", checkOut: \"2030-01-02\", guests: 1, first: 100) \
                 {{ edges {{ node {{ homestayName roomTypeId total {{ amount }} }} }} }}"
            )
        })
        .collect::<Vec<_>>()
        .join(" ");
    let (_, _, body) = post(&app, None, &format!("{{ {wide} }}")).await;
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("the query is too complex: at most 5000")),
        "{body}"
    );
}

#[tokio::test]
async fn requests_carry_an_id_and_the_gateway_exports_metrics() {
    let app = spawn_app().await;
    let given = app
        .http
        .post(&app.url)
        .header("x-request-id", "trip-4711")
        .json(&json!({ "query": "{ regions(parentCode: \"150400\") { code } }" }))
        .send()
        .await
        .expect("answers");
    assert_eq!(given.headers()["x-request-id"], "trip-4711");
    let made = app
        .http
        .post(&app.url)
        .json(&json!({ "query": "{ __typename }" }))
        .send()
        .await
        .expect("answers");
    let id = made.headers()["x-request-id"].to_str().expect("ascii");
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    // An id that is not a short token is replaced: it goes into every RPC's
    // headers, and one of 200 KB made RabbitMQ drop the gateway's
    // connection (SERVICE_UNAVAILABLE, every subscription ended); headers
    // that large are refused now anyway.
    let huge = app
        .http
        .post(&app.url)
        .header("x-request-id", "a".repeat(200_000))
        .json(&json!({ "query": "{ __typename }" }))
        .send()
        .await
        .expect("answers");
    assert_eq!(huge.status().as_u16(), 431, "headers past 64 KiB");
    for (n, given) in ["a".repeat(1_000), "two words".to_owned()]
        .iter()
        .enumerate()
    {
        // A call to payment each time (no cache answers it).
        let query = format!("{{ fund{n}: welfareFund {{ balance {{ amount }} }} }}");
        let answer = app
            .http
            .post(&app.url)
            .header("x-request-id", given)
            .json(&json!({ "query": query }))
            .send()
            .await
            .expect("answers");
        let id = answer.headers()["x-request-id"]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
        let body: Value = answer.json().await.expect("json");
        assert!(
            body["data"][format!("fund{n}")]["balance"]["amount"].is_string(),
            "{body}"
        );
    }
    app.graphql("{ noSuchField }", json!({})).await;
    // A path nothing serves is counted too, under one label whatever the
    // path (a scan of unknown paths must not make a series per path).
    let base = app.url.trim_end_matches("/graphql");
    for path in ["/wp-login.php", "/graphql/extra"] {
        let missing = app
            .http
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("answers");
        assert_eq!(missing.status(), 404, "{path}");
    }

    let metrics = app.metrics_text().await;
    for series in [
        "duikou_http_requests_total",
        "duikou_http_request_seconds",
        "duikou_rpc_seconds",
        "duikou_rpc_total",
        "duikou_graphql_errors_total",
        // Alarms before anything sets them off: 0, not absent.
        "duikou_revocation_reads_failed_total 0",
        "duikou_redis_failures_total 0",
        "duikou_redis_skipped_total 0",
        "duikou_sqlite_connections_reset_total 0",
    ] {
        assert!(
            metrics.contains(series),
            "{series} missing from /metrics:\n{metrics}"
        );
    }
    assert!(metrics.contains("route=\"/graphql\""), "{metrics}");
    assert!(
        metrics.contains("route=\"unmatched\"") && !metrics.contains("wp-login"),
        "{metrics}"
    );
    assert!(metrics.contains("service=\"inventory\""), "{metrics}");
    assert!(metrics.contains("code=\"BAD_USER_INPUT\""), "{metrics}");
}

/// Every error answered is counted by its code, those the gateway makes
/// before the executor runs too: too many aliases, a mutation sent with
/// GET, two secrets in one request (these three were answered and not
/// counted, so a client refused each time never showed on the dashboard).
#[tokio::test]
async fn refusals_before_the_executor_are_counted_as_errors() {
    // The recorder is the process's: exact counts hold as nextest runs
    // each test in a process of its own (the README's test command).
    let app = spawn_app().await;
    let counted = || app.metric("duikou_graphql_errors_total", &["code=\"BAD_USER_INPUT\""]);
    let before = counted().await;
    let aliases: String = (0..31).map(|n| format!("a{n}: __typename ")).collect();
    let refused = app.graphql(&format!("{{ {aliases} }}"), json!({})).await;
    assert_eq!(common::code(&refused), "BAD_USER_INPUT", "{refused}");
    let got = app
        .http
        .get(format!(
            "{}?query=mutation{{logout(refreshToken:\"x\")}}",
            app.url
        ))
        .send()
        .await
        .expect("answers");
    assert_eq!(got.status(), 405);
    let two = app
        .graphql(
            "mutation { a: login(email: \"a@example.cn\", password: \"x\") { accessToken }
                        b: login(email: \"b@example.cn\", password: \"x\") { accessToken } }",
            json!({}),
        )
        .await;
    assert_eq!(common::code(&two), "BAD_USER_INPUT", "{two}");
    assert_eq!(counted().await - before, 3.0);
}

#[tokio::test]
async fn a_persisted_query_is_sent_once_and_then_named_by_its_hash() {
    use sha2::Digest;
    let app = spawn_app().await;
    let query = "{ regions(parentCode: \"150400\") { code } }";
    let hash = hex::encode(sha2::Sha256::digest(query.as_bytes()));
    let persisted = json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } });
    let send = |body: Value| {
        let app = &app;
        async move {
            app.http
                .post(&app.url)
                .json(&body)
                .send()
                .await
                .expect("answers")
                .json::<Value>()
                .await
                .expect("json")
        }
    };
    // Unknown hash: the client is told to send the query.
    let unknown = send(json!({ "extensions": persisted })).await;
    assert_eq!(
        unknown["errors"][0]["extensions"]["code"], "PERSISTED_QUERY_NOT_FOUND",
        "{unknown}"
    );
    assert_eq!(unknown["errors"][0]["message"], "PersistedQueryNotFound");
    // Not a SHA-256 at all: the client's mistake, not a miss.
    for bad in ["abc".to_owned(), "f".repeat(100_000)] {
        let refused = send(json!({ "extensions": {
            "persistedQuery": { "version": 1, "sha256Hash": bad } } }))
        .await;
        assert_eq!(
            refused["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
            "{refused}"
        );
    }
    // Not an object: refused, not ignored (the query sent with it ran,
    // never kept, and the client never knew).
    let refused = send(json!({ "query": "{ __typename }",
        "extensions": { "persistedQuery": "x" } }))
    .await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{refused}"
    );
    assert!(refused["data"].is_null(), "{refused}");
    // A query refused before parsing is refused so when sent to be kept,
    // not parsed on the way (16,000 levels would overflow the parser's
    // stack and abort the gateway).
    let deep = format!(
        "{{ regions(parentCode: {}\"1\"{}) {{ code }} }}",
        "[".repeat(16_000),
        "]".repeat(16_000)
    );
    let deep_hash = hex::encode(sha2::Sha256::digest(deep.as_bytes()));
    let refused = send(json!({ "query": deep, "extensions": {
        "persistedQuery": { "version": 1, "sha256Hash": deep_hash } } }))
    .await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{refused}"
    );
    // With the query: answered and kept.
    let first = send(json!({ "query": query, "extensions": persisted })).await;
    assert!(first["data"]["regions"].is_array(), "{first}");
    // Then the hash alone is enough (over GET too).
    let again = send(json!({ "extensions": persisted })).await;
    assert_eq!(again["data"], first["data"], "{again}");
    let by_get = app
        .http
        .get(&app.url)
        .query(&[("extensions", persisted.to_string())])
        .send()
        .await
        .expect("answers")
        .json::<Value>()
        .await
        .expect("json");
    assert_eq!(by_get["data"], first["data"], "{by_get}");
    // A hash that is not the query's is refused.
    let forged = send(json!({ "query": "{ __typename }", "extensions": persisted })).await;
    assert_eq!(
        forged["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{forged}"
    );
    // What does not parse is answered with its error and not kept.
    let broken = "{ nope";
    let broken_hash = json!({ "persistedQuery": { "version": 1,
        "sha256Hash": hex::encode(sha2::Sha256::digest(broken.as_bytes())) } });
    let answered = send(json!({ "query": broken, "extensions": broken_hash })).await;
    assert_eq!(
        answered["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{answered}"
    );
    let not_kept = send(json!({ "extensions": broken_hash })).await;
    assert_eq!(
        not_kept["errors"][0]["extensions"]["code"], "PERSISTED_QUERY_NOT_FOUND",
        "{not_kept}"
    );
}

/// Redis takes at most `PERSISTED_BUDGET` bytes of new persisted queries a
/// day: past it a query sent whole still runs but is not kept, and those
/// kept before still answer by their hash.
#[tokio::test]
async fn persisted_queries_past_their_budget_run_but_are_not_kept() {
    use sha2::Digest;
    let app = spawn_app().await;
    let persisted = |query: &str| {
        json!({ "persistedQuery": { "version": 1,
            "sha256Hash": hex::encode(sha2::Sha256::digest(query.as_bytes())) } })
    };
    let send = |body: Value| {
        let app = &app;
        async move {
            let answer = app.http.post(&app.url).json(&body).send().await;
            answer
                .expect("answers")
                .json::<Value>()
                .await
                .expect("json")
        }
    };
    let before = "{ regions(parentCode: \"150400\") { code } }";
    let kept = send(json!({ "query": before, "extensions": persisted(before) })).await;
    assert!(kept["data"]["regions"].is_array(), "{kept}");
    // The day's budget spent (by other clients), in this window and the next.
    let mut redis = redis::Client::open(common::redis_url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let now = std::time::SystemTime::now();
    for at in [now, now + std::time::Duration::from_secs(24 * 3600)] {
        let prefix = format!("{}cache:", app.settings.db_prefix);
        let key = gateway::cache::persisted_budget_key(&prefix, at);
        redis::cmd("SET")
            .arg(&key)
            .arg(gateway::cache::PERSISTED_BUDGET)
            .arg("EX")
            .arg(3600)
            .query_async::<()>(&mut redis)
            .await
            .expect("set");
    }
    let after = "{ regions(parentCode: \"150000\") { code } }";
    let ran = send(json!({ "query": after, "extensions": persisted(after) })).await;
    assert!(ran["data"]["regions"].is_array(), "{ran}");
    let not_kept = send(json!({ "extensions": persisted(after) })).await;
    assert_eq!(
        not_kept["errors"][0]["extensions"]["code"], "PERSISTED_QUERY_NOT_FOUND",
        "{not_kept}"
    );
    let still = send(json!({ "extensions": persisted(before) })).await;
    assert_eq!(still["data"], kept["data"], "{still}");
}

/// The gateway's `host:port`.
fn address(app: &common::TestApp) -> String {
    app.url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// A client that sends half a request, or a body in chunks past the limit,
/// gets an answer or a closed connection, and holds nothing for long.
#[tokio::test]
async fn slow_and_chunked_requests_end() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app().await;
    // Past the limit in chunks (no Content-Length): 413, as with one.
    let mut chunked = tokio::net::TcpStream::connect(address(&app))
        .await
        .expect("connects");
    let head = "POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                Transfer-Encoding: chunked\r\n\r\n";
    chunked.write_all(head.as_bytes()).await.expect("sent");
    let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "#".repeat(64 * 1024));
    for _ in 0..5 {
        if chunked.write_all(chunk.as_bytes()).await.is_err() {
            break; // answered and closed before the rest
        }
    }
    let _ = chunked.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        chunked.read_to_end(&mut answer),
    )
    .await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("KiB"), "{answer}");

    // Headers never finished, never begun, or an HTTP/2 preface: the
    // connection is closed (10 s allowed). (A connection that sent nothing,
    // or only the preface, was held for ever: 8,192 of them locked every
    // client out.)
    let sends: [&[u8]; 3] = [
        b"POST /graphql HTTP/1.1\r\nHost: x\r\n",
        b"",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ];
    let held = sends.map(|sent| {
        let address = address(&app);
        async move {
            let mut slow = tokio::net::TcpStream::connect(address)
                .await
                .expect("connects");
            slow.write_all(sent).await.expect("sent");
            let mut rest = Vec::new();
            let ended = tokio::time::timeout(
                std::time::Duration::from_secs(30),
                slow.read_to_end(&mut rest),
            )
            .await;
            let sent = String::from_utf8_lossy(sent);
            assert!(ended.is_ok(), "{sent:?} held its connection for 30 s");
            let rest = String::from_utf8_lossy(&rest);
            assert!(!rest.contains(" 200 "), "{sent:?}: {rest}");
        }
    });
    futures::future::join_all(held).await;
}

/// A body that keeps coming, a byte every few seconds, is cut off 30 s
/// after its headers, whole or not (400, saying so): the timeout restarted
/// with every byte, and a body sent a byte every 20 s was answered after
/// 80 s — a few clients so could hold every connection the gateway takes.
#[tokio::test]
async fn a_body_trickling_in_is_cut_off_thirty_seconds_after_its_headers() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app().await;
    let body = r#"{"query":"{ __typename }"}"#;
    let (mut reading, mut writing) = tokio::net::TcpStream::connect(address(&app))
        .await
        .expect("connects")
        .into_split();
    let head = format!(
        "POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    writing.write_all(head.as_bytes()).await.expect("sent");
    // A byte every 3 s: the whole body would take 78 s.
    let trickle = tokio::spawn(async move {
        for byte in body.bytes() {
            if writing.write_all(&[byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        }
    });
    let mut answer = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while !String::from_utf8_lossy(&answer).contains("within 30 s") {
        let mut chunk = [0u8; 1024];
        match tokio::time::timeout_at(deadline, reading.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    trickle.abort();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    assert!(
        answer.contains("the body did not arrive within 30 s"),
        "{answer:?}"
    );
}

#[tokio::test]
async fn oversized_bodies_pages_over_a_hundred_and_costly_queries_are_refused_with_a_code() {
    let app = spawn_app().await;
    // A body over the limit: 413, said the GraphQL way.
    let padding = "#".repeat(300 * 1024);
    let (status, media, body) = post(
        &app,
        Some(GRAPHQL_RESPONSE),
        &format!("{{ __typename }} {padding}"),
    )
    .await;
    assert_eq!(status, 413, "{body}");
    // In the media type asked for, as every other refusal (it came as
    // application/json, made by a layer outside the handler).
    assert_eq!(media, GRAPHQL_RESPONSE, "{body}");
    let put = app
        .http
        .put(&app.url)
        .header(ACCEPT, GRAPHQL_RESPONSE)
        .body("{}")
        .send()
        .await
        .expect("answers");
    assert_eq!(put.status().as_u16(), 405);
    assert_eq!(
        put.headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        Some(GRAPHQL_RESPONSE)
    );
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{body}"
    );
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("KiB")),
        "{body}"
    );

    // Pages of more than 100, of none or of fewer are the caller's mistake,
    // wherever they are asked, and every list says so in the same words.
    let admin = app.admin_token().await;
    let window = format!(
        "checkIn: \"{}\", checkOut: \"{}\", guests: 1",
        common::tomorrow(),
        common::tomorrow() + chrono::Duration::days(1)
    );
    for first in [101, 0, -1] {
        for query in [
            format!("{{ myBookings(first: {first}) {{ edges {{ cursor }} }} }}"),
            format!("{{ welfareFund {{ entries(first: {first}) {{ edges {{ cursor }} }} }} }}"),
            format!("{{ agencies(first: {first}) {{ totalCount }} }}"),
            format!("{{ partnerships(first: {first}) {{ totalCount }} }}"),
            format!("{{ searchHomestays({window}, first: {first}) {{ edges {{ cursor }} }} }}"),
            format!("{{ searchRoutes(first: {first}) {{ edges {{ cursor }} }} }}"),
            format!("{{ certifications(first: {first}) {{ totalCount }} }}"),
            format!("{{ hosts(regionCode: \"150400\", first: {first}) {{ totalCount }} }}"),
            format!("{{ payoutRuns(first: {first}) {{ totalCount }} }}"),
        ] {
            let body = app.graphql_as(Some(&admin), &query, json!({})).await;
            assert_eq!(common::code(&body), "BAD_USER_INPUT", "{query}: {body}");
            assert_eq!(
                body["errors"][0]["message"],
                format!("first: 1 to 100 at a time, not {first}"),
                "{query}"
            );
        }
    }

    // A list costs its size times its selection: four wide pages of 100
    // are over the limit and refused before they run; of 10 they run.
    let wide = "edges { cursor node { homestayId homestayName regionCode certified certifiedUntil
        roomTypeId roomTypeName maxGuests nights roomsLeft total { amount currency } } }";
    let four = |first: u32| {
        format!(
            "{{ a: searchHomestays({window}, first: {first}) {{ {wide} }}
                b: searchHomestays({window}, first: {first}, rooms: 2) {{ {wide} }}
                c: searchHomestays({window}, first: {first}, certifiedOnly: true) {{ {wide} }}
                d: searchHomestays({window}, first: {first}, rooms: 3) {{ {wide} }} }}"
        )
    };
    refused_saying(&app, &four(100), "complex").await;
    let (status, _, body) = post(&app, Some(GRAPHQL_RESPONSE), &four(10)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["errors"].is_null(), "{body}");

    // A calendar costs its selection per week of nights (once, twenty
    // calendars of a year each fit, 146,000 nights from a search page of
    // them); twenty of a fortnight run.
    let calendars = |to: &str| {
        let one = format!(
            "calendar(from: \"2027-01-01\", to: \"{to}\") {{ date available price {{ amount }} closed minStay }}"
        );
        let aliases: String = (0..20)
            .map(|n| {
                format!(
                    " h{n}: homestay(id: \"{}\") {{ roomTypes {{ {one} }} }}",
                    uuid::Uuid::nil()
                )
            })
            .collect();
        format!("{{{aliases} }}")
    };
    refused_saying(&app, &calendars("2028-01-01"), "complex").await;
    let (status, _, body) = post(&app, Some(GRAPHQL_RESPONSE), &calendars("2027-01-15")).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn homestays_and_room_types_are_named_in_english_for_those_who_ask() {
    let app = spawn_app().await;
    let admin = app.region_admin("chifeng@example.cn", "150400").await;
    let created = app
        .graphql_as(
            Some(&admin),
            "mutation($i: HomestayInput!) { createHomestay(input: $i) { homestayId roomTypeId } }",
            json!({ "i": { "hostName": "兴隆洼村合作社", "regionCode": "150430",
                           "name": "兴隆洼草原人家", "nameEn": "Xinglongwa Grassland Home",
                           "roomType": { "name": "蒙古包", "nameEn": "Yurt", "beds": 2, "maxGuests": 2, "rooms": 1 } } }),
        )
        .await;
    let homestay = created["data"]["createHomestay"]["homestayId"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"))
        .to_owned();
    let room_type = created["data"]["createHomestay"]["roomTypeId"]
        .as_str()
        .expect("room type")
        .to_owned();
    let opened = app
        .graphql_as(
            Some(&admin),
            "mutation($rt: ID!, $from: Date!, $to: Date!) { setRoomCalendar(roomTypeId: $rt, from: $from, to: $to, price: \"300.00\") }",
            json!({ "rt": room_type, "from": common::tomorrow().to_string(),
                    "to": (common::tomorrow() + chrono::Duration::days(2)).to_string() }),
        )
        .await;
    assert!(opened["errors"].is_null(), "{opened}");
    // One without English names: English readers get the Chinese.
    app.homestay(1).await;

    let read = |lang: &'static str, query: String| {
        let app = &app;
        async move {
            let body = in_language(app, lang, &query).await;
            assert!(body["errors"].is_null(), "{body}");
            body["data"].clone()
        }
    };
    let one = format!(
        "{{ homestay(id: \"{homestay}\") {{ name nameZh nameEn roomTypes {{ name zh: name(lang: ZH) }} }} }}"
    );
    assert_eq!(
        read("en-US", one.clone()).await["homestay"],
        json!({ "name": "Xinglongwa Grassland Home", "nameZh": "兴隆洼草原人家",
                "nameEn": "Xinglongwa Grassland Home",
                "roomTypes": [{ "name": "Yurt", "zh": "蒙古包" }] })
    );
    assert_eq!(
        read("zh-CN", one).await["homestay"]["name"],
        "兴隆洼草原人家"
    );
    let search = format!(
        "{{ searchHomestays(regionCode: \"150430\", checkIn: \"{}\", checkOut: \"{}\", guests: 1) {{
            edges {{ node {{ homestayName roomTypeName zh: homestayName(lang: ZH) }} }} }} }}",
        common::tomorrow(),
        common::tomorrow() + chrono::Duration::days(1)
    );
    let mut names: Vec<Value> = read("en", search).await["searchHomestays"]["edges"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|e| e["node"].clone())
        .collect();
    names.sort_by_key(|n| n["zh"].as_str().map(str::to_owned));
    assert_eq!(
        names,
        vec![
            json!({ "homestayName": "Xinglongwa Grassland Home", "roomTypeName": "Yurt", "zh": "兴隆洼草原人家" }),
            json!({ "homestayName": "测试蒙古包", "roomTypeName": "双床", "zh": "测试蒙古包" }),
        ]
    );
    // The title a quote (and a booking held from it) shows follows too (it
    // was always the Chinese).
    let quote = format!(
        "{{ bookingQuote(input: {{ roomTypeId: \"{room_type}\", checkIn: \"{}\", checkOut: \"{}\", travelers: 1 }}) {{
            listing {{ title zh: title(lang: ZH) }} }} }}",
        common::tomorrow(),
        common::tomorrow() + chrono::Duration::days(1)
    );
    assert_eq!(
        read("en", quote).await["bookingQuote"]["listing"],
        json!({ "title": "Xinglongwa Grassland Home · Yurt", "zh": "兴隆洼草原人家 · 蒙古包" })
    );
}

#[tokio::test]
async fn lists_nested_hundreds_deep_are_refused_and_the_gateway_keeps_running() {
    let app = spawn_app().await;
    // Once enough to overflow a worker's stack and abort the whole process.
    for levels in [330, 2_000] {
        let query = format!(
            "{{ regions(parentCode: {}\"1\"{}) {{ code }} }}",
            "[".repeat(levels),
            "]".repeat(levels)
        );
        let (status, _, body) = post(&app, Some(GRAPHQL_RESPONSE), &query).await;
        assert_eq!(status, 400, "{levels}: {body}");
        assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
        let default = format!(
            "query($v: ID = {}\"1\"{}) {{ regions(parentCode: $v) {{ code }} }}",
            "[".repeat(levels),
            "]".repeat(levels)
        );
        let (_, _, body) = post(&app, None, &default).await;
        assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    }
    let (status, _, body) = post(&app, None, "{ __typename }").await;
    assert_eq!(
        (status, &body["data"]["__typename"]),
        (200, &json!("Query"))
    );
}

#[tokio::test]
async fn an_argument_or_variable_that_does_not_parse_is_the_callers_fault() {
    let app = spawn_app().await;
    let search = |check_in: &str, guests: &str| {
        format!(
            "{{ searchHomestays(regionCode: \"150400\", checkIn: \"{check_in}\", \
             checkOut: \"2027-03-02\", guests: {guests}) {{ edges {{ cursor }} }} }}"
        )
    };
    for query in [
        search("2027-02-30", "1"),
        search("2027-02-28", "99999999999"),
    ] {
        let (_, _, body) = post(&app, None, &query).await;
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
            "{query}: {body}"
        );
    }
    // A message quoting a 100 KB input stays short.
    let body = app
        .graphql_as(
            None,
            "query($r: ID!) { regions(parentCode: $r) { code } }",
            json!({ "r": "1".repeat(100_000) }),
        )
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "BAD_USER_INPUT",
        "{}",
        &body.to_string()[..200]
    );
    assert!(body.to_string().len() < 2_000, "{}", body.to_string().len());
    let typed = "query($d: Date!) { searchHomestays(regionCode: \"150400\", checkIn: $d, \
                 checkOut: \"2027-03-02\", guests: 1) { edges { cursor } } }";
    for variables in [json!({ "d": 123 }), json!({})] {
        let body = app.graphql_as(None, typed, variables.clone()).await;
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
            "{variables}: {body}"
        );
    }
    // chrono reads a signed six-digit year as a date; a year after it, the
    // default end of a route search, is past what chrono can count.
    for from in ["+262142-06-01", "0001-01-01", "20270-01-01"] {
        let body = app
            .graphql_as(
                None,
                "query($d: Date!) { searchRoutes(from: $d) { edges { cursor } } }",
                json!({ "d": from }),
            )
            .await;
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
            "{from}: {body}"
        );
    }
    // An instant before PostgreSQL's first (4713 BC) was INTERNAL.
    let traveler = app.token.clone();
    let admin = app.admin_token().await;
    for (token, query) in [
        (
            traveler.as_deref(),
            "{ myBookings(filter: { updatedSince: \"-9999-01-01T00:00:00Z\" }) { totalCount } }",
        ),
        (
            Some(admin.as_str()),
            "{ hostBalances(upTo: \"-9999-01-01T00:00:00Z\") { amount { amount } } }",
        ),
        (
            Some(admin.as_str()),
            "mutation { runPayouts(reference: \"B-old\", upTo: \"-4714-01-01T00:00:00Z\") { total { amount } } }",
        ),
    ] {
        let body = app.graphql_as(token, query, json!({})).await;
        assert_eq!(common::code(&body), "BAD_USER_INPUT", "{query}: {body}");
    }
    // An instant that does not parse refuses the request before anything
    // runs (400, no data), as a Date does: async-graphql's own DateTime
    // failed only its field (200, the field null, the rest run).
    for (query, variables) in [
        (
            "{ hostBalances(upTo: \"garbage\") { amount { amount } } }",
            json!({}),
        ),
        (
            "query($t: DateTime) { hostBalances(upTo: $t) { amount { amount } } }",
            json!({ "t": "2026-12-04" }),
        ),
        (
            "query($t: DateTime = \"soon\") { hostBalances(upTo: $t) { amount { amount } } }",
            json!({}),
        ),
        (
            "{ myBookings(filter: { updatedSince: \"-9999-01-01T00:00:00Z\" }) { totalCount } }",
            json!({}),
        ),
    ] {
        // Anonymous: refused before who asks matters.
        let (status, _, body) = post_json(
            &app,
            Some(GRAPHQL_RESPONSE),
            json!({ "query": query, "variables": variables }),
        )
        .await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.get("data").is_none(), "{query}: {body}");
        common::assert_error(&body, "BAD_USER_INPUT", "a DateTime is an RFC 3339");
    }
    let still = app.graphql_as(None, "{ __typename }", json!({})).await;
    assert_eq!(still["data"]["__typename"], "Query", "{still}");
}

#[tokio::test]
async fn a_body_that_is_not_a_graphql_request_gets_a_coded_json_answer() {
    let app = spawn_app().await;
    let send = |body: &'static str, content_type: &'static str| {
        app.http
            .post(&app.url)
            .header(CONTENT_TYPE, content_type)
            .body(body)
            .send()
    };
    for (body, content_type) in [
        ("{\"query\":", "application/json"),
        ("", "application/json"),
        ("null", "application/json"),
        ("{\"query\": 123}", "application/json"),
        (
            "{\"query\": \"{ __typename }\", \"variables\": []}",
            "application/json",
        ),
        (
            "[{\"query\": \"{ __typename }\"}, {\"query\": \"{ __typename }\"}]",
            "application/json",
        ),
        ("{}", "application/json"),
        ("{\"query\": \"  \"}", "application/json"),
        ("{\"query\": null}", "application/json"),
    ] {
        let response = send(body, content_type).await.expect("the gateway answers");
        assert_eq!(response.status().as_u16(), 400, "{body}");
        let answer: Value = response.json().await.expect("a JSON body");
        assert_eq!(
            answer["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
            "{body}: {answer}"
        );
        // In the client's words, not the parser's or serde's.
        let message = answer["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(
            !message.is_empty() && !message.contains("-->") && !message.contains("BatchRequest"),
            "{body}: {message}"
        );
    }
    // JSON that does not parse is said to be that, and where: a number no
    // type holds is not "not a GraphQL request".
    for (body, said) in [
        (
            "{\"query\": \"{ __typename }\", \"variables\": {\"n\": 1e400}}",
            "number out of range at line 1 column",
        ),
        ("{\"query\": \"{ __typename }\"", "EOF while parsing"),
    ] {
        let response = send(body, "application/json")
            .await
            .expect("the gateway answers");
        assert_eq!(response.status().as_u16(), 400, "{body}");
        let answer: Value = response.json().await.expect("a JSON body");
        let message = answer["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("the body is not valid JSON: ") && message.contains(said),
            "{body}: {answer}"
        );
    }
    let put = app
        .http
        .put(&app.url)
        .json(&json!({ "query": "{ __typename }" }))
        .send()
        .await
        .expect("the gateway answers");
    assert_eq!(put.status().as_u16(), 405);
    assert_eq!(put.headers()["allow"], "GET, POST");
    let answer: Value = put.json().await.expect("a JSON body");
    assert_eq!(answer["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
}

/// A region code of the right form that Duikou does not know is refused
/// wherever it is read, not answered as a region with nothing in it.
#[tokio::test]
async fn an_unknown_region_is_refused_not_read_as_empty() {
    let app = spawn_app().await;
    for query in [
        "{ searchHomestays(regionCode: \"110199\", checkIn: \"2027-01-01\", checkOut: \"2027-01-02\", guests: 1) { edges { cursor } } }",
        "{ searchRoutes(regionCode: \"110199\") { edges { cursor } } }",
        "{ regionImpact(regionCode: \"110199\", year: 2026) { year } }",
        "{ partnerships(regionCode: \"110199\") { totalCount } }",
    ] {
        let body = app.graphql(query, json!({})).await;
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
            "{query}: {body}"
        );
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("unknown region 110199")),
            "{query}: {body}"
        );
    }
}

/// What is refused alike reads alike, whichever operation refuses it: an
/// `after` no list wrote is one message on every list (there were eight,
/// some naming the argument, some not); a malformed id of one kind one
/// wording whichever argument carries it; a login asked for before the
/// input is read; an admin's booking FORBIDDEN whatever it names; and a
/// message names the argument the caller wrote (an update's own `rooms`,
/// not `roomType.rooms`; tests/routes.rs `pricePerPerson`, tests/refunds.rs
/// `forHost`).
#[tokio::test]
async fn what_is_refused_alike_reads_alike() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let day = common::tomorrow();
    let stay = format!(
        "checkIn: \"{day}\", checkOut: \"{}\"",
        day + chrono::Duration::days(1)
    );
    let not_a_cursor =
        "after: `zz` is not a cursor of this list; pass the endCursor of one of its pages";
    for query in [
        format!("{{ searchHomestays({stay}, guests: 1, after: \"zz\") {{ edges {{ cursor }} }} }}"),
        "{ searchRoutes(after: \"zz\") { edges { cursor } } }".to_owned(),
        "{ myBookings(after: \"zz\") { edges { cursor } } }".to_owned(),
        "{ myBookings(after: \"zz\", orderBy: STARTS_ON) { edges { cursor } } }".to_owned(),
        "{ hosts(regionCode: \"150400\", after: \"zz\") { edges { cursor } } }".to_owned(),
        "{ certifications(after: \"zz\") { edges { cursor } } }".to_owned(),
        "{ regionListings(regionCode: \"150400\", after: \"zz\") { edges { cursor } } }".to_owned(),
        "{ agencies(after: \"zz\") { edges { cursor } } }".to_owned(),
        "{ payoutRuns(after: \"zz\") { edges { cursor } } }".to_owned(),
        "{ reconciliationLog(after: \"zz\") { edges { cursor } } }".to_owned(),
        "{ partnerships(after: \"zz\") { edges { cursor } } }".to_owned(),
        "{ welfareFund { entries(after: \"zz\") { edges { cursor } } } }".to_owned(),
        "{ regionBookings(after: \"zz\") { edges { cursor } } }".to_owned(),
    ] {
        let body = app.graphql_as(Some(&admin), &query, json!({})).await;
        common::assert_error(&body, "BAD_USER_INPUT", not_a_cursor);
    }
    for query in [
        "{ agency(id: \"x\") { id } }",
        "mutation { suspendAgency(agencyId: \"x\", reason: \"逾期未结算\") { id } }",
    ] {
        let body = app.graphql_as(Some(&admin), query, json!({})).await;
        common::assert_error(&body, "BAD_USER_INPUT", "`x` is not a valid agency id");
    }
    let anonymous = app
        .graphql_as(None, "{ agency(id: \"x\") { id } }", json!({}))
        .await;
    assert_eq!(common::code(&anonymous), "UNAUTHENTICATED", "{anonymous}");

    let room_type = app.homestay(2).await.room_type_id.to_string();
    // One booking request, as `token` (None: the test's traveler).
    let book = |token: Option<String>, room_type: String, rooms: i64| {
        let app = &app;
        async move {
            app.graphql_as(
                token.or_else(|| app.token.clone()).as_deref(),
                "mutation($rt: ID!, $in: Date!, $out: Date!, $rooms: Int!) {
                    createBooking(idempotencyKey: \"k\", input: {
                        roomTypeId: $rt, checkIn: $in, checkOut: $out, rooms: $rooms,
                        travelers: [{ name: \"王芳\", idType: RESIDENT_ID, idNumber: \"11010519491231002X\" }],
                        contact: { name: \"王芳\", phone: \"13800138000\" } }) { id } }",
                json!({ "rt": room_type, "in": day, "out": day + chrono::Duration::days(1), "rooms": rooms }),
            )
            .await
        }
    };
    for rooms in [0, -1] {
        let refused = book(None, room_type.clone(), rooms).await;
        common::assert_error(&refused, "BAD_USER_INPUT", "rooms: 1 to 50");
    }
    let unknown = uuid::Uuid::now_v7().to_string();
    for room_type in [room_type.clone(), unknown] {
        let by_admin = book(Some(admin.clone()), room_type, 1).await;
        common::assert_error(
            &by_admin,
            "FORBIDDEN",
            "bookings are made by travelers and agencies",
        );
    }
    // An update names its input's own fields (it said `roomType.rooms`),
    // and a count whose least is one says -1 in the words of 0 (it said
    // "must not be negative" where 0 got the range).
    for (input, says) in [
        (json!({ "rooms": 0 }), "rooms: 1 to"),
        (json!({ "beds": 0 }), "1 to 20 beds"),
        (json!({ "beds": -1 }), "1 to 20 beds"),
    ] {
        let refused = app
            .graphql_as(
                Some(&admin),
                "mutation($rt: ID!, $i: RoomTypeUpdate!) { updateRoomType(roomTypeId: $rt, input: $i) { id } }",
                json!({ "rt": room_type, "i": input }),
            )
            .await;
        common::assert_error(&refused, "BAD_USER_INPUT", says);
        assert!(!refused.to_string().contains("roomType."), "{refused}");
    }
}

/// GraphQL over HTTP's GET names the operation `operationName` (it was
/// read only as `operation_name`); a browser page on another origin may
/// call the API (CORS: bearer tokens, no cookies); and an answer says the
/// request headers it depends on (`Vary`), for any cache in front.
#[tokio::test]
async fn get_picks_the_named_operation_browsers_may_call_and_answers_vary() {
    let app = spawn_app().await;
    let two = "query R { __typename } query S { regions { code } }";
    let picked = app
        .http
        .get(&app.url)
        .query(&[("query", two), ("operationName", "S")])
        .send()
        .await
        .expect("answers");
    let body: Value = picked.json().await.expect("json");
    assert!(body["data"]["regions"].is_array(), "{body}");
    let unknown = app
        .http
        .get(&app.url)
        .query(&[("query", two), ("operationName", "T")])
        .send()
        .await
        .expect("answers");
    let body: Value = unknown.json().await.expect("json");
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{body}"
    );

    let preflight = app
        .http
        .request(reqwest::Method::OPTIONS, &app.url)
        .header("Origin", "https://travel.example.cn")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization, content-type, traceparent, apollographql-client-name",
        )
        .send()
        .await
        .expect("answers");
    assert_eq!(preflight.status().as_u16(), 200);
    let allowed = |r: &reqwest::Response, h: &str| {
        r.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase()
    };
    assert_eq!(allowed(&preflight, "access-control-allow-origin"), "*");
    // Whatever the page sends: a trace context, a client's name.
    let headers = allowed(&preflight, "access-control-allow-headers");
    for h in ["authorization", "traceparent", "apollographql-client-name"] {
        assert!(headers.contains(h), "{h}: {headers}");
    }
    let answer = app
        .http
        .post(&app.url)
        .header("Origin", "https://travel.example.cn")
        .json(&json!({ "query": "{ __typename }" }))
        .send()
        .await
        .expect("answers");
    assert_eq!(allowed(&answer, "access-control-allow-origin"), "*");
    let vary: Vec<String> = answer
        .headers()
        .get_all("vary")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase)
        .collect();
    assert!(
        vary.iter()
            .any(|v| v.contains("accept-language") && v.contains("authorization")),
        "{vary:?}"
    );
}

/// HEAD is refused like every method but GET and POST (axum answered it
/// with the GET handler, which read a body: a `register` sent with HEAD
/// made the account); an empty `Authorization` (clients send one when
/// nobody is signed in) is no credentials, not a bad token.
#[tokio::test]
async fn head_is_refused_and_an_empty_authorization_is_no_credentials() {
    let app = spawn_app().await;
    let register = json!({
        "query": "mutation($input: RegisterInput!) { register(input: $input) { accessToken } }",
        "variables": { "input": { "email": "head@example.cn", "password": common::PASSWORD,
                                  "displayName": "头", "homeRegionCode": "110108" } },
    });
    let head = app
        .http
        .head(&app.url)
        .header(CONTENT_TYPE, "application/json")
        .body(register.to_string())
        .send()
        .await
        .expect("answers");
    assert_eq!(head.status().as_u16(), 405);
    assert_eq!(head.headers()["allow"], "GET, POST");
    // Nor offered: an OPTIONS listed it (axum's own `Allow`, added to the
    // CORS layer's answer).
    let options = app
        .http
        .request(reqwest::Method::OPTIONS, &app.url)
        .send()
        .await
        .expect("answers");
    let allow = options
        .headers()
        .get("allow")
        .map(|v| v.to_str().unwrap_or("?"));
    assert!(!allow.is_some_and(|a| a.contains("HEAD")), "{allow:?}");
    assert_eq!(
        options.headers()["access-control-allow-methods"],
        "GET,POST"
    );
    assert!(
        app.login("head@example.cn").await.is_null(),
        "the mutation sent with HEAD ran"
    );
    for value in ["", "Bearer ", "bearer"] {
        let answer = app
            .http
            .post(&app.url)
            .header("authorization", value)
            .json(&json!({ "query": "{ regions(parentCode: \"150400\") { code } }" }))
            .send()
            .await
            .expect("answers");
        assert_eq!(answer.status().as_u16(), 200, "{value:?}");
        let body: Value = answer.json().await.expect("json");
        assert!(body["data"]["regions"].is_array(), "{value:?}: {body}");
    }
}

/// A NUL character anywhere a caller writes text — a variable, or
/// `\u0000` in the query — is the caller's fault: PostgreSQL keeps none in
/// text, and each of these was INTERNAL (register, login, apiClientToken,
/// revokeApiClient, grantRole). Emails that do not show what they are
/// (two `@`, control, zero-width or direction characters) are refused too.
#[tokio::test]
async fn a_nul_or_a_hidden_character_in_what_callers_type_is_bad_input() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let register = "mutation($e: String!) { register(input: { email: $e, password: \"草原上的蒙古包-2026\", displayName: \"x\", homeRegionCode: \"110105\" }) { accessToken } }";
    for email in [
        "n\u{0}ul@example.cn",
        "a@b@example.cn",
        "al\u{7}ice@example.cn",
        "al\u{202e}ice@example.cn",
        "traveler\u{200b}@example.cn",
    ] {
        let body = app.graphql_as(None, register, json!({ "e": email })).await;
        assert_eq!(common::code(&body), "BAD_USER_INPUT", "{email:?}: {body}");
    }
    for (token, query) in [
        (
            None,
            "mutation { login(email: \"n\\u0000ul@example.cn\", password: \"a long password\") { accessToken } }",
        ),
        (
            None,
            "mutation { apiClientToken(clientId: \"dk_\\u0000\", clientSecret: \"x\") { accessToken } }",
        ),
        (
            Some(&admin),
            "mutation { revokeApiClient(clientId: \"dk_\\u0000\") }",
        ),
        (
            Some(&admin),
            "mutation { grantRole(email: \"a\\u0000@example.cn\", role: TRAVELER) { role } }",
        ),
    ] {
        let body = app
            .graphql_as(token.map(String::as_str), query, json!({}))
            .await;
        assert_eq!(common::code(&body), "BAD_USER_INPUT", "{query}: {body}");
        assert!(body.to_string().contains("NUL"), "{body}");
    }
    let nested = app
        .graphql_as(
            None,
            "query($t: String) { searchRoutes(text: $t) { edges { cursor } } }",
            json!({ "t": "敖汉\u{0}" }),
        )
        .await;
    assert_eq!(common::code(&nested), "BAD_USER_INPUT", "{nested}");
    // The character itself in a query's string (GraphQL's parser takes it).
    let raw = app
        .graphql_as(
            None,
            "{ searchRoutes(text: \"敖汉\u{0}\") { edges { cursor } } }",
            json!({}),
        )
        .await;
    assert_eq!(common::code(&raw), "BAD_USER_INPUT", "{raw}");
}

/// An answer keeps the order of the query's fields (GraphQL §7.2.2), at
/// every level: async-graphql put each object's fields in the order they
/// finished, so a field waiting for a service (`homestay`, read through a
/// loader) came last.
#[tokio::test]
async fn an_answer_lists_fields_in_the_order_the_query_asks() {
    let app = spawn_app().await;
    app.homestay(1).await;
    let check_in = common::tomorrow();
    let query = format!(
        "query Stay {{ searchHomestays(regionCode: \"150430\", checkIn: \"{check_in}\", \
         checkOut: \"{}\", guests: 1) {{ edges {{ node {{ homestay {{ address name }} \
         total {{ amount }} homestayName }} }} pageInfo {{ hasNextPage }} }} \
         regions(parentCode: \"150400\") {{ nameEn code }} }}",
        check_in + chrono::Days::new(1)
    );
    let body = app
        .http
        .post(&app.url)
        .json(&json!({ "query": query, "operationName": "Stay" }))
        .send()
        .await
        .expect("the gateway answers")
        .text()
        .await
        .expect("a body");
    let at = |key: &str| {
        body.find(&format!("\"{key}\":"))
            .unwrap_or_else(|| panic!("no {key} in {body}"))
    };
    let order = [
        "searchHomestays",
        "edges",
        "homestay",
        "address",
        "name",
        "total",
        "amount",
        "homestayName",
        "pageInfo",
        "regions",
        "nameEn",
        "code",
    ];
    for pair in order.windows(2) {
        assert!(
            at(pair[0]) < at(pair[1]),
            "{} after {}: {body}",
            pair[0],
            pair[1]
        );
    }
}

/// A part away nulls only the fields it serves, each with its error: the
/// rest of the answer is kept. (The fund's figures, a quote and a
/// partnership's report were non-null: with payment or partnership away
/// they nulled the whole `data`, every other field asked beside them lost.)
#[tokio::test]
async fn a_part_away_nulls_only_the_fields_it_serves() {
    use duikou::Part;
    let unavailable_at = |body: &Value, path: Value| {
        body["errors"].as_array().is_some_and(|errors| {
            errors
                .iter()
                .any(|e| e["path"] == path && e["extensions"]["code"] == "SERVICE_UNAVAILABLE")
        })
    };
    // Payment away: the fund's figures are null, the regions beside them
    // (inventory's) are answered.
    let app = common::spawn_parts(
        common::test_settings(),
        &[
            Part::Inventory,
            Part::Booking,
            Part::Partnership,
            Part::Gateway,
        ],
    )
    .await;
    let body = app
        .graphql_as(
            None,
            "{ regions(parentCode: \"150400\") { code }
               welfareFund { balance { amount } byYear { year } entries(first: 1) { totalCount } } }",
            json!({}),
        )
        .await;
    assert!(
        body["data"]["regions"]
            .as_array()
            .is_some_and(|r| !r.is_empty()),
        "{body}"
    );
    for field in ["balance", "byYear", "entries"] {
        assert!(body["data"]["welfareFund"][field].is_null(), "{body}");
        assert!(
            unavailable_at(&body, json!(["welfareFund", field])),
            "{field}: {body}"
        );
    }
    drop(app);

    // Partnership away: a report is null, the fund beside it answered.
    let app = common::spawn_parts(
        common::test_settings(),
        &[Part::Inventory, Part::Booking, Part::Payment, Part::Gateway],
    )
    .await;
    let body = app
        .graphql_as(
            None,
            "query($p: ID!) { welfareFund { balance { amount } }
               partnershipReport(partnershipId: $p, year: 2026) { totals { tourists } } }",
            json!({ "p": uuid::Uuid::now_v7().to_string() }),
        )
        .await;
    assert_eq!(
        body["data"]["welfareFund"]["balance"]["amount"], "0.00",
        "{body}"
    );
    assert!(body["data"]["partnershipReport"].is_null(), "{body}");
    assert!(
        unavailable_at(&body, json!(["partnershipReport"])),
        "{body}"
    );
}

/// A variable whose value does not parse — a date that does not exist, in a
/// variable of its own or inside an input object, or an Int past 2³¹ − 1 —
/// refuses the whole request before anything runs: it failed only the
/// field using it, after the mutations before it had run (a booking made
/// whose id its client never got).
#[tokio::test]
async fn a_variable_that_does_not_parse_refuses_the_request_before_anything_runs() {
    let app = spawn_app().await;
    let room_type = app.homestay(1).await.room_type_id.to_string();
    let day = |n: i64| (common::tomorrow() + chrono::Duration::days(n)).to_string();
    let input = |check_in: &str, check_out: &str| {
        json!({ "roomTypeId": room_type, "checkIn": check_in, "checkOut": check_out,
                "travelers": [{ "name": "张三", "idType": "RESIDENT_ID", "idNumber": "11010519491231002X" }],
                "contact": { "name": "张三", "phone": "13800138000" } })
    };
    let rooms = |n: i64| {
        let mut input = input(&day(3), &day(4));
        input["rooms"] = json!(n);
        input
    };
    let first = "a: createBooking(idempotencyKey: \"first\", input: $ok) { id }";
    for (query, variables) in [
        (
            format!(
                "mutation($ok: CreateBookingInput!, $d: Date!) {{ {first} b: createBooking(idempotencyKey: \"second\", input: {{ roomTypeId: \"{room_type}\", checkIn: $d, checkOut: \"2027-03-01\", travelers: [{{ name: \"张三\", idType: RESIDENT_ID, idNumber: \"11010519491231002X\" }}], contact: {{ name: \"张三\", phone: \"13800138000\" }} }}) {{ id }} }}"
            ),
            json!({ "ok": input(&day(1), &day(2)), "d": "2027-02-30" }),
        ),
        (
            format!(
                "mutation($ok: CreateBookingInput!, $bad: CreateBookingInput!) {{ {first} b: createBooking(idempotencyKey: \"second\", input: $bad) {{ id }} }}"
            ),
            json!({ "ok": input(&day(1), &day(2)), "bad": input("2027-02-30", "2027-03-01") }),
        ),
        (
            format!(
                "mutation($ok: CreateBookingInput!, $r: Int!) {{ {first} b: createBooking(idempotencyKey: \"second\", input: {{ roomTypeId: \"{room_type}\", rooms: $r, checkIn: \"{}\", checkOut: \"{}\", travelers: [{{ name: \"张三\", idType: RESIDENT_ID, idNumber: \"11010519491231002X\" }}], contact: {{ name: \"张三\", phone: \"13800138000\" }} }}) {{ id }} }}",
                day(3),
                day(4)
            ),
            json!({ "ok": input(&day(1), &day(2)), "r": 3_000_000_000_i64 }),
        ),
        (
            format!(
                "mutation($ok: CreateBookingInput!, $bad: CreateBookingInput!) {{ {first} b: createBooking(idempotencyKey: \"second\", input: $bad) {{ id }} }}"
            ),
            json!({ "ok": input(&day(1), &day(2)), "bad": rooms(3_000_000_000) }),
        ),
    ] {
        let body = app.graphql(&query, variables).await;
        assert!(body.get("data").is_none(), "nothing ran: {body}");
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
            "{body}"
        );
    }
    let mine = app
        .graphql("{ myBookings(first: 10) { totalCount } }", json!({}))
        .await;
    assert_eq!(mine["data"]["myBookings"]["totalCount"], 0, "{mine}");
}
