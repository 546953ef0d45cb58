//! Routes (旅游线路) and departures through the gateway on the real servers:
//! a region admin writes, publishes and sells a route; travelers find it by
//! any region it visits and book seats, which never oversell.

mod common;

use chrono::{Duration, NaiveDate};
use common::{TestApp, code, spawn_app, tomorrow};
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};

const CREATE_ROUTE: &str =
    "mutation($input: RouteInput!) { createRoute(input: $input) { routeId } }";
const ADD_DEPARTURE: &str = "mutation($r: ID!, $d: Date!, $s: Int!, $c: Int!, $p: String) {
    addDeparture(routeId: $r, startsOn: $d, seats: $s, cutoffDays: $c, pricePerPerson: $p) {
        id seats seatsLeft pricePerPerson { amount } lastBookingDay } }";
const PUBLISH: &str =
    "mutation($r: ID!, $p: Boolean!) { publishRoute(routeId: $r, published: $p) { status } }";

fn grassland_route() -> Value {
    json!({
        "hostName": "克什克腾旗草原旅游专业合作社",
        "regionCode": "150425",
        "titleZh": "首都—草原 五日游",
        "titleEn": "Capital to Grassland, five days",
        "descriptionZh": "乘旅游专列从北京到赤峰",
        "descriptionEn": "A tourist train from Beijing to Chifeng",
        "itinerary": [
            { "day": 1, "title": "北京—赤峰", "regionCodes": ["110105", "150400"] },
            { "day": 2, "title": "贡格尔草原", "titleEn": "Gongger Grassland", "regionCodes": ["150425"] },
            { "day": 3, "title": "敖汉旗 兴隆洼", "regionCodes": ["150430"] }
        ],
        "pricePerPerson": "2980.00"
    })
}

/// A traveler whose passport number follows from the name (one number per person).
fn traveler(name: &str) -> Value {
    let number = name
        .chars()
        .fold(0u64, |h, c| (h * 31 + u64::from(c)) % 100_000_000);
    json!({ "name": name, "idType": "PASSPORT", "idNumber": format!("E{number:08}") })
}

/// A published route with one departure `days` ahead; (route id, departure id).
async fn route_on_sale(
    app: &TestApp,
    admin: &str,
    days: i64,
    seats: i32,
    cutoff: i32,
) -> (String, String) {
    let created = app
        .graphql_as(
            Some(admin),
            CREATE_ROUTE,
            json!({ "input": grassland_route() }),
        )
        .await;
    let route = created["data"]["createRoute"]["routeId"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"))
        .to_owned();
    let day = tomorrow() + Duration::days(days - 1);
    let departure = app
        .graphql_as(
            Some(admin),
            ADD_DEPARTURE,
            json!({ "r": route, "d": day.to_string(), "s": seats, "c": cutoff }),
        )
        .await;
    let departure = departure["data"]["addDeparture"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{departure}"))
        .to_owned();
    let published = app
        .graphql_as(Some(admin), PUBLISH, json!({ "r": route, "p": true }))
        .await;
    assert_eq!(
        published["data"]["publishRoute"]["status"], "PUBLISHED",
        "{published}"
    );
    (route, departure)
}

async fn book_seats(app: &TestApp, departure: &str, travelers: &[&str], key: &str) -> Value {
    app.graphql(
        "mutation($input: CreateBookingInput!, $key: String!) {
            createBooking(input: $input, idempotencyKey: $key) { id status } }",
        json!({
            "key": key,
            "input": {
                "departureId": departure,
                "travelers": travelers.iter().map(|t| traveler(t)).collect::<Vec<_>>(),
                "contact": { "name": "张三", "phone": "13800138000" }
            }
        }),
    )
    .await
}

async fn seats_left(app: &TestApp, route: &str) -> Value {
    let body = app
        .graphql_as(
            None,
            "query($id: ID!) { route(id: $id) { departures { seatsLeft } } }",
            json!({ "id": route }),
        )
        .await;
    body["data"]["route"]["departures"][0]["seatsLeft"].clone()
}

async fn search(app: &TestApp, vars: Value) -> Value {
    let from = tomorrow();
    let mut all =
        json!({ "from": from.to_string(), "to": (from + Duration::days(60)).to_string() });
    if let (Some(all), Some(extra)) = (all.as_object_mut(), vars.as_object()) {
        all.extend(extra.clone());
    }
    app.graphql_as(
        None,
        "query($region: ID, $from: Date!, $to: Date!, $travelers: Int = 1, $max: String, $text: String) {
            searchRoutes(regionCode: $region, from: $from, to: $to, travelers: $travelers,
                         maxPrice: $max, text: $text) {
                edges { node { id title(lang: EN) departures { seatsLeft } } } } }",
        all,
    )
    .await
}

