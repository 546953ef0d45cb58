//! Subscriptions over graphql-transport-ws: the owner sees its booking move
//! live; another traveler and a bad token get nothing.

mod common;

use common::ws::{connect, init, next, send, subscribed};
use common::{TestApp, spawn_app, tomorrow};
use serde_json::{Value, json};

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

/// The gateway's booking reads answered so far.
async fn first_reads(app: &TestApp) -> f64 {
    app.metric(
        "duikou_rpc_total",
        &["method=\"get_booking\"", "outcome=\"ok\""],
    )
    .await
}

/// Waits until a `bookingUpdated` subscribed after `before` was counted
/// has read its booking: set up, listening. A pong after the subscribe says
/// nothing of it (async-graphql answers pings before it polls the streams).
async fn until_read(app: &TestApp, before: f64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while first_reads(app).await <= before {
        assert!(
            std::time::Instant::now() < deadline,
            "the subscription never read"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
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
    let before = first_reads(&app).await;

    let mut ws = connect(&app).await;
    let ack = init(&mut ws, app.token.as_deref().expect("token")).await;
    assert_eq!(
        ack.as_ref().map(|a| a["type"].clone()),
        Some(json!("connection_ack")),
        "{ack:?}"
    );
    send(&mut ws, subscribe(&id)).await;
    until_read(&app, before).await;

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
    let counted = || app.metric("duikou_graphql_errors_total", &["code=\"FORBIDDEN\""]);
    let before = counted().await;
    let mut ws = connect(&app).await;
    init(&mut ws, &other).await.expect("ack");
    send(&mut ws, subscribe(&id)).await;
    let refused = next(&mut ws).await.expect("an answer");
    assert_eq!(refusal(&refused), "FORBIDDEN", "{refused}");
    // Counted as an error answered over HTTP is (it was not).
    assert_eq!(counted().await - before, 1.0);

    // Every subscription is someone's: a connection without a token is
    // refused at connection_init (4403), not kept open for nothing.
    for payload in [json!({}), Value::Null] {
        let mut anonymous = connect(&app).await;
        send(
            &mut anonymous,
            json!({ "type": "connection_init", "payload": payload }),
        )
        .await;
        assert_eq!(
            common::ws::closed_within(&mut anonymous, std::time::Duration::from_secs(5)).await,
            Some(4403),
            "anonymous: {payload}"
        );
    }
    // The token where Apollo's clients put it is read as well.
    let mut apollo = connect(&app).await;
    send(
        &mut apollo,
        json!({ "type": "connection_init",
                "payload": { "headers": { "Authorization": format!("Bearer {other}") } } }),
    )
    .await;
    assert_eq!(
        next(&mut apollo).await.map(|m| m["type"].clone()),
        Some(json!("connection_ack"))
    );

    // A bad token is refused at connection_init with 4403 (Forbidden), as
    // graphql-transport-ws recommends, not acknowledged.
    let mut forged = connect(&app).await;
    send(
        &mut forged,
        json!({ "type": "connection_init", "payload": { "Authorization": "Bearer not.a.token" } }),
    )
    .await;
    assert_eq!(
        common::ws::closed_within(&mut forged, std::time::Duration::from_secs(5)).await,
        Some(4403),
        "a bad token must close the connection as Forbidden"
    );
    // So does a token that is no string, or a payload that is no object:
    // a client's mistake, not an anonymous connection.
    for payload in [json!({ "Authorization": 123 }), json!("Bearer garbage")] {
        let mut odd = connect(&app).await;
        send(
            &mut odd,
            json!({ "type": "connection_init", "payload": payload }),
        )
        .await;
        assert_eq!(
            common::ws::closed_within(&mut odd, std::time::Duration::from_secs(5)).await,
            Some(4403),
            "{payload}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_travelers_feed_pushes_each_of_its_bookings_and_nobody_elses() {
    let app = spawn_app().await;
    let room_type = app.homestay(3).await.room_type_id.to_string();
    let mut ws = subscribed(
        &app,
        app.token.as_deref().expect("token"),
        "feed",
        "subscription { bookingsUpdated { id status } }",
        json!({}),
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

/// An API client of `agency` and its access token.
async fn client_token(app: &TestApp, admin: &str, agency: &str, name: &str) -> String {
    let made = app
        .graphql_as(
            Some(admin),
            "mutation($a: ID!, $n: String!) { createApiClient(agencyId: $a, name: $n) { clientId clientSecret } }",
            json!({ "a": agency, "n": name }),
        )
        .await;
    let creds = &made["data"]["createApiClient"];
    let token = app
        .graphql_as(
            None,
            "mutation($c: String!, $s: String!) { apiClientToken(clientId: $c, clientSecret: $s) { accessToken } }",
            json!({ "c": creds["clientId"], "s": creds["clientSecret"] }),
        )
        .await;
    token["data"]["apiClientToken"]["accessToken"]
        .as_str()
        .unwrap_or_else(|| panic!("{made} {token}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agency_feed_pushes_the_bookings_of_all_its_clients_and_nobody_elses() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let room_type = app.homestay(3).await.room_type_id.to_string();
    let agency = app
        .graphql_as(
            Some(&admin),
            "mutation { createAgency(name: \"草原国旅\", homeRegionCode: \"110105\", commissionBasisPoints: 800) { id } }",
            json!({}),
        )
        .await["data"]["createAgency"]["id"]
        .as_str()
        .expect("agency")
        .to_owned();
    let listener = client_token(&app, &admin, &agency, "feed reader").await;
    let booker = client_token(&app, &admin, &agency, "booking system").await;

    let mut ws = subscribed(
        &app,
        &listener,
        "feed",
        "subscription { bookingsUpdated { id status commissionBasisPoints } }",
        json!({}),
    )
    .await;
    let book = |token: String, key: &'static str| {
        let app = &app;
        let room_type = room_type.clone();
        async move {
            TestApp::id_of(
                &app.graphql_as(
                    Some(&token),
                    "mutation($input: CreateBookingInput!, $k: String!) { createBooking(input: $input, idempotencyKey: $k) { id } }",
                    json!({ "k": key, "input": { "roomTypeId": room_type, "checkIn": tomorrow().to_string(),
                        "checkOut": (tomorrow() + chrono::Duration::days(1)).to_string(),
                        "travelers": [{ "name": "李四", "idType": "PASSPORT", "idNumber": "E12345678" }],
                        "contact": { "name": "李四", "phone": "13800138000" } } }),
                )
                .await,
            )
        }
    };
    // A traveler's booking first: never in the agency's feed.
    let travelers = book(app.token.clone().expect("token"), "own").await;
    app.wait_for_status(&travelers, "AWAITING_PAYMENT").await;
    // The agency's other client books: the feed reader is pushed it.
    let agencys = book(booker, "group").await;
    let message = next(&mut ws).await.expect("a push");
    let pushed = &message["payload"]["data"]["bookingsUpdated"];
    assert_eq!(pushed["id"], agencys.as_str(), "{message}");
    assert_eq!(pushed["status"], "AWAITING_PAYMENT", "{message}");
    assert_eq!(pushed["commissionBasisPoints"], 800);
}

/// The app's traveler subscribed to `query` (a `bookingsUpdated` feed), set
/// up: the server has answered a ping after the subscription.
async fn traveler_feed(app: &TestApp, query: &str) -> common::ws::Socket {
    let token = app.token.clone().expect("token");
    let mut ws = subscribed(app, &token, "feed", query, json!({})).await;
    send(&mut ws, json!({ "type": "ping" })).await;
    assert_eq!(
        next(&mut ws).await.map(|m| m["type"].clone()),
        Some(json!("pong"))
    );
    ws
}

/// Reads the feed until booking `id` is pushed with `status`; panics,
/// saying what came, when the booking ended otherwise or nothing came.
async fn feed_until(ws: &mut common::ws::Socket, id: &str, status: &str) {
    loop {
        let m = next(ws)
            .await
            .unwrap_or_else(|| panic!("no push of {id} {status}"));
        let b = &m["payload"]["data"]["bookingsUpdated"];
        if b["id"] == id && b["status"] == status {
            return;
        }
        let ended = matches!(
            b["status"].as_str(),
            Some("REJECTED" | "EXPIRED" | "CANCELLED")
        );
        assert!(
            b["id"] != id || !ended,
            "waiting for {id} {status}, pushed: {m}"
        );
    }
}

/// A client that pays on the push saves the gateway a read: `payBooking`
/// sends payment the booking as the push carried it (no `get_booking`),
/// payment still refuses a stranger, and once the booking moved on the
/// gateway reads it again and the second payment is a CONFLICT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paying_on_the_push_needs_no_read_of_the_booking() {
    let app = spawn_app().await;
    let room_type = app.homestay(1).await.room_type_id.to_string();
    let mut ws = traveler_feed(&app, "subscription { bookingsUpdated { id status } }").await;
    let id = TestApp::id_of(
        &app.create_booking(&room_type, tomorrow(), 1, "on-push")
            .await,
    );
    feed_until(&mut ws, &id, "AWAITING_PAYMENT").await;

    let reads = || app.metric("duikou_rpc_total", &["method=\"get_booking\""]);
    let before = reads().await;
    let stranger = app.register("stranger@example.cn", "110105").await;
    let refused = app
        .graphql_as(
            Some(&stranger),
            "mutation($id: ID!) { payBooking(bookingId: $id, paymentToken: \"tok_success\", idempotencyKey: \"theirs\") { status } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(common::code(&refused), "FORBIDDEN", "{refused}");
    let paid = app.pay(&id, "tok_success", "mine").await;
    assert!(paid["errors"].is_null(), "{paid}");
    assert_eq!(
        reads().await,
        before,
        "paid with the booking the push carried"
    );

    feed_until(&mut ws, &id, "CONFIRMED").await;
    let again = app.pay(&id, "tok_success", "mine-again").await;
    assert_eq!(common::code(&again), "CONFLICT", "{again}");
    assert_eq!(
        reads().await,
        before + 1.0,
        "a booking that moved on is read"
    );
}

/// A booking cancelled through a gateway is no longer paid on the view
/// that gateway heard before: `payBooking` right after the cancel's answer
/// is a CONFLICT, with no charge made. Before, the gateway forgot the
/// view only when it heard the cancellation's push, and a traveler paying
/// at once was charged (and refunded by the saga). Each round races the
/// push; without the fix most rounds charged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paying_right_after_cancelling_charges_nothing() {
    let app = spawn_app().await;
    // A room for each round: a cancelled hold is released when inventory
    // hears of it, which on a busy machine can come after the next round
    // asked for the room (it was REJECTED, and the round waited for ever).
    let room_type = app.homestay(10).await.room_type_id.to_string();
    let mut ws = traveler_feed(&app, "subscription { bookingsUpdated { id status } }").await;
    for round in 0..10 {
        let key = format!("cancel-then-pay-{round}");
        let id = TestApp::id_of(&app.create_booking(&room_type, tomorrow(), 1, &key).await);
        // Heard by the gateway: the view payBooking would pay on.
        feed_until(&mut ws, &id, "AWAITING_PAYMENT").await;
        let cancelled = app.cancel(&id, &key).await;
        assert_eq!(
            cancelled["data"]["cancelBooking"]["status"], "CANCELLED",
            "{cancelled}"
        );
        let paid = app.pay(&id, "tok_success", &key).await;
        assert_eq!(common::code(&paid), "CONFLICT", "round {round}: {paid}");
    }
    let payment = app.service_db("payment").await;
    let charges = shared::db::count(&payment, "sandbox_charges", vec![])
        .await
        .expect("counted");
    assert_eq!(charges, 0, "no charge made");
}

/// A late or repeated event of a booking that ended pushes nothing on the
/// feed (deliveries are handled side by side): the ended booking is
/// remembered, not forgotten, so a status already pushed is not again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_pushes_nothing_more_for_a_booking_that_ended() {
    use shared::envelope::Envelope;
    use shared::events::BookingStatusChanged;
    let app = spawn_app().await;
    let room_type = app.homestay(2).await.room_type_id.to_string();
    let mut ws = traveler_feed(&app, "subscription { bookingsUpdated { id status } }").await;
    let id = TestApp::id_of(&app.create_booking(&room_type, tomorrow(), 1, "ends").await);
    feed_until(&mut ws, &id, "AWAITING_PAYMENT").await;
    let cancelled = app.cancel(&id, "ends-now").await;
    assert!(cancelled["errors"].is_null(), "{cancelled}");
    feed_until(&mut ws, &id, "CANCELLED").await;

    // The hold's announcement again, as a redelivery would bring it.
    let me = app.graphql("{ me { id } }", json!({})).await;
    let account_id = me["data"]["me"]["id"].as_str().expect("my id");
    let booking_id: shared::ids::BookingId = id.parse().expect("booking id");
    let late = BookingStatusChanged {
        booking_id,
        status: "AWAITING_PAYMENT".into(),
        reason: None,
        account_id: Some(account_id.parse().expect("account id")),
        agency_id: None,
        booking: None,
    };
    for sent in app
        .app
        .rt
        .bus
        .publish(&[Envelope::new("test", booking_id.0, &late)])
        .await
    {
        sent.expect("published");
    }
    // The next push is the next booking's, not the ended one's again.
    let next_id = TestApp::id_of(&app.create_booking(&room_type, tomorrow(), 1, "after").await);
    let pushed = next(&mut ws).await.expect("a push");
    assert_eq!(
        pushed["payload"]["data"]["bookingsUpdated"]["id"], next_id,
        "{pushed}"
    );
}

/// A gateway whose push queue was lost (deleted here, as a broker restart
/// or a closed channel loses it) sets it up again, and a feed is told that
/// changes may have been missed rather than skip them unsaid; pushes go on
/// on the new queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_is_told_when_the_gateway_lost_its_queue() {
    let app = spawn_app().await;
    let room_type = app.homestay(2).await.room_type_id.to_string();
    let mut ws = traveler_feed(&app, "subscription { bookingsUpdated { id status } }").await;
    lose_push_queue(&app);
    let told = next(&mut ws).await.expect("the feed is told");
    assert_eq!(
        told["payload"]["errors"][0]["extensions"]["code"], "SERVICE_UNAVAILABLE",
        "{told}"
    );
    // Pushes go on, to a new feed, through the queue set up again.
    let mut again = traveler_feed(&app, "subscription { bookingsUpdated { id status } }").await;
    let id = TestApp::id_of(&app.create_booking(&room_type, tomorrow(), 1, "after").await);
    feed_until(&mut again, &id, "AWAITING_PAYMENT").await;
}

/// Deletes the gateway's push queue, as a broker restart or a closed
/// channel loses it: the gateway sets it up again and tells its
/// subscriptions that pushes may have been missed. The broker runs on this
/// host (as the chaos run's restarts need too): an exclusive queue is not
/// another connection's to delete.
fn lose_push_queue(app: &TestApp) {
    let vhost = common::amqp_url()
        .parse::<lapin::uri::AMQPUri>()
        .expect("AMQP URL")
        .vhost;
    let rabbitmqctl = |args: &[&str]| {
        let out = std::process::Command::new("rabbitmqctl")
            .args(["-q", "-p", &vhost])
            .args(args)
            .output()
            .expect("rabbitmqctl runs");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let prefix = format!("{}gateway.push.", app.settings.bus_prefix);
    let listed = rabbitmqctl(&["list_queues", "name", "--no-table-headers"]);
    let queue = listed
        .lines()
        .map(str::trim)
        .find(|q| q.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {prefix}… in {listed}"))
        .to_owned();
    rabbitmqctl(&["delete_queue", &queue]);
}

/// After a gap in the pushes a booking's subscription reads the booking
/// again; when that read fails (booking away), the change it may have
/// missed would never be pushed. It says so, naming what to do, and
/// completes, instead of going on unaware (an error once, then nothing,
/// while the booking moved).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_that_cannot_read_its_booking_after_a_gap_ends_saying_so() {
    let settings = common::test_settings();
    let app = common::spawn_without(&settings, duikou::Part::Booking).await;
    let mut booking = common::spawn_child(&settings, "booking");
    let room_type = app.homestay(1).await.room_type_id.to_string();
    let id = app
        .create_booking_once_up(&room_type, tomorrow(), "gap")
        .await;
    app.wait_for_status(&id, "AWAITING_PAYMENT").await;
    let before = first_reads(&app).await;
    let token = app.token.as_deref().expect("token");
    let mut ws = subscribed(
        &app,
        token,
        "1",
        "subscription($id: ID!) { bookingUpdated(id: $id) { id status } }",
        json!({ "id": id }),
    )
    .await;
    until_read(&app, before).await;
    booking.kill().await.expect("killed");
    lose_push_queue(&app);
    let told = next(&mut ws).await.expect("the subscription is told");
    assert_eq!(told["type"], "next", "{told}");
    let code = refusal(&told);
    assert_eq!(code, "SERVICE_UNAVAILABLE", "{told}");
    let message = told["payload"]["errors"][0]["message"]
        .as_str()
        .unwrap_or("");
    assert!(
        message.contains(&id) && message.contains("subscribe again"),
        "{told}"
    );
    let ended = next(&mut ws).await.expect("the subscription completes");
    assert_eq!(ended, json!({ "id": "1", "type": "complete" }));
}

/// A socket opened with `Accept-Language: en` is answered in English, as a
/// request over HTTP is (pushes came in Chinese whatever the header).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_speaks_the_language_its_upgrade_asked_for() {
    use shared::rpcs::{CreateHomestay, NewRoomType, SetRoomCalendar};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let app = spawn_app().await;
    let bus = app.app.rt.bus.as_ref();
    let by = shared::auth::Principal::platform();
    let created = shared::bus::call(
        bus,
        &CreateHomestay {
            idempotency_key: None,
            host_name: "敖汉旗测试牧户".into(),
            host_id: None,
            region_code: "150430".parse().expect("code"),
            name: "敖汉草原蒙古包".into(),
            name_en: "Aohan Grassland Yurts".into(),
            room_type: NewRoomType {
                name: "双床".into(),
                name_en: "Twin".into(),
                beds: 2,
                max_guests: 2,
                rooms: 1,
            },
            details: Default::default(),
            cancellation_policy: None,
            unpublished: false,
            by: by.clone(),
        },
    )
    .await
    .expect("homestay created");
    shared::bus::call(
        bus,
        &SetRoomCalendar {
            room_type_id: created.room_type_id,
            from: tomorrow(),
            to: tomorrow() + chrono::Duration::days(7),
            rooms: None,
            price: Some(shared::money::Fen::yuan(380)),
            closed: Some(false),
            min_stay: Some(1),
            by,
        },
    )
    .await
    .expect("calendar set");
    let mut request = app
        .url
        .replace("http://", "ws://")
        .into_client_request()
        .expect("request");
    for (name, value) in [
        ("Sec-WebSocket-Protocol", "graphql-transport-ws"),
        ("Accept-Language", "en-US,en;q=0.9"),
    ] {
        request
            .headers_mut()
            .insert(name, value.parse().expect("header"));
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("upgraded");
    let token = app.token.clone().expect("token");
    assert_eq!(
        init(&mut ws, &token).await.map(|m| m["type"].clone()),
        Some(json!("connection_ack"))
    );
    send(
        &mut ws,
        json!({ "type": "subscribe", "id": "feed",
                "payload": { "query": "subscription { bookingsUpdated { id listing { title } } }" } }),
    )
    .await;
    let room_type = created.room_type_id.to_string();
    let id = TestApp::id_of(
        &app.create_booking(&room_type, tomorrow(), 1, "in-english")
            .await,
    );
    loop {
        let pushed = next(&mut ws).await.expect("a push");
        let booking = &pushed["payload"]["data"]["bookingsUpdated"];
        if booking["id"] == id && !booking["listing"].is_null() {
            assert_eq!(
                booking["listing"]["title"], "Aohan Grassland Yurts · Twin",
                "{pushed}"
            );
            break;
        }
    }
}

/// A push asking for a booking's guests, contact and notes reads them in
/// one call, as a page of bookings does: the connection has the request's
/// loaders, not one call per field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_reads_a_bookings_guests_in_one_call() {
    let app = spawn_app().await;
    let room_type = app.homestay(1).await.room_type_id.to_string();
    let mut ws = traveler_feed(&app, "subscription { bookingsUpdated { id status guests { name } contact { name phone } notes } }").await;
    let calls = || app.metric("duikou_rpc_total", &["method=\"get_booking_guests\""]);
    let before = calls().await;
    let id = TestApp::id_of(
        &app.create_booking(&room_type, tomorrow(), 1, "guests")
            .await,
    );
    let mut pushes = 0.0;
    let booking = loop {
        let m = next(&mut ws).await.expect("a push");
        let b = m["payload"]["data"]["bookingsUpdated"].clone();
        assert!(m["payload"]["errors"].is_null(), "{m}");
        if b["id"] == id.as_str() {
            pushes += 1.0;
            if b["status"] == "AWAITING_PAYMENT" {
                break b;
            }
        }
    };
    let guests = booking["guests"].as_array().cloned().unwrap_or_default();
    assert_eq!(guests.len(), 1, "{booking}");
    assert!(booking["contact"]["phone"].is_string(), "{booking}");
    assert_eq!(
        calls().await,
        before + pushes,
        "one call a push, not one a field"
    );
}

/// A booking's subscription completes once the booking has ended (nothing
/// more can be pushed), and a connection runs at most a hundred
/// subscriptions at once: the next is refused until one ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_completes_when_its_booking_ends_and_a_connection_has_a_hundred() {
    let app = spawn_app().await;
    let room_type = app.homestay(1).await.room_type_id.to_string();
    let id = TestApp::id_of(&app.create_booking(&room_type, tomorrow(), 1, "ends").await);
    app.wait_for_status(&id, "AWAITING_PAYMENT").await;
    let token = app.token.clone().expect("token");
    let mut ws = subscribed(
        &app,
        &token,
        "one",
        "subscription($id: ID!) { bookingUpdated(id: $id) { id status } }",
        json!({ "id": id }),
    )
    .await;
    send(&mut ws, json!({ "type": "ping" })).await;
    assert_eq!(
        next(&mut ws).await.map(|m| m["type"].clone()),
        Some(json!("pong"))
    );
    let cancelled = app.cancel(&id, "c").await;
    assert!(cancelled["errors"].is_null(), "{cancelled}");
    let pushed = next(&mut ws).await.expect("a push");
    assert_eq!(
        pushed["payload"]["data"]["bookingUpdated"]["status"], "CANCELLED",
        "{pushed}"
    );
    let done = next(&mut ws).await.expect("an answer");
    assert_eq!(
        (&done["type"], &done["id"]),
        (&json!("complete"), &json!("one")),
        "{done}"
    );

    for n in 0..100 {
        send(
            &mut ws,
            json!({ "id": format!("feed-{n}"), "type": "subscribe",
                    "payload": { "query": "subscription { bookingsUpdated { id } }" } }),
        )
        .await;
    }
    send(
        &mut ws,
        json!({ "id": "one-too-many", "type": "subscribe",
                "payload": { "query": "subscription { bookingsUpdated { id } }" } }),
    )
    .await;
    // The connection starts them in no set order: one of the 101, any
    // one, is refused.
    let refused = loop {
        let message = next(&mut ws).await.expect("an answer");
        if message["payload"]["errors"].is_array() {
            break message;
        }
    };
    assert_eq!(
        refused["payload"]["errors"][0]["extensions"]["code"], "RATE_LIMITED",
        "{refused}"
    );
    assert!(
        refused["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("feed-") || id == "one-too-many"),
        "{refused}"
    );
}

/// A socket that never says `connection_init` is closed with 4408 once
/// its time is up (it would otherwise hold memory for nothing); request
/// errors over the socket carry `extensions.code`, as over HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_socket_is_closed_and_every_error_over_a_socket_has_a_code() {
    let app = spawn_app().await;
    let mut silent = connect(&app).await;
    let mut talking = connect(&app).await;
    let token = app.token.clone().expect("token");
    assert_eq!(
        common::ws::init(&mut talking, &token)
            .await
            .and_then(|m| m.get("type").cloned()),
        Some(json!("connection_ack"))
    );
    let many = format!(
        "subscription({}) {{ bookingsUpdated {{ id }} }}",
        vec!["$v: Int"; 151].join(", ")
    );
    for (id, query, variables) in [
        ("syntax", "subscription {", json!({})),
        ("unknown", "subscription { nope }", json!({})),
        (
            "variable",
            "subscription($id: ID!) { bookingUpdated(id: $id) { id } }",
            json!({ "id": 5.5 }),
        ),
        (
            "missing",
            "subscription($id: ID!) { bookingUpdated(id: $id) { id } }",
            json!({}),
        ),
        (
            "two roots",
            "subscription { bookingsUpdated { id } again: bookingsUpdated { status } }",
            json!({}),
        ),
        // Through a fragment, async-graphql runs no stream at all: the
        // subscription would complete at once with nothing said.
        (
            "fragment",
            "subscription { ...F } fragment F on Subscription { bookingsUpdated { id } }",
            json!({}),
        ),
        (
            "inline",
            "subscription { ... on Subscription { bookingsUpdated { id } } }",
            json!({}),
        ),
        // 301 errors, as over HTTP cut to the first hundred and a count.
        ("many", many.as_str(), json!({})),
    ] {
        send(
            &mut talking,
            json!({ "type": "subscribe", "id": id,
                    "payload": { "query": query, "variables": variables } }),
        )
        .await;
        let answer = next(&mut talking).await.expect("an answer");
        let errors = match &answer["payload"] {
            Value::Array(errors) => errors.clone(),
            payload => payload["errors"].as_array().cloned().unwrap_or_default(),
        };
        assert!(!errors.is_empty(), "{id}: {answer}");
        if id == "many" {
            assert_eq!(errors.len(), 101, "{answer}");
            assert_eq!(errors[100]["message"], "… and 201 more errors, left out");
        }
        for error in &errors {
            assert_eq!(
                error["extensions"]["code"], "BAD_USER_INPUT",
                "{id}: {answer}"
            );
        }
        // A `next` with errors is followed by its `complete`.
        if answer["type"] == "next" {
            let complete = next(&mut talking).await.expect("complete");
            assert_eq!(complete["type"], "complete", "{id}: {complete}");
        }
    }
    // Fragments doubling at each level are refused by their count, before
    // async-graphql follows every spread (http.rs has the same over HTTP).
    let doubling =
        common::doubling_fragments("subscription", "bookingsUpdated", "Booking", "id", 22);
    send(
        &mut talking,
        json!({ "type": "subscribe", "id": "doubling", "payload": { "query": doubling } }),
    )
    .await;
    let answer = next(&mut talking).await.expect("an answer");
    assert!(
        answer["payload"]
            .to_string()
            .contains("runs 4194305 fields"),
        "{answer}"
    );
    let complete = next(&mut talking).await.expect("complete");
    assert_eq!(complete["type"], "complete", "{complete}");
    // Past the time allowed for `connection_init` (10 s), closed with 4408.
    assert_eq!(
        common::ws::closed_within(&mut silent, std::time::Duration::from_secs(20)).await,
        Some(4408),
        "a socket that never initialised is closed"
    );
}

/// A gateway that stops closes its sockets with 1001 ("going away"), so
/// that clients reconnect at once rather than take it for a network fault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_gateway_closes_its_sockets_as_going_away() {
    let app = spawn_app().await;
    let mut ws = connect(&app).await;
    let token = app.token.clone().expect("token");
    assert_eq!(
        init(&mut ws, &token)
            .await
            .and_then(|m| m.get("type").cloned()),
        Some(json!("connection_ack"))
    );
    app.app.stop_gateway();
    assert_eq!(
        common::ws::closed_within(&mut ws, std::time::Duration::from_secs(10)).await,
        Some(1001)
    );
}

/// A socket message is held to 16 KiB, before any login (64 MiB were
/// taken: an exploratory run raised the gateway's memory by 136 MB with one
/// `connection_init`), a longer one closes the socket with 1009, and a refusal's close reason fits its frame (a
/// longer one made the frame malformed: clients saw 1006, not 4403).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_socket_message_closes_the_socket_and_every_close_is_well_formed() {
    let app = spawn_app().await;
    let mut greedy = connect(&app).await;
    send(
        &mut greedy,
        json!({ "type": "connection_init",
                "payload": { "Authorization": "Bearer x", "junk": "x".repeat(64 * 1024) } }),
    )
    .await;
    // Closed as too big (1009), not dropped without a word.
    assert_eq!(
        common::ws::closed_within(&mut greedy, std::time::Duration::from_secs(5)).await,
        Some(1009),
        "a 64 KiB message"
    );
    // A token revoked everywhere: its long reason still arrives as 4403.
    let token = app.register("revoked@example.cn", "110105").await;
    let session = app.login("revoked@example.cn").await;
    logout_everywhere(&app, &session).await;
    let mut revoked = connect(&app).await;
    send(
        &mut revoked,
        json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } }),
    )
    .await;
    assert_eq!(
        common::ws::closed_within(&mut revoked, std::time::Duration::from_secs(5)).await,
        Some(4403)
    );
    // The gateway still answers.
    let alive = app.graphql_as(None, "{ __typename }", json!({})).await;
    assert_eq!(alive["data"]["__typename"], "Query", "{alive}");
}

