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
                           "roomType": { "name": "家庭房", "beds": 2, "maxGuests": 3, "rooms": 3 },
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

    // Guests or rooms below one: one refusal, saying what a search takes
    // (a negative count was refused in other words than none).
    for (guests, rooms) in [(-1, 1), (0, 1), (1, -1), (1, 0)] {
        common::assert_error(
            &app.graphql_as(None, SEARCH, window("150400", 2, guests, rooms))
                .await,
            "BAD_USER_INPUT",
            "search for 1 to 50 rooms and 1 to ",
        );
    }

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
    let mut past = window("150400", 2, 2, 1);
    past["in"] = json!("2020-01-01");
    past["out"] = json!("2020-01-03");
    assert_eq!(
        code(&app.graphql_as(None, SEARCH, past).await),
        "BAD_USER_INPUT"
    );
    // More guests or rooms than one booking takes (50 each) finds nothing
    // bookable: refused, saying why.
    for (guests, rooms) in [(51, 1), (2, 51), (0, 1)] {
        let crowd = app
            .graphql_as(None, SEARCH, window("150400", 2, guests, rooms))
            .await;
        assert_eq!(code(&crowd), "BAD_USER_INPUT", "{crowd}");
        assert!(
            crowd.to_string().contains("as one booking takes"),
            "{crowd}"
        );
    }
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
    let elsewhere = json!({ "i": { "hostName": "x", "regionCode": "150921", "name": "y", "roomType": { "name": "z", "beds": 1, "maxGuests": 1, "rooms": 1 } } });
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
    let by_platform = app.graphql_as(Some(&admin), calendar, vars.clone()).await;
    assert_eq!(by_platform["data"]["setRoomCalendar"], 1, "{by_platform}");
    // A price above a million yuan a night is refused: totals stay countable.
    let priceless = calendar.replace("\"1.00\"", "\"1000000.01\"");
    let refused = app.graphql_as(Some(&admin), &priceless, vars).await;
    assert_eq!(code(&refused), "BAD_USER_INPUT", "{refused}");
    let bad_policy = json!({ "i": { "hostName": "x", "regionCode": "150430", "name": "y", "roomType": { "name": "z", "beds": 1, "maxGuests": 1, "rooms": 1 },
                                    "cancellationPolicy": [{ "daysBefore": 1, "refundPercent": 100 }, { "daysBefore": 7, "refundPercent": 50 }] } });
    assert_eq!(
        code(&app.graphql_as(Some(&chifeng), create, bad_policy).await),
        "BAD_USER_INPUT"
    );
}

/// A homestay prepared off sale, published, then taken off sale again by
/// its region's admin: off sale it is not found and new bookings are
/// refused; the rooms a booking held before stay held.
#[tokio::test]
async fn a_homestay_off_sale_leaves_search_and_refuses_bookings_until_published() {
    let app = spawn_app().await;
    let chifeng = app.region_admin("chifeng@example.cn", "150400").await;
    let created = app
        .graphql_as(
            Some(&chifeng),
            "mutation($i: HomestayInput!) { createHomestay(input: $i) { homestayId roomTypeId } }",
            json!({ "i": { "hostName": "敖汉旗牧民合作社", "regionCode": "150430", "name": "筹备中的民宿",
                           "roomType": { "name": "家庭房", "beds": 2, "maxGuests": 2, "rooms": 2 },
                           "published": false } }),
        )
        .await;
    let ids = &created["data"]["createHomestay"];
    let (Some(homestay), Some(room_type)) =
        (ids["homestayId"].as_str(), ids["roomTypeId"].as_str())
    else {
        panic!("{created}")
    };
    let set = app
        .graphql_as(
            Some(&chifeng),
            "mutation($rt: ID!, $from: Date!, $to: Date!) { setRoomCalendar(roomTypeId: $rt, from: $from, to: $to, price: \"200.00\") }",
            json!({ "rt": room_type, "from": tomorrow().to_string(), "to": (tomorrow() + Days::days(10)).to_string() }),
        )
        .await;
    assert_eq!(set["data"]["setRoomCalendar"], 10, "{set}");
    let offers = || async { totals(&app.graphql(SEARCH, window("150430", 2, 1, 1)).await) };
    let published = || async {
        let read = app
            .graphql_as(
                Some(&chifeng),
                "query($id: ID!) { homestay(id: $id) { published } }",
                json!({ "id": homestay }),
            )
            .await;
        read["data"]["homestay"]["published"].clone()
    };
    const PUBLISH: &str = "mutation($l: ID!, $p: Boolean!) { publishListing(listingId: $l, published: $p) { listingId listingKind published } }";

    // Prepared off sale: readable by its admins, not found, not bookable.
    assert_eq!(published().await, json!(false));
    assert!(offers().await.is_empty());
    let refused = outcome(&app, room_type, 0, 2, 1, "off-1").await;
    assert!(refused.starts_with("NOT_FOUND: roomTypeId:"), "{refused}");
    // Not even how many it sleeps: more travelers than that is the same
    // NOT_FOUND (it said "2 at most", telling that the id exists).
    let crowded = outcome(&app, room_type, 0, 2, 3, "off-2").await;
    assert!(crowded.starts_with("NOT_FOUND: roomTypeId:"), "{crowded}");

    // Only the listing's region's admins put it on sale; to another
    // region's admin a listing off sale is not there: the very answer an
    // unknown id gets (not FORBIDDEN, which would say it exists, and
    // where). A traveler is refused as an admin's operation is, whatever
    // the id: that says nothing of the listing either.
    let on = json!({ "l": homestay, "p": true });
    let beijing = app.region_admin("beijing@example.cn", "110000").await;
    let unknown = json!({ "l": uuid::Uuid::now_v7().to_string(), "p": true });
    for (token, expected) in [
        (Some(beijing.as_str()), "NOT_FOUND"),
        (app.token.as_deref(), "FORBIDDEN"),
    ] {
        let not_there = app.graphql_as(token, PUBLISH, unknown.clone()).await;
        assert_eq!(code(&not_there), expected, "{not_there}");
        let hidden = app.graphql_as(token, PUBLISH, on.clone()).await;
        assert_eq!(hidden["errors"], not_there["errors"], "{hidden}");
        let calendar = app
            .graphql_as(
                token,
                "mutation($rt: ID!, $d: Date!, $e: Date!) { setRoomCalendar(roomTypeId: $rt, from: $d, to: $e, price: \"1.00\") }",
                json!({ "rt": room_type, "d": tomorrow().to_string(), "e": (tomorrow() + Days::days(1)).to_string() }),
            )
            .await;
        assert_eq!(code(&calendar), expected, "{calendar}");
    }
    assert_eq!(
        code(&app.graphql_as(None, PUBLISH, on.clone()).await),
        "UNAUTHENTICATED"
    );
    assert_eq!(
        code(&app.graphql_as(Some(&chifeng), PUBLISH, unknown).await),
        "NOT_FOUND"
    );
    let malformed = json!({ "l": "民宿", "p": true });
    assert_eq!(
        code(&app.graphql_as(Some(&chifeng), PUBLISH, malformed).await),
        "BAD_USER_INPUT"
    );
    assert!(offers().await.is_empty(), "a refused publication published");

    // On sale: found and bookable.
    let done = app.graphql_as(Some(&chifeng), PUBLISH, on).await;
    assert_eq!(
        done["data"]["publishListing"],
        json!({ "listingId": homestay, "listingKind": "HOMESTAY", "published": true }),
        "{done}"
    );
    assert_eq!(published().await, json!(true));
    assert_eq!(offers().await, ["筹备中的民宿 400.00"]);
    assert_eq!(
        outcome(&app, room_type, 0, 2, 1, "off-2").await,
        "AWAITING_PAYMENT"
    );

    // Off sale again: gone from search, refused; the held room stays held.
    let off = app
        .graphql_as(
            Some(&chifeng),
            PUBLISH,
            json!({ "l": homestay, "p": false }),
        )
        .await;
    assert_eq!(off["data"]["publishListing"]["published"], false, "{off}");
    assert!(offers().await.is_empty());
    // Refused at once as not there once the gateway has heard the change;
    // a booking taken before that is REJECTED by its hold.
    let refused = outcome(&app, room_type, 0, 2, 1, "off-3").await;
    assert!(
        refused.starts_with("NOT_FOUND: roomTypeId:") || refused.starts_with("NOT_PUBLISHED"),
        "{refused}"
    );
    // Its calendar, like the homestay itself, is its region's admins' alone
    // while off sale: the held room stays held.
    let calendar = |token: Option<String>| {
        let app = &app;
        async move {
            app.graphql_as(
                token.as_deref(),
                "query($rt: ID!, $from: Date!, $to: Date!) { roomCalendar(roomTypeId: $rt, from: $from, to: $to) { available } }",
                json!({ "rt": room_type, "from": tomorrow().to_string(), "to": (tomorrow() + Days::days(3)).to_string() }),
            )
            .await
        }
    };
    let nights = calendar(Some(chifeng.clone())).await;
    assert_eq!(
        nights["data"]["roomCalendar"],
        json!([{ "available": 1 }, { "available": 1 }, { "available": 2 }]),
        "{nights}"
    );
    for token in [None, app.token.clone(), Some(beijing.clone())] {
        let hidden = calendar(token).await;
        assert_eq!(code(&hidden), "NOT_FOUND", "{hidden}");
    }
    // So is its quote: to others it is not there, as an unknown room type
    // is not (not its name, price or region, nor that it exists).
    let quote_of = |token: Option<String>, room_type: String| {
        let app = &app;
        async move {
            app.graphql_as(
                token.as_deref(),
                "query($i: BookingQuoteInput!) { bookingQuote(input: $i) { refusal total { amount } listing { title } } }",
                json!({ "i": { "roomTypeId": room_type, "checkIn": tomorrow().to_string(),
                               "checkOut": (tomorrow() + Days::days(1)).to_string(), "travelers": 1 } }),
            )
            .await
        }
    };
    let quote = |token: Option<String>| quote_of(token, room_type.to_owned());
    let unknown = quote_of(None, uuid::Uuid::now_v7().to_string()).await;
    assert_eq!(code(&unknown), "NOT_FOUND", "{unknown}");
    let admins = quote(Some(chifeng.clone())).await;
    assert_eq!(
        admins["data"]["bookingQuote"],
        json!({ "refusal": "NOT_PUBLISHED", "total": { "amount": "200.00" },
                "listing": { "title": "筹备中的民宿 · 家庭房" } }),
        "{admins}"
    );
    for token in [None, app.token.clone(), Some(beijing.clone())] {
        let hidden = quote(token).await;
        assert_eq!(hidden["errors"], unknown["errors"], "{hidden}");
        assert!(hidden["data"]["bookingQuote"].is_null(), "{hidden}");
    }
    // Read by id: its region's admins still see it, nobody else does.
    let read = |token: Option<String>| {
        let app = &app;
        async move {
            app.graphql_as(
                token.as_deref(),
                "query($h: ID!) { homestay(id: $h) { published } }",
                json!({ "h": homestay }),
            )
            .await["data"]["homestay"]
                .clone()
        }
    };
    assert_eq!(
        read(Some(chifeng.clone())).await,
        json!({ "published": false })
    );
    assert_eq!(read(None).await, Value::Null);
    assert_eq!(read(app.token.clone()).await, Value::Null);
}

