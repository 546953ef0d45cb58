//! A release adds columns while the previous one still runs: every part
//! keeps working when a migration adds columns to its tables, because its
//! statements name their columns. (`SELECT *` or `RETURNING *` prepared on
//! a connection is refused by PostgreSQL once the table has another column,
//! "cached plan must not change result type", until the connection goes:
//! an upgrade run with the previous release's payment left a refund request
//! dead-lettered. One connection per pool here, so the statements run
//! before the change are the ones run after it.)

mod common;

use chrono::Days;
use common::{TestApp, spawn_app_with, test_settings, tomorrow};
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};
use shared::config::Settings;

/// Asserts `body` has no errors; its `data`.
fn data(body: Value) -> Value {
    assert!(body["errors"].is_null(), "{body}");
    body["data"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_part_keeps_working_when_its_tables_gain_columns() {
    let app = spawn_app_with(Settings {
        db_max_connections: 1,
        ..test_settings()
    })
    .await;
    let admin = app.admin_token().await;
    let pair = app.pair("110108", "150430").await;
    let homestay = app.homestay(4).await;
    let room_type = homestay.room_type_id.to_string();
    let chifeng = app.region_admin("chifeng@example.cn", "150400").await;
    let applied = data(
        app.graphql_as(
            Some(&chifeng),
            "mutation($l: ID!) { applyForCertification(listingId: $l,
                statement: \"合作社带动12户脱贫户参与接待\") { id } }",
            json!({ "l": homestay.homestay_id.to_string() }),
        )
        .await,
    );
    let certification = applied["applyForCertification"]["id"].clone();
    data(
        app.graphql_as(
            Some(&admin),
            "mutation($c: ID!) { acceptForPublicNotice(certificationId: $c) { state } }",
            json!({ "c": certification }),
        )
        .await,
    );
    let agency = data(
        app.graphql_as(
            Some(&admin),
            "mutation { createAgency(name: \"草原行\", homeRegionCode: \"110105\",
                commissionBasisPoints: 500) { id } }",
            json!({}),
        )
        .await,
    )["createAgency"]["id"]
        .clone();
    let client = data(
        app.graphql_as(
            Some(&admin),
            "mutation($a: ID!) { createApiClient(agencyId: $a, name: \"订票系统\") {
                clientId clientSecret } }",
            json!({ "a": agency }),
        )
        .await,
    )["createApiClient"]
        .clone();

    // Each part's reads and writes: a booking made, paid, confirmed,
    // credited, refunded in part and read back every way; the catalogue's
    // regions and certifications; the pairs; accounts, agencies and API
    // clients. `round` bookings confirmed so far.
    let work = |round: usize| {
        let (app, admin, chifeng) = (&app, admin.clone(), chifeng.clone());
        let (certification, agency, client) =
            (certification.clone(), agency.clone(), client.clone());
        let room_type = room_type.clone();
        let pair = pair.id.to_string();
        async move {
            let key = format!("round-{round}");
            let check_in = tomorrow() + Days::new(u64::try_from(round).expect("round"));
            let id = TestApp::id_of(&app.create_booking(&room_type, check_in, 1, &key).await);
            // The create retried: read back by its key.
            let again = app.create_booking(&room_type, check_in, 1, &key).await;
            assert_eq!(TestApp::id_of(&again), id);
            app.wait_for_status(&id, "AWAITING_PAYMENT").await;
            assert!(app.pay(&id, "tok_success", &key).await["errors"].is_null());
            app.wait_for_status(&id, "CONFIRMED").await;
            data(
                app.graphql_as(
                    Some(&admin),
                    "mutation($b: ID!, $k: String!) { refundPayment(bookingId: $b,
                        amount: \"10.00\", reason: \"投诉\", idempotencyKey: $k) { status } }",
                    json!({ "b": id, "k": key }),
                )
                .await,
            );
            app.wait_for_booking(&id, "the refund", |b| b["refunded"]["amount"] == "10.00")
                .await;
            let mine = data(
                app.graphql(
                    "query($b: ID!) {
                        booking(id: $b) { guests { name } contact { phone } }
                        newest: myBookings(first: 5) { totalCount edges { node { id } } }
                        byDay: myBookings(first: 5, orderBy: STARTS_ON) { edges { node { id } } }
                    }",
                    json!({ "b": id }),
                )
                .await,
            );
            assert_eq!(mine["booking"]["guests"][0]["name"], "张三", "{mine}");
            assert_eq!(mine["newest"]["totalCount"], round, "{mine}");
            assert_eq!(
                mine["byDay"]["edges"].as_array().map(Vec::len),
                Some(round),
                "{mine}"
            );
            let catalogue = data(
                app.graphql_as(
                    Some(&chifeng),
                    "query($l: ID!) {
                        regions(parentCode: \"150400\") { code }
                        poor: regions(parentCode: \"150000\", povertyOnly: true) { code }
                        certifications(listingId: $l) { totalCount edges { node { state } } }
                    }",
                    json!({ "l": homestay.homestay_id.to_string() }),
                )
                .await,
            );
            assert!(
                catalogue["regions"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|r| r["code"] == "150430")),
                "{catalogue}"
            );
            assert_eq!(catalogue["certifications"]["totalCount"], 1);
            let objector = app
                .register(&format!("objector{round}@example.cn"), "150430")
                .await;
            let objection = app
                .graphql_as(
                    Some(&objector),
                    "mutation($c: ID!, $t: String!) { objectToCertification(certificationId: $c,
                        text: $t) { id } }",
                    json!({ "c": certification, "t": format!("第{round}条意见") }),
                )
                .await;
            assert!(objection["errors"].is_null(), "{objection}");
            let pairs = data(
                app.graphql(
                    "query($p: ID!) {
                        partnerships(regionCode: \"110108\") { totalCount }
                        partnership(id: $p) { sponsor { code } agreements { title } }
                    }",
                    json!({ "p": pair }),
                )
                .await,
            );
            assert_eq!(pairs["partnership"]["sponsor"]["code"], "110108", "{pairs}");
            // Partnership's facts of every booking so far, the refund too.
            app.wait_for_partnership_facts("150430", |facts| {
                facts.len() == round && facts.iter().all(|f| f.refunded.gross.0 == 1_000)
            })
            .await;
            let agencies = data(
                app.graphql_as(
                    Some(&admin),
                    "query($a: ID!) {
                        agencies(first: 5) { edges { node { id } } }
                        agency(id: $a) { apiClients { clientId } staff { email } }
                    }",
                    json!({ "a": agency }),
                )
                .await,
            );
            assert_eq!(
                agencies["agency"]["apiClients"][0]["clientId"], client["clientId"],
                "{agencies}"
            );
            let token = data(
                app.graphql_as(
                    None,
                    "mutation($c: String!, $s: String!) { apiClientToken(clientId: $c,
                        clientSecret: $s) { account { role } } }",
                    json!({ "c": client["clientId"], "s": client["clientSecret"] }),
                )
                .await,
            );
            assert_eq!(token["apiClientToken"]["account"]["role"], "AGENCY");
            assert_eq!(
                app.login("traveler@example.cn").await["account"]["role"],
                "TRAVELER"
            );
            let me = data(app.graphql("{ me { email } }", json!({})).await);
            assert_eq!(me["me"]["email"], "traveler@example.cn");
        }
    };
    work(1).await;
    for (service, tables) in [
        ("booking", &["bookings"][..]),
        ("inventory", &["regions", "holds", "certifications"]),
        (
            "partnership",
            &["partnerships", "agreements", "booking_facts"],
        ),
        ("gateway", &["accounts", "agencies", "api_clients"]),
    ] {
        let db = app.service_db(service).await;
        for table in tables {
            db.execute_unprepared(&format!(
                "ALTER TABLE {table} ADD COLUMN later_release INTEGER"
            ))
            .await
            .unwrap_or_else(|e| panic!("{service}.{table}: {e}"));
        }
    }
    work(2).await;
}

