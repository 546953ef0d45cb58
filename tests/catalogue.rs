//! The catalogue through the gateway: region admins list homestays and set
//! their calendars (only in their own region); travelers search for stays
//! bookable for every night, cheapest first, with the total.

mod common;

use chrono::Duration as Days;
use common::{TestApp, code, spawn_app, tomorrow};
use serde_json::{Value, json};

const SEARCH: &str = "query($r: ID, $in: Date!, $out: Date!, $g: Int!, $rooms: Int, $first: Int, $after: String) {
    searchHomestays(regionCode: $r, checkIn: $in, checkOut: $out, guests: $g, rooms: $rooms, first: $first, after: $after) {
        edges { cursor node { homestayName roomTypeId nights roomsLeft total { amount } } }
        pageInfo { hasNextPage endCursor } } }";

fn window(region: &str, nights: i64, guests: i64, rooms: i64) -> Value {
    json!({ "r": region, "in": tomorrow().to_string(), "out": (tomorrow() + Days::days(nights)).to_string(),
            "g": guests, "rooms": rooms, "first": 10 })
}

fn totals(body: &Value) -> Vec<String> {
    body["data"]["searchHomestays"]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("no offers in {body}"))
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["node"]["homestayName"].as_str().unwrap_or("?"),
                e["node"]["total"]["amount"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

/// A homestay listed through the API by the admin of 赤峰市: 3 rooms at 300.
async fn listed_by_admin(app: &TestApp, admin: &str) -> String {
    let created = app
        .graphql_as(
            Some(admin),
            "mutation($i: HomestayInput!) { createHomestay(input: $i) { roomTypeId } }",
            json!({ "i": { "hostName": "敖汉旗牧民合作社", "regionCode": "150430", "name": "草原人家",
                           "roomType": { "name": "家庭房", "beds": 2, "maxGuests": 3 },
                           "cancellationPolicy": [{ "daysBefore": 3, "refundPercent": 100 }] } }),
        )
        .await;
    let room_type = created["data"]["createHomestay"]["roomTypeId"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"))
        .to_owned();
    let set = app
        .graphql_as(
            Some(admin),
            "mutation($rt: ID!, $from: Date!, $to: Date!) { setRoomCalendar(roomTypeId: $rt, from: $from, to: $to, rooms: 3, price: \"300.00\") }",
            json!({ "rt": room_type, "from": tomorrow().to_string(), "to": (tomorrow() + Days::days(10)).to_string() }),
        )
        .await;
    assert_eq!(set["data"]["setRoomCalendar"], 10, "{set}");
    room_type
}

#[tokio::test]
async fn a_search_finds_stays_bookable_every_night_cheapest_first_and_pages() {
    let app = spawn_app().await;
    let chifeng = app.region_admin("chifeng@example.cn", "150400").await;
    listed_by_admin(&app, &chifeng).await;
    let two_rooms = app.homestay(2).await.room_type_id.to_string(); // 测试蒙古包, 380 a night

    let both = app
        .graphql_as(None, SEARCH, window("150400", 2, 2, 1))
        .await;
    assert_eq!(
        totals(&both),
        ["草原人家 600.00", "测试蒙古包 760.00"],
        "{both}"
    );
    // Three rooms: only 草原人家 has them; five guests in two rooms: only 3-guest rooms fit.
    assert_eq!(
        totals(
            &app.graphql_as(None, SEARCH, window("150430", 2, 1, 3))
                .await
        ),
        ["草原人家 1800.00"]
    );
    assert_eq!(
        totals(
            &app.graphql_as(None, SEARCH, window("150000", 2, 5, 2))
                .await
        ),
        ["草原人家 1200.00"]
    );
    assert!(
        totals(
            &app.graphql_as(None, SEARCH, window("110000", 2, 1, 1))
                .await
        )
        .is_empty()
    );
    // Past the calendar (10 nights set for one, 60 for the other).
    assert_eq!(
        totals(
            &app.graphql_as(None, SEARCH, window("150400", 11, 1, 1))
                .await
        ),
        ["测试蒙古包 4180.00"]
    );

    // Paging: one at a time, in the same order.
    let mut vars = window("150400", 2, 2, 1);
    vars["first"] = json!(1);
    let page1 = app.graphql_as(None, SEARCH, vars.clone()).await;
    assert_eq!(totals(&page1), ["草原人家 600.00"]);
    assert_eq!(
        page1["data"]["searchHomestays"]["pageInfo"]["hasNextPage"],
        true
    );
    vars["after"] = page1["data"]["searchHomestays"]["pageInfo"]["endCursor"].clone();
    let page2 = app.graphql_as(None, SEARCH, vars).await;
    assert_eq!(totals(&page2), ["测试蒙古包 760.00"]);
    assert_eq!(
        page2["data"]["searchHomestays"]["pageInfo"]["hasNextPage"],
        false
    );

    // Both rooms of 测试蒙古包 taken on the second night: no longer bookable for the stay.
    for key in ["a", "b"] {
        let id = TestApp::id_of(
            &app.create_booking(&two_rooms, tomorrow() + Days::days(1), 1, key)
                .await,
        );
        app.wait_for_status(&id, "AWAITING_PAYMENT").await;
    }
    assert_eq!(
        totals(
            &app.graphql_as(None, SEARCH, window("150400", 2, 2, 1))
                .await
        ),
        ["草原人家 600.00"]
    );
    assert_eq!(
        totals(
            &app.graphql_as(None, SEARCH, window("150400", 1, 2, 1))
                .await
        ),
        ["草原人家 300.00", "测试蒙古包 380.00"],
        "the first night alone is still free"
    );

    let mut bad = window("150400", 2, 2, 1);
    bad["out"] = bad["in"].clone();
    assert_eq!(
        code(&app.graphql_as(None, SEARCH, bad).await),
        "BAD_USER_INPUT"
    );
    let mut bad_cursor = window("150400", 2, 2, 1);
    bad_cursor["after"] = json!("not-a-cursor");
    assert_eq!(
        code(&app.graphql_as(None, SEARCH, bad_cursor).await),
        "BAD_USER_INPUT"
    );
}

#[tokio::test]
async fn only_admins_of_the_region_manage_its_listings() {
    let app = spawn_app().await;
    let chifeng = app.region_admin("chifeng@example.cn", "150400").await;
    let room_type = listed_by_admin(&app, &chifeng).await;
    let create = "mutation($i: HomestayInput!) { createHomestay(input: $i) { roomTypeId } }";
    let elsewhere = json!({ "i": { "hostName": "x", "regionCode": "150921", "name": "y", "roomType": { "name": "z", "beds": 1, "maxGuests": 1 } } });
    assert_eq!(
        code(
            &app.graphql_as(Some(&chifeng), create, elsewhere.clone())
                .await
        ),
        "FORBIDDEN"
    );
    assert_eq!(
        code(&app.graphql(create, elsewhere.clone()).await),
        "FORBIDDEN",
        "a traveler"
    );
    assert_eq!(
        code(&app.graphql_as(None, create, elsewhere).await),
        "UNAUTHENTICATED"
    );
    let beijing = app.region_admin("beijing@example.cn", "110000").await;
    let calendar = "mutation($rt: ID!, $from: Date!, $to: Date!) { setRoomCalendar(roomTypeId: $rt, from: $from, to: $to, rooms: 1, price: \"1.00\") }";
    let vars = json!({ "rt": room_type, "from": tomorrow().to_string(), "to": (tomorrow() + Days::days(1)).to_string() });
    assert_eq!(
        code(&app.graphql_as(Some(&beijing), calendar, vars.clone()).await),
        "FORBIDDEN"
    );
    let admin = app.admin_token().await;
    let by_platform = app.graphql_as(Some(&admin), calendar, vars).await;
    assert_eq!(by_platform["data"]["setRoomCalendar"], 1, "{by_platform}");
    let bad_policy = json!({ "i": { "hostName": "x", "regionCode": "150430", "name": "y", "roomType": { "name": "z", "beds": 1, "maxGuests": 1 },
                                    "cancellationPolicy": [{ "daysBefore": 1, "refundPercent": 100 }, { "daysBefore": 7, "refundPercent": 50 }] } });
    assert_eq!(
        code(&app.graphql_as(Some(&chifeng), create, bad_policy).await),
        "BAD_USER_INPUT"
    );
}
