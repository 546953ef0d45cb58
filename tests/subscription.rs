//! Subscriptions over graphql-transport-ws: the owner sees its booking move
//! live; another traveler and a bad token get nothing.

mod common;

use common::{TestApp, spawn_app, tomorrow};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(app: &TestApp) -> Socket {
    let url = app.url.replace("http://", "ws://");
    let mut request = url.into_client_request().expect("request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().expect("header"),
    );
    tokio_tungstenite::connect_async(request)
        .await
        .expect("upgraded")
        .0
}

async fn send(ws: &mut Socket, message: Value) {
    ws.send(Message::Text(message.to_string().into()))
        .await
        .expect("sent");
}

/// The next JSON message, or None when the socket closed or nothing came in time.
async fn next(ws: &mut Socket) -> Option<Value> {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => return serde_json::from_str(&text).ok(),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            _ => return None,
        }
    }
}

async fn init(ws: &mut Socket, token: &str) -> Option<Value> {
    send(ws, json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } })).await;
    next(ws).await
}

/// The error code of a refused subscription: the protocol sends it as a
/// `next` with `errors` and no data.
fn refusal(message: &Value) -> &str {
    assert!(
        message["payload"]["data"].is_null(),
        "no data may come: {message}"
    );
    message["payload"]["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("none")
}

fn subscribe(id: &str) -> Value {
    json!({ "id": "1", "type": "subscribe", "payload": {
        "query": "subscription($id: ID!) { bookingUpdated(id: $id) { id status } }", "variables": { "id": id } } })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_sees_its_booking_confirmed_live() {
    let app = spawn_app().await;
    let room_type = app.homestay(1).await.room_type_id.to_string();
    let id = TestApp::id_of(&app.create_booking(&room_type, tomorrow(), 1, "live").await);
    app.wait_for_status(&id, "AWAITING_PAYMENT").await;

    let mut ws = connect(&app).await;
    let ack = init(&mut ws, app.token.as_deref().expect("token")).await;
    assert_eq!(
        ack.as_ref().map(|a| a["type"].clone()),
        Some(json!("connection_ack")),
        "{ack:?}"
    );
    send(&mut ws, subscribe(&id)).await;
    // The subscription is set up once the server answers a ping after it.
    send(&mut ws, json!({ "type": "ping" })).await;
    assert_eq!(
        next(&mut ws).await.map(|m| m["type"].clone()),
        Some(json!("pong"))
    );

    let paid = app.pay(&id, "tok_success", "pay").await;
    assert!(paid["errors"].is_null(), "{paid}");
    let pushed = next(&mut ws).await.expect("a push");
    assert_eq!(pushed["type"], "next", "{pushed}");
    assert_eq!(
        pushed["payload"]["data"]["bookingUpdated"],
        json!({ "id": id, "status": "CONFIRMED" })
    );
}

#[tokio::test]
async fn someone_else_and_a_bad_token_get_no_pushes() {
    let app = spawn_app().await;
    let room_type = app.homestay(1).await.room_type_id.to_string();
    let id = TestApp::id_of(&app.create_booking(&room_type, tomorrow(), 1, "mine").await);

    let other = app.register("other@example.cn", "110105").await;
    let mut ws = connect(&app).await;
    init(&mut ws, &other).await.expect("ack");
    send(&mut ws, subscribe(&id)).await;
    let refused = next(&mut ws).await.expect("an answer");
    assert_eq!(refusal(&refused), "FORBIDDEN", "{refused}");

    let mut anonymous = connect(&app).await;
    send(
        &mut anonymous,
        json!({ "type": "connection_init", "payload": {} }),
    )
    .await;
    assert_eq!(
        next(&mut anonymous).await.map(|m| m["type"].clone()),
        Some(json!("connection_ack"))
    );
    send(&mut anonymous, subscribe(&id)).await;
    let refused = next(&mut anonymous).await.expect("an answer");
    assert_eq!(refusal(&refused), "UNAUTHENTICATED", "{refused}");

    let mut forged = connect(&app).await;
    let answer = init(&mut forged, "not.a.token").await;
    assert!(
        answer
            .as_ref()
            .is_none_or(|a| a["type"] != "connection_ack"),
        "a bad token must not be acknowledged: {answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_travelers_feed_pushes_each_of_its_bookings_and_nobody_elses() {
    let app = spawn_app().await;
    let room_type = app.homestay(3).await.room_type_id.to_string();
    let mut ws = connect(&app).await;
    let ack = init(&mut ws, app.token.as_deref().expect("token")).await;
    assert_eq!(
        ack.map(|a| a["type"].clone()),
        Some(json!("connection_ack"))
    );
    send(
        &mut ws,
        json!({ "id": "feed", "type": "subscribe", "payload": {
        "query": "subscription { bookingsUpdated { id status } }" } }),
    )
    .await;

    // Someone else's booking: not in this feed.
    let stranger = app.register("stranger@example.cn", "110105").await;
    let theirs = app
        .graphql_as(
            Some(&stranger),
            "mutation($input: CreateBookingInput!) { createBooking(input: $input, idempotencyKey: \"s\") { id } }",
            json!({ "input": { "roomTypeId": room_type, "checkIn": tomorrow().to_string(),
                "checkOut": (tomorrow() + chrono::Duration::days(1)).to_string(),
                "travelers": [{ "name": "李四", "idType": "PASSPORT", "idNumber": "E12345678" }],
                "contact": { "name": "李四", "phone": "13800138000" } } }),
        )
        .await;
    let theirs = TestApp::id_of(&theirs);
    app.wait_for_status_as(&stranger, &theirs, "AWAITING_PAYMENT")
        .await;

    // Two of mine: each move is pushed, with the booking as it is then.
    let first = TestApp::id_of(
        &app.create_booking(&room_type, tomorrow(), 1, "feed-1")
            .await,
    );
    let second = TestApp::id_of(
        &app.create_booking(&room_type, tomorrow(), 1, "feed-2")
            .await,
    );
    let mut seen = std::collections::HashSet::new();
    while seen.len() < 2 {
        let message = next(&mut ws).await.expect("a push");
        assert_eq!(message["type"], "next", "{message}");
        let booking = &message["payload"]["data"]["bookingsUpdated"];
        let id = booking["id"].as_str().unwrap_or_default().to_owned();
        assert_ne!(
            id, theirs,
            "another traveler's booking came through: {message}"
        );
        assert!(id == first || id == second, "{message}");
        if booking["status"] == "AWAITING_PAYMENT" {
            seen.insert(id);
        }
    }
}