/// Payment's tables too (the part whose upgrade lost money).
#[tokio::test]
async fn payment_keeps_working_when_its_tables_gain_columns() {
    let app = spawn_app_with(Settings {
        db_max_connections: 1,
        ..test_settings()
    })
    .await;
    let id = app.confirmed_booking(9).await;
    let admin = app.admin_token().await;
    let money_work = |key: &'static str| {
        let (app, admin, id) = (&app, admin.clone(), id.clone());
        async move {
            let refund = app
                .graphql_as(
                    Some(&admin),
                    "mutation($b: ID!, $k: String!) { refundPayment(bookingId: $b, amount: \"10.00\",
                        reason: \"投诉\", idempotencyKey: $k) { status } }",
                    json!({ "b": id, "k": key }),
                )
                .await;
            assert!(refund["errors"].is_null(), "{refund}");
            let read = app
                .graphql_as(
                    Some(&admin),
                    "query($b: ID!) { booking(id: $b) { refunds { status amount { amount } } }
                       reconciliationLog(first: 5) { totalCount } }",
                    json!({ "b": id }),
                )
                .await;
            assert!(read["errors"].is_null(), "{read}");
            read["data"]["booking"]["refunds"]
                .as_array()
                .map_or(0, Vec::len)
        }
    };
    assert_eq!(money_work("before").await, 1);
    let db = app.service_db("payment").await;
    for table in ["payments", "refunds", "reconciliation_log"] {
        db.execute_unprepared(&format!(
            "ALTER TABLE {table} ADD COLUMN later_release INTEGER"
        ))
        .await
        .expect("column added");
    }
    assert_eq!(money_work("after").await, 2);
}