/// Ends every session of the account `session` (a login's answer) is of.
async fn logout_everywhere(app: &TestApp, session: &Value) {
    let out = app
        .graphql_as(
            None,
            "mutation($t: String!) { logout(refreshToken: $t, everywhere: true) }",
            json!({ "t": session["refreshToken"] }),
        )
        .await;
    assert_eq!(out["data"]["logout"], true, "{out}");
}

/// A client that stops reading is let go all the same when its socket
/// ends (here, its token revoked): the close frame waits a bounded time.
/// Before, the close waited for ever on a window full of answers, holding
/// the task and one of the gateway's 4,096 socket slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_that_stops_reading_is_let_go_when_it_ends() {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let app = spawn_app().await;
    let token = app.register("deaf@example.cn", "110105").await;
    let session = app.login("deaf@example.cn").await;
    // A small window of our own, so that the gateway's answers fill it.
    let address = app
        .url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
        .expect("address");
    let tcp = tokio::net::TcpSocket::new_v4().expect("socket");
    tcp.set_recv_buffer_size(4096).expect("window");
    let stream = tcp.connect(address).await.expect("connected");
    let mut request = app
        .url
        .replace("http://", "ws://")
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().expect("header"),
    );
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
    let (mut ws, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .expect("upgraded");
    assert_eq!(
        init(&mut ws, &token).await.map(|m| m["type"].clone()),
        Some(json!("connection_ack"))
    );
    // Subscribes answered with a hundred errors each, never read, until
    // the gateway takes no more.
    let wrong = format!(
        "subscription({}) {{ bookingsUpdated {{ id }} }}",
        vec!["$v: Int"; 151].join(", ")
    );
    let started = std::time::Instant::now();
    let mut n = 0;
    let full = loop {
        n += 1;
        let subscribe = json!({ "type": "subscribe", "id": format!("s{n}"),
                                "payload": { "query": wrong } });
        let sent = tokio::time::timeout(
            std::time::Duration::from_millis(500),
            ws.send(Message::Text(subscribe.to_string().into())),
        )
        .await;
        match sent {
            Err(_) => break true,
            Ok(sent) => sent.expect("sent"),
        }
        if started.elapsed() > std::time::Duration::from_secs(30) {
            break false;
        }
    };
    assert!(full, "the gateway took {n} subscribes unread");
    // Its token revoked: the socket ends, and the gateway lets it go.
    logout_everywhere(&app, &session).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let ping = Message::Text(json!({ "type": "ping" }).to_string().into());
        if let Ok(Err(_)) =
            tokio::time::timeout(std::time::Duration::from_millis(500), ws.send(ping)).await
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway still holds a socket whose token was revoked"
        );
    }
}

