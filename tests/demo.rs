//! `duikou seed --demo` on the real servers: the demonstration catalogue,
//! partnerships and accounts, usable at once, created once.

mod common;

use common::{spawn_app_with, test_settings, tomorrow};
use duikou::{App, Part};
use gateway::identity::{DEMO_PASSWORD, DEMO_TRAVELER};
use serde_json::{Value, json};

#[tokio::test]
async fn the_demo_seed_gives_a_bookable_homestay_partnerships_and_accounts_once() {
    let mut settings = test_settings();
    settings.demo_data = Some(true);
    settings.seed_demo_accounts = true;
    let app = spawn_app_with(settings.clone()).await;
    let accounts = app
        .app
        .demo_accounts
        .clone()
        .expect("demo accounts created");

    let login = app
        .graphql_as(
            None,
            "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { account { role homeRegionCode } } }",
            json!({ "e": DEMO_TRAVELER, "p": DEMO_PASSWORD }),
        )
        .await;
    assert_eq!(
        login["data"]["login"]["account"],
        json!({ "role": "TRAVELER", "homeRegionCode": "110108" }),
        "{login}"
    );
    let agency = app
        .graphql_as(
            None,
            "mutation($c: String!, $s: String!) { apiClientToken(clientId: $c, clientSecret: $s) { account { role } } }",
            json!({ "c": accounts.client_id, "s": accounts.client_secret }),
        )
        .await;
    assert_eq!(
        agency["data"]["apiClientToken"]["account"]["role"], "AGENCY",
        "{agency}"
    );

    let offers = app
        .graphql_as(
            None,
            "query($in: Date!, $out: Date!) { searchHomestays(regionCode: \"150430\", checkIn: $in, checkOut: $out, guests: 2) { edges { node { homestayName } } } }",
            json!({ "in": tomorrow().to_string(), "out": (tomorrow() + chrono::Duration::days(2)).to_string() }),
        )
        .await;
    let name = offers["data"]["searchHomestays"]["edges"][0]["node"]["homestayName"]
        .as_str()
        .unwrap_or_default();
    assert!(name.starts_with("[演示]"), "{offers}");
    // The demo routes: 首都—草原 is found by the prefecture it visits, with
    // weekly departures on sale.
    let routes = app
        .graphql_as(
            None,
            "query($from: Date!, $to: Date!) { searchRoutes(regionCode: \"150400\", from: $from, to: $to, travelers: 2) { edges { node { title departures { seatsLeft } } } } }",
            json!({ "from": tomorrow().to_string(), "to": (tomorrow() + chrono::Duration::days(60)).to_string() }),
        )
        .await;
    let route = &routes["data"]["searchRoutes"]["edges"][0]["node"];
    assert!(
        route["title"]
            .as_str()
            .is_some_and(|t| t.starts_with("[演示] 首都—草原")),
        "{routes}"
    );
    assert!(
        route["departures"]
            .as_array()
            .is_some_and(|d| d.len() >= 6 && d.iter().all(|d| d["seatsLeft"] == 30)),
        "{routes}"
    );
    // Two demo listings went through certification: 黄岗 and 首都—草原.
    let board = app
        .graphql_as(
            None,
            "{ certifications(state: CERTIFIED) { edges { node { listingKind listingTitle } } } }",
            json!({}),
        )
        .await;
    let mut kinds: Vec<String> = board["data"]["certifications"]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("{board}"))
        .iter()
        .map(|e| e["node"]["listingKind"].as_str().unwrap_or("?").to_owned())
        .collect();
    kinds.sort();
    assert_eq!(kinds, ["HOMESTAY", "ROUTE"], "{board}");
    let pairs = app
        .graphql_as(
            None,
            "{ partnerships(regionCode: \"110000\") { totalCount edges { node { demo agreements { title } } } } }",
            json!({}),
        )
        .await;
    assert_eq!(pairs["data"]["partnerships"]["totalCount"], 6, "{pairs}");
    let pairs: Vec<Value> = pairs["data"]["partnerships"]["edges"]
        .as_array()
        .map(|edges| edges.iter().map(|e| e["node"].clone()).collect())
        .unwrap_or_default();
    assert_eq!(pairs.len(), 6, "{pairs:?}");
    assert!(pairs.iter().all(|p| p["demo"] == true));
    assert!(pairs.iter().any(|p| {
        p["agreements"][0]["title"]
            .as_str()
            .is_some_and(|t| t.contains("京蒙旅游扶贫协作框架协议"))
    }));

    // Seeding again adds nothing and shows no secret.
    let again = App::start(settings, Part::All).await.expect("starts again");
    assert!(again.demo_accounts.is_none());
    again.stop().await;
    let pairs = app
        .graphql_as(None, "{ partnerships { totalCount } }", json!({}))
        .await;
    assert_eq!(pairs["data"]["partnerships"]["totalCount"], 6, "{pairs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_on_empty_databases_seed_the_demo_once() {
    let mut settings = test_settings();
    settings.demo_data = Some(true);
    // Two inventory and two partnership replicas at the same moment.
    let (a, b, c, d) = tokio::join!(
        App::start(settings.clone(), Part::Inventory),
        App::start(settings.clone(), Part::Inventory),
        App::start(settings.clone(), Part::Partnership),
        App::start(settings.clone(), Part::Partnership),
    );
    let parts: Vec<App> = [a, b, c, d]
        .into_iter()
        .map(|p| p.expect("every replica starts"))
        .collect();
    let mut app = common::spawn_parts(settings, &[Part::Gateway]).await;
    app.parts.extend(parts);
    let n = |db: sea_orm::DatabaseConnection, sql: &'static str| async move {
        common::count_of(&db, sql, vec![]).await
    };
    let inventory = app.service_db("inventory").await;
    let partnership = app.service_db("partnership").await;
    assert_eq!(
        n(
            inventory.clone(),
            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM homestays"
        )
        .await,
        3
    );
    assert_eq!(
        n(
            inventory,
            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM routes"
        )
        .await,
        3
    );
    assert_eq!(
        n(
            partnership,
            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM partnerships"
        )
        .await,
        6
    );
}

/// Embedded with the demo on, the demo accounts (their passwords are in
/// the README) are created only when the gateway listens on loopback: the
/// image listens on 0.0.0.0, where they would hand anyone the demo region
/// admin. `seed --demo` (asked for) still creates them.
#[tokio::test]
async fn an_embedded_gateway_beyond_loopback_creates_no_demo_accounts() {
    let mut settings = common::embedded_settings();
    settings.gateway_addr = "0.0.0.0:0".into();
    let app = spawn_app_with(settings).await;
    assert!(app.app.demo_accounts.is_none(), "demo accounts created");
    let login = app
        .graphql_as(
            None,
            "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { account { role } } }",
            json!({ "e": DEMO_TRAVELER, "p": DEMO_PASSWORD }),
        )
        .await;
    assert!(login["data"].is_null(), "{login}");

    let loopback = spawn_app_with(common::embedded_settings()).await;
    assert!(loopback.app.demo_accounts.is_some(), "on loopback they are");
}
