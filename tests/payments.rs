//! Payments on the real servers: fifty racing payments of one booking charge
//! once; fifty racing partial refunds never return more than was paid; a
//! charge whose answer timed out is made once; a payment service killed
//! after the provider charged is reconciled when it comes back; declines
//! say why and leave the booking payable.

mod common;

use common::{
    TestApp, code, spawn_app_with, spawn_child_with, spawn_without, test_settings, tomorrow,
};
use duikou::Part;
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use serde_json::{Value, json};
use shared::config::Settings;
use std::time::{Duration, Instant};

async fn count(db: &DatabaseConnection, sql: &str) -> i64 {
    db.query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .expect("query")
        .expect("a row")
        .try_get("", "n")
        .expect("n")
}

/// [`count`], or None while the table is not there yet (a part starting).
async fn try_count(db: &DatabaseConnection, sql: &str) -> Option<i64> {
    db.query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .ok()??
        .try_get("", "n")
        .ok()
}

/// Waits until the booking is CONFIRMED and checks the provider charged
/// once; the payment database.
async fn confirmed_with_one_charge(app: &TestApp, id: &str) -> DatabaseConnection {
    app.wait_for_status(id, "CONFIRMED").await;
    let db = app.service_db("payment").await;
    assert_eq!(
        count(
            &db,
            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM sandbox_charges WHERE NOT closed"
        )
        .await,
        1,
        "one charge at the provider"
    );
    db
}

/// A booking awaiting payment (one night at 380).
async fn awaiting(app: &TestApp, key: &str) -> String {
    let room_type = app.homestay(1).await.room_type_id.to_string();
    let id = TestApp::id_of(&app.create_booking(&room_type, tomorrow(), 1, key).await);
    app.wait_for_status(&id, "AWAITING_PAYMENT").await;
    id
}

const REFUND: &str = "mutation($b: ID!, $a: String!, $k: String!) {
    refundPayment(bookingId: $b, amount: $a, reason: \"接待户临时停电，部分退款\", idempotencyKey: $k) {
        id amount { amount } status split { host { amount } fund { amount } } } }";

in_both_modes!(fifty_racing_payments_of_one_booking_make_one_charge_and_one_ledger_transaction);
async fn fifty_racing_payments_of_one_booking_make_one_charge_and_one_ledger_transaction(
    settings: Settings,
) {
    let app = spawn_app_with(settings).await;
    let id = awaiting(&app, "race-pay").await;
    // Half retry one key, half are different clicks with keys of their own.
    let attempts = (0..50).map(|i| {
        let key = if i % 2 == 0 {
            "one-key".to_owned()
        } else {
            format!("click-{i}")
        };
        let (app, id) = (&app, id.clone());
        async move { app.pay(&id, "tok_success", &key).await }
    });
    let answers: Vec<Value> = futures::future::join_all(attempts).await;
    let captured = answers
        .iter()
        .filter(|a| a["data"]["payBooking"]["status"] == "CAPTURED")
        .count();
    assert!(captured >= 1, "{answers:?}");
    for a in &answers {
        let ok = a["data"]["payBooking"]["status"] == "CAPTURED" || code(a) == "CONFLICT";
        assert!(ok, "a paid answer or CONFLICT, got {a}");
    }
    let db = confirmed_with_one_charge(&app, &id).await;
    assert_eq!(
        count(
            &db,
            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM payments WHERE status = 'CAPTURED'"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &db,
            "SELECT CAST(COUNT(DISTINCT txn_id) AS BIGINT) AS n FROM ledger_entries"
        )
        .await,
        1,
        "one ledger transaction"
    );
}