fn found(body: &Value) -> Vec<String> {
    body["data"]["searchRoutes"]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .filter_map(|e| e["node"]["id"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn a_region_admin_writes_publishes_and_sells_a_route_found_by_any_region_it_visits() {
    let app = spawn_app().await;
    let admin = app.region_admin("chifeng@example.cn", "150400").await;

    // A draft is invisible to travelers and to search.
    let created = app
        .graphql_as(
            Some(&admin),
            CREATE_ROUTE,
            json!({ "input": grassland_route() }),
        )
        .await;
    let route = created["data"]["createRoute"]["routeId"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"))
        .to_owned();
    let anonymous = app
        .graphql_as(
            None,
            "query($id: ID!) { route(id: $id) { id } }",
            json!({ "id": route }),
        )
        .await;
    assert_eq!(anonymous["data"]["route"], Value::Null, "{anonymous}");
    let day = tomorrow() + Duration::days(20);
    let departure = app
        .graphql_as(
            Some(&admin),
            ADD_DEPARTURE,
            json!({ "r": route, "d": day.to_string(), "s": 4, "c": 3, "p": "2680.00" }),
        )
        .await;
    assert_eq!(
        departure["data"]["addDeparture"],
        json!({ "id": departure["data"]["addDeparture"]["id"], "seats": 4, "seatsLeft": 4,
                "pricePerPerson": { "amount": "2680.00" },
                "lastBookingDay": (day - Duration::days(3)).to_string() }),
        "{departure}"
    );
    let departure = departure["data"]["addDeparture"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(found(&search(&app, json!({ "region": "150400" })).await).is_empty());
    // A draft's departure is not there for a traveler: no booking is
    // taken, and the answer is an unknown id's, word for word.
    let draft = book_seats(&app, &departure, &["张三"], "draft").await;
    let unknown = book_seats(&app, &uuid::Uuid::now_v7().to_string(), &["张三"], "x").await;
    assert_eq!(code(&draft), "NOT_FOUND", "{draft}");
    assert_eq!(
        draft["errors"][0]["message"],
        unknown["errors"][0]["message"]
    );
    app.graphql_as(Some(&admin), PUBLISH, json!({ "r": route, "p": true }))
        .await;

    // Found by the banner it visits on day 3, by its prefecture, by Beijing
    // (day 1), by words, under a price cap; not elsewhere or too dear.
    for vars in [
        json!({ "region": "150430" }),
        json!({ "region": "150400" }),
        json!({ "region": "110000" }),
        json!({ "text": "TOURIST train" }),
        // Words anywhere, in any order, in either language.
        json!({ "text": "chifeng Tourist" }),
        json!({ "text": "草原 首都 beijing" }),
        json!({ "max": "2680" }),
        json!({ "travelers": 4 }),
    ] {
        assert_eq!(
            found(&search(&app, vars.clone()).await),
            vec![route.clone()],
            "{vars}"
        );
    }
    for vars in [
        json!({ "region": "522631" }),
        json!({ "max": "2679.99" }),
        json!({ "travelers": 5 }),
        json!({ "text": "蒙古包" }),
        json!({ "text": "train 蒙古包" }),
        // LIKE's wildcards are matched as themselves, not as "anything".
        json!({ "text": "%" }),
        json!({ "text": "_" }),
    ] {
        assert!(
            found(&search(&app, vars.clone()).await).is_empty(),
            "{vars}"
        );
    }
    let negative = search(&app, json!({ "max": "-3" })).await;
    assert_eq!(code(&negative), "BAD_USER_INPUT", "{negative}");
    // More travelers than one booking takes (50) finds nothing bookable;
    // none, or fewer, is refused in the same words.
    for travelers in [51, 0, -1] {
        let refused = search(&app, json!({ "travelers": travelers })).await;
        common::assert_error(
            &refused,
            "BAD_USER_INPUT",
            "travelers: 1 to 50, as one booking takes",
        );
    }
    let en = search(&app, json!({ "region": "150425" })).await;
    assert_eq!(
        en["data"]["searchRoutes"]["edges"][0]["node"]["title"],
        "Capital to Grassland, five days"
    );
    // An itinerary day in English where one was given, else the Chinese.
    let days = app
        .graphql(
            "query($r: ID!) { route(id: $r) { itinerary { title(lang: EN) titleZh titleEn } } }",
            json!({ "r": route }),
        )
        .await;
    assert_eq!(
        days["data"]["route"]["itinerary"],
        json!([
            { "title": "北京—赤峰", "titleZh": "北京—赤峰", "titleEn": "" },
            { "title": "Gongger Grassland", "titleZh": "贡格尔草原", "titleEn": "Gongger Grassland" },
            { "title": "敖汉旗 兴隆洼", "titleZh": "敖汉旗 兴隆洼", "titleEn": "" }
        ]),
        "{days}"
    );

    // Two travelers book, pay, and hold two seats; cancelling gives them back.
    let booked = book_seats(&app, &departure, &["张三", "李四"], "route-1").await;
    let id = TestApp::id_of(&booked);
    assert_eq!(
        app.wait_until_held_or_rejected(&id).await,
        "AWAITING_PAYMENT"
    );
    let held = app.wait_for_status(&id, "AWAITING_PAYMENT").await;
    assert_eq!(held["total"]["amount"], "5360.00", "{held}");
    assert_eq!(
        app.what_was_booked(&id).await,
        json!({ "roomTypeId": null, "checkIn": null, "checkOut": null, "rooms": null,
                "departureId": departure, "startsOn": day.to_string() })
    );
    assert_eq!(seats_left(&app, &route).await, json!(2));
    let paid = app.pay(&id, "tok_success", "pay-route-1").await;
    assert!(paid["errors"].is_null(), "{paid}");
    app.wait_for_status(&id, "CONFIRMED").await;
    let quote = app
        .graphql(
            "query($id: ID!) { cancellationQuote(bookingId: $id) { daysBefore refundPercent } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(
        quote["data"]["cancellationQuote"],
        json!({ "daysBefore": (day - shared::policy::china_today(chrono::Utc::now())).num_days(),
                "refundPercent": 100 }),
        "{quote}"
    );
    app.cancel(&id, "cancel-route-1").await;
    app.wait_for_status(&id, "CANCELLED").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while seats_left(&app, &route).await != json!(4) {
        assert!(
            std::time::Instant::now() < deadline,
            "seats never came back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // Unpublished (`publishListing` serves routes and homestays alike): no
    // longer found, no longer bookable; only its region's admins read it.
    let off = app
        .graphql_as(
            Some(&admin),
            "mutation($l: ID!) { publishListing(listingId: $l, published: false) { listingKind published } }",
            json!({ "l": route }),
        )
        .await;
    assert_eq!(
        off["data"]["publishListing"],
        json!({ "listingKind": "ROUTE", "published": false }),
        "{off}"
    );
    assert!(found(&search(&app, json!({})).await).is_empty());
    // Not there for a traveler, as a draft's departure above; a booking
    // taken before the gateway heard of the change is REJECTED by its hold.
    let refused = book_seats(&app, &departure, &["王五"], "route-2").await;
    if code(&refused) != "NOT_FOUND" {
        let refused = app
            .wait_for_status(&TestApp::id_of(&refused), "REJECTED")
            .await;
        assert_eq!(refused["refusal"], "NOT_PUBLISHED", "{refused}");
    }
    let read = "query($r: ID!) { route(id: $r) { status } }";
    let admins = app
        .graphql_as(Some(&admin), read, json!({ "r": route }))
        .await;
    assert_eq!(admins["data"]["route"]["status"], "UNPUBLISHED", "{admins}");
    for token in [None, app.token.as_deref()] {
        let others = app.graphql_as(token, read, json!({ "r": route })).await;
        assert_eq!(others["data"]["route"], Value::Null, "{others}");
    }
}

#[tokio::test]
async fn many_travelers_racing_for_a_departure_never_oversell_it() {
    let app = spawn_app().await;
    let admin = app.region_admin("chifeng@example.cn", "150400").await;
    let (route, departure) = route_on_sale(&app, &admin, 30, 5, 1).await;

    // 16 bookings of 1 or 2 travelers race for 5 seats.
    let bookings = futures::future::join_all((0..16).map(|i| {
        let app = &app;
        let departure = departure.clone();
        async move {
            let travelers: &[&str] = if i % 2 == 0 {
                &["甲"]
            } else {
                &["甲", "乙"]
            };
            let body = book_seats(app, &departure, travelers, &format!("race-{i}")).await;
            (travelers.len() as u64, TestApp::id_of(&body))
        }
    }))
    .await;
    let mut seated = 0;
    for (travelers, id) in &bookings {
        if app.wait_until_held_or_rejected(id).await == "AWAITING_PAYMENT" {
            seated += travelers;
        } else {
            let rejected = app.wait_for_status(id, "REJECTED").await;
            let reason = rejected["reason"].as_str().unwrap_or_default();
            assert!(reason.starts_with("SOLD_OUT"), "{rejected}");
            // The seats it names as left are fewer than asked (they were
            // read before the race was lost: "2 seats asked, 3 left").
            let left: u64 = reason
                .split(" left")
                .next()
                .and_then(|r| r.rsplit(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no count in {reason}"));
            assert!(left < *travelers, "{reason}");
        }
    }
    // A refused booking still says what it was for and when, as a held
    // one does (an exploratory run found its startsOn and listing null).
    let read = |id: String| {
        let app = &app;
        async move {
            let body = app
                .graphql(
                    "query($id: ID!) { booking(id: $id) { status startsOn listing { title en: title(lang: EN) listingId } } }",
                    json!({ "id": id }),
                )
                .await;
            body["data"]["booking"].clone()
        }
    };
    let mut seen = Vec::new();
    for (_, id) in &bookings {
        seen.push(read(id.clone()).await);
    }
    let held = seen.iter().find(|b| b["status"] == "AWAITING_PAYMENT");
    let refused = seen.iter().find(|b| b["status"] == "REJECTED");
    if let (Some(held), Some(refused)) = (held, refused) {
        assert!(held["startsOn"].is_string(), "{held}");
        let en = held["listing"]["en"].as_str().unwrap_or_default();
        assert!(en.starts_with("Capital to Grassland"), "in English: {held}");
        assert_eq!(
            held["listing"]["listingId"],
            route.as_str(),
            "the route: {held}"
        );
        assert_eq!(
            (&refused["startsOn"], &refused["listing"]),
            (&held["startsOn"], &held["listing"]),
            "{refused}"
        );
    } else {
        panic!("16 bookings for 5 seats, some held and some refused: {seen:?}");
    }
    // The region's admin lists the held ones, not the refused: those held
    // nothing there, and their travelers are their bookers' alone.
    let listed = app
        .graphql_as(
            Some(&admin),
            "{ regionBookings(first: 50) { edges { node { status } } } }",
            json!({}),
        )
        .await;
    let statuses: Vec<Value> = common::edges(&listed, "regionBookings")
        .iter()
        .map(|e| e["node"]["status"].clone())
        .collect();
    let held = seen
        .iter()
        .filter(|b| b["status"] == "AWAITING_PAYMENT")
        .count();
    assert_eq!(statuses.len(), held, "{listed}");
    assert!(statuses.iter().all(|s| s == "AWAITING_PAYMENT"), "{listed}");
    let left = seats_left(&app, &route).await.as_u64().unwrap_or(99);
    assert!(seated <= 5, "{seated} seats held of 5");
    assert_eq!(seated + left, 5, "held {seated}, left {left}");
    assert!(seated >= 4, "a free seat was refused: held {seated}");
}

#[tokio::test]
async fn bad_route_input_and_late_bookings_get_clear_errors() {
    let app = spawn_app().await;
    let admin = app.region_admin("chifeng@example.cn", "150400").await;

    // Only admins of the route's region write it.
    let traveler = app
        .graphql(CREATE_ROUTE, json!({ "input": grassland_route() }))
        .await;
    assert_eq!(code(&traveler), "FORBIDDEN", "{traveler}");
    let other = app.region_admin("liping@example.cn", "522631").await;
    let elsewhere = app
        .graphql_as(
            Some(&other),
            CREATE_ROUTE,
            json!({ "input": grassland_route() }),
        )
        .await;
    assert_eq!(code(&elsewhere), "FORBIDDEN", "{elsewhere}");

    let mut bad = grassland_route();
    bad["itinerary"] = json!([]);
    let mut gap = grassland_route();
    gap["itinerary"][1]["day"] = json!(5);
    let mut price = grassland_route();
    price["pricePerPerson"] = json!("0");
    let mut region = grassland_route();
    region["itinerary"][0]["regionCodes"] = json!(["990101"]);
    // A route's own region is its host's county or banner, not 赤峰市
    // (its money and impact would be filed under the prefecture).
    let mut prefecture = grassland_route();
    prefecture["regionCode"] = json!("150400");
    let mut twice = grassland_route();
    twice["itinerary"][0]["regionCodes"] = json!(["150430", "150430"]);
    let mut crowded = grassland_route();
    crowded["itinerary"][0]["regionCodes"] = json!([
        "110101", "110102", "110105", "110106", "110107", "110108", "110109", "110111", "110112",
        "110113", "110114"
    ]);
    for (input, says) in [
        (bad, "itinerary"),
        (gap, "itinerary"),
        (price, "pricePerPerson: more than zero"),
        (region, "990101"),
        (prefecture, "regionCode: 150400"),
        (twice, "itinerary day 1: region 150430 is listed twice"),
        (crowded, "itinerary day 1: at most 10 regions"),
    ] {
        let body = app
            .graphql_as(Some(&admin), CREATE_ROUTE, json!({ "input": input }))
            .await;
        assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains(says)),
            "{says}: {body}"
        );
    }

    let (route, _) = route_on_sale(&app, &admin, 30, 5, 1).await;
    let past = NaiveDate::from_ymd_opt(2020, 1, 1).map(|d| d.to_string());
    for (vars, expected) in [
        (
            json!({ "r": route, "d": past, "s": 5, "c": 0 }),
            "BAD_USER_INPUT",
        ),
        (
            json!({ "r": route, "d": "9999-12-31", "s": 5, "c": 0 }),
            "BAD_USER_INPUT",
        ),
        (
            json!({ "r": route, "d": (tomorrow() + Duration::days(29)).to_string(), "s": 5, "c": 0 }),
            "CONFLICT",
        ),
        (
            json!({ "r": route, "d": (tomorrow() + Duration::days(40)).to_string(), "s": 0, "c": 0 }),
            "BAD_USER_INPUT",
        ),
        // Bookings would have closed before today: never on sale.
        (
            json!({ "r": route, "d": (tomorrow() + Duration::days(1)).to_string(), "s": 5, "c": 3 }),
            "BAD_USER_INPUT",
        ),
        (
            json!({ "r": uuid::Uuid::new_v4().to_string(), "d": (tomorrow() + Duration::days(40)).to_string(), "s": 5, "c": 0 }),
            "NOT_FOUND",
        ),
    ] {
        let body = app
            .graphql_as(Some(&admin), ADD_DEPARTURE, vars.clone())
            .await;
        assert_eq!(code(&body), expected, "{vars} → {body}");
    }

    // A departure has its own dates and a seat per traveler: stay fields
    // beside it are refused, not dropped, in a booking and in a quote.
    let (_, departure) = route_on_sale(&app, &admin, 31, 5, 1).await;
    let stay = json!({ "departureId": departure, "checkIn": tomorrow().to_string(),
                       "checkOut": (tomorrow() + Duration::days(1)).to_string(), "rooms": 3 });
    let mut input = stay.clone();
    input["travelers"] = json!([self::traveler("王五")]);
    input["contact"] = json!({ "name": "张三", "phone": "13800138000" });
    let booked = app
        .graphql(
            "mutation($i: CreateBookingInput!) { createBooking(input: $i, idempotencyKey: \"stay\") { id } }",
            json!({ "i": input }),
        )
        .await;
    assert_eq!(code(&booked), "BAD_USER_INPUT", "{booked}");
    let mut input = stay;
    input["travelers"] = json!(1);
    let quoted = app
        .graphql(
            "query($i: BookingQuoteInput!) { bookingQuote(input: $i) { total { amount } } }",
            json!({ "i": input }),
        )
        .await;
    assert_eq!(code(&quoted), "BAD_USER_INPUT", "{quoted}");

    // A departure whose cut-off has passed takes no bookings (the day is
    // moved back in its database, as time would move it).
    let (_, late) = route_on_sale(&app, &admin, 2, 5, 1).await;
    let yesterday = shared::policy::china_today(chrono::Utc::now()) - Duration::days(1);
    app.service_db("inventory")
        .await
        .execute_raw(sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "UPDATE departures SET last_booking_day = $1 WHERE id = $2",
            [
                yesterday.into(),
                uuid::Uuid::parse_str(&late).expect("id").into(),
            ],
        ))
        .await
        .expect("cut-off moved");
    let body = book_seats(&app, &late, &["张三"], "late").await;
    let rejected = app
        .wait_for_status(&TestApp::id_of(&body), "REJECTED")
        .await;
    assert!(
        rejected["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("CUT_OFF")),
        "{rejected}"
    );
    let unknown = book_seats(
        &app,
        &uuid::Uuid::new_v4().to_string(),
        &["张三"],
        "nowhere",
    )
    .await;
    // No booking at all: the departure is not there, and the field is named.
    assert_eq!(code(&unknown), "NOT_FOUND", "{unknown}");
    assert!(
        unknown["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("departureId:")),
        "{unknown}"
    );
}

#[tokio::test]
async fn route_search_pages_by_cursor_earliest_departure_first_without_repeats() {
    let app = spawn_app().await;
    let admin = app.region_admin("chifeng@example.cn", "150400").await;
    let mut routes = Vec::new();
    for days in [30, 10, 20, 40, 50] {
        routes.push((days, route_on_sale(&app, &admin, days, 10, 1).await.0));
    }
    routes.sort();
    let expected: Vec<String> = routes.into_iter().map(|(_, id)| id).collect();
    let page =
        "query($after: String) { searchRoutes(regionCode: \"150425\", first: 2, after: $after) {
        edges { cursor node { id } } pageInfo { hasNextPage endCursor } } }";
    let (mut seen, mut after, mut pages) = (Vec::new(), Value::Null, 0);
    loop {
        let body = app.graphql_as(None, page, json!({ "after": after })).await;
        let connection = &body["data"]["searchRoutes"];
        let edges = connection["edges"]
            .as_array()
            .unwrap_or_else(|| panic!("{body}"));
        assert!(edges.len() <= 2, "{body}");
        seen.extend(
            edges
                .iter()
                .filter_map(|e| e["node"]["id"].as_str().map(str::to_owned)),
        );
        pages += 1;
        if connection["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = connection["pageInfo"]["endCursor"].clone();
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, expected, "every route once, earliest departure first");
    let bad = app
        .graphql_as(None, page, json!({ "after": "not-a-cursor" }))
        .await;
    assert_eq!(code(&bad), "BAD_USER_INPUT", "{bad}");
}

/// A word is found in whichever case it is written, its letters not only
/// ASCII's: on SQLite `LOWER` folded ASCII alone (no "ÜRÜMQI" found
/// "Ürümqi", nor "éclat" "Éclat"), and PostgreSQL's folds letter by
/// letter where the search's Rust folds a word's last Σ to ς. The texts
/// an update writes are found too, and those it replaced no more.
async fn a_word_is_found_in_either_case_whatever_its_letters(settings: shared::config::Settings) {
    let app = common::spawn_app_with(settings).await;
    let admin = app.region_admin("chifeng@example.cn", "150400").await;
    let (route, _) = route_on_sale(&app, &admin, 20, 10, 1).await;
    let updated = app
        .graphql_as(
            Some(&admin),
            "mutation($r: ID!, $i: RouteUpdate!) { updateRoute(routeId: $r, input: $i) { titleEn } }",
            json!({ "r": route, "i": { "titleEn": "Ürümqi Steppe Éclat", "descriptionEn": "ΟΔΟΣ" } }),
        )
        .await;
    assert_eq!(
        updated["data"]["updateRoute"]["titleEn"], "Ürümqi Steppe Éclat",
        "{updated}"
    );
    for text in [
        "ürümqi",
        "ÜRÜMQI",
        "Éclat",
        "éclat steppe",
        "οδος",
        "ΟΔΟΣ",
        "首都",
    ] {
        assert_eq!(
            found(&search(&app, json!({ "text": text })).await),
            vec![route.clone()],
            "{text}"
        );
    }
    for gone in ["Capital", "tourist train"] {
        assert!(
            found(&search(&app, json!({ "text": gone })).await).is_empty(),
            "{gone}"
        );
    }
}

in_both_modes!(a_word_is_found_in_either_case_whatever_its_letters);

/// A route made before the search read its own folded column is found by
/// it after the upgrade: the migration fills the column for the routes
/// there are, by the search's fold (it is undone here and run again).
async fn a_route_made_before_the_search_column_is_found_after_it(
    settings: shared::config::Settings,
) {
    let app = common::spawn_app_with(settings).await;
    let admin = app.region_admin("chifeng@example.cn", "150400").await;
    let (route, _) = route_on_sale(&app, &admin, 20, 10, 1).await;
    let inventory = app.service_db("inventory").await;
    for undo in [
        "ALTER TABLE routes DROP COLUMN search_text",
        "DELETE FROM seaql_migrations WHERE version = 'm20261207_000008_route_search_text'",
    ] {
        inventory.execute_unprepared(undo).await.expect(undo);
    }
    shared::db::migrate::<inventory::storage::Migrator>(&inventory)
        .await
        .expect("migrated again");
    assert_eq!(
        found(&search(&app, json!({ "text": "CAPITAL grassland" })).await),
        vec![route]
    );
}

in_both_modes!(a_route_made_before_the_search_column_is_found_after_it);

/// Bookings between two pages do not move a route: ordered by its first
/// departure with seats enough, a route whose early departure filled came
/// again on a later page (and one whose early departure freed up was
/// skipped). The order counts the departures on sale whatever their seats.
#[tokio::test]
async fn route_search_pages_stay_whole_while_seats_sell_between_them() {
    let app = spawn_app().await;
    let admin = app.region_admin("chifeng@example.cn", "150400").await;
    // A leaves on days 10 and 40, B on day 20, four seats each.
    let (a, a_early) = route_on_sale(&app, &admin, 10, 4, 1).await;
    let later = app
        .graphql_as(
            Some(&admin),
            ADD_DEPARTURE,
            json!({ "r": a, "d": (tomorrow() + Duration::days(39)).to_string(), "s": 4, "c": 1 }),
        )
        .await;
    assert!(later["errors"].is_null(), "{later}");
    let (b, _) = route_on_sale(&app, &admin, 20, 4, 1).await;
    let page = "query($after: String) { searchRoutes(regionCode: \"150425\", travelers: 4, first: 1, after: $after) {
        edges { node { id departures { startsOn } } } pageInfo { hasNextPage endCursor } } }";
    let (mut seen, mut after) = (Vec::new(), Value::Null);
    loop {
        let body = app.graphql_as(None, page, json!({ "after": after })).await;
        let connection = &body["data"]["searchRoutes"];
        for edge in connection["edges"]
            .as_array()
            .unwrap_or_else(|| panic!("{body}"))
        {
            seen.push(edge["node"]["id"].as_str().unwrap_or_default().to_owned());
        }
        if seen.len() == 1 {
            // Someone books a seat of A's first departure: four no longer fit.
            let booked = book_seats(&app, &a_early, &["王芳"], "one-seat").await;
            let id = TestApp::id_of(&booked);
            app.wait_for_status(&id, "AWAITING_PAYMENT").await;
        }
        if connection["pageInfo"]["hasNextPage"] != true || seen.len() > 4 {
            break;
        }
        after = connection["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(seen, [a, b], "each route once");
}

/// Left out, a search's window ends a year after `from` (today), the day
/// itself included, as `route { departures }` reads them (it ended a day
/// short).
#[tokio::test]
async fn a_search_without_an_end_reaches_a_year_ahead() {
    let app = spawn_app().await;
    let admin = app.region_admin("chifeng@example.cn", "150400").await;
    // A year after today in China (route_on_sale counts from tomorrow(), a
    // UTC day).
    let today = shared::policy::china_today(chrono::Utc::now());
    let days = (today + Duration::days(365) - tomorrow()).num_days() + 1;
    let (route, _) = route_on_sale(&app, &admin, days, 4, 1).await;
    let body = app
        .graphql_as(
            None,
            "{ searchRoutes(regionCode: \"150425\") { edges { node { id departures { startsOn } } } } }",
            json!({}),
        )
        .await;
    assert_eq!(found(&body), [route], "{body}");
}

#[tokio::test]
async fn the_departures_of_a_page_of_routes_come_in_one_call() {
    let app = spawn_app().await;
    let admin = app.region_admin("chifeng@example.cn", "150400").await;
    let mut departures = Vec::new();
    for days in [10, 20, 30] {
        departures.push(route_on_sale(&app, &admin, days, 8, 1).await.1);
    }
    let batched = app
        .metric("duikou_rpc_total", &["method=\"get_departures\""])
        .await;
    let single = app
        .metric("duikou_rpc_total", &["method=\"get_route\""])
        .await;
    let from = tomorrow();
    let body = app
        .graphql_as(
            None,
            "query($from: Date!, $to: Date!) { searchRoutes(regionCode: \"150400\", from: $from, to: $to) {
                edges { node { departures(from: $from, to: $to) { id date seatsLeft } } } } }",
            json!({ "from": from.to_string(), "to": (from + Duration::days(60)).to_string() }),
        )
        .await;
    let mut shown: Vec<String> = body["data"]["searchRoutes"]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .flat_map(|e| {
            e["node"]["departures"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|d| d["id"].as_str().map(str::to_owned))
        .collect();
    shown.sort();
    departures.sort();
    assert_eq!(shown, departures, "{body}");
    assert_eq!(
        app.metric("duikou_rpc_total", &["method=\"get_departures\""])
            .await,
        batched + 1.0,
        "one call for the page"
    );
    assert_eq!(
        app.metric("duikou_rpc_total", &["method=\"get_route\""])
            .await,
        single,
        "none per route"
    );
}

/// A region admin changes a route on sale: its English title, where it
/// goes (search follows), its price and refund rule. The booking held
/// before keeps its price and rule; bad input changes nothing.
#[tokio::test]
async fn a_route_is_edited_and_its_bookings_keep_the_terms_they_were_held_under() {
    let app = spawn_app().await;
    let admin = app.region_admin("chifeng@example.cn", "150400").await;
    let (route, departure) = route_on_sale(&app, &admin, 20, 10, 1).await;
    let booking = TestApp::id_of(&book_seats(&app, &departure, &["王芳"], "before-edit").await);
    app.wait_for_status(&booking, "AWAITING_PAYMENT").await;
    let paid = app.pay(&booking, "tok_success", "before-edit").await;
    assert!(paid["errors"].is_null(), "{paid}");
    app.wait_for_status(&booking, "CONFIRMED").await;

    const UPDATE: &str = "mutation($r: ID!, $i: RouteUpdate!) { updateRoute(routeId: $r, input: $i) {
        titleZh titleEn itinerary { day regionCodes } pricePerPerson { amount }
        cancellationPolicy { daysBefore refundPercent } departures { pricePerPerson { amount } } } }";
    let update =
        |input: Value| app.graphql_as(Some(&admin), UPDATE, json!({ "r": route, "i": input }));
    let nothing = update(json!({})).await;
    assert!(
        nothing["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("nothing to change: give titleZh")),
        "{nothing}"
    );
    let edited = update(json!({
        "titleEn": " Capital to Grassland by train ",
        "itinerary": [
            { "day": 1, "title": "北京—赤峰", "regionCodes": ["110105", "150400"] },
            { "day": 2, "title": "贡格尔草原", "regionCodes": ["150425"] },
            { "day": 3, "title": "喀喇沁 王府", "regionCodes": ["150428"] }
        ],
        "pricePerPerson": "3280.00",
        "cancellationPolicy": [{ "daysBefore": 30, "refundPercent": 50 }]
    }))
    .await;
    let expected = json!({
        "titleZh": "首都—草原 五日游", "titleEn": "Capital to Grassland by train",
        "itinerary": [{ "day": 1, "regionCodes": ["110105", "150400"] }, { "day": 2, "regionCodes": ["150425"] },
                      { "day": 3, "regionCodes": ["150428"] }],
        "pricePerPerson": { "amount": "3280.00" },
        "cancellationPolicy": [{ "daysBefore": 30, "refundPercent": 50 }],
        "departures": [{ "pricePerPerson": { "amount": "3280.00" } }]
    });
    assert_eq!(edited["data"]["updateRoute"], expected, "{edited}");

    // Search follows where it goes now, and its new words.
    assert_eq!(
        found(&search(&app, json!({ "region": "150428" })).await),
        [route.as_str()]
    );
    assert!(found(&search(&app, json!({ "region": "150430" })).await).is_empty());
    assert_eq!(
        found(&search(&app, json!({ "text": "by train" })).await),
        [route.as_str()]
    );

    // The booking made before: its price, and all of it back 20 days ahead.
    let before = app
        .graphql(
            "query($b: ID!) { booking(id: $b) { total { amount } } cancellationQuote(bookingId: $b) { refundPercent } }",
            json!({ "b": booking }),
        )
        .await;
    assert_eq!(
        before["data"],
        json!({ "booking": { "total": { "amount": "2980.00" } }, "cancellationQuote": { "refundPercent": 100 } }),
        "{before}"
    );

    // Bad input, someone else's region, no such route: nothing changes.
    for bad in [
        json!({ "itinerary": [{ "day": 2, "title": "草原", "regionCodes": ["150425"] }] }),
        json!({ "itinerary": [{ "day": 1, "title": "草原", "regionCodes": ["159999"] }] }),
        json!({ "titleZh": " " }),
        json!({ "pricePerPerson": "-1" }),
    ] {
        let refused = update(bad.clone()).await;
        assert_eq!(code(&refused), "BAD_USER_INPUT", "{bad}: {refused}");
    }
    app.only_its_region_and_only_what_exists(
        &admin,
        UPDATE,
        json!({ "r": route, "i": { "titleZh": "别人的" } }),
        "r",
    )
    .await;
    let unchanged = update(json!({ "titleZh": "首都—草原 五日游" })).await;
    assert_eq!(unchanged["data"]["updateRoute"], expected, "{unchanged}");
    assert_eq!(
        found(&search(&app, json!({ "region": "150428" })).await),
        [route]
    );
}

/// Two admins change one route at once, one its price, the other its
/// title: both changes stay (the race set up as for homestays; without
/// inventory's row lock the second write undoes the first).
#[tokio::test]
async fn two_admins_editing_one_route_at_once_both_keep_their_change() {
    let app = spawn_app().await;
    let admin = app.region_admin("chifeng@example.cn", "150400").await;
    let other = app.region_admin("keshiketeng@example.cn", "150425").await;
    let (route, _) = route_on_sale(&app, &admin, 20, 10, 1).await;
    const UPDATE: &str =
        "mutation($r: ID!, $i: RouteUpdate!) { updateRoute(routeId: $r, input: $i) { titleZh } }";
    let held = common::LockHeld::begin(
        app.service_db("inventory").await,
        &format!("SELECT id FROM routes WHERE id = '{route}' FOR UPDATE"),
    )
    .await;
    let price = app.graphql_as(
        Some(&admin),
        UPDATE,
        json!({ "r": route, "i": { "pricePerPerson": "3180" } }),
    );
    let title = app.graphql_as(
        Some(&other),
        UPDATE,
        json!({ "r": route, "i": { "titleZh": "首都—草原 专列五日游" } }),
    );
    let (price, title) = held.race(price, title).await;
    assert!(price["errors"].is_null(), "{price}");
    assert!(title["errors"].is_null(), "{title}");
    let read = app
        .graphql(
            "query($r: ID!) { route(id: $r) { titleZh pricePerPerson { amount } } }",
            json!({ "r": route }),
        )
        .await;
    assert_eq!(
        read["data"]["route"],
        json!({ "titleZh": "首都—草原 专列五日游", "pricePerPerson": { "amount": "3180.00" } }),
        "{read}"
    );
}

/// A departure on sale changes: never fewer seats than are taken, a new
/// price for bookings from now on, a later or earlier close of bookings.
#[tokio::test]
async fn a_departure_changes_its_seats_price_and_cutoff_but_never_unsells_a_seat() {
    let app = spawn_app().await;
    let admin = app.region_admin("chifeng@example.cn", "150400").await;
    let (route, departure) = route_on_sale(&app, &admin, 20, 10, 1).await;
    let booked =
        TestApp::id_of(&book_seats(&app, &departure, &["王芳", "李强", "赵敏"], "three").await);
    app.wait_for_status(&booked, "AWAITING_PAYMENT").await;
    assert_eq!(seats_left(&app, &route).await, 7);

    const UPDATE: &str = "mutation($d: ID!, $s: Int, $p: String, $c: Int) {
        updateDeparture(departureId: $d, seats: $s, pricePerPerson: $p, cutoffDays: $c) {
            seats seatsLeft pricePerPerson { amount } lastBookingDay } }";
    let update = |vars: Value| {
        let mut all = json!({ "d": departure });
        if let (Some(all), Some(extra)) = (all.as_object_mut(), vars.as_object()) {
            all.extend(extra.clone());
        }
        app.graphql_as(Some(&admin), UPDATE, all)
    };
    let nothing = update(json!({})).await;
    assert_eq!(code(&nothing), "BAD_USER_INPUT", "{nothing}");
    assert!(
        nothing["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m
                .starts_with("nothing to change: give seats, pricePerPerson, routePrice: true")),
        "{nothing}"
    );
    let too_few = update(json!({ "s": 2 })).await;
    assert_eq!(code(&too_few), "CONFLICT", "{too_few}");
    assert!(
        too_few["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("3 seats held or sold")),
        "says how many are taken: {too_few}"
    );
    assert_eq!(seats_left(&app, &route).await, 7, "nothing moved");

    let starts = tomorrow() + Duration::days(19);
    let changed = update(json!({ "s": 5, "p": "3100", "c": 5 })).await;
    assert_eq!(
        changed["data"]["updateDeparture"],
        json!({ "seats": 5, "seatsLeft": 2, "pricePerPerson": { "amount": "3100.00" },
                "lastBookingDay": (starts - Duration::days(5)).to_string() }),
        "{changed}"
    );
    let held = app
        .graphql(
            "query($b: ID!) { booking(id: $b) { total { amount } } }",
            json!({ "b": booked }),
        )
        .await;
    assert_eq!(
        held["data"]["booking"]["total"]["amount"], "8940.00",
        "3 × 2980: {held}"
    );

    // Bad input, bookings that would have closed already, elsewhere, unknown.
    for bad in [
        json!({ "s": 0 }),
        json!({ "s": -1 }),
        json!({ "p": "-5" }),
        json!({ "c": 400 }),
        json!({ "c": 30 }),
    ] {
        let refused = update(bad.clone()).await;
        assert_eq!(code(&refused), "BAD_USER_INPUT", "{bad}: {refused}");
        // No seats and fewer than none in one set of words.
        if bad.get("s").is_some() {
            common::assert_error(&refused, "BAD_USER_INPUT", "seats: 1 to 1000");
        }
    }
    app.only_its_region_and_only_what_exists(
        &admin,
        UPDATE,
        json!({ "d": departure, "s": 50 }),
        "d",
    )
    .await;
    let unchanged = update(json!({ "s": 5 })).await;
    assert_eq!(
        unchanged["data"]["updateDeparture"],
        changed["data"]["updateDeparture"]
    );
    // No price of its own, the route's again; not both at once.
    let both = app
        .graphql_as(
            Some(&admin),
            "mutation($d: ID!) { updateDeparture(departureId: $d, pricePerPerson: \"1\", routePrice: true) { seats } }",
            json!({ "d": departure }),
        )
        .await;
    assert_eq!(code(&both), "BAD_USER_INPUT", "{both}");
    let route_price = app
        .graphql_as(
            Some(&admin),
            "mutation($d: ID!) { updateDeparture(departureId: $d, routePrice: true) { pricePerPerson { amount } } }",
            json!({ "d": departure }),
        )
        .await;
    assert_eq!(
        route_price["data"]["updateDeparture"]["pricePerPerson"]["amount"], "2980.00",
        "{route_price}"
    );
}

in_both_modes!(an_operator_cancels_a_departure_and_its_bookings_are_cancelled_and_refunded_in_full);
/// An operator cancels a departure (a blizzard closes the road): the paid
/// booking on it is cancelled and refunded in full although the route's
/// policy would refund nothing two days ahead, the unpaid one is cancelled,
/// a new one is refused CLOSED, search no longer offers it, and every
/// invariant holds. Only the route's region's admins may, with a reason.
async fn an_operator_cancels_a_departure_and_its_bookings_are_cancelled_and_refunded_in_full(
    settings: shared::config::Settings,
) {
    let app = common::spawn_app_with(settings).await;
    let admin = app.region_admin("chifeng@example.cn", "150400").await;
    let (route, departure) = route_on_sale(&app, &admin, 2, 10, 1).await;
    let paid = TestApp::id_of(&book_seats(&app, &departure, &["王芳", "李强"], "paid").await);
    let unpaid = TestApp::id_of(&book_seats(&app, &departure, &["赵敏"], "unpaid").await);
    app.wait_for_status(&paid, "AWAITING_PAYMENT").await;
    app.wait_for_status(&unpaid, "AWAITING_PAYMENT").await;
    let charged = app.pay(&paid, "tok_success", "pay").await;
    assert!(charged["errors"].is_null(), "{charged}");
    app.wait_for_status(&paid, "CONFIRMED").await;
    let quote = app
        .graphql(
            "query($b: ID!) { cancellationQuote(bookingId: $b) { refund { amount } } }",
            json!({ "b": paid }),
        )
        .await;
    assert_eq!(
        quote["data"]["cancellationQuote"]["refund"]["amount"], "0.00",
        "the booker cancelling now would get nothing back: {quote}"
    );

    const CANCEL: &str =
        "mutation($d: ID!, $r: String!) { cancelDeparture(departureId: $d, reason: $r) {
        cancelledAt cancelReason seatsLeft } }";
    let cancel = async |token: Option<&str>, reason: &str| {
        app.graphql_as(token, CANCEL, json!({ "d": departure, "r": reason }))
            .await
    };
    // Refused: no reason, two lines, a traveler, nobody, another region.
    for reason in ["", "  ", "暴雪\n封路"] {
        let refused = cancel(Some(&admin), reason).await;
        assert_eq!(code(&refused), "BAD_USER_INPUT", "{reason:?}: {refused}");
    }
    assert_eq!(
        code(&cancel(app.token.as_deref(), "暴雪").await),
        "FORBIDDEN"
    );
    assert_eq!(code(&cancel(None, "暴雪").await), "UNAUTHENTICATED");
    app.only_its_region_and_only_what_exists(
        &admin,
        CANCEL,
        json!({ "d": departure, "r": "暴雪" }),
        "d",
    )
    .await;
    assert_eq!(
        app.wait_for_status(&unpaid, "AWAITING_PAYMENT").await["status"],
        "AWAITING_PAYMENT",
        "a refused cancellation cancelled nothing"
    );

    let done = cancel(Some(&admin), "暴雪封路，道路关闭").await;
    let cancelled = &done["data"]["cancelDeparture"];
    assert!(cancelled["cancelledAt"].is_string(), "{done}");
    assert_eq!(cancelled["cancelReason"], "暴雪封路，道路关闭", "{done}");
    assert_eq!(cancelled["seatsLeft"], 0, "nothing to sell: {done}");

    let refunded = app
        .wait_for_booking(&paid, "the full refund", |b| {
            b["status"] == "CANCELLED" && b["refunded"]["amount"] == "5960.00"
        })
        .await;
    assert_eq!(refunded["refundDue"]["amount"], "5960.00", "{refunded}");
    assert!(
        refunded["reason"]
            .as_str()
            .is_some_and(|r| r
                .contains("was cancelled by its operator: 暴雪封路，道路关闭; refunded in full")),
        "{refunded}"
    );
    let unpaid = app.wait_for_status(&unpaid, "CANCELLED").await;
    assert!(
        unpaid["reason"]
            .as_str()
            .is_some_and(|r| r.contains("cancelled by its operator")),
        "{unpaid}"
    );

    // No more bookings, not offered, nothing to change; cancelling again
    // changes nothing.
    let late = TestApp::id_of(&book_seats(&app, &departure, &["孙丽"], "late").await);
    let rejected = app.wait_for_status(&late, "REJECTED").await;
    assert!(
        rejected["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("CLOSED") && r.contains("暴雪封路")),
        "{rejected}"
    );
    assert!(!found(&search(&app, json!({})).await).contains(&route));
    let again = cancel(Some(&admin), "另一个理由").await;
    assert_eq!(
        again["data"]["cancelDeparture"]["cancelledAt"], cancelled["cancelledAt"],
        "{again}"
    );
    assert_eq!(
        again["data"]["cancelDeparture"]["cancelReason"],
        "暴雪封路，道路关闭"
    );
    let change = app
        .graphql_as(
            Some(&admin),
            "mutation($d: ID!) { updateDeparture(departureId: $d, seats: 20) { seats } }",
            json!({ "d": departure }),
        )
        .await;
    assert_eq!(code(&change), "CONFLICT", "{change}");
    let day = tomorrow() + Duration::days(1);
    let add_on_day = || {
        app.graphql_as(
            Some(&admin),
            ADD_DEPARTURE,
            json!({ "r": route, "d": day.to_string(), "s": 10, "c": 0 }),
        )
    };
    let same_day = add_on_day().await;
    let again_on_sale = same_day["data"]["addDeparture"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("the cancelled departure's day is free again: {same_day}"))
        .to_owned();
    assert_ne!(
        again_on_sale, departure,
        "a new departure, not the cancelled one"
    );
    assert_eq!(seats_in_store(&app, &again_on_sale).await, 10, "{same_day}");
    let twice = add_on_day().await;
    assert_eq!(
        code(&twice),
        "CONFLICT",
        "one departure a day runs: {twice}"
    );
    assert!(found(&search(&app, json!({})).await).contains(&route));
    // The route's price changes: the new departure follows it, the
    // cancelled one keeps the price it had when it was called off.
    let repriced = app
        .graphql_as(
            Some(&admin),
            "mutation($r: ID!, $from: Date, $to: Date) {
                updateRoute(routeId: $r, input: { pricePerPerson: \"3180.00\" }) {
                    departures(from: $from, to: $to) { id pricePerPerson { amount } } } }",
            json!({ "r": route, "from": tomorrow().to_string(),
                    "to": (tomorrow() + Duration::days(30)).to_string() }),
        )
        .await;
    let prices: std::collections::HashMap<String, String> =
        repriced["data"]["updateRoute"]["departures"]
            .as_array()
            .unwrap_or_else(|| panic!("{repriced}"))
            .iter()
            .map(|d| {
                (
                    d["id"].as_str().unwrap_or_default().to_owned(),
                    d["pricePerPerson"]["amount"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
            })
            .collect();
    assert_eq!(prices[&departure], "2980.00", "{repriced}");
    assert_eq!(prices[&again_on_sale], "3180.00", "{repriced}");

    // Seats given back, one capture and one reversal, the ledger balanced.
    app.until_invariants_hold().await;
    assert_eq!(seats_in_store(&app, &departure).await, 10);

    // Had booking never heard of the cancellation (the paid booking still
    // CONFIRMED, its seats COMMITTED), the check names it: the trip is not
    // running and its host keeps the money (it passed).
    if app.settings.postgres_url.is_some() {
        let paid_id: uuid::Uuid = paid.parse().expect("booking id");
        for (part, sql) in [
            (
                "booking",
                format!("UPDATE bookings SET status = 'CONFIRMED' WHERE id = '{paid_id}'"),
            ),
            (
                "inventory",
                format!("UPDATE holds SET state = 'COMMITTED' WHERE booking_id = '{paid_id}'"),
            ),
        ] {
            let changed = app
                .service_db(part)
                .await
                .execute_unprepared(&sql)
                .await
                .expect("tampered");
            assert_eq!(changed.rows_affected(), 1, "{sql}");
        }
        let findings = duikou::check::run(&app.app.rt.settings, chrono::Duration::zero())
            .await
            .expect("checks run");
        let holds = findings
            .iter()
            .find(|f| f.invariant.starts_with("holds follow"))
            .expect("the holds check ran");
        assert!(
            !holds.holds
                && holds.detail.contains(&format!(
                    "{paid_id} holds seats (COMMITTED) on a departure cancelled"
                )),
            "{holds:#?}"
        );
    }
}

/// Bookings racing the cancellation of their departure: each ends
/// CANCELLED (held before it, so announced to booking) or REJECTED (asked
/// after it), none is left holding a seat, and every seat is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookings_racing_a_departures_cancellation_all_end_and_hold_no_seat() {
    let app = spawn_app().await;
    let admin = app.region_admin("chifeng@example.cn", "150400").await;
    let (_, departure) = route_on_sale(&app, &admin, 10, 100, 1).await;
    let names = ["甲", "乙", "丙", "丁", "戊", "己", "庚", "辛"];
    let booking = |i: usize| {
        let (app, departure) = (&app, departure.clone());
        async move {
            let traveler = [names[i % names.len()]];
            TestApp::id_of(&book_seats(app, &departure, &traveler, &format!("race-{i}")).await)
        }
    };
    let early = futures::future::join_all((0..20).map(booking)).await;
    let (cancelled, late) = futures::future::join(
        app.graphql_as(
            Some(&admin),
            "mutation($d: ID!) { cancelDeparture(departureId: $d, reason: \"雷暴\") { cancelledAt } }",
            json!({ "d": departure }),
        ),
        futures::future::join_all((20..40).map(booking)),
    )
    .await;
    assert!(
        cancelled["data"]["cancelDeparture"]["cancelledAt"].is_string(),
        "{cancelled}"
    );
    let mut ended = std::collections::BTreeMap::<String, u32>::new();
    for id in early.iter().chain(&late) {
        let booking = app
            .wait_for_booking(id, "its end", |b| {
                b["status"] == "CANCELLED" || b["status"] == "REJECTED"
            })
            .await;
        *ended
            .entry(booking["status"].as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    assert_eq!(ended.values().sum::<u32>(), 40, "{ended:?}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while seats_in_store(&app, &departure).await != 100 {
        assert!(
            std::time::Instant::now() < deadline,
            "seats free {}: {ended:?}",
            seats_in_store(&app, &departure).await
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A departure cancelled while one of its holds is being released (a
/// release locks the hold's row, then the departure's to give the seats
/// back, as the sweeper and a late confirmation do): both go through.
/// `cancelDeparture` locked the departure and then the holds, and
/// PostgreSQL broke the circle by failing one side (the cancellation
/// answered SERVICE_UNAVAILABLE); a review of inventory found it.
#[tokio::test]
async fn a_departure_cancelled_while_a_hold_on_it_is_released_waits_instead_of_deadlocking() {
    // Standing in for the release: the hold's row first, then the
    // departure's, to give the seat back.
    let (cancelled, given_back) = cancel_racing(
        |_, hold| format!("SELECT booking_id FROM holds WHERE booking_id = '{hold}' FOR UPDATE"),
        |departure, _| {
            format!("UPDATE departures SET available = available + 1 WHERE id = '{departure}'")
        },
    )
    .await;
    assert!(given_back.is_ok(), "the release failed: {given_back:?}");
    assert!(
        cancelled["data"]["cancelDeparture"]["cancelledAt"].is_string(),
        "{cancelled}"
    );
}

/// A departure of 赤峰 with one seat held, and its cancellation raced with
/// a transaction of the test's: `first(departure, hold)` locks, and once
/// the cancellation waits on it `then(departure, hold)` runs in it; the
/// cancellation's answer and what became of `then`.
async fn cancel_racing(
    first: impl Fn(&str, &str) -> String,
    then: impl Fn(&str, &str) -> String,
) -> (Value, Result<(), sea_orm::DbErr>) {
    let app = spawn_app().await;
    let admin = app.region_admin("chifeng@example.cn", "150400").await;
    let (_, departure) = route_on_sale(&app, &admin, 10, 100, 1).await;
    let hold = TestApp::id_of(&book_seats(&app, &departure, &["甲"], "held").await);
    app.wait_for_status(&hold, "AWAITING_PAYMENT").await;
    let held =
        common::LockHeld::begin(app.service_db("inventory").await, &first(&departure, &hold)).await;
    let cancel = app.graphql_as(
        Some(&admin),
        "mutation($d: ID!) { cancelDeparture(departureId: $d, reason: \"雷暴\") { cancelledAt } }",
        json!({ "d": departure }),
    );
    tokio::join!(cancel, async {
        held.until_waiting(1, true).await;
        let done = held.run(&then(&departure, &hold)).await;
        held.release().await;
        done
    })
}

/// A change to fewer seats that bookings made impossible while it waited on
/// the departure's row says how many seats are taken now: it quoted the
/// count it had read before them ("0 seats held or sold" for a change to 5).
#[tokio::test]
async fn fewer_seats_refused_name_the_seats_taken_when_the_change_was_made() {
    let app = spawn_app().await;
    let admin = app.region_admin("chifeng@example.cn", "150400").await;
    let (_, departure) = route_on_sale(&app, &admin, 20, 10, 1).await;
    // Eight seats being taken (as holds take them) while the change comes.
    let taking = common::LockHeld::begin(
        app.service_db("inventory").await,
        &format!("UPDATE departures SET available = available - 8 WHERE id = '{departure}'"),
    )
    .await;
    let (refused, ()) = tokio::join!(
        app.graphql_as(
            Some(&admin),
            "mutation($d: ID!) { updateDeparture(departureId: $d, seats: 5) { seats } }",
            json!({ "d": departure }),
        ),
        async {
            taking.until_waiting(1, true).await;
            taking.release().await;
        }
    );
    assert_eq!(code(&refused), "CONFLICT", "{refused}");
    assert!(
        refused["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("8 seats held or sold now")),
        "{refused}"
    );
}

/// A departure's price changed while a hold waits to take its seats (the
/// change holds the row, as an admin's `updateDeparture` does while it
/// commits): the hold is priced as the seats are taken, not as the request
/// was read before (it was granted at the old price).
#[tokio::test]
async fn a_seat_hold_is_priced_as_its_departure_stands_when_the_seats_are_taken() {
    let app = spawn_app().await;
    let admin = app.region_admin("chifeng@example.cn", "150400").await;
    let (_, departure) = route_on_sale(&app, &admin, 10, 10, 1).await;
    let repriced = common::LockHeld::begin(
        app.service_db("inventory").await,
        &format!("UPDATE departures SET price_fen = 199900 WHERE id = '{departure}'"),
    )
    .await;
    let (booked, ()) = tokio::join!(
        book_seats(&app, &departure, &["张三", "李四"], "repriced"),
        async {
            repriced.until_waiting(1, true).await;
            repriced.release().await;
        }
    );
    let id = TestApp::id_of(&booked);
    let held = app.wait_for_status(&id, "AWAITING_PAYMENT").await;
    assert_eq!(held["total"]["amount"], "3998.00", "{held}");
}

/// A departure cancelled while a change of it waits on its row (the
/// cancellation holds it until it commits): the change is refused, and the
/// cancelled departure keeps the seats and price it was called off with
/// (the change went through, answering as if it still ran).
#[tokio::test]
async fn a_change_of_a_departure_cancelled_meanwhile_is_refused() {
    let app = spawn_app().await;
    let admin = app.region_admin("chifeng@example.cn", "150400").await;
    let (route, departure) = route_on_sale(&app, &admin, 10, 10, 1).await;
    let cancelling = common::LockHeld::begin(
        app.service_db("inventory").await,
        &format!(
            "UPDATE departures SET cancelled_at = now(), cancel_reason = '雷暴' WHERE id = '{departure}'"
        ),
    )
    .await;
    let (changed, ()) = tokio::join!(
        app.graphql_as(
            Some(&admin),
            "mutation($d: ID!) { updateDeparture(departureId: $d, seats: 20, pricePerPerson: \"1.00\") { seats } }",
            json!({ "d": departure }),
        ),
        async {
            cancelling.until_waiting(1, true).await;
            cancelling.release().await;
        }
    );
    assert_eq!(code(&changed), "CONFLICT", "{changed}");
    let now = app
        .graphql_as(
            Some(&admin),
            "query($r: ID!) { route(id: $r) { departures { seats pricePerPerson { amount } cancelledAt } } }",
            json!({ "r": route }),
        )
        .await;
    let now = &now["data"]["route"]["departures"][0];
    assert_eq!(
        (&now["seats"], &now["pricePerPerson"]["amount"]),
        (&json!(10), &json!("2980.00")),
        "{now}"
    );
    assert!(now["cancelledAt"].is_string(), "{now}");
}

/// A departure leaving today, or gone, no longer changes, and one gone
/// cannot be cancelled: the departure's state, CONFLICT (it was
/// BAD_USER_INPUT, as if the request were malformed).
#[tokio::test]
async fn a_departure_on_its_way_is_a_conflict_to_change_or_cancel() {
    let app = spawn_app().await;
    let admin = app.region_admin("chifeng@example.cn", "150400").await;
    let (_, departure) = route_on_sale(&app, &admin, 10, 10, 0).await;
    let inventory = app.service_db("inventory").await;
    // Today in China, as inventory judges it (from 16:00 UTC a day past
    // the UTC date).
    let today = shared::policy::china_today(chrono::Utc::now());
    for (day, words) in [
        (today, "leaves today"),
        (today - Duration::days(1), "has left"),
    ] {
        inventory
            .execute_unprepared(&format!(
                "UPDATE departures SET starts_on = '{day}' WHERE id = '{departure}'"
            ))
            .await
            .expect("moved");
        let changed = app
            .graphql_as(
                Some(&admin),
                "mutation($d: ID!) { updateDeparture(departureId: $d, seats: 20) { seats } }",
                json!({ "d": departure }),
            )
            .await;
        assert_eq!(code(&changed), "CONFLICT", "{changed}");
        assert!(changed.to_string().contains(words), "{changed}");
    }
    let cancelled = app
        .graphql_as(
            Some(&admin),
            "mutation($d: ID!) { cancelDeparture(departureId: $d, reason: \"雷暴\") { cancelledAt } }",
            json!({ "d": departure }),
        )
        .await;
    assert_eq!(code(&cancelled), "CONFLICT", "{cancelled}");
    assert!(cancelled.to_string().contains("has left"), "{cancelled}");
}

/// The seats a departure has free as inventory stores them (its view shows
/// none once it is cancelled): what its released bookings gave back.
async fn seats_in_store(app: &TestApp, departure: &str) -> i64 {
    let db = app.service_db("inventory").await;
    let b = db.get_database_backend();
    let id = uuid::Uuid::parse_str(departure).expect("a departure id");
    let row = db
        .query_one_raw(sea_orm::Statement::from_sql_and_values(
            b,
            "SELECT available FROM departures WHERE id = $1",
            [shared::db::uuid_value(b, id)],
        ))
        .await
        .expect("read")
        .expect("the departure");
    i64::from(row.try_get::<i32>("", "available").expect("available"))
}

/// A departure's passenger list: its region's admin lists the bookings on
/// one departure with who travels, none of another departure's or of a
/// stay; a traveler filters their own the same way; another region's admin
/// sees none.
#[tokio::test]
async fn a_departures_passenger_list_holds_its_bookings_and_their_travelers() {
    let app = spawn_app().await;
    let admin = app.region_admin("chifeng@example.cn", "150400").await;
    let (route, first) = route_on_sale(&app, &admin, 20, 10, 1).await;
    let second = app
        .graphql_as(
            Some(&admin),
            ADD_DEPARTURE,
            json!({ "r": route, "d": (tomorrow() + Duration::days(26)).to_string(), "s": 10, "c": 1 }),
        )
        .await;
    let second = second["data"]["addDeparture"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{second}"))
        .to_owned();
    let family = TestApp::id_of(&book_seats(&app, &first, &["王芳", "李强"], "family").await);
    let alone = TestApp::id_of(&book_seats(&app, &first, &["赵敏"], "alone").await);
    let later = TestApp::id_of(&book_seats(&app, &second, &["孙丽"], "later").await);
    let room_type = app.homestay(1).await.room_type_id.to_string();
    let stay = TestApp::id_of(&app.create_booking(&room_type, tomorrow(), 1, "stay").await);
    for id in [&family, &alone, &later, &stay] {
        app.wait_for_status(id, "AWAITING_PAYMENT").await;
    }

    const LIST: &str = "query($f: BookingFilter) {
        regionBookings(first: 10, filter: $f) { totalCount edges { node { id guests { name } } } } }";
    let on = |departure: &str| json!({ "f": { "departureId": departure } });
    let list = app.graphql_as(Some(&admin), LIST, on(&first)).await;
    let listed = &list["data"]["regionBookings"];
    assert_eq!(listed["totalCount"], 2, "{list}");
    let mut names: Vec<String> = listed["edges"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|e| e["node"]["guests"].as_array().cloned().unwrap_or_default())
        .filter_map(|g| g["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    assert_eq!(names, ["李强", "王芳", "赵敏"], "{list}");
    let mut ids: Vec<&str> = listed["edges"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["node"]["id"].as_str())
        .collect();
    ids.sort_unstable();
    let mut expected = [family.as_str(), alone.as_str()];
    expected.sort_unstable();
    assert_eq!(ids, expected);
    assert_eq!(
        app.graphql_as(Some(&admin), LIST, on(&second)).await["data"]["regionBookings"]["totalCount"],
        1
    );

    // The traveler who booked all of them: the same filter on their own.
    let mine = app
        .graphql(
            "query($f: BookingFilter) { myBookings(first: 10, filter: $f) { totalCount } }",
            on(&first),
        )
        .await;
    assert_eq!(mine["data"]["myBookings"]["totalCount"], 2, "{mine}");
    let beijing = app.region_admin("beijing@example.cn", "110000").await;
    let elsewhere = app.graphql_as(Some(&beijing), LIST, on(&first)).await;
    assert_eq!(
        elsewhere["data"]["regionBookings"]["totalCount"], 0,
        "{elsewhere}"
    );
    let malformed = app.graphql_as(Some(&admin), LIST, on("团期")).await;
    assert_eq!(code(&malformed), "BAD_USER_INPUT", "{malformed}");
}

/// A route's English title is optional, as every English name is: left
/// out or emptied, English readers see the Chinese (it was required, and
/// an empty one refused).
#[tokio::test]
async fn a_route_without_an_english_title_reads_in_chinese_in_english() {
    let app = spawn_app().await;
    let admin = app.region_admin("chifeng@example.cn", "150400").await;
    let mut input = grassland_route();
    input
        .as_object_mut()
        .expect("an input object")
        .remove("titleEn");
    let created = app
        .graphql_as(Some(&admin), CREATE_ROUTE, json!({ "input": input }))
        .await;
    let route = created["data"]["createRoute"]["routeId"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"))
        .to_owned();
    let emptied = app
        .graphql_as(
            Some(&admin),
            "mutation($r: ID!) { updateRoute(routeId: $r, input: { titleEn: \"\" }) { titleEn } }",
            json!({ "r": route }),
        )
        .await;
    assert_eq!(emptied["data"]["updateRoute"]["titleEn"], "", "{emptied}");
    let read = app
        .graphql_as(
            Some(&admin),
            "query($r: ID!) { route(id: $r) { title(lang: EN) titleEn } }",
            json!({ "r": route }),
        )
        .await;
    assert_eq!(
        read["data"]["route"],
        json!({ "title": "首都—草原 五日游", "titleEn": "" }),
        "{read}"
    );
}

/// A payout run right after an operator cancelled a departure, before
/// booking has heard of it (its handlers wait on the inbox): the run keeps
/// the host's share of the seats back, and the host owes nothing once they
/// are refunded in full. (Booking asks for those refunds only when it
/// hears; an exploratory run had the host paid 5,926.00 for five seats so
/// cancelled, then owing it, 4 times in 5.)
#[tokio::test]
async fn a_payout_run_right_after_a_departure_was_cancelled_keeps_its_seats_back() {
    let app = common::spawn_app().await;
    let admin = app.region_admin("chifeng@example.cn", "150400").await;
    let (_, departure) = route_on_sale(&app, &admin, 2, 10, 1).await;
    let confirmed = async |key: &str| {
        let id = TestApp::id_of(&book_seats(&app, &departure, &["王芳"], key).await);
        app.wait_for_status(&id, "AWAITING_PAYMENT").await;
        let charged = app.pay(&id, "tok_success", key).await;
        assert!(charged["errors"].is_null(), "{charged}");
        app.wait_for_status(&id, "CONFIRMED").await;
        id
    };
    // One cancelled by its booker first, two days ahead: nothing back by
    // the policy, so its seat's earnings stay the host's, departure
    // cancelled or not (a first version kept them back for a week).
    let kept = confirmed("kept").await;
    let cancelled = app.cancel(&kept, "kept").await;
    assert_eq!(
        cancelled["data"]["cancelBooking"]["refundDue"]["amount"], "0.00",
        "{cancelled}"
    );
    app.stays_under_way().await;
    let platform = app.admin_token().await;
    let ask = |query: &'static str| app.graphql_as(Some(&platform), query, json!({}));
    let owed = ask("{ hostBalances(payable: true) { amount { amount } } }").await;
    let owed = owed["data"]["hostBalances"][0]["amount"]["amount"].clone();
    assert!(
        owed.is_string(),
        "the host is owed the kept seat's earnings"
    );
    let paid = confirmed("paid").await;
    app.stays_under_way().await;

    let held = common::LockHeld::begin(
        app.service_db("booking").await,
        "LOCK TABLE inbox IN EXCLUSIVE MODE",
    )
    .await;
    let done = app
        .graphql_as(
            Some(&admin),
            "mutation($d: ID!) { cancelDeparture(departureId: $d, reason: \"暴雪封路\") { cancelledAt } }",
            json!({ "d": departure }),
        )
        .await;
    assert!(
        done["data"]["cancelDeparture"]["cancelledAt"].is_string(),
        "{done}"
    );
    held.until_waiting(1, true).await;
    let preview = ask("{ hostBalances(payable: true) { amount { amount } } }").await;
    assert_eq!(
        preview["data"]["hostBalances"][0]["amount"]["amount"], owed,
        "{preview}"
    );
    let run =
        ask("mutation { runPayouts(reference: \"AFTER-DEPARTURE\") { total { amount } } }").await;
    assert_eq!(run["data"]["runPayouts"]["total"]["amount"], owed, "{run}");
    held.release().await;
    app.wait_for_booking(&paid, "the full refund", |b| {
        b["status"] == "CANCELLED" && b["refunded"]["amount"] == b["total"]["amount"]
    })
    .await;
    let after = ask("{ hostBalances { amount { amount } } }").await;
    assert_eq!(
        after["data"]["hostBalances"],
        json!([]),
        "owes nothing: {after}"
    );
}

/// A cancellation PostgreSQL picks to break a deadlock (the test holds the
/// departure, as a take in flight does, then asks for the hold the
/// cancellation locked, as a release of a hold taken meanwhile does) is
/// sent again inside and goes through; it answered SERVICE_UNAVAILABLE,
/// and the admin had to send it again.
#[tokio::test]
async fn a_cancellation_that_gives_way_in_a_deadlock_goes_through_all_the_same() {
    let (cancelled, locked) = cancel_racing(
        |departure, _| format!("SELECT id FROM departures WHERE id = '{departure}' FOR UPDATE"),
        |_, hold| format!("SELECT booking_id FROM holds WHERE booking_id = '{hold}' FOR UPDATE"),
    )
    .await;
    assert!(
        locked.is_ok(),
        "the test's side gave way instead: {locked:?}"
    );
    assert!(
        cancelled["data"]["cancelDeparture"]["cancelledAt"].is_string(),
        "{cancelled}"
    );
}

/// A departure's request handed to inventory twice (a replica killed
/// after adding it, before answering: the broker redelivers it to
/// another) adds one departure, and the copy is told it was created
/// already — not "the route already has a departure on …", which reads
/// as someone else's (an exploratory run under replica kills).
#[tokio::test]
async fn a_departure_request_delivered_twice_adds_one_and_says_so() {
    let app = spawn_app().await;
    let admin = app.region_admin("chifeng@example.cn", "150400").await;
    let (route, _) = route_on_sale(&app, &admin, 5, 10, 1).await;
    let day = tomorrow() + Duration::days(20);
    let replies = app
        .rpc_delivered_twice(&shared::rpcs::AddDeparture {
            idempotency_key: None,
            route_id: route.parse().expect("a route id"),
            starts_on: day,
            seats: 6,
            price: None,
            cutoff_days: 1,
            by: shared::auth::Principal::platform(),
        })
        .await;
    let made: Vec<_> = replies.iter().filter(|r| r.get("Ok").is_some()).collect();
    let refused: Vec<_> = replies.iter().filter_map(|r| r.get("Err")).collect();
    assert_eq!((made.len(), refused.len()), (1, 1), "{replies:?}");
    assert_eq!(refused[0]["code"], "CONFLICT", "{replies:?}");
    let message = refused[0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("created already"), "{replies:?}");
    let inventory = app.service_db("inventory").await;
    let count = common::count_of(
        &inventory,
        &format!(
            "SELECT COUNT(*) AS n FROM departures WHERE route_id = '{route}' AND starts_on = '{day}'"
        ),
        vec![],
    )
    .await;
    assert_eq!(count, 1);
}

/// An app, its 赤峰市 admin, a departure two days ahead (the route's
/// policy gives nothing back then) and a booking of one seat on it, paid.
async fn a_paid_seat_two_days_ahead() -> (TestApp, String, String, String) {
    let (app, admin, departure, paid) = an_unpaid_seat_two_days_ahead().await;
    let charged = app.pay(&paid, "tok_success", "pay").await;
    assert!(charged["errors"].is_null(), "{charged}");
    app.wait_for_status(&paid, "CONFIRMED").await;
    (app, admin, departure, paid)
}

/// The same, the booking awaiting its payment.
async fn an_unpaid_seat_two_days_ahead() -> (TestApp, String, String, String) {
    let app = spawn_app().await;
    let admin = app.region_admin("chifeng@example.cn", "150400").await;
    let (_, departure) = route_on_sale(&app, &admin, 2, 10, 1).await;
    let booked = TestApp::id_of(&book_seats(&app, &departure, &["王芳"], "seat").await);
    app.wait_for_status(&booked, "AWAITING_PAYMENT").await;
    (app, admin, departure, booked)
}

/// The admin cancels `departure` (a blizzard).
async fn cancel_departure(app: &TestApp, admin: &str, departure: &str) {
    let done = app
        .graphql_as(
            Some(admin),
            "mutation($d: ID!) { cancelDeparture(departureId: $d, reason: \"暴雪封路\") { cancelledAt } }",
            json!({ "d": departure }),
        )
        .await;
    assert!(done["errors"].is_null(), "{done}");
}

/// A paid booking its booker cancels just after its departure was
/// cancelled — before booking heard of the departure's cancellation (its
/// handlers held here: their inbox locked) — is refunded in full like
/// every other booking on it, not by the route's policy (nothing two days
/// ahead): an exploratory run saw 4 of 16 bookings cancelled within 20 ms
/// of the departure keep only the policy's share.
#[tokio::test]
async fn a_booking_cancelled_by_its_booker_as_its_departure_is_cancelled_is_refunded_in_full() {
    let (app, admin, departure, paid) = a_paid_seat_two_days_ahead().await;
    let held = common::LockHeld::begin(
        app.service_db("booking").await,
        "LOCK TABLE inbox IN EXCLUSIVE MODE",
    )
    .await;
    cancel_departure(&app, &admin, &departure).await;
    held.until_waiting(1, true).await;
    let cancelled = app.cancel(&paid, "cancel").await;
    assert_eq!(
        cancelled["data"]["cancelBooking"]["refundDue"]["amount"], "0.00",
        "the booker's own cancellation, by the policy: {cancelled}"
    );
    held.release().await;
    let refunded = app
        .wait_for_booking(&paid, "the full refund", |b| {
            b["refunded"]["amount"] == "2980.00"
        })
        .await;
    assert_eq!(refunded["refundDue"]["amount"], "2980.00", "{refunded}");
    app.until_invariants_hold().await;
}

/// The other way round: a booker who cancelled before the departure was
/// cancelled — inventory still counting the seats (the release waits: its
/// inbox locked) and listing the booking in the cancellation — keeps the
/// policy's share; the departure's cancellation came after their choice.
#[tokio::test]
async fn a_booking_cancelled_by_its_booker_before_its_departure_keeps_the_policys_share() {
    let (app, admin, departure, paid) = a_paid_seat_two_days_ahead().await;
    let inventory = app.service_db("inventory").await;
    let held =
        common::LockHeld::begin(inventory.clone(), "LOCK TABLE inbox IN EXCLUSIVE MODE").await;
    let cancelled = app.cancel(&paid, "cancel").await;
    assert_eq!(
        cancelled["data"]["cancelBooking"]["refundDue"]["amount"], "0.00",
        "{cancelled}"
    );
    cancel_departure(&app, &admin, &departure).await;
    held.release().await;
    app.until_heard("booking", "inventory.departure_cancelled", 1)
        .await;
    app.until_invariants_hold().await;
    let now = app
        .wait_for_booking(&paid, "cancelled", |b| b["status"] == "CANCELLED")
        .await;
    assert_eq!(now["refunded"]["amount"], "0.00", "{now}");
    assert_eq!(now["refundDue"]["amount"], "0.00", "{now}");
}

/// Booking, deaf until now (`inbox` held), hears of the departure's
/// cancellation first and of the payment last (its capture handler held
/// on `captures_heard` until the first is handled).
async fn hear_the_departure_then_the_payment(app: &TestApp, inbox: common::LockHeld) {
    let captures = common::LockHeld::begin(
        app.service_db("booking").await,
        "LOCK TABLE captures_heard IN ACCESS EXCLUSIVE MODE",
    )
    .await;
    inbox.release().await;
    app.until_heard("booking", "inventory.departure_cancelled", 1)
        .await;
    captures.release().await;
}

/// A booker pays, the operator cancels the departure, the booker cancels;
/// booking, deaf meanwhile (its inbox locked), hears of the departure
/// first and of the payment last: the booking looked unpaid when
/// cancelled, and the capture heard after was refunded by the route's
/// policy (nothing two days ahead). All of it goes back.
#[tokio::test]
async fn a_payment_heard_after_its_departure_and_the_bookers_cancellation_goes_back_in_full() {
    let (app, admin, departure, booked) = an_unpaid_seat_two_days_ahead().await;
    let booking = app.service_db("booking").await;
    let inbox = common::LockHeld::begin(booking, "LOCK TABLE inbox IN EXCLUSIVE MODE").await;
    let charged = app.pay(&booked, "tok_success", "pay").await;
    assert!(charged["errors"].is_null(), "{charged}");
    inbox.until_waiting(1, true).await;
    cancel_departure(&app, &admin, &departure).await;
    inbox.until_waiting(2, true).await;
    let cancelled = app.cancel(&booked, "cancel").await;
    assert_eq!(
        cancelled["data"]["cancelBooking"]["status"], "CANCELLED",
        "unpaid as far as booking knows: {cancelled}"
    );
    hear_the_departure_then_the_payment(&app, inbox).await;
    let refunded = app
        .wait_for_booking(&booked, "the full refund", |b| {
            b["refunded"]["amount"] == "2980.00"
        })
        .await;
    assert_eq!(refunded["refundDue"]["amount"], "2980.00", "{refunded}");
    assert!(
        refunded["reason"]
            .as_str()
            .is_some_and(|r| r.ends_with("暴雪封路; refunded in full")),
        "{refunded}"
    );
    app.until_invariants_hold().await;
}

/// The other way round: the booker pays and cancels before the operator
/// cancels the departure (which still lists the booking: inventory's
/// inbox held, the seat not yet given back), booking hearing of the
/// payment last: the booker's own choice, the policy's share (nothing).
#[tokio::test]
async fn a_payment_heard_last_for_a_booking_cancelled_before_its_departure_keeps_the_policys_share()
{
    let (app, admin, departure, booked) = an_unpaid_seat_two_days_ahead().await;
    let releases = common::LockHeld::begin(
        app.service_db("inventory").await,
        "LOCK TABLE inbox IN EXCLUSIVE MODE",
    )
    .await;
    let booking = app.service_db("booking").await;
    let inbox = common::LockHeld::begin(booking, "LOCK TABLE inbox IN EXCLUSIVE MODE").await;
    let charged = app.pay(&booked, "tok_success", "pay").await;
    assert!(charged["errors"].is_null(), "{charged}");
    inbox.until_waiting(1, true).await;
    let cancelled = app.cancel(&booked, "cancel").await;
    assert_eq!(
        cancelled["data"]["cancelBooking"]["status"], "CANCELLED",
        "{cancelled}"
    );
    cancel_departure(&app, &admin, &departure).await;
    inbox.until_waiting(2, true).await;
    hear_the_departure_then_the_payment(&app, inbox).await;
    releases.release().await;
    // The booking and its history are two reads: wait for both to say it
    // (one read between the capture's commit and the other saw half).
    let kept = app
        .wait_for_booking(&booked, "kept by the policy", |b| {
            b["refundDue"]["amount"] == "0.00"
                && b["history"].as_array().is_some_and(|h| {
                    h.iter().any(|e| {
                        e["cause"].as_str().is_some_and(|c| {
                            c.starts_with("payment captured before the cancellation; refund 0.00")
                        })
                    })
                })
        })
        .await;
    assert_eq!(kept["refundDue"]["amount"], "0.00", "{kept}");
    app.until_invariants_hold().await;
    let now = app.wait_for_booking(&booked, "read", |_| true).await;
    assert_eq!(now["refunded"]["amount"], "0.00", "{now}");
}

/// A capture of another amount (forged on the bus), refunded, pays nothing:
/// a booking cancelled unpaid after its departure was is not "topped up"
/// to its total by the departure's cancellation (payment refused it, and
/// `refundDue` stayed at the total though nothing went back).
#[tokio::test]
async fn a_departures_cancellation_tops_up_nothing_for_a_booking_never_paid() {
    let (app, admin, departure, booked) = an_unpaid_seat_two_days_ahead().await;
    app.publish_captured(&booked, 1).await;
    app.wait_for_cause(&booked, "no refund: nothing was captured")
        .await;
    let booking = app.service_db("booking").await;
    let inbox = common::LockHeld::begin(booking, "LOCK TABLE inbox IN EXCLUSIVE MODE").await;
    cancel_departure(&app, &admin, &departure).await;
    inbox.until_waiting(1, true).await;
    let cancelled = app.cancel(&booked, "cancel").await;
    assert_eq!(
        cancelled["data"]["cancelBooking"]["status"], "CANCELLED",
        "{cancelled}"
    );
    inbox.release().await;
    app.until_heard("booking", "inventory.departure_cancelled", 1)
        .await;
    let now = app.wait_for_booking(&booked, "read", |_| true).await;
    assert_eq!(now["refundDue"]["amount"], "0.00", "{now}");
    app.until_invariants_hold().await;
}

/// `addDeparture` sent again with its key answers the departure it added
/// (without one, the day taken is CONFLICT).
#[tokio::test]
async fn a_departure_sent_again_with_its_key_answers_the_one_added() {
    let app = spawn_app().await;
    let admin = app.region_admin("chifeng@example.cn", "150400").await;
    let (route, _) = route_on_sale(&app, &admin, 5, 10, 1).await;
    let add = "mutation($r: ID!, $d: Date!, $k: String) {
        addDeparture(routeId: $r, startsOn: $d, seats: 8, idempotencyKey: $k) { id seats } }";
    let day = (tomorrow() + Duration::days(30)).to_string();
    let vars = json!({ "r": route, "d": day, "k": "dep-1" });
    let first = app.graphql_as(Some(&admin), add, vars.clone()).await;
    assert!(first["errors"].is_null(), "{first}");
    let again = app.graphql_as(Some(&admin), add, vars).await;
    assert_eq!(first, again);
    let unkeyed = app
        .graphql_as(Some(&admin), add, json!({ "r": route, "d": day }))
        .await;
    assert_eq!(code(&unkeyed), "CONFLICT", "{unkeyed}");
}