/// One account holds at most 32 sockets on a gateway (one socket carries a
/// hundred subscriptions): the next is refused 4403, and closing one makes
/// room again. (4,096 sockets were anyone's for the taking.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_holds_at_most_thirty_two_sockets() {
    let app = spawn_app().await;
    let token = app.token.clone().expect("token");
    let mut open = Vec::new();
    for _ in 0..32 {
        let mut ws = connect(&app).await;
        assert_eq!(
            init(&mut ws, &token).await.map(|m| m["type"].clone()),
            Some(json!("connection_ack"))
        );
        open.push(ws);
    }
    let mut one_more = connect(&app).await;
    send(
        &mut one_more,
        json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } }),
    )
    .await;
    assert_eq!(
        common::ws::closed_within(&mut one_more, std::time::Duration::from_secs(5)).await,
        Some(4403)
    );
    // Another account is not held back by this one's.
    let other = app.register("other-sockets@example.cn", "110105").await;
    let mut theirs = connect(&app).await;
    assert_eq!(
        init(&mut theirs, &other).await.map(|m| m["type"].clone()),
        Some(json!("connection_ack"))
    );
    // One closed, one more may open (once the gateway has seen it go).
    let mut closing = open.pop().expect("a socket");
    let _ = closing.close(None).await;
    drop(closing);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mut ws = connect(&app).await;
        if init(&mut ws, &token).await.map(|m| m["type"].clone()) == Some(json!("connection_ack")) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no room after a close"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// graphql-transport-ws's own close codes, where async-graphql sent