in_both_modes!(retries_of_a_slow_payment_with_its_key_wait_for_its_answer);
/// A client retrying its payment with the same key while the first try
/// still waits for the provider (`tok_slow`: two seconds) gets the first
/// try's answer once it comes, not a refusal to retry later; the key sent
/// with another token is refused at once (it waited for the first too).
async fn retries_of_a_slow_payment_with_its_key_wait_for_its_answer(settings: Settings) {
    let app = spawn_app_with(settings).await;
    let id = awaiting(&app, "slow-pay").await;
    let first = app.pay(&id, "tok_slow", "slow-key");
    let retries = async {
        // Once the first try is with the provider.
        let db = app.service_db("payment").await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while count(&db, "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM payments").await == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the first try never started"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        // The key sent with another token is another payment's key: told
        // so at once, not after the first has settled.
        let other = app.pay(&id, "tok_success", "slow-key").await;
        assert_eq!(code(&other), "IDEMPOTENCY_KEY_REUSED", "{other}");
        let status =
            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM payments WHERE status = 'PROCESSING'";
        assert_eq!(
            count(&db, status).await,
            1,
            "answered while the first waits"
        );
        futures::future::join(
            app.pay(&id, "tok_slow", "slow-key"),
            app.pay(&id, "tok_slow", "slow-key"),
        )
        .await
    };
    let (first, (second, third)) = futures::future::join(first, retries).await;
    for answer in [&first, &second, &third] {
        assert_eq!(
            answer["data"]["payBooking"]["status"], "CAPTURED",
            "{answer}"
        );
    }
    confirmed_with_one_charge(&app, &id).await;
}

in_both_modes!(fifty_racing_partial_refunds_never_return_more_than_was_paid);
async fn fifty_racing_partial_refunds_never_return_more_than_was_paid(settings: Settings) {
    let app = spawn_app_with(settings).await;
    let id = awaiting(&app, "race-refund").await;
    let admin = app.admin_token().await;
    // Nothing captured yet: nothing to refund.
    let early = app
        .graphql_as(
            Some(&admin),
            REFUND,
            json!({ "b": id, "a": "10.00", "k": "early" }),
        )
        .await;
    assert_eq!(code(&early), "CONFLICT", "{early}");
    // A booking that does not exist is not found, not unpaid.
    let unknown = app
        .graphql_as(
            Some(&admin),
            REFUND,
            json!({ "b": uuid::Uuid::now_v7().to_string(), "a": "10.00", "k": "nobody" }),
        )
        .await;
    assert_eq!(code(&unknown), "NOT_FOUND", "{unknown}");
    assert!(app.pay(&id, "tok_success", "pay").await["errors"].is_null());
    app.wait_for_status(&id, "CONFIRMED").await;

    // Only platform admins refund, and only positive amounts.
    let traveler = app
        .graphql(REFUND, json!({ "b": id, "a": "10.00", "k": "mine" }))
        .await;
    assert_eq!(code(&traveler), "FORBIDDEN", "{traveler}");
    for bad in ["0", "-5", "abc"] {
        let body = app
            .graphql_as(
                Some(&admin),
                REFUND,
                json!({ "b": id, "a": bad, "k": format!("bad-{bad}") }),
            )
            .await;
        assert_eq!(code(&body), "BAD_USER_INPUT", "{bad}: {body}");
    }
    let too_much = app
        .graphql_as(
            Some(&admin),
            REFUND,
            json!({ "b": id, "a": "380.01", "k": "too-much" }),
        )
        .await;
    assert_eq!(code(&too_much), "BAD_USER_INPUT", "{too_much}");

    // Fifty admins' refunds of 10.00 at once against 380.00 paid.
    let racing = (0..50).map(|i| {
        let (app, admin, id) = (&app, admin.clone(), id.clone());
        async move {
            app.graphql_as(
                Some(&admin),
                REFUND,
                json!({ "b": id, "a": "10.00", "k": format!("r-{i}") }),
            )
            .await
        }
    });
    let answers: Vec<Value> = futures::future::join_all(racing).await;
    let succeeded = answers
        .iter()
        .filter(|a| a["data"]["refundPayment"]["status"] == "SUCCEEDED")
        .count();
    let refused = answers
        .iter()
        .filter(|a| code(a) == "BAD_USER_INPUT")
        .count();
    assert_eq!((succeeded, refused), (38, 12), "{answers:?}");

    // The same key replays its refund; the same key for another amount is refused.
    let first = &answers[0];
    let replay = app
        .graphql_as(
            Some(&admin),
            REFUND,
            json!({ "b": id, "a": "10.00", "k": "r-0" }),
        )
        .await;
    assert_eq!(&replay, first);
    let reused = app
        .graphql_as(
            Some(&admin),
            REFUND,
            json!({ "b": id, "a": "5.00", "k": "r-0" }),
        )
        .await;
    let expected = if first["errors"].is_null() {
        "IDEMPOTENCY_KEY_REUSED"
    } else {
        "BAD_USER_INPUT"
    };
    assert_eq!(code(&reused), expected, "{reused}");

    // All of it back, every share reversed to the fen, and the booking shows it.
    assert_eq!(app.fund_balance().await, "0.00");
    let booking = app
        .wait_for_booking(&id, "the refunds", |b| b["refunded"]["amount"] == "380.00")
        .await;
    assert_eq!(booking["status"], "CONFIRMED");
    let refunds = app
        .graphql(
            "query($id: ID!) { booking(id: $id) { refunds { status amount { amount } } } }",
            json!({ "id": id }),
        )
        .await;
    let listed = refunds["data"]["booking"]["refunds"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        listed.iter().filter(|r| r["status"] == "SUCCEEDED").count(),
        38,
        "{refunds}"
    );
    let db = app.service_db("payment").await;
    assert_eq!(
        count(&db, "SELECT CAST(COALESCE(SUM(amount_fen), 0) AS BIGINT) AS n FROM ledger_entries WHERE account LIKE 'host:%'").await,
        0,
        "the host's share reversed exactly"
    );
}