/// Books `nights` nights from `check_in` for `travelers` travelers in one
/// room; the REJECTED reason, the status it reached, or the error the
/// request was refused with at once ("CODE: message").
async fn outcome(
    app: &TestApp,
    room_type: &str,
    check_in: i64,
    nights: i64,
    travelers: usize,
    key: &str,
) -> String {
    let from = tomorrow() + Days::days(check_in);
    let people: Vec<Value> = (0..travelers)
        .map(|i| json!({ "name": format!("旅客{i}"), "idType": "PASSPORT", "idNumber": format!("E1234567{i}") }))
        .collect();
    let body = app
        .graphql(
            "mutation($input: CreateBookingInput!, $key: String!) { createBooking(input: $input, idempotencyKey: $key) { id } }",
            json!({ "key": key, "input": { "roomTypeId": room_type, "checkIn": from.to_string(),
                    "checkOut": (from + Days::days(nights)).to_string(), "travelers": people,
                    "contact": { "name": "张三", "phone": "13800138000" } } }),
        )
        .await;
    if !body["errors"].is_null() {
        return format!(
            "{}: {}",
            code(&body),
            body["errors"][0]["message"].as_str().unwrap_or_default()
        );
    }
    let id = TestApp::id_of(&body);
    if app.wait_until_held_or_rejected(&id).await == "REJECTED" {
        let rejected = app.wait_for_status(&id, "REJECTED").await;
        rejected["reason"].as_str().unwrap_or_default().to_owned()
    } else {
        "AWAITING_PAYMENT".into()
    }
}

