//! Rate limits, counted in Redis: a caller over the limit gets 429 and
//! RATE_LIMITED with Retry-After, others are not affected, and it recovers.

mod common;

use common::{spawn_app_with, test_settings};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

#[tokio::test]
async fn the_limit_trips_per_caller_and_recovers() {
    let mut settings = test_settings();
    settings.rate_limit = 5;
    settings.rate_limit_window_seconds = 2;
    let app = spawn_app_with(settings).await;
    let anonymous = || async {
        app.http
            .post(&app.url)
            .json(&json!({ "query": "{ __typename }" }))
            .send()
            .await
            .expect("answer")
    };

    // Within at most limit + 1 requests (a window may turn over once) the
    // anonymous caller is refused.
    let mut refused = None;
    for _ in 0..12 {
        let response = anonymous().await;
        if response.status() == 429 {
            refused = Some(response);
            break;
        }
        assert_eq!(response.status(), 200);
    }
    let refused = refused.expect("the limit tripped");
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let body: Value = refused.json().await.expect("json");
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "RATE_LIMITED",
        "{body}"
    );

    // The logged-in traveler counts on its own.
    let mine = app.graphql("{ me { email } }", json!({})).await;
    assert_eq!(mine["data"]["me"]["email"], "traveler@example.cn", "{mine}");

    let deadline = Instant::now() + Duration::from_secs(10);
    while anonymous().await.status() == 429 {
        assert!(Instant::now() < deadline, "the limit never recovered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_logged_in_caller_is_limited_by_account_and_a_bad_token_by_address() {
    let mut settings = test_settings();
    settings.rate_limit = 5;
    settings.rate_limit_window_seconds = 60;
    let app = spawn_app_with(settings).await;
    let other = app.register("second@example.cn", "110105").await;
    // The first traveler spends its own allowance (registering and logging
    // in were anonymous requests from this address, not the traveler's).
    // Within 2 × limit + 2 requests it trips, even if the minute's window
    // turns over among them.
    let mut tripped = false;
    for _ in 0..12 {
        let body = app.graphql("{ me { email } }", json!({})).await;
        if body["errors"][0]["extensions"]["code"] == "RATE_LIMITED" {
            tripped = true;
            break;
        }
        assert_eq!(body["data"]["me"]["email"], "traveler@example.cn", "{body}");
    }
    assert!(tripped, "the account's limit tripped");
    // Another account from the same address is not affected.
    let theirs = app
        .graphql_as(Some(&other), "{ me { email } }", json!({}))
        .await;
    assert_eq!(
        theirs["data"]["me"]["email"], "second@example.cn",
        "{theirs}"
    );
    // Garbage tokens count against the address: the anonymous allowance
    // was spent by the registrations above, so they are limited, not just
    // refused (within 12, a window may turn over once).
    let mut codes = Vec::new();
    for _ in 0..12 {
        let response = app
            .http
            .post(&app.url)
            .bearer_auth("not-a-token")
            .json(&json!({ "query": "{ __typename }" }))
            .send()
            .await
            .expect("answer");
        codes.push(response.status().as_u16());
        if codes.last() == Some(&429) {
            break;
        }
    }
    assert!(codes.contains(&401) || codes.contains(&429), "{codes:?}");
    assert_eq!(
        codes.last(),
        Some(&429),
        "bad tokens end up limited: {codes:?}"
    );
    // A password guess counts against the address whoever sends it: with
    // the other account's token it is limited as the address's (spent)
    // allowance says, not let through on the account's (it was checked).
    let guess = app
        .graphql_as(
            Some(&other),
            "mutation { login(email: \"traveler@example.cn\", password: \"guess-guess-guess\") { accessToken } }",
            json!({}),
        )
        .await;
    assert_eq!(
        guess["errors"][0]["extensions"]["code"], "RATE_LIMITED",
        "{guess}"
    );
    // Not so its own reads.
    let theirs = app
        .graphql_as(Some(&other), "{ me { email } }", json!({}))
        .await;
    assert_eq!(
        theirs["data"]["me"]["email"], "second@example.cn",
        "{theirs}"
    );
}

/// Each subscribe (a booking's, or a feed) counts against the account's
/// limit as an HTTP request does (a socket was a way around it: 3,000 reads
/// in 3.4 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_over_a_socket_counts_against_the_account() {
    use common::ws::{connect, init, next, send};
    let mut settings = test_settings();
    settings.rate_limit = 5;
    settings.rate_limit_window_seconds = 60;
    let app = spawn_app_with(settings).await;
    let token = app.register("socket@example.cn", "110105").await;
    let mut ws = connect(&app).await;
    assert_eq!(
        init(&mut ws, &token).await.map(|m| m["type"].clone()),
        Some(json!("connection_ack"))
    );
    let mut codes = Vec::new();
    for i in 0..12 {
        send(
            &mut ws,
            json!({ "id": format!("s{i}"), "type": "subscribe", "payload": {
                "query": "subscription($id: ID!) { bookingUpdated(id: $id) { id } }",
                "variables": { "id": uuid::Uuid::now_v7().to_string() } } }),
        )
        .await;
        let answer = next(&mut ws).await.expect("an answer");
        let errors = match &answer["payload"] {
            Value::Array(errors) => errors.clone(),
            payload => payload["errors"].as_array().cloned().unwrap_or_default(),
        };
        let code = errors[0]["extensions"]["code"]
            .as_str()
            .unwrap_or("none")
            .to_owned();
        if answer["type"] == "next" {
            next(&mut ws).await.expect("complete");
        }
        codes.push(code);
        if codes.last().is_some_and(|c| c == "RATE_LIMITED") {
            break;
        }
    }
    assert_eq!(
        codes.last().map(String::as_str),
        Some("RATE_LIMITED"),
        "{codes:?}"
    );
    assert!(codes.len() > 1 && codes[0] == "NOT_FOUND", "{codes:?}");
    // A feed's subscribe counts too (it was let through past the limit).
    send(
        &mut ws,
        json!({ "id": "feed", "type": "subscribe", "payload": {
            "query": "subscription { bookingsUpdated { id status } }" } }),
    )
    .await;
    let answer = next(&mut ws).await.expect("an answer");
    assert_eq!(
        answer["payload"]["errors"][0]["extensions"]["code"], "RATE_LIMITED",
        "{answer}"
    );
    if answer["type"] == "next" {
        next(&mut ws).await.expect("complete");
    }
    // A subscribe counts before any work is done for it: one that does not
    // even parse is refused as over the limit (it was parsed and
    // validated, uncounted).
    send(
        &mut ws,
        json!({ "id": "unparsable", "type": "subscribe", "payload": {
            "query": "subscription { bookingsUpdated {" } }),
    )
    .await;
    let answer = next(&mut ws).await.expect("an answer");
    assert!(
        answer["payload"].to_string().contains("RATE_LIMITED"),
        "{answer}"
    );
}