in_both_modes!(a_charge_whose_answer_timed_out_is_found_on_retry_and_made_once);
async fn a_charge_whose_answer_timed_out_is_found_on_retry_and_made_once(settings: Settings) {
    let app = spawn_app_with(settings).await;
    let id = awaiting(&app, "timeout").await;
    let paid = app.pay(&id, "tok_timeout_then_success", "pay").await;
    assert_eq!(paid["data"]["payBooking"]["status"], "CAPTURED", "{paid}");
    app.wait_for_status(&id, "CONFIRMED").await;
    let db = app.service_db("payment").await;
    assert_eq!(
        count(
            &db,
            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM sandbox_charges"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &db,
            "SELECT CAST(COUNT(DISTINCT txn_id) AS BIGINT) AS n FROM ledger_entries"
        )
        .await,
        1
    );
}

/// A booking held late on its check-in (or departure) day whose deadline
/// runs past China midnight is not paid once that day is over: confirmed,
/// it was under way at once — never cancelled, the host paid out — and the
/// traveler charged for a departure gone without them. On the day itself
/// it pays. No test can wait for midnight: the stay is moved in the
/// booking's row.
#[tokio::test]
async fn a_booking_whose_stay_began_yesterday_is_not_paid() {
    let mut app = spawn_app_with(test_settings()).await;
    let id = awaiting(&app, "began").await;
    let today = shared::policy::china_today(chrono::Utc::now());
    let yesterday = today - chrono::Days::new(1);
    app.move_stay_to(&id, yesterday).await;
    // Paid through a gateway that has not heard the booking awaiting
    // payment as it was before the move (it pays on the view it heard).
    let replica = duikou::App::start(app.settings.clone(), Part::Gateway)
        .await
        .expect("another gateway starts");
    app.url = format!(
        "http://{}/graphql",
        replica.gateway_addr.expect("it serves")
    );
    app.parts.push(replica);
    let refused = app.pay(&id, "tok_success", "late").await;
    assert_eq!(code(&refused), "CONFLICT", "{refused}");
    let message = refused["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("began on {yesterday}")),
        "{refused}"
    );
    assert_eq!(app.status(&id).await, "AWAITING_PAYMENT");
    let payments = app.service_db("payment").await;
    assert_eq!(
        count(
            &payments,
            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM sandbox_charges"
        )
        .await,
        0,
        "nothing charged"
    );
    app.move_stay_to(&id, today).await;
    let paid = app.pay(&id, "tok_success", "on-the-day").await;
    assert_eq!(paid["data"]["payBooking"]["status"], "CAPTURED", "{paid}");
    app.wait_for_status(&id, "CONFIRMED").await;
}