#[tokio::test]
async fn a_homestay_has_details_room_types_closed_nights_and_a_minimum_stay() {
    let app = spawn_app().await;
    let admin = app.region_admin("chifeng@example.cn", "150400").await;
    let input = json!({ "hostName": "敖汉旗牧民合作社", "regionCode": "150430", "name": "兴隆洼草原人家",
        "roomType": { "name": "双床房", "beds": 2, "maxGuests": 2, "rooms": 2 },
        "address": "敖汉旗宝国吐乡兴隆洼村", "grade": "GOLD", "amenities": ["热水", "暖气"],
        "photos": ["https://img.example.cn/xinglongwa/1.jpg"] });
    let mut bad = input.clone();
    bad["photos"] = json!(["ftp://img.example.cn/1.jpg"]);
    let refused = app
        .graphql_as(
            Some(&admin),
            "mutation($i: HomestayInput!) { createHomestay(input: $i) { homestayId } }",
            json!({ "i": bad }),
        )
        .await;
    assert_eq!(code(&refused), "BAD_USER_INPUT", "{refused}");
    let created = app
        .graphql_as(
            Some(&admin),
            "mutation($i: HomestayInput!) { createHomestay(input: $i) { homestayId roomTypeId } }",
            json!({ "i": input }),
        )
        .await;
    let homestay = created["data"]["createHomestay"]["homestayId"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"))
        .to_owned();
    let room_type = created["data"]["createHomestay"]["roomTypeId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    let add = "mutation($h: ID!) { addRoomType(homestayId: $h, roomType: { name: \"蒙古包家庭房\", beds: 3, maxGuests: 4, rooms: 2 }) { name maxGuests rooms } }";
    assert_eq!(
        code(&app.graphql(add, json!({ "h": homestay })).await),
        "FORBIDDEN"
    );
    let added = app
        .graphql_as(Some(&admin), add, json!({ "h": homestay }))
        .await;
    assert_eq!(
        added["data"]["addRoomType"],
        json!({ "name": "蒙古包家庭房", "maxGuests": 4, "rooms": 2 }),
        "{added}"
    );
    let read = app
        .graphql_as(None, "query($id: ID!) { homestay(id: $id) { name address grade amenities photos certified roomTypes { name maxGuests rooms } } }", json!({ "id": homestay }))
        .await;
    assert_eq!(
        read["data"]["homestay"],
        json!({ "name": "兴隆洼草原人家", "address": "敖汉旗宝国吐乡兴隆洼村", "grade": "GOLD",
                "amenities": ["热水", "暖气"], "photos": ["https://img.example.cn/xinglongwa/1.jpg"],
                "certified": false,
                "roomTypes": [{ "name": "双床房", "maxGuests": 2, "rooms": 2 }, { "name": "蒙古包家庭房", "maxGuests": 4, "rooms": 2 }] }),
        "{read}"
    );

    // Ten nights on sale; the third closed; stays beginning on the sixth
    // or seventh last at least three nights.
    let calendar = "mutation($rt: ID!, $from: Date!, $to: Date!, $closed: Boolean, $min: Int) {
        setRoomCalendar(roomTypeId: $rt, from: $from, to: $to, rooms: 2, price: \"300.00\", closed: $closed, minStay: $min) }";
    let day = |n: i64| (tomorrow() + Days::days(n)).to_string();
    for vars in [
        json!({ "rt": room_type, "from": day(0), "to": day(10), "closed": false, "min": 1 }),
        json!({ "rt": room_type, "from": day(2), "to": day(3), "closed": true, "min": 1 }),
        json!({ "rt": room_type, "from": day(5), "to": day(7), "closed": false, "min": 3 }),
    ] {
        let set = app.graphql_as(Some(&admin), calendar, vars.clone()).await;
        assert!(set["errors"].is_null(), "{vars}: {set}");
    }
    // A calendar cannot sell more rooms than the type has, nor nights in
    // the past; without `rooms` it sells all of them.
    let more = "mutation($rt: ID!, $from: Date!, $to: Date!, $rooms: Int) {
        setRoomCalendar(roomTypeId: $rt, from: $from, to: $to, rooms: $rooms, price: \"300.00\") }";
    let too_many = app
        .graphql_as(
            Some(&admin),
            more,
            json!({ "rt": room_type, "from": day(20), "to": day(21), "rooms": 3 }),
        )
        .await;
    assert_eq!(code(&too_many), "BAD_USER_INPUT", "{too_many}");
    assert!(
        too_many["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("rooms:")),
        "{too_many}"
    );
    let yesterday = (shared::policy::china_today(chrono::Utc::now()) - Days::days(1)).to_string();
    let past = app
        .graphql_as(
            Some(&admin),
            more,
            json!({ "rt": room_type, "from": yesterday, "to": day(1), "rooms": 1 }),
        )
        .await;
    assert_eq!(code(&past), "BAD_USER_INPUT", "{past}");
    assert!(
        past["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("from:")),
        "{past}"
    );
    let all = app
        .graphql_as(
            Some(&admin),
            more,
            json!({ "rt": room_type, "from": day(20), "to": day(21) }),
        )
        .await;
    assert_eq!(all["data"]["setRoomCalendar"], 1, "{all}");
    let night_20 = app
        .graphql_as(None, "query($id: ID!, $from: Date!, $to: Date!) { homestay(id: $id) { roomTypes { calendar(from: $from, to: $to) { rooms available } } } }",
            json!({ "id": homestay, "from": day(20), "to": day(21) }))
        .await;
    assert_eq!(
        night_20["data"]["homestay"]["roomTypes"][0]["calendar"],
        json!([{ "rooms": 2, "available": 2 }]),
        "{night_20}"
    );
    let nights = app
        .graphql_as(None, "query($id: ID!, $from: Date!, $to: Date!) { homestay(id: $id) { roomTypes { calendar(from: $from, to: $to) { closed minStay } } } }",
            json!({ "id": homestay, "from": day(2), "to": day(4) }))
        .await;
    assert_eq!(
        nights["data"]["homestay"]["roomTypes"][0]["calendar"],
        json!([{ "closed": true, "minStay": 1 }, { "closed": false, "minStay": 1 }]),
        "{nights}"
    );

    // A price change alone keeps what else each night has: the closed
    // night closed, the minimum stays, a night's lowered rooms (it
    // reopened them, all the rooms and stays of any length).
    let one_room = app
        .graphql_as(
            Some(&admin),
            more,
            json!({ "rt": room_type, "from": day(9), "to": day(10), "rooms": 1 }),
        )
        .await;
    assert_eq!(one_room["data"]["setRoomCalendar"], 1, "{one_room}");
    let terms = "mutation($rt: ID!, $from: Date!, $to: Date!, $price: String, $closed: Boolean) {
        setRoomCalendar(roomTypeId: $rt, from: $from, to: $to, price: $price, closed: $closed) }";
    let repriced = app
        .graphql_as(
            Some(&admin),
            terms,
            json!({ "rt": room_type, "from": day(0), "to": day(10), "price": "320.00" }),
        )
        .await;
    assert_eq!(repriced["data"]["setRoomCalendar"], 10, "{repriced}");
    let calendar_of = |from: i64, to: i64| {
        let (app, homestay) = (&app, &homestay);
        async move {
            app.graphql_as(None, "query($id: ID!, $from: Date!, $to: Date!) { homestay(id: $id) { roomTypes { calendar(from: $from, to: $to) { rooms closed minStay price { amount } } } } }",
                json!({ "id": homestay, "from": day(from), "to": day(to) }))
                .await["data"]["homestay"]["roomTypes"][0]["calendar"]
                .clone()
        }
    };
    let expected: Vec<Value> = (0..10)
        .map(|n| {
            json!({ "rooms": if n == 9 { 1 } else { 2 }, "closed": n == 2,
                    "minStay": if n == 5 || n == 6 { 3 } else { 1 },
                    "price": { "amount": "320.00" } })
        })
        .collect();
    assert_eq!(calendar_of(0, 10).await, json!(expected));
    // A night not on sale yet needs its price; one on sale is closed with
    // nothing else said (and its price kept).
    let unpriced = app
        .graphql_as(
            Some(&admin),
            terms,
            json!({ "rt": room_type, "from": day(9), "to": day(12), "closed": false }),
        )
        .await;
    assert_eq!(code(&unpriced), "BAD_USER_INPUT", "{unpriced}");
    assert!(
        unpriced["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with(&format!("price: {} is not on sale yet", day(10)))),
        "{unpriced}"
    );
    let closed = app
        .graphql_as(
            Some(&admin),
            terms,
            json!({ "rt": room_type, "from": day(9), "to": day(10), "closed": true }),
        )
        .await;
    assert_eq!(closed["data"]["setRoomCalendar"], 1, "{closed}");
    // No term at all changes nothing: refused, not "1 night set".
    let nothing = app
        .graphql_as(
            Some(&admin),
            terms,
            json!({ "rt": room_type, "from": day(9), "to": day(10) }),
        )
        .await;
    assert_eq!(code(&nothing), "BAD_USER_INPUT", "{nothing}");
    assert!(nothing.to_string().contains("nothing to set"), "{nothing}");
    assert_eq!(
        calendar_of(9, 10).await,
        json!([{ "rooms": 1, "closed": true, "minStay": 1, "price": { "amount": "320.00" } }])
    );

    let offered = |from: i64, nights: i64| {
        let app = &app;
        async move {
            let body = app
                .graphql(SEARCH, json!({ "r": "150430", "in": day(from), "out": day(from + nights), "g": 1, "rooms": 1, "first": 10 }))
                .await;
            !totals(&body).is_empty()
        }
    };
    assert!(offered(0, 2).await);
    assert!(
        !offered(1, 2).await,
        "a stay over the closed night is not offered"
    );
    assert!(
        !offered(5, 1).await,
        "one night from a three-night minimum is not offered"
    );
    assert!(offered(5, 3).await);

    // The night to change is named (it said "a night from … to" the
    // check-out day, which is no night).
    let over_closed = outcome(&app, &room_type, 1, 2, 1, "closed").await;
    assert!(
        over_closed.starts_with("CLOSED")
            && over_closed.contains(&format!("no bookings on the night of {}", day(2))),
        "{over_closed}"
    );
    let past_calendar = outcome(&app, &room_type, 10, 2, 1, "past the calendar").await;
    assert!(
        past_calendar.starts_with("CLOSED")
            && past_calendar.contains(&format!("from {} through {}", day(10), day(11))),
        "{past_calendar}"
    );
    assert!(
        outcome(&app, &room_type, 5, 2, 1, "short")
            .await
            .starts_with("MIN_STAY")
    );
    // A night on sale with no rooms is closed too: nobody took it.
    let none = app
        .graphql_as(
            Some(&admin),
            more,
            json!({ "rt": room_type, "from": day(8), "to": day(9), "rooms": 0 }),
        )
        .await;
    assert_eq!(none["data"]["setRoomCalendar"], 1, "{none}");
    let no_rooms = outcome(&app, &room_type, 8, 1, 1, "no rooms").await;
    assert!(
        no_rooms.starts_with("CLOSED")
            && no_rooms.contains(&format!("no bookings on the night of {}", day(8)))
            && no_rooms.contains("none of its rooms on sale"),
        "{no_rooms}"
    );
    // Refused at once: no hold could ever sleep three in a two-guest room.
    let crowded = outcome(&app, &room_type, 0, 1, 3, "crowded").await;
    assert!(
        crowded.starts_with("BAD_USER_INPUT: travelers"),
        "{crowded}"
    );
    assert_eq!(
        outcome(&app, &room_type, 5, 3, 2, "fine").await,
        "AWAITING_PAYMENT"
    );
}

#[tokio::test]
async fn one_host_is_paid_for_several_listings_of_its_region() {
    let app = spawn_app().await;
    let admin = app.region_admin("chifeng@example.cn", "150400").await;
    let create_host = "mutation { createHost(name: \"宝国吐乡牧民合作社\", regionCode: \"150430\") { id listings } }";
    assert_eq!(
        code(&app.graphql(create_host, json!({})).await),
        "FORBIDDEN"
    );
    let host = app.graphql_as(Some(&admin), create_host, json!({})).await;
    let host_id = host["data"]["createHost"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{host}"))
        .to_owned();

    let homestay = |region: &str, host: Option<&str>| {
        json!({ "i": { "hostId": host, "regionCode": region, "name": "草原人家",
                       "roomType": { "name": "双床房", "beds": 2, "maxGuests": 2, "rooms": 2 } } })
    };
    let create = "mutation($i: HomestayInput!) { createHomestay(input: $i) { homestayId hostId } }";
    let first = app
        .graphql_as(Some(&admin), create, homestay("150430", Some(&host_id)))
        .await;
    assert_eq!(
        first["data"]["createHomestay"]["hostId"],
        host_id.as_str(),
        "{first}"
    );
    let route = app
        .graphql_as(
            Some(&admin),
            "mutation($h: ID!) { createRoute(input: { hostId: $h, regionCode: \"150430\", titleZh: \"敖汉 两日\", titleEn: \"Aohan, two days\",
                itinerary: [{ day: 1, title: \"兴隆洼\", regionCodes: [\"150430\"] }], pricePerPerson: \"800\" }) { hostId } }",
            json!({ "h": host_id }),
        )
        .await;
    assert_eq!(
        route["data"]["createRoute"]["hostId"],
        host_id.as_str(),
        "{route}"
    );
    // Not for a listing in another banner; and a listing needs a host.
    let elsewhere = app
        .graphql_as(Some(&admin), create, homestay("150428", Some(&host_id)))
        .await;
    assert_eq!(code(&elsewhere), "BAD_USER_INPUT", "{elsewhere}");
    // Where a host is is its region's admins' to know: not said.
    assert!(!elsewhere.to_string().contains("150430"), "{elsewhere}");
    let hostless = app
        .graphql_as(Some(&admin), create, homestay("150430", None))
        .await;
    assert_eq!(code(&hostless), "BAD_USER_INPUT", "{hostless}");

    let hosts = app
        .graphql_as(
            Some(&admin),
            "{ hosts(regionCode: \"150400\") { edges { node { id name listings } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        hosts["data"]["hosts"]["edges"],
        json!([{ "node": { "id": host_id, "name": "宝国吐乡牧民合作社", "listings": 2 } }]),
        "{hosts}"
    );
    let beijing = app.region_admin("beijing@example.cn", "110000").await;
    let refused = app
        .graphql_as(
            Some(&beijing),
            "{ hosts(regionCode: \"150400\") { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&refused), "FORBIDDEN", "{refused}");
}

#[tokio::test]
async fn search_answers_come_from_the_cache_until_the_catalogue_or_a_hold_changes_them() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let created = app.homestay(1).await;
    let vars = window("150430", 1, 1, 1);
    let offers = |body: &Value| {
        body["data"]["searchHomestays"]["edges"]
            .as_array()
            .map_or(0, Vec::len)
    };
    // Asked again and again, the answer comes from the cache (once the
    // events of the homestay's own creation have landed and the version
    // stopped moving): anonymous callers get the whole answer kept, a
    // logged-in caller the search's kept RPC answer.
    let answers = || {
        app.metric(
            "duikou_cache_total",
            &["method=\"answer\"", "outcome=\"local\""],
        )
    };
    let searches = || async {
        app.metric(
            "duikou_cache_total",
            &["search_homestays", "outcome=\"local\""],
        )
        .await
            + app
                .metric(
                    "duikou_cache_total",
                    &["search_homestays", "outcome=\"hit\""],
                )
                .await
    };
    let (answered, searched) = (answers().await, searches().await);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        assert_eq!(offers(&app.graphql_as(None, SEARCH, vars.clone()).await), 1);
        assert_eq!(offers(&app.graphql(SEARCH, vars.clone()).await), 1);
        if answers().await > answered && searches().await > searched {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no search was ever answered by the cache"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // What an anonymous caller and a logged-in one are offered.
    let seen = || async {
        (
            offers(&app.graphql_as(None, SEARCH, vars.clone()).await),
            offers(&app.graphql(SEARCH, vars.clone()).await),
        )
    };
    // The calendar closes the night: the cached answer is not given again.
    let close = "mutation($rt: ID!, $from: Date!, $to: Date!) {
        setRoomCalendar(roomTypeId: $rt, from: $from, to: $to, price: \"380.00\", closed: true) }";
    let night = json!({ "rt": created.room_type_id.to_string(), "from": tomorrow().to_string(),
                        "to": (tomorrow() + Days::days(1)).to_string() });
    let closed = app.graphql_as(Some(&admin), close, night.clone()).await;
    assert!(closed["errors"].is_null(), "{closed}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while seen().await != (0, 0) {
        assert!(
            std::time::Instant::now() < deadline,
            "a closed night stayed on offer"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Open again, then a hold takes the only room: gone again.
    let open = close.replace("closed: true", "closed: false");
    assert!(app.graphql_as(Some(&admin), &open, night).await["errors"].is_null());
    while seen().await != (1, 1) {
        assert!(
            std::time::Instant::now() < deadline,
            "the night never came back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let held = TestApp::id_of(
        &app.create_booking(&created.room_type_id.to_string(), tomorrow(), 1, "cache")
            .await,
    );
    app.wait_for_status(&held, "AWAITING_PAYMENT").await;
    while seen().await != (0, 0) {
        assert!(
            std::time::Instant::now() < deadline,
            "a held room stayed on offer"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Cached answers are kept under the build of the contracts that wrote
/// them (`shared::CONTRACTS`): in a rolling upgrade an older gateway, whose
/// views lack a newer field, neither reads this one's entries nor writes
/// back a copy without the field. Every entry the gateway writes is under
/// its fingerprint.
#[tokio::test]
async fn cached_answers_are_kept_under_the_contracts_they_were_built_from() {
    let app = spawn_app().await;
    let prefix = format!("{}cache:", app.settings.db_prefix);
    let mut redis = redis::Client::open(common::redis_url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let entries = loop {
        let regions = app
            .graphql_as(
                None,
                "{ regions(parentCode: \"150400\") { code } }",
                json!({}),
            )
            .await;
        assert!(regions["data"]["regions"].is_array(), "{regions}");
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query_async(&mut redis)
            .await
            .expect("keys");
        let entries: Vec<String> = keys
            .into_iter()
            .filter(|k| !k.starts_with(&format!("{prefix}apq")))
            .collect();
        if !entries.is_empty() {
            break entries;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no answer was ever cached"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let ours = format!("{prefix}{}:", shared::CONTRACTS);
    assert!(
        entries.iter().all(|k| k.starts_with(&ours)),
        "entries not under the contracts' fingerprint {ours}: {entries:?}"
    );
}

#[tokio::test]
async fn the_calendars_of_a_homestays_room_types_come_in_one_call() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let created = app.homestay(2).await;
    for name in ["家庭房", "蒙古包"] {
        let added = app
            .graphql_as(
                Some(&admin),
                "mutation($h: ID!, $n: String!) { addRoomType(homestayId: $h, roomType: { name: $n, beds: 2, maxGuests: 2, rooms: 1 }) { id } }",
                json!({ "h": created.homestay_id.to_string(), "n": name }),
            )
            .await;
        assert!(added["errors"].is_null(), "{added}");
    }
    let before = app
        .metric("duikou_rpc_total", &["get_room_calendars"])
        .await;
    let single = app
        .metric("duikou_rpc_total", &["method=\"get_room_calendar\""])
        .await;
    let read = app
        .graphql_as(
            None,
            "query($id: ID!, $from: Date!, $to: Date!) { homestay(id: $id) { roomTypes { name calendar(from: $from, to: $to) { available } } } }",
            json!({ "id": created.homestay_id.to_string(), "from": tomorrow().to_string(),
                    "to": (tomorrow() + Days::days(2)).to_string() }),
        )
        .await;
    let types = read["data"]["homestay"]["roomTypes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(types.len(), 3, "{read}");
    assert!(
        types
            .iter()
            .any(|t| t["calendar"] == json!([{ "available": 2 }, { "available": 2 }])),
        "{read}"
    );
    assert_eq!(
        app.metric("duikou_rpc_total", &["get_room_calendars"])
            .await,
        before + 1.0,
        "one batched call"
    );
    assert_eq!(
        app.metric("duikou_rpc_total", &["method=\"get_room_calendar\""])
            .await,
        single,
        "none per room type"
    );
    // A range refused beside it fails its own fields only (one bad range
    // failed the whole batch: every calendar of the page, and the homestay).
    let mixed = app
        .graphql_as(
            None,
            "query($id: ID!, $from: Date!, $to: Date!) { good: homestay(id: $id) { roomTypes { calendar(from: $from, to: $to) { available } } } bad: homestay(id: $id) { roomTypes { calendar(from: $to, to: $from) { available } } } }",
            json!({ "id": created.homestay_id.to_string(), "from": tomorrow().to_string(),
                    "to": (tomorrow() + Days::days(2)).to_string() }),
        )
        .await;
    let good = mixed["data"]["good"]["roomTypes"][0]["calendar"].clone();
    assert_eq!(good.as_array().map(Vec::len), Some(2), "{mixed}");
    // The refused range's calendar is null; its homestay is kept.
    assert!(
        mixed["data"]["bad"]["roomTypes"][0]["calendar"].is_null()
            && mixed["data"]["bad"]["roomTypes"][0].is_object(),
        "{mixed}"
    );
    let errors = mixed["errors"].as_array().cloned().unwrap_or_default();
    assert!(
        !errors.is_empty()
            && errors
                .iter()
                .all(|e| e["path"][0] == "bad" && e["extensions"]["code"] == "BAD_USER_INPUT"),
        "{mixed}"
    );
}

in_both_modes!(a_region_admin_pages_through_its_hosts_by_banner_then_name);
async fn a_region_admin_pages_through_its_hosts_by_banner_then_name(
    settings: shared::config::Settings,
) {
    let app = common::spawn_app_with(settings).await;
    let admin = app.region_admin("chifeng@example.cn", "150400").await;
    let platform = app.admin_token().await;
    const HOSTS: &str = "query($r: ID!, $first: Int!, $after: String) {
        hosts(regionCode: $r, first: $first, after: $after) {
          edges { cursor node { name regionCode listings } }
          pageInfo { hasNextPage endCursor } totalCount } }";
    let names = |body: &Value| -> Vec<String> {
        body["data"]["hosts"]["edges"]
            .as_array()
            .unwrap_or_else(|| panic!("no hosts in {body}"))
            .iter()
            .map(|e| e["node"]["name"].as_str().unwrap_or("?").to_owned())
            .collect()
    };
    let create = "mutation($n: String!, $r: ID!) { createHost(name: $n, regionCode: $r) { id } }";
    let mut ids = Vec::new();
    for (token, name, region) in [
        (&admin, "新惠镇农户", "150430"),
        (&admin, "宝国吐乡牧民合作社", "150430"),
        (&admin, "王爷府镇农家", "150428"),
        (&platform, "朝阳区民宿合作社", "110105"),
    ] {
        let made = app
            .graphql_as(Some(token), create, json!({ "n": name, "r": region }))
            .await;
        assert!(made["data"]["createHost"]["id"].is_string(), "{made}");
        ids.push(made["data"]["createHost"]["id"].clone());
    }
    let nameless = app
        .graphql_as(Some(&admin), create, json!({ "n": "  ", "r": "150430" }))
        .await;
    assert_eq!(code(&nameless), "BAD_USER_INPUT", "{nameless}");
    assert!(
        nameless["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("name:")),
        "in the argument's own name: {nameless}"
    );
    let list = |vars: Value| app.graphql_as(Some(&admin), HOSTS, vars);

    // By banner code, then name, two at a time; the count covers all pages.
    let page = list(json!({ "r": "150400", "first": 2 })).await;
    assert_eq!(
        names(&page),
        ["王爷府镇农家", "宝国吐乡牧民合作社"],
        "{page}"
    );
    let hosts = &page["data"]["hosts"];
    assert_eq!(hosts["pageInfo"]["hasNextPage"], true, "{page}");
    assert_eq!(hosts["totalCount"], 3, "{page}");
    assert_eq!(hosts["edges"][0]["node"]["regionCode"], "150428", "{page}");
    assert_eq!(hosts["edges"][0]["node"]["listings"], 0, "{page}");
    let rest =
        list(json!({ "r": "150400", "first": 2, "after": hosts["pageInfo"]["endCursor"] })).await;
    assert_eq!(names(&rest), ["新惠镇农户"], "{rest}");
    assert_eq!(
        rest["data"]["hosts"]["pageInfo"]["hasNextPage"], false,
        "{rest}"
    );
    let banner = list(json!({ "r": "150430", "first": 20 })).await;
    assert_eq!(
        names(&banner),
        ["宝国吐乡牧民合作社", "新惠镇农户"],
        "{banner}"
    );
    assert_eq!(banner["data"]["hosts"]["totalCount"], 2, "{banner}");

    // Another region's host is no cursor here: it is refused as an unknown
    // id is (an empty page told that it was a host, and where it sorted).
    for bad in [
        json!({ "r": "150400", "first": 2, "after": "not-a-cursor" }),
        json!({ "r": "150400", "first": 2, "after": uuid::Uuid::now_v7().to_string() }),
        json!({ "r": "150400", "first": 2, "after": ids[3] }),
        json!({ "r": "150400", "first": 0 }),
        json!({ "r": "150400", "first": 101 }),
        json!({ "r": "nowhere", "first": 2 }),
    ] {
        assert_eq!(code(&list(bad.clone()).await), "BAD_USER_INPUT", "{bad}");
    }
    // Beijing's admin sees none of them; a platform admin sees every
    // region's.
    let beijing = app.region_admin("beijing@example.cn", "110000").await;
    let refused = app
        .graphql_as(Some(&beijing), HOSTS, json!({ "r": "150400", "first": 2 }))
        .await;
    assert_eq!(code(&refused), "FORBIDDEN", "{refused}");
    for (region, hosts) in [("150000", 3), ("110000", 1)] {
        let seen = app
            .graphql_as(Some(&platform), HOSTS, json!({ "r": region, "first": 20 }))
            .await;
        assert_eq!(seen["data"]["hosts"]["totalCount"], hosts, "{seen}");
    }
}

in_both_modes!(a_region_admin_lists_its_hosts_listings_drafts_included_newest_first);
async fn a_region_admin_lists_its_hosts_listings_drafts_included_newest_first(
    settings: shared::config::Settings,
) {
    let app = common::spawn_app_with(settings).await;
    let admin = app.region_admin("chifeng@example.cn", "150400").await;
    const LISTINGS: &str = "query($r: ID!, $h: ID, $p: Boolean, $first: Int!, $after: String) {
        regionListings(regionCode: $r, hostId: $h, published: $p, first: $first, after: $after) {
          edges { cursor node {
            __typename
            ... on Homestay { id nameZh published roomTypes { name } }
            ... on Route { id titleZh status departures { startsOn seatsLeft } } } }
          pageInfo { hasNextPage endCursor } totalCount } }";
    let names = |body: &Value| -> Vec<String> {
        body["data"]["regionListings"]["edges"]
            .as_array()
            .unwrap_or_else(|| panic!("no listings in {body}"))
            .iter()
            .map(|e| {
                let n = &e["node"];
                n["nameZh"]
                    .as_str()
                    .or(n["titleZh"].as_str())
                    .unwrap_or("?")
                    .to_owned()
            })
            .collect()
    };
    let list = |vars: Value| app.graphql_as(Some(&admin), LISTINGS, vars);

    // Two hosts of 敖汉旗: a homestay on sale, one kept off sale, a draft route.
    let create = "mutation($i: HomestayInput!) { createHomestay(input: $i) { homestayId hostId } }";
    let on_sale = app
        .graphql_as(
            Some(&admin),
            create,
            json!({ "i": { "hostName": "宝国吐乡牧民合作社", "regionCode": "150430", "name": "草原人家",
                           "roomType": { "name": "双床房", "beds": 2, "maxGuests": 2, "rooms": 2 } } }),
        )
        .await;
    let host = on_sale["data"]["createHomestay"]["hostId"]
        .as_str()
        .unwrap_or_else(|| panic!("{on_sale}"))
        .to_owned();
    let off_sale = app
        .graphql_as(
            Some(&admin),
            create,
            json!({ "i": { "hostName": "新惠镇农户", "regionCode": "150430", "name": "农家小院",
                           "published": false,
                           "roomType": { "name": "大炕", "beds": 1, "maxGuests": 4, "rooms": 1 } } }),
        )
        .await;
    assert!(
        off_sale["data"]["createHomestay"]["homestayId"].is_string(),
        "{off_sale}"
    );
    let route = app
        .graphql_as(
            Some(&admin),
            "mutation($h: ID!) { createRoute(input: { hostId: $h, regionCode: \"150430\", titleZh: \"敖汉 两日\", titleEn: \"Aohan, two days\",
                itinerary: [{ day: 1, title: \"兴隆洼\", regionCodes: [\"150430\"] }], pricePerPerson: \"800\" }) { routeId } }",
            json!({ "h": host }),
        )
        .await;
    let route_id = route["data"]["createRoute"]["routeId"]
        .as_str()
        .unwrap_or_else(|| panic!("{route}"))
        .to_owned();
    let added = app
        .graphql_as(
            Some(&admin),
            "mutation($r: ID!, $d: Date!) { addDeparture(routeId: $r, startsOn: $d, seats: 12) { id } }",
            json!({ "r": route_id, "d": (tomorrow() + Days::days(30)).to_string() }),
        )
        .await;
    assert!(added["data"]["addDeparture"]["id"].is_string(), "{added}");

    // Everything, newest first, with what each kind carries.
    let all = list(json!({ "r": "150400", "first": 10 })).await;
    assert_eq!(names(&all), ["敖汉 两日", "农家小院", "草原人家"], "{all}");
    let edges = &all["data"]["regionListings"]["edges"];
    assert_eq!(edges[0]["node"]["__typename"], "Route", "{all}");
    assert_eq!(edges[0]["node"]["status"], "DRAFT", "{all}");
    assert_eq!(edges[0]["node"]["departures"][0]["seatsLeft"], 12, "{all}");
    assert_eq!(edges[1]["node"]["published"], false, "{all}");
    assert_eq!(
        edges[2]["node"]["roomTypes"],
        json!([{ "name": "双床房" }]),
        "{all}"
    );
    assert_eq!(
        all["data"]["regionListings"]["pageInfo"]["hasNextPage"],
        false
    );

    // Filters: what is on sale, what is not, one host's.
    let published = list(json!({ "r": "150430", "p": true, "first": 10 })).await;
    assert_eq!(names(&published), ["草原人家"], "{published}");
    let unpublished = list(json!({ "r": "150430", "p": false, "first": 10 })).await;
    assert_eq!(
        names(&unpublished),
        ["敖汉 两日", "农家小院"],
        "{unpublished}"
    );
    let of_host = list(json!({ "r": "150400", "h": host, "first": 10 })).await;
    assert_eq!(names(&of_host), ["敖汉 两日", "草原人家"], "{of_host}");
    let elsewhere = list(json!({ "r": "150428", "first": 10 })).await;
    assert_eq!(names(&elsewhere), Vec::<String>::new(), "{elsewhere}");

    // Pages of two, then the rest; a cursor from elsewhere is refused.
    let page = list(json!({ "r": "150400", "first": 2 })).await;
    assert_eq!(names(&page), ["敖汉 两日", "农家小院"], "{page}");
    let info = &page["data"]["regionListings"]["pageInfo"];
    assert_eq!(info["hasNextPage"], true, "{page}");
    assert_eq!(
        page["data"]["regionListings"]["totalCount"], 3,
        "all pages: {page}"
    );
    assert_eq!(unpublished["data"]["regionListings"]["totalCount"], 2);
    let rest = list(json!({ "r": "150400", "first": 2, "after": info["endCursor"] })).await;
    assert_eq!(names(&rest), ["草原人家"], "{rest}");
    assert_eq!(
        rest["data"]["regionListings"]["pageInfo"]["hasNextPage"],
        false
    );
    for bad in [
        json!({ "r": "150400", "first": 2, "after": "not-a-cursor" }),
        json!({ "r": "150400", "first": 0 }),
        json!({ "r": "150400", "first": 10, "h": "not-an-id" }),
    ] {
        assert_eq!(code(&list(bad.clone()).await), "BAD_USER_INPUT", "{bad}");
    }

    // Admins of elsewhere, travelers and strangers see nothing; platform
    // admins see all.
    let beijing = app.region_admin("beijing@example.cn", "110000").await;
    let traveler = app.register("lvke@example.cn", "110108").await;
    for token in [Some(beijing.as_str()), Some(traveler.as_str()), None] {
        let refused = app
            .graphql_as(token, LISTINGS, json!({ "r": "150400", "first": 10 }))
            .await;
        assert!(
            ["FORBIDDEN", "UNAUTHENTICATED"].contains(&code(&refused)),
            "{refused}"
        );
    }
    let platform = app.admin_token().await;
    let everything = app
        .graphql_as(
            Some(&platform),
            LISTINGS,
            json!({ "r": "150400", "first": 10 }),
        )
        .await;
    assert_eq!(names(&everything), names(&all), "{everything}");
}

in_both_modes!(a_homestay_is_edited_and_its_bookings_keep_the_terms_they_were_held_under);
async fn a_homestay_is_edited_and_its_bookings_keep_the_terms_they_were_held_under(
    settings: shared::config::Settings,
) {
    let app = common::spawn_app_with(settings).await;
    let listed = app.homestay(2).await;
    let (homestay, room_type) = (
        listed.homestay_id.to_string(),
        listed.room_type_id.to_string(),
    );
    // Held and paid under the standard rule: all back from 7 days ahead.
    let booking = app
        .paid_booking(&room_type, tomorrow() + Days::days(20), "tok_success")
        .await;
    app.wait_for_status(&booking, "CONFIRMED").await;

    let admin = app.region_admin("chifeng@example.cn", "150400").await;
    const UPDATE: &str = "mutation($h: ID!, $i: HomestayUpdate!) { updateHomestay(homestayId: $h, input: $i) {
        nameZh nameEn address grade amenities photos cancellationPolicy { daysBefore refundPercent } } }";
    const READ: &str = "query($h: ID!) { homestay(id: $h) {
        nameZh nameEn address grade amenities photos cancellationPolicy { daysBefore refundPercent } } }";
    let update =
        |input: Value| app.graphql_as(Some(&admin), UPDATE, json!({ "h": homestay, "i": input }));
    let graded = update(
        json!({ "name": " 草原人家·新 ", "nameEn": "Grassland Home", "grade": "GOLD",
                                "address": "敖汉旗宝国吐乡兴隆洼村", "amenities": ["热水", "暖气"],
                                "photos": ["https://img.example.cn/1.jpg"] }),
    )
    .await;
    let expected = json!({ "nameZh": "草原人家·新", "nameEn": "Grassland Home", "address": "敖汉旗宝国吐乡兴隆洼村",
                           "grade": "GOLD", "amenities": ["热水", "暖气"], "photos": ["https://img.example.cn/1.jpg"],
                           "cancellationPolicy": [{ "daysBefore": 7, "refundPercent": 100 }, { "daysBefore": 3, "refundPercent": 50 }] });
    assert_eq!(graded["data"]["updateHomestay"], expected, "{graded}");

    let kept = update(json!({ "nameEn": "Grassland Home" })).await;
    assert_eq!(
        kept["data"]["updateHomestay"], expected,
        "a left-out grade stays: {kept}"
    );

    // Left out stays; null clears the grade; a new refund rule: nothing back.
    let stricter = update(json!({ "grade": null,
                                  "cancellationPolicy": [{ "daysBefore": 0, "refundPercent": 0 }] }))
    .await;
    let mut now = expected.clone();
    now["grade"] = Value::Null;
    now["cancellationPolicy"] = json!([{ "daysBefore": 0, "refundPercent": 0 }]);
    assert_eq!(stricter["data"]["updateHomestay"], now, "{stricter}");
    let read = app.graphql(READ, json!({ "h": homestay })).await;
    assert_eq!(read["data"]["homestay"], now, "what everyone reads: {read}");

    // The booking held before keeps its rule (and its name).
    let quote = app
        .graphql(
            "query($b: ID!) { cancellationQuote(bookingId: $b) { refundPercent } }",
            json!({ "b": booking }),
        )
        .await;
    assert_eq!(
        quote["data"]["cancellationQuote"]["refundPercent"], 100,
        "{quote}"
    );
    let held = app
        .graphql(
            "query($b: ID!) { booking(id: $b) { listing { title } } }",
            json!({ "b": booking }),
        )
        .await;
    let title = held["data"]["booking"]["listing"]["title"]
        .as_str()
        .unwrap_or_else(|| panic!("{held}"));
    assert!(!title.contains("新"), "{held}");

    // Bad input changes nothing; others may not; no such homestay.
    for bad in [
        json!({ "photos": ["ftp://img.example.cn/1.jpg"] }),
        json!({ "name": "  " }),
        json!({ "cancellationPolicy": [{ "daysBefore": 3, "refundPercent": 150 }] }),
    ] {
        let refused = update(bad.clone()).await;
        assert_eq!(code(&refused), "BAD_USER_INPUT", "{bad}: {refused}");
    }
    app.only_its_region_and_only_what_exists(
        &admin,
        UPDATE,
        json!({ "h": homestay, "i": { "name": "别人的" } }),
        "h",
    )
    .await;
    let traveler = app
        .graphql(UPDATE, json!({ "h": homestay, "i": { "name": "我的" } }))
        .await;
    assert_eq!(code(&traveler), "FORBIDDEN", "{traveler}");
    let after = app.graphql(READ, json!({ "h": homestay })).await;
    assert_eq!(after["data"]["homestay"], now, "{after}");
}

/// Two admins change one homestay at once, one its address, the other its
/// photos: both changes stay. The test sets the race up: a transaction of
/// its own holds the homestay's row while both requests arrive. Without
/// inventory's row lock each would read the details before the other's
/// write and the second write would undo the first.
#[tokio::test]
async fn two_admins_editing_one_homestay_at_once_both_keep_their_change() {
    let app = spawn_app().await;
    let homestay = app.homestay(1).await.homestay_id.to_string();
    let admin = app.region_admin("chifeng@example.cn", "150400").await;
    let other = app.region_admin("aohan@example.cn", "150430").await;
    const UPDATE: &str = "mutation($h: ID!, $i: HomestayUpdate!) { updateHomestay(homestayId: $h, input: $i) { address } }";
    let held = common::LockHeld::begin(
        app.service_db("inventory").await,
        &format!("SELECT id FROM homestays WHERE id = '{homestay}' FOR UPDATE"),
    )
    .await;
    let address = app.graphql_as(
        Some(&admin),
        UPDATE,
        json!({ "h": homestay, "i": { "address": "敖汉旗新惠镇" } }),
    );
    let photos = app.graphql_as(
        Some(&other),
        UPDATE,
        json!({ "h": homestay, "i": { "photos": ["https://img.example.cn/2.jpg"] } }),
    );
    let (address, photos) = held.race(address, photos).await;
    assert!(address["errors"].is_null(), "{address}");
    assert!(photos["errors"].is_null(), "{photos}");
    let read = app
        .graphql(
            "query($h: ID!) { homestay(id: $h) { address photos } }",
            json!({ "h": homestay }),
        )
        .await;
    assert_eq!(
        read["data"]["homestay"],
        json!({ "address": "敖汉旗新惠镇", "photos": ["https://img.example.cn/2.jpg"] }),
        "{read}"
    );
}

/// A page of search offers shows each homestay's address, photos and room
/// type, the homestays of the whole page read in one call.
#[tokio::test]
async fn search_offers_carry_their_homestays_read_in_one_call() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let first = app.homestay(2).await;
    let second = app.homestay(3).await;
    let photos = app
        .graphql_as(
            Some(&admin),
            "mutation($h: ID!) { updateHomestay(homestayId: $h, input: { address: \"敖汉旗新惠镇\", grade: SILVER,
                photos: [\"https://img.example.cn/1.jpg\"] }) { address } }",
            json!({ "h": first.homestay_id.to_string() }),
        )
        .await;
    assert!(photos["errors"].is_null(), "{photos}");
    let batched = app.metric("duikou_rpc_total", &["get_homestays"]).await;
    let single = app
        .metric("duikou_rpc_total", &["method=\"get_homestay\""])
        .await;
    let found = app
        .graphql_as(
            None,
            "query($in: Date!, $out: Date!) { searchHomestays(regionCode: \"150430\", checkIn: $in, checkOut: $out, guests: 1) {
                edges { node { homestayId roomTypeId homestay { id address grade photos } roomType { id name rooms } } } } }",
            json!({ "in": tomorrow().to_string(), "out": (tomorrow() + Days::days(2)).to_string() }),
        )
        .await;
    let edges = found["data"]["searchHomestays"]["edges"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("{found}"));
    assert_eq!(edges.len(), 2, "{found}");
    for edge in &edges {
        let node = &edge["node"];
        assert_eq!(node["homestay"]["id"], node["homestayId"], "{found}");
        assert_eq!(node["roomType"]["id"], node["roomTypeId"], "{found}");
        let (rooms, address, grade, photos) = if node["homestayId"] == first.homestay_id.to_string()
        {
            (
                2,
                json!("敖汉旗新惠镇"),
                json!("SILVER"),
                json!(["https://img.example.cn/1.jpg"]),
            )
        } else {
            assert_eq!(
                node["homestayId"],
                second.homestay_id.to_string(),
                "{found}"
            );
            (3, json!(""), Value::Null, json!([]))
        };
        assert_eq!(node["roomType"]["rooms"], rooms, "{found}");
        assert_eq!(node["homestay"]["address"], address, "{found}");
        assert_eq!(node["homestay"]["grade"], grade, "{found}");
        assert_eq!(node["homestay"]["photos"], photos, "{found}");
    }
    assert_eq!(
        app.metric("duikou_rpc_total", &["get_homestays"]).await,
        batched + 1.0,
        "one call for the page"
    );
    assert_eq!(
        app.metric("duikou_rpc_total", &["method=\"get_homestay\""])
            .await,
        single,
        "none per offer"
    );
}

in_both_modes!(a_room_type_is_edited_and_fewer_rooms_never_unsell_a_night);
/// A host renames a room type and changes its count: fewer rooms take the
/// surplus off sale from today but are refused while a night has more
/// taken; more rooms let the calendar put more on sale.
async fn a_room_type_is_edited_and_fewer_rooms_never_unsell_a_night(
    settings: shared::config::Settings,
) {
    let app = common::spawn_app_with(settings).await;
    let room_type = app.homestay(3).await.room_type_id.to_string();
    for key in ["first-room", "second-room"] {
        let id = TestApp::id_of(&app.create_booking(&room_type, tomorrow(), 1, key).await);
        app.wait_for_status(&id, "AWAITING_PAYMENT").await;
    }
    assert_eq!(app.available(&room_type, 2).await, json!([1, 3]));

    let admin = app.region_admin("chifeng@example.cn", "150400").await;
    const UPDATE: &str =
        "mutation($r: ID!, $i: RoomTypeUpdate!) { updateRoomType(roomTypeId: $r, input: $i) {
        name nameEn beds maxGuests rooms } }";
    let update =
        |input: Value| app.graphql_as(Some(&admin), UPDATE, json!({ "r": room_type, "i": input }));
    // Two rooms are held tomorrow: one room is too few, and nothing moves.
    let too_few = update(json!({ "rooms": 1, "name": "单间" })).await;
    assert_eq!(code(&too_few), "CONFLICT", "{too_few}");
    assert!(
        too_few.to_string().contains(&format!(
            "the night of {} has 2 rooms held or sold",
            tomorrow()
        )),
        "the message names the night: {too_few}"
    );
    assert_eq!(app.available(&room_type, 2).await, json!([1, 3]));
    // The calendar the same: one room on sale tomorrow is too few.
    let calendar = app
        .graphql_as(
            Some(&admin),
            "mutation($rt: ID!, $from: Date!, $to: Date!) { setRoomCalendar(roomTypeId: $rt, from: $from, to: $to, rooms: 1, price: \"300.00\") }",
            json!({ "rt": room_type, "from": tomorrow().to_string(), "to": (tomorrow() + Days::days(2)).to_string() }),
        )
        .await;
    assert_eq!(code(&calendar), "CONFLICT", "{calendar}");
    assert!(
        calendar
            .to_string()
            .contains(&format!("the night of {} has 2 rooms", tomorrow())),
        "{calendar}"
    );
    assert_eq!(app.available(&room_type, 2).await, json!([1, 3]));

    let two = update(json!({ "rooms": 2 })).await;
    assert_eq!(two["data"]["updateRoomType"]["rooms"], 2, "{two}");
    assert_eq!(app.available(&room_type, 2).await, json!([0, 2]));

    let renamed = update(
        json!({ "rooms": 4, "name": " 蒙古包家庭房 ", "nameEn": "Family yurt",
                                 "beds": 3, "maxGuests": 4 }),
    )
    .await;
    assert_eq!(
        renamed["data"]["updateRoomType"],
        json!({ "name": "蒙古包家庭房", "nameEn": "Family yurt", "beds": 3, "maxGuests": 4, "rooms": 4 }),
        "{renamed}"
    );
    assert_eq!(
        app.available(&room_type, 2).await,
        json!([0, 2]),
        "more rooms sell nothing by themselves"
    );
    let on_sale = app
        .graphql_as(
            Some(&admin),
            "mutation($rt: ID!, $from: Date!, $to: Date!) { setRoomCalendar(roomTypeId: $rt, from: $from, to: $to, rooms: 4, price: \"380.00\") }",
            json!({ "rt": room_type, "from": tomorrow().to_string(), "to": (tomorrow() + Days::days(2)).to_string() }),
        )
        .await;
    assert_eq!(on_sale["data"]["setRoomCalendar"], 2, "{on_sale}");
    assert_eq!(app.available(&room_type, 2).await, json!([2, 4]));

    // Bad input, another region's admin, no such room type: nothing changes.
    for bad in [
        json!({ "beds": 0 }),
        json!({ "rooms": 501 }),
        json!({ "name": " " }),
        json!({ "maxGuests": -1 }),
    ] {
        let refused = update(bad.clone()).await;
        assert_eq!(code(&refused), "BAD_USER_INPUT", "{bad}: {refused}");
    }
    app.only_its_region_and_only_what_exists(
        &admin,
        UPDATE,
        json!({ "r": room_type, "i": { "rooms": 1 } }),
        "r",
    )
    .await;
    // Nothing moved by the refusals: the room type as renamed (a change to
    // what it already has answers it as it is).
    let name = renamed["data"]["updateRoomType"]["name"].clone();
    let after = update(json!({ "name": name })).await;
    assert_eq!(
        after["data"]["updateRoomType"],
        renamed["data"]["updateRoomType"]
    );
}

/// A calendar set against a room type's count while the count drops: the
/// calendar reads the new count and never puts more rooms on sale than the
/// homestay has. The test holds tomorrow's night row so that the count
/// change waits on it, then sends the calendar. Without the calendar's
/// share lock on the room type, it would read the old count (3), wait on
/// the night behind the change, and put 3 rooms on sale after the change
/// had cut the count to 2.
#[tokio::test]
async fn a_calendar_racing_a_smaller_room_count_never_sells_more_rooms_than_there_are() {
    let app = spawn_app().await;
    let room_type = app.homestay(3).await.room_type_id.to_string();
    let admin = app.region_admin("chifeng@example.cn", "150400").await;
    let held = common::LockHeld::begin(
        app.service_db("inventory").await,
        &format!(
            "SELECT * FROM room_nights WHERE room_type_id = '{room_type}' AND night = '{}' FOR UPDATE",
            tomorrow()
        ),
    )
    .await;
    let fewer = app.graphql_as(
        Some(&admin),
        "mutation($r: ID!) { updateRoomType(roomTypeId: $r, input: { rooms: 2 }) { rooms } }",
        json!({ "r": room_type }),
    );
    let calendar = app.graphql_as(
        Some(&admin),
        "mutation($rt: ID!, $from: Date!, $to: Date!) { setRoomCalendar(roomTypeId: $rt, from: $from, to: $to, rooms: 3, price: \"400.00\") }",
        json!({ "rt": room_type, "from": tomorrow().to_string(), "to": (tomorrow() + Days::days(2)).to_string() }),
    );
    let (fewer, calendar) = held.race(fewer, calendar).await;
    assert_eq!(fewer["data"]["updateRoomType"]["rooms"], 2, "{fewer}");
    assert_eq!(code(&calendar), "BAD_USER_INPUT", "{calendar}");
    let nights = app
        .graphql(
            "query($rt: ID!, $from: Date!, $to: Date!) { roomCalendar(roomTypeId: $rt, from: $from, to: $to) { rooms available } }",
            json!({ "rt": room_type, "from": tomorrow().to_string(), "to": (tomorrow() + Days::days(2)).to_string() }),
        )
        .await;
    assert_eq!(
        nights["data"]["roomCalendar"],
        json!([{ "rooms": 2, "available": 2 }, { "rooms": 2, "available": 2 }]),
        "{nights}"
    );
}

/// What an admin says that cannot mean what it says is refused, and nothing
/// is stored: an empty refund policy (it would refund nothing, where
/// leaving the policy out means the standard one), a host named twice
/// (an existing one and a new one), nights put on sale past two years,
/// and a role given with a scope it does not take.
#[tokio::test]
async fn an_admin_s_contradictory_or_far_off_input_is_refused_and_nothing_changes() {
    let app = spawn_app().await;
    let chifeng = app.region_admin("chifeng@example.cn", "150400").await;
    let room_type = listed_by_admin(&app, &chifeng).await;
    let homestay = |extra: Value| {
        let mut input = json!({ "hostName": "敖汉旗牧民合作社", "regionCode": "150430", "name": "草原人家二",
                                "roomType": { "name": "家庭房", "beds": 2, "maxGuests": 3, "rooms": 3 } });
        if let (Some(input), Some(extra)) = (input.as_object_mut(), extra.as_object()) {
            input.extend(extra.clone());
        }
        json!({ "i": input })
    };
    let create = "mutation($i: HomestayInput!) { createHomestay(input: $i) { homestayId hostId } }";
    let empty = app
        .graphql_as(
            Some(&chifeng),
            create,
            homestay(json!({ "cancellationPolicy": [] })),
        )
        .await;
    assert_eq!(code(&empty), "BAD_USER_INPUT", "{empty}");
    assert!(
        empty["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("cancellationPolicy: a policy has at least one tier")),
        "{empty}"
    );
    let first = app
        .graphql_as(Some(&chifeng), create, homestay(json!({})))
        .await;
    let host = first["data"]["createHomestay"]["hostId"]
        .as_str()
        .unwrap_or_else(|| panic!("{first}"))
        .to_owned();
    let both = app
        .graphql_as(Some(&chifeng), create, homestay(json!({ "hostId": host })))
        .await;
    assert_eq!(code(&both), "BAD_USER_INPUT", "{both}");
    let update = app
        .graphql_as(
            Some(&chifeng),
            "mutation($id: ID!) { updateHomestay(homestayId: $id, input: { cancellationPolicy: [] }) { id } }",
            json!({ "id": first["data"]["createHomestay"]["homestayId"] }),
        )
        .await;
    assert_eq!(code(&update), "BAD_USER_INPUT", "{update}");
    // A change with nothing in it (a form that lost its fields) is told so,
    // not answered as saved.
    for (mutation, id) in [
        (
            "mutation($id: ID!) { updateHomestay(homestayId: $id, input: {}) { id } }",
            first["data"]["createHomestay"]["homestayId"].clone(),
        ),
        (
            "mutation($id: ID!) { updateRoomType(roomTypeId: $id, input: {}) { id } }",
            json!(room_type),
        ),
    ] {
        let nothing = app
            .graphql_as(Some(&chifeng), mutation, json!({ "id": id }))
            .await;
        assert_eq!(code(&nothing), "BAD_USER_INPUT", "{nothing}");
        assert!(
            nothing["errors"][0]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("nothing to change: give name, nameEn")),
            "{nothing}"
        );
    }

    let calendar = "mutation($rt: ID!, $from: Date!, $to: Date!) { setRoomCalendar(roomTypeId: $rt, from: $from, to: $to, price: \"300.00\") }";
    let far = tomorrow() + Days::days(800);
    let refused = app
        .graphql_as(
            Some(&chifeng),
            calendar,
            json!({ "rt": room_type, "from": far.to_string(), "to": (far + Days::days(2)).to_string() }),
        )
        .await;
    assert_eq!(code(&refused), "BAD_USER_INPUT", "{refused}");
    let night = app
        .graphql_as(
            None,
            "query($rt: ID!, $from: Date!, $to: Date!) { roomCalendar(roomTypeId: $rt, from: $from, to: $to) { available } }",
            json!({ "rt": room_type, "from": far.to_string(), "to": (far + Days::days(2)).to_string() }),
        )
        .await;
    assert!(
        night["data"]["roomCalendar"]
            .as_array()
            .is_none_or(|nights| nights.iter().all(|n| n["available"] == 0)),
        "nothing went on sale: {night}"
    );

    let admin = app.admin_token().await;
    app.register("someone@example.cn", "110108").await;
    let grant = "mutation($r: Role!, $c: ID) { grantRole(email: \"someone@example.cn\", role: $r, regionCode: $c) { role } }";
    let scoped_traveler = app
        .graphql_as(
            Some(&admin),
            grant,
            json!({ "r": "TRAVELER", "c": "150400" }),
        )
        .await;
    assert_eq!(
        code(&scoped_traveler),
        "BAD_USER_INPUT",
        "{scoped_traveler}"
    );
}

/// A page can show more room types than inventory reads at once (500): 17
/// homestays of 30 room types each, every calendar read. A homestay takes
/// at most 30 room types (a page of listings reads them all), however many
/// are added at once.
#[tokio::test]
async fn a_page_of_510_room_types_reads_every_calendar_and_a_homestay_takes_thirty() {
    use shared::rpcs::{AddRoomType, NewRoomType};
    let app = spawn_app().await;
    let bus = app.app.rt.bus.as_ref();
    let add = |homestay_id| async move {
        shared::bus::call(
            bus,
            &AddRoomType {
                idempotency_key: None,
                homestay_id,
                room_type: NewRoomType {
                    name: "单间".into(),
                    name_en: String::new(),
                    beds: 1,
                    max_guests: 1,
                    rooms: 1,
                },
                by: shared::auth::Principal::platform(),
            },
        )
        .await
    };
    for _ in 0..17 {
        let homestay = common::homestay_on(bus, 1).await.homestay_id;
        // Thirty at once for the 29 places left: each counts the others.
        let added = futures::future::join_all((0..30).map(|_| add(homestay))).await;
        let refused: Vec<_> = added.iter().filter_map(|a| a.as_ref().err()).collect();
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!(
            refused[0].code,
            shared::ErrorCode::BadUserInput,
            "{refused:?}"
        );
    }
    let admin = app.admin_token().await;
    let page = app
        .graphql_as(
            Some(&admin),
            "query($from: Date!, $to: Date!) { regionListings(regionCode: \"150430\", first: 20) {
                edges { node { ... on Homestay { roomTypes { calendar(from: $from, to: $to) { date } } } } } } }",
            json!({ "from": tomorrow().to_string(), "to": (tomorrow() + Days::days(2)).to_string() }),
        )
        .await;
    assert!(page["errors"].is_null(), "{page}");
    let read = page["data"]["regionListings"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .flat_map(|e| {
            e["node"]["roomTypes"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|room_type| room_type["calendar"].is_array())
        .count();
    assert_eq!(read, 510);
}

/// An app whose RPC deadline is 2 s, a region admin's token, a room type
/// of theirs priced 300.00, and inventory's database.
async fn calendar_under_a_short_deadline() -> (TestApp, String, String, sea_orm::DatabaseConnection)
{
    let mut settings = common::test_settings();
    settings.rpc_timeout_ms = 2_000;
    let app = common::spawn_app_with(settings).await;
    let chifeng = app.region_admin("chifeng@example.cn", "150400").await;
    let room_type = listed_by_admin(&app, &chifeng).await;
    let inventory = app.service_db("inventory").await;
    (app, chifeng, room_type, inventory)
}

/// The admin's change: 131.00 a night for ten nights from tomorrow.
async fn price_at_131(app: &TestApp, admin: &str, room_type: &str) -> Value {
    app.graphql_as(
        Some(admin),
        "mutation($rt: ID!, $from: Date!, $to: Date!) { setRoomCalendar(roomTypeId: $rt, from: $from, to: $to, price: \"131.00\") }",
        json!({ "rt": room_type, "from": tomorrow().to_string(), "to": (tomorrow() + Days::days(10)).to_string() }),
    )
    .await
}

/// The distinct prices of the room type's nights that `nights` (a SQL
/// condition on them) picks.
async fn prices_of(db: &sea_orm::DatabaseConnection, room_type: &str, nights: &str) -> Vec<i64> {
    use sea_orm::ConnectionTrait;
    db.query_all_raw(sea_orm::Statement::from_string(
        db.get_database_backend(),
        format!(
            "SELECT DISTINCT price_fen FROM room_nights WHERE room_type_id = '{room_type}' AND {nights}"
        ),
    ))
    .await
    .expect("the calendar")
    .iter()
    .map(|r| r.try_get::<i64>("", "price_fen").expect("price"))
    .collect()
}

/// A calendar change that waited past the gateway's deadline — its admin
/// told "did not answer in time", to try again — is not made when its turn
/// comes: an exploratory run saw changes told failed land seconds later,
/// over the change the admin made next (travelers charged the older
/// price). The change is made to wait on the calendar's table.
#[tokio::test]
async fn a_calendar_change_its_admin_was_told_failed_is_not_made_later() {
    let (app, chifeng, room_type, inventory) = calendar_under_a_short_deadline().await;
    let held = common::LockHeld::begin(
        inventory.clone(),
        "LOCK TABLE room_nights IN EXCLUSIVE MODE",
    )
    .await;
    let (told, ()) = tokio::join!(
        price_at_131(&app, &chifeng, &room_type),
        held.until_waiting(1, true),
    );
    assert_eq!(code(&told), "SERVICE_UNAVAILABLE", "{told}");
    held.release().await;
    // Its turn came, and it was not made.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while app
        .metric("duikou_rpc_changes_refused_late_total", &[])
        .await
        < 1.0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the late change was never refused"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let prices = prices_of(&inventory, &room_type, "TRUE").await;
    assert_eq!(prices, vec![30_000], "the price set before, on every night");
}

/// A change made is answered as made even when the announcement that
/// follows it (the gateways' caches are told, in a transaction of its own)
/// waits on a busy database: the announcement is left to the caches'
/// expiry once the caller's wait runs short. A review saw it wait past
/// the gateway's deadline — a homestay created was answered "try again",
/// and its retry made a second.
#[tokio::test]
async fn a_change_made_is_answered_as_made_while_its_announcement_waits() {
    let (app, chifeng, room_type, inventory) = calendar_under_a_short_deadline().await;
    let held =
        common::LockHeld::begin(inventory.clone(), "LOCK TABLE outbox IN EXCLUSIVE MODE").await;
    let told = price_at_131(&app, &chifeng, &room_type).await;
    held.release().await;
    assert!(told["errors"].is_null(), "{told}");
    let tomorrow = format!("night = '{}'", tomorrow());
    let prices = prices_of(&inventory, &room_type, &tomorrow).await;
    assert_eq!(prices, vec![13_100], "the change answered as made is made");
}

/// A create its service did not answer in time may have been made (the
/// replica stopped between its commit and its answer, and no other took
/// the request up in time: an exploratory run made 5 of 16 homestays so
/// answered), and has no key a retry could find it by: its admin is told
/// to look for it before sending it again, not to try again. An update,
/// which comes out the same sent twice, is still told to try again.
#[tokio::test]
async fn a_create_that_was_not_answered_in_time_says_it_may_have_been_made() {
    let (app, chifeng, room_type, inventory) = calendar_under_a_short_deadline().await;
    let held =
        common::LockHeld::begin(inventory.clone(), "LOCK TABLE homestays IN EXCLUSIVE MODE").await;
    let created = app
        .graphql_as(
            Some(&chifeng),
            "mutation($i: HomestayInput!) { createHomestay(input: $i) { roomTypeId } }",
            json!({ "i": { "hostName": "敖汉旗牧民合作社", "regionCode": "150430", "name": "草原人家二号",
                           "roomType": { "name": "家庭房", "beds": 2, "maxGuests": 3, "rooms": 3 } } }),
        )
        .await;
    held.release().await;
    assert_eq!(code(&created), "SERVICE_UNAVAILABLE", "{created}");
    let message = created["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("may have been created") && message.contains("look for it"),
        "{created}"
    );
    let held = common::LockHeld::begin(
        inventory.clone(),
        "LOCK TABLE room_nights IN EXCLUSIVE MODE",
    )
    .await;
    let updated = price_at_131(&app, &chifeng, &room_type).await;
    held.release().await;
    assert_eq!(code(&updated), "SERVICE_UNAVAILABLE", "{updated}");
    let message = updated["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("try again"), "{updated}");
}

/// A create sent again with its idempotency key answers what it first
/// answered, one homestay made — also when eight copies race (a client
/// retrying a create it was told "may have been created" for); the key
/// with another input is IDEMPOTENCY_KEY_REUSED; another admin's same key
/// is theirs. A room type and a departure the same.
#[tokio::test]
async fn a_create_sent_again_with_its_key_is_made_once() {
    let app = spawn_app().await;
    let chifeng = app.region_admin("chifeng@example.cn", "150400").await;
    let create = "mutation($i: HomestayInput!, $k: String) { createHomestay(input: $i, idempotencyKey: $k) { homestayId } }";
    let input = |name: &str| {
        json!({ "hostName": "敖汉旗牧民合作社", "regionCode": "150430", "name": name,
                "roomType": { "name": "家庭房", "beds": 2, "maxGuests": 3, "rooms": 3 } })
    };
    let sent = futures::future::join_all((0..8).map(|_| {
        app.graphql_as(
            Some(&chifeng),
            create,
            json!({ "i": input("草原人家"), "k": " hs-1" }),
        )
    }))
    .await;
    let ids: std::collections::BTreeSet<_> = sent
        .iter()
        .map(|r| {
            r["data"]["createHomestay"]["homestayId"]
                .as_str()
                .unwrap_or_else(|| panic!("{r}"))
                .to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1, "{sent:?}");
    let reused = app
        .graphql_as(
            Some(&chifeng),
            create,
            json!({ "i": input("草原人家二号"), "k": "hs-1" }),
        )
        .await;
    assert_eq!(code(&reused), "IDEMPOTENCY_KEY_REUSED", "{reused}");
    let other = app.region_admin("aohan@example.cn", "150430").await;
    let theirs = app
        .graphql_as(
            Some(&other),
            create,
            json!({ "i": input("草原人家"), "k": "hs-1" }),
        )
        .await;
    let theirs = theirs["data"]["createHomestay"]["homestayId"]
        .as_str()
        .unwrap_or_else(|| panic!("{theirs}"));
    assert!(!ids.contains(theirs));
    let inventory = app.service_db("inventory").await;
    let made = common::count_of(
        &inventory,
        "SELECT COUNT(*) AS n FROM homestays WHERE name = '草原人家'",
        vec![],
    )
    .await;
    assert_eq!(made, 2, "one per account");

    let homestay = ids.first().expect("an id");
    let add = "mutation($h: ID!, $k: String) { addRoomType(homestayId: $h, idempotencyKey: $k,
        roomType: { name: \"大通铺\", beds: 6, maxGuests: 6, rooms: 1 }) { id } }";
    let first = app
        .graphql_as(Some(&chifeng), add, json!({ "h": homestay, "k": "rt-1" }))
        .await;
    let again = app
        .graphql_as(Some(&chifeng), add, json!({ "h": homestay, "k": "rt-1" }))
        .await;
    assert!(first["errors"].is_null(), "{first}");
    assert_eq!(first, again);
}

/// Two copies of a keyed `addRoomType` for the 30th room type, both held
/// on the homestay's row until the other arrives: the one served second
/// finds 30 under the lock — its own copy's — and answers that room type,
/// not "at most 30" (the session's review).
#[tokio::test]
async fn two_copies_of_a_keyed_room_type_at_the_cap_both_answer_it() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let homestay = app.homestay(1).await.homestay_id.to_string();
    let add = "mutation($h: ID!, $n: String!, $k: String) { addRoomType(homestayId: $h,
        idempotencyKey: $k, roomType: { name: $n, beds: 1, maxGuests: 1, rooms: 1 }) { id } }";
    for i in 0..28 {
        let added = app
            .graphql_as(
                Some(&admin),
                add,
                json!({ "h": homestay, "n": format!("房{i}") }),
            )
            .await;
        assert!(added["errors"].is_null(), "{added}");
    }
    let held = common::LockHeld::begin(
        app.service_db("inventory").await,
        &format!("SELECT id FROM homestays WHERE id = '{homestay}' FOR UPDATE"),
    )
    .await;
    let vars = json!({ "h": homestay, "n": "第三十间", "k": "rt-30" });
    let (first, second, ()) = tokio::join!(
        app.graphql_as(Some(&admin), add, vars.clone()),
        app.graphql_as(Some(&admin), add, vars.clone()),
        async move {
            // The second waits on the first (a tuple lock), not on us.
            held.until_waiting(2, false).await;
            held.release().await;
        }
    );
    assert!(first["errors"].is_null(), "{first}");
    assert_eq!(first, second);
}