/// generic ones or none: a subscribe before `connection_ack` is 4401
/// (1011), a message that is not the protocol's 4400 (1002; the older
/// protocol's `start` ran), and a subscribe under an id that is running
/// 4409, in a text frame or a binary one (async-graphql replaced the
/// running subscription without a word). An id completed by the client or
/// by the server may be used again, and the client's `complete` is not
/// answered (async-graphql's answer ended the subscription a client made
/// again under the id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_faults_close_with_graphql_transport_ws_codes() {
    let app = spawn_app().await;
    let token = app.token.clone().expect("token");
    let within = std::time::Duration::from_secs(5);
    let feed = |id: &str| {
        json!({ "id": id, "type": "subscribe", "payload": {
            "query": "subscription { bookingsUpdated { id status } }" } })
    };

    let mut early = connect(&app).await;
    send(&mut early, feed("1")).await;
    assert_eq!(
        common::ws::closed_within(&mut early, within).await,
        Some(4401)
    );

    let mut garbled = connect(&app).await;
    init(&mut garbled, &token).await;
    send(&mut garbled, json!({ "type": "no such message" })).await;
    assert_eq!(
        common::ws::closed_within(&mut garbled, within).await,
        Some(4400)
    );

    // The older protocol's `start`, and a subscribe written as an array
    // (async-graphql reads one whose first item is the type).
    for message in [
        json!({ "id": "1", "type": "start", "payload": {
            "query": "subscription { bookingsUpdated { id status } }" } }),
        json!(["subscribe", "1", { "query": "subscription { bookingsUpdated { id status } }" }]),
    ] {
        let mut legacy = connect(&app).await;
        init(&mut legacy, &token).await;
        send(&mut legacy, message.clone()).await;
        assert_eq!(
            common::ws::closed_within(&mut legacy, within).await,
            Some(4400),
            "{message}"
        );
    }

    let mut twice = connect(&app).await;
    init(&mut twice, &token).await;
    send(&mut twice, feed("1")).await;
    // Completed by the client: its id is free again (nothing answers the
    // complete: the next message is the refusal of "3" below).
    send(&mut twice, json!({ "id": "1", "type": "complete" })).await;
    send(&mut twice, feed("1")).await;
    // Ended by the server (a bad subscription): free again too.
    send(
        &mut twice,
        json!({ "id": "3", "type": "subscribe", "payload": {
            "query": "subscription { bookingUpdated(id: \"not-a-booking\") { id } }" } }),
    )
    .await;
    let refused = next(&mut twice).await.expect("an answer");
    assert_eq!(refused["type"], "next", "{refused}");
    let done = next(&mut twice).await.expect("complete");
    assert_eq!(done, json!({ "type": "complete", "id": "3" }));
    send(&mut twice, feed("3")).await;
    send(&mut twice, json!({ "type": "ping" })).await;
    let pong = next(&mut twice).await.expect("still open");
    assert_eq!(pong["type"], "pong", "{pong}");
    // "1" runs: a second subscribe under it ends the connection, in a
    // binary frame too.
    use futures::SinkExt;
    twice
        .send(tokio_tungstenite::tungstenite::Message::Binary(
            feed("1").to_string().into_bytes().into(),
        ))
        .await
        .expect("sent");
    assert_eq!(
        common::ws::closed_within(&mut twice, within).await,
        Some(4409)
    );

    // Completed by the client and subscribed again at once under its id:
    // the new subscription runs, and nothing says it ended.
    let mut again = connect(&app).await;
    init(&mut again, &token).await;
    send(&mut again, feed("1")).await;
    send(&mut again, json!({ "id": "1", "type": "complete" })).await;
    send(&mut again, feed("1")).await;
    send(&mut again, json!({ "type": "ping" })).await;
    let pong = next(&mut again).await.expect("an answer");
    assert_eq!(pong["type"], "pong", "the complete was answered: {pong}");
    let room_type = app.homestay(1).await.room_type_id.to_string();
    let booked = app
        .create_booking(&room_type, tomorrow(), 1, "after-complete")
        .await;
    let pushed = next(&mut again).await.expect("a push");
    assert_eq!(pushed["type"], "next", "{pushed}");
    assert_eq!(pushed["id"], "1", "{pushed}");
    assert_eq!(
        pushed["payload"]["data"]["bookingsUpdated"]["id"], booked["data"]["createBooking"]["id"],
        "{pushed}"
    );
}