in_both_modes!(declines_say_why_and_the_booking_can_be_paid_again);
async fn declines_say_why_and_the_booking_can_be_paid_again(settings: Settings) {
    let app = spawn_app_with(settings).await;
    let id = awaiting(&app, "declines").await;
    for (token, why) in [
        ("tok_decline", "declined"),
        ("tok_insufficient_funds", "insufficient funds"),
        ("tok_made_up", "unknown payment token"),
    ] {
        let body = app.pay(&id, token, token).await;
        assert_eq!(code(&body), "PAYMENT_DECLINED", "{token}: {body}");
        let message = body["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(message.contains(why), "{token}: {message}");
        assert_eq!(app.status(&id).await, "AWAITING_PAYMENT");
        let read = app
            .graphql(
                "query($id: ID!) { booking(id: $id) { payment { status failureReason } } }",
                json!({ "id": id }),
            )
            .await;
        let payment = &read["data"]["booking"]["payment"];
        assert_eq!(payment["status"], "FAILED", "{read}");
        assert!(
            payment["failureReason"]
                .as_str()
                .is_some_and(|r| r.contains(why)),
            "{token}: {read}"
        );
    }
    // A token no provider issues — 100 KB, or with control characters —
    // is refused before it reaches the provider or the booking's history.
    for token in [
        "t".repeat(100_000),
        "tok_\u{0}success".to_owned(),
        " ".to_owned(),
    ] {
        let body = app.pay(&id, &token, "odd-token").await;
        assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
        assert!(
            body.to_string().len() < 1_000,
            "the token is not echoed back"
        );
    }
    // Pasted with a space and a line end around it, it is the same token
    // (it was "unknown payment token"), and its retry is the same payment.
    let paid = app.pay(&id, " tok_success\n", "finally").await;
    assert_eq!(paid["data"]["payBooking"]["status"], "CAPTURED", "{paid}");
    let again = app.pay(&id, "tok_success", "finally").await;
    assert_eq!(again, paid);
    app.wait_for_status(&id, "CONFIRMED").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_service_killed_after_the_provider_charged_is_reconciled_when_it_returns() {
    let settings = test_settings();
    let app = spawn_without(&settings, Part::Payment).await;
    let reconcile_soon = [("DUIKOU_RECONCILE_AFTER_SECONDS", "1")];
    // It would reconcile by itself after 1 s: dies before it can.
    let mut payment = spawn_child_with(
        &settings,
        "payment",
        &[("DUIKOU_RECONCILE_AFTER_SECONDS", "3600")],
    );
    let id = awaiting(&app, "killed").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let lost = loop {
        let body = app.pay(&id, "tok_lost_answer", "pay").await;
        // SERVICE_UNAVAILABLE: the provider charged and every answer was
        // lost (or, while the child starts, payment did not answer yet).
        let db = app.service_db("payment").await;
        let charges = "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM sandbox_charges";
        if try_count(&db, charges).await == Some(1) {
            break body;
        }
        assert!(Instant::now() < deadline, "never charged: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(code(&lost), "SERVICE_UNAVAILABLE", "{lost}");
    payment.kill().await.expect("killed");
    assert_eq!(
        app.status(&id).await,
        "AWAITING_PAYMENT",
        "charged, not yet recorded"
    );

    let _payment = spawn_child_with(&settings, "payment", &reconcile_soon);
    app.wait_for_status(&id, "CONFIRMED").await;
    let db = app.service_db("payment").await;
    assert_eq!(
        count(
            &db,
            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM sandbox_charges"
        )
        .await,
        1,
        "charged once"
    );
    assert_eq!(
        count(
            &db,
            "SELECT CAST(COUNT(DISTINCT txn_id) AS BIGINT) AS n FROM ledger_entries"
        )
        .await,
        1
    );
    let admin = app.admin_token().await;
    let log = app
        .graphql_as(
            Some(&admin),
            "{ reconciliationLog { edges { node { kind bookingId amount { amount } } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        log["data"]["reconciliationLog"]["edges"][0]["node"],
        json!({ "kind": "CAPTURED_LATE", "bookingId": id, "amount": { "amount": "380.00" } }),
        "{log}"
    );
    // By kind, counted: nothing for a person here.
    let by_kind = |kind: &'static str| {
        let admin = admin.clone();
        let app = &app;
        async move {
            app.graphql_as(
                Some(&admin),
                "query($k: ReconciliationKind) { reconciliationLog(kind: $k) { totalCount edges { node { kind } } } }",
                json!({ "k": kind }),
            )
            .await["data"]["reconciliationLog"]
                .clone()
        }
    };
    let late = by_kind("CAPTURED_LATE").await;
    assert_eq!(late["totalCount"], 1, "{late}");
    assert_eq!(late["edges"][0]["node"]["kind"], "CAPTURED_LATE", "{late}");
    let mismatches = by_kind("MISMATCH").await;
    assert_eq!(mismatches, json!({ "totalCount": 0, "edges": [] }));
    let traveler = app
        .graphql(
            "{ reconciliationLog { edges { node { kind } } } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&traveler), "FORBIDDEN");
}

in_both_modes!(the_ledger_refuses_to_change_or_lose_a_posting);
async fn the_ledger_refuses_to_change_or_lose_a_posting(settings: Settings) {
    let app = spawn_app_with(settings).await;
    let id = awaiting(&app, "append-only").await;
    assert!(app.pay(&id, "tok_success", "pay").await["errors"].is_null());
    let db = app.service_db("payment").await;
    for sql in [
        "UPDATE ledger_entries SET amount_fen = amount_fen + 1",
        "DELETE FROM ledger_entries",
    ] {
        let refused = db.execute_unprepared(sql).await;
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.to_string().contains("append-only")),
            "{sql}: {refused:?}"
        );
    }
    assert_eq!(
        count(
            &db,
            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM ledger_entries"
        )
        .await,
        4,
        "clearing, host, platform, fund: all still there"
    );
}

in_both_modes!(a_refund_too_small_to_reach_the_fund_leaves_no_empty_entry_on_its_public_list);
/// A refund of one fen takes nothing back from the welfare fund's share
/// (it rounds to 0.00): the ledger keeps its leg, the public list of the
/// fund's entries and its totals by region show nothing for it.
async fn a_refund_too_small_to_reach_the_fund_leaves_no_empty_entry_on_its_public_list(
    settings: Settings,
) {
    let app = spawn_app_with(settings).await;
    let id = awaiting(&app, "one-fen").await;
    assert!(app.pay(&id, "tok_success", "pay").await["errors"].is_null());
    app.wait_for_status(&id, "CONFIRMED").await;
    let admin = app.admin_token().await;
    let refunded = app
        .graphql_as(
            Some(&admin),
            REFUND,
            json!({ "b": id, "a": "0.01", "k": "one-fen" }),
        )
        .await;
    assert_eq!(
        refunded["data"]["refundPayment"]["split"]["fund"]["amount"], "0.00",
        "{refunded}"
    );
    let fund = app
        .graphql(
            "{ welfareFund { balance { amount } entries(first: 100) { totalCount edges { node { amount { amount } } } }
                             byRegion { amount { amount } } } }",
            json!({}),
        )
        .await;
    let fund = &fund["data"]["welfareFund"];
    let entries: Vec<&str> = fund["entries"]["edges"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["node"]["amount"]["amount"].as_str())
        .collect();
    assert_eq!(entries.len(), 1, "the capture's share alone: {fund}");
    assert!(!entries.contains(&"0.00"), "{fund}");
    assert_eq!(fund["entries"]["totalCount"], 1, "{fund}");
    assert_eq!(
        fund["byRegion"][0]["amount"], fund["balance"],
        "one region, all of the balance: {fund}"
    );
}