/// Clients of the older protocol (subscriptions-transport-ws, offered as
/// `graphql-ws`) are served: a refused `connection_init` is its
/// `connection_error` with the refusal's code, then a 4403 close (the
/// socket was dropped without a close frame, and a bad token read as
/// BAD_USER_INPUT); a good one subscribes with `start`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_older_protocol_is_served_and_says_why_it_refuses() {
    let app = spawn_app().await;
    let connect_legacy = || common::ws::connect_speaking(&app.url, "graphql-ws");
    let within = std::time::Duration::from_secs(5);
    for (payload, code) in [
        (
            json!({ "Authorization": "Bearer not-a-token" }),
            "UNAUTHENTICATED",
        ),
        (json!({}), "UNAUTHENTICATED"),
        (json!({ "Authorization": 42 }), "BAD_USER_INPUT"),
    ] {
        let mut ws = connect_legacy().await;
        send(
            &mut ws,
            json!({ "type": "connection_init", "payload": payload }),
        )
        .await;
        let refused = next(&mut ws).await.expect("an answer");
        assert_eq!(refused["type"], "connection_error", "{refused}");
        assert_eq!(
            refused["payload"]["extensions"]["code"], code,
            "{payload}: {refused}"
        );
        assert_eq!(
            common::ws::closed_within(&mut ws, within).await,
            Some(4403),
            "{payload}"
        );
    }

    // Offered both, the client is told the protocol it is served: the
    // first it offers (axum answered the first of the gateway's list).
    let (_, answer) = common::ws::upgrade(&app.url, "graphql-ws, graphql-transport-ws").await;
    assert_eq!(
        answer
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some("graphql-ws")
    );

    let mut ws = connect_legacy().await;
    let token = app.token.clone().expect("token");
    let ack = init(&mut ws, &token).await.expect("an answer");
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    send(
        &mut ws,
        json!({ "id": "1", "type": "start", "payload": {
            "query": "subscription { bookingsUpdated { id status } }" } }),
    )
    .await;
    // Subscribed once a second subscription under another id answers.
    send(
        &mut ws,
        json!({ "id": "2", "type": "start", "payload": {
            "query": "subscription { bookingUpdated(id: \"nothing\") { id } }" } }),
    )
    .await;
    let refused = next(&mut ws).await.expect("an answer");
    assert_eq!(refused["type"], "data", "{refused}");
    let room_type = app.homestay(1).await.room_type_id.to_string();
    let booked = app
        .create_booking(&room_type, tomorrow(), 1, "legacy")
        .await;
    let pushed = loop {
        let message = next(&mut ws).await.expect("a push");
        if message["id"] == "1" {
            break message;
        }
    };
    assert_eq!(pushed["type"], "data", "{pushed}");
    assert_eq!(
        pushed["payload"]["data"]["bookingsUpdated"]["id"], booked["data"]["createBooking"]["id"],
        "{pushed}"
    );
}

/// A client gone without a close (a phone off the network, a NAT that
/// forgot the flow) answers no ping: its socket is closed with 1001 after
/// three pings, instead of holding one of the account's 32 sockets until
/// its token expires. A client that reads (and so answers each ping with
/// a pong) stays. The silent one is read as raw bytes, so that nothing
/// answers the pings for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_that_answers_no_ping_is_closed_and_one_that_does_stays() {
    use tokio::io::AsyncReadExt;
    let app = common::spawn_app_with(shared::config::Settings {
        socket_ping_seconds: 1,
        ..common::test_settings()
    })
    .await;
    let token = app.token.clone().expect("token");
    let mut answering = connect(&app).await;
    let mut silent = connect(&app).await;
    for ws in [&mut answering, &mut silent] {
        let ack = init(ws, &token).await;
        assert_eq!(
            ack.map(|a| a["type"].clone()),
            Some(json!("connection_ack"))
        );
    }
    // The one that reads answers every ping meanwhile (read at the same
    // time, or it would be silent too), and stays.
    let answered = tokio::spawn(async move {
        common::ws::closed_within(&mut answering, std::time::Duration::from_secs(5)).await
    });
    // The silent socket's frames, as the server sends them (unmasked): a
    // ping every second, then a close whose first two bytes are its code.
    let raw = silent.get_mut();
    let mut bytes = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    let close = loop {
        let mut at = 0;
        let mut close = None;
        while bytes.len() >= at + 2 {
            let (opcode, len) = (bytes[at] & 0x0f, usize::from(bytes[at + 1] & 0x7f));
            assert!(len < 126, "control frames only: {bytes:?}");
            if bytes.len() < at + 2 + len {
                break;
            }
            if opcode == 0x8 {
                close = Some(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]));
            }
            at += 2 + len;
        }
        if let Some(code) = close {
            break Some(code);
        }
        let mut chunk = [0u8; 256];
        match tokio::time::timeout_at(deadline, raw.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => bytes.extend_from_slice(&chunk[..n]),
            _ => break None,
        }
    };
    assert_eq!(
        close,
        Some(1001),
        "the silent socket stayed open: {bytes:?}"
    );
    assert_eq!(
        answered.await.expect("reader"),
        None,
        "a socket that answers its pings was closed"
    );
}

/// A booking that has ended already is pushed once, as it ended, and the
/// subscription completes: before, the client got a bare `complete` and
/// could not tell an ended booking from a feed that broke.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_to_an_ended_booking_pushes_how_it_ended_and_completes() {
    let app = spawn_app().await;
    let room_type = app.homestay(1).await.room_type_id.to_string();
    let id = TestApp::id_of(&app.create_booking(&room_type, tomorrow(), 1, "ended").await);
    app.wait_for_status(&id, "AWAITING_PAYMENT").await;
    let cancelled = app.cancel(&id, "cancel").await;
    assert!(cancelled["errors"].is_null(), "{cancelled}");

    let mut ws = connect(&app).await;
    init(&mut ws, app.token.as_deref().expect("token"))
        .await
        .expect("ack");
    send(&mut ws, subscribe(&id)).await;
    let pushed = next(&mut ws).await.expect("a push");
    assert_eq!(
        pushed["payload"]["data"]["bookingUpdated"],
        json!({ "id": id, "status": "CANCELLED" }),
        "{pushed}"
    );
    let complete = next(&mut ws).await.expect("complete");
    assert_eq!(complete["type"], "complete", "{complete}");
}
