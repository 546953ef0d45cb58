//! Agencies: a platform admin registers one with a commission contract and
//! gives it API credentials; its integration books a group, pays, and the
//! capture pays its commission — and it sees only its own bookings.

mod common;

use common::{TestApp, code, spawn_app, tomorrow};
use serde_json::{Value, json};

/// An agency with `bp` commission and an API client; the client's token.
async fn agency(app: &TestApp, name: &str, bp: i32) -> (String, String, String) {
    let admin = app.admin_token().await;
    let created = app
        .graphql_as(
            Some(&admin),
            "mutation($n: String!, $bp: Int!) { createAgency(name: $n, homeRegionCode: \"110105\", commissionBasisPoints: $bp) { id commissionBasisPoints } }",
            json!({ "n": name, "bp": bp }),
        )
        .await;
    let id = created["data"]["createAgency"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"))
        .to_owned();
    let (client_id, secret) = api_client(app, &admin, &id, "booking system").await;
    let token = app
        .graphql_as(
            None,
            "mutation($c: String!, $s: String!) { apiClientToken(clientId: $c, clientSecret: $s) { accessToken account { role homeRegionCode agencyId } } }",
            json!({ "c": client_id, "s": secret }),
        )
        .await;
    assert_eq!(
        token["data"]["apiClientToken"]["account"]["role"], "AGENCY",
        "{token}"
    );
    assert_eq!(
        token["data"]["apiClientToken"]["account"]["agencyId"],
        id.as_str()
    );
    (
        id,
        client_id,
        token["data"]["apiClientToken"]["accessToken"]
            .as_str()
            .expect("token")
            .to_owned(),
    )
}

/// Wrong passwords an address may send before it is locked out.
fn identity_max_failures() -> i32 {
    gateway::identity::MAX_LOGIN_FAILURES
}

/// A new API client of agency `id`, made by `admin`: its id and secret.
async fn api_client(app: &TestApp, admin: &str, id: &str, name: &str) -> (String, String) {
    let client = app
        .graphql_as(
            Some(admin),
            "mutation($a: ID!, $n: String!) { createApiClient(agencyId: $a, name: $n) { clientId clientSecret } }",
            json!({ "a": id, "n": name }),
        )
        .await;
    let creds = &client["data"]["createApiClient"];
    (
        creds["clientId"].as_str().expect("id").to_owned(),
        creds["clientSecret"].as_str().expect("secret").to_owned(),
    )
}

/// `createApiClient` of agency `id` by `admin` with idempotency `key`: the
/// whole answer.
async fn keyed_api_client(app: &TestApp, admin: &str, id: &str, key: &str, name: &str) -> Value {
    app.graphql_as(
        Some(admin),
        "mutation($a: ID!, $n: String!, $k: String) {
            createApiClient(agencyId: $a, name: $n, idempotencyKey: $k) { clientId clientSecret } }",
        json!({ "a": id, "n": name, "k": key }),
    )
    .await
}

async fn group_booking(app: &TestApp, token: &str, room_type: &str, key: &str) -> Value {
    app.graphql_as(
        Some(token),
        "mutation($i: CreateBookingInput!, $k: String!) { createBooking(input: $i, idempotencyKey: $k) { id status commissionBasisPoints } }",
        json!({ "k": key, "i": {
            "roomTypeId": room_type, "rooms": 2,
            "checkIn": tomorrow().to_string(), "checkOut": (tomorrow() + chrono::Duration::days(1)).to_string(),
            "travelers": [
                { "name": "张三", "idType": "RESIDENT_ID", "idNumber": "11010519491231002X" },
                { "name": "李四", "idType": "PASSPORT", "idNumber": "E12345678" }
            ],
            "contact": { "name": "旅行社", "phone": "010-88886666" } } }),
    )
    .await
}

#[tokio::test]
async fn an_agency_books_a_group_earns_its_commission_and_sees_only_its_own_bookings() {
    let app = spawn_app().await;
    let room_type = app.homestay(4).await.room_type_id.to_string();
    let (agency_id, _, token) = agency(&app, "草原之旅国际旅行社", 800).await;

    let created = group_booking(&app, &token, &room_type, "grp-1").await;
    assert_eq!(
        created["data"]["createBooking"]["commissionBasisPoints"], 800,
        "{created}"
    );
    let id = TestApp::id_of(&created);
    // Wait as the agency: it may read its booking.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let b = app
            .graphql_as(
                Some(&token),
                "query($id: ID!) { booking(id: $id) { status } }",
                json!({ "id": id }),
            )
            .await;
        if b["data"]["booking"]["status"] == "AWAITING_PAYMENT" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never held: {b}");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let paid = app
        .graphql_as(
            Some(&token),
            "mutation($id: ID!) { payBooking(bookingId: $id, paymentToken: \"tok_success\", idempotencyKey: \"p\") {
                amount { amount } split { host { amount } platform { amount } fund { amount } agency { amount } } } }",
            json!({ "id": id }),
        )
        .await;
    // Two rooms at 380: 760 = host 668.80 + platform 22.80 + fund 7.60 + agency 60.80 (8 %).
    assert_eq!(
        paid["data"]["payBooking"]["split"],
        json!({ "host": { "amount": "668.80" }, "platform": { "amount": "22.80" }, "fund": { "amount": "7.60" }, "agency": { "amount": "60.80" } }),
        "{paid}"
    );

    // Its commission today (China time), from the ledger; then a goodwill
    // refund of 100 takes back the agency's share of it.
    let commission = |who: String| {
        let (app, agency) = (&app, &agency_id);
        async move {
            let today = shared::policy::china_today(chrono::Utc::now()).to_string();
            app.graphql_as(
                Some(&who),
                "query($a: ID!, $d: Date!) { agency(id: $a) { commission(from: $d, to: $d) {
                    earned { amount } reversed { amount } net { amount } bookings } } }",
                json!({ "a": agency, "d": today }),
            )
            .await
        }
    };
    let earned = commission(token.clone()).await;
    assert_eq!(
        earned["data"]["agency"]["commission"],
        json!({ "earned": { "amount": "60.80" }, "reversed": { "amount": "0.00" },
                "net": { "amount": "60.80" }, "bookings": 1 }),
        "{earned}"
    );
    let admin = app.admin_token().await;
    let refund = app
        .graphql_as(
            Some(&admin),
            "mutation($b: ID!) { refundPayment(bookingId: $b, amount: \"100.00\", reason: \"停电\",
                idempotencyKey: \"goodwill\") { status split { agency { amount } } } }",
            json!({ "b": id }),
        )
        .await;
    assert_eq!(
        refund["data"]["refundPayment"]["status"], "SUCCEEDED",
        "{refund}"
    );
    let taken_back = refund["data"]["refundPayment"]["split"]["agency"]["amount"].clone();
    assert_eq!(taken_back, "8.00", "8 % of 100: {refund}");
    let after = commission(admin.clone()).await;
    assert_eq!(
        after["data"]["agency"]["commission"],
        json!({ "earned": { "amount": "60.80" }, "reversed": { "amount": "8.00" },
                "net": { "amount": "52.80" }, "bookings": 1 }),
        "{after}"
    );
    // Yesterday it earned nothing; a period backwards or over a year is
    // refused; another agency may not look.
    let yesterday = shared::policy::china_today(chrono::Utc::now()) - chrono::Duration::days(1);
    let none = app
        .graphql_as(
            Some(&token),
            "query($a: ID!, $d: Date!) { agency(id: $a) { commission(from: $d, to: $d) { net { amount } bookings } } }",
            json!({ "a": agency_id, "d": yesterday.to_string() }),
        )
        .await;
    assert_eq!(
        none["data"]["agency"]["commission"],
        json!({ "net": { "amount": "0.00" }, "bookings": 0 }),
        "{none}"
    );
    for (from, to) in [
        (yesterday + chrono::Duration::days(1), yesterday),
        (yesterday - chrono::Duration::days(400), yesterday),
    ] {
        let bad = app
            .graphql_as(
                Some(&token),
                "query($a: ID!, $f: Date!, $t: Date!) { agency(id: $a) { commission(from: $f, to: $t) { bookings } } }",
                json!({ "a": agency_id, "f": from.to_string(), "t": to.to_string() }),
            )
            .await;
        assert_eq!(code(&bad), "BAD_USER_INPUT", "{from} {to}: {bad}");
    }

    // Another agency and the test's traveler see none of it.
    let (_, _, other) = agency(&app, "另一家旅行社", 500).await;
    let peek = app
        .graphql_as(
            Some(&other),
            "query($a: ID!, $d: Date!) { agency(id: $a) { commission(from: $d, to: $d) { bookings } } }",
            json!({ "a": agency_id, "d": yesterday.to_string() }),
        )
        .await;
    assert_eq!(code(&peek), "FORBIDDEN", "{peek}");
    let refused = app
        .graphql_as(
            Some(&other),
            "query($id: ID!) { booking(id: $id) { id } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(code(&refused), "FORBIDDEN");
    let traveler = app
        .graphql(
            "query($id: ID!) { booking(id: $id) { id } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(code(&traveler), "FORBIDDEN");
    let list = "{ myBookings(first: 10) { edges { node { id } } } }";
    let own = app.graphql_as(Some(&token), list, json!({})).await;
    assert_eq!(
        own["data"]["myBookings"]["edges"],
        json!([{ "node": { "id": id } }])
    );
    let theirs = app.graphql_as(Some(&other), list, json!({})).await;
    assert_eq!(theirs["data"]["myBookings"]["edges"], json!([]));
}

#[tokio::test]
async fn agencies_and_credentials_are_for_platform_admins_and_a_wrong_secret_gets_nothing() {
    let app = spawn_app().await;
    let traveler_made = app
        .graphql("mutation { createAgency(name: \"x\", homeRegionCode: \"110105\", commissionBasisPoints: 500) { id } }", json!({}))
        .await;
    assert_eq!(code(&traveler_made), "FORBIDDEN");
    let admin = app.admin_token().await;
    for (name, region, bp) in [
        ("", "110105", 500),
        ("y", "110105", 3001),
        ("y", "110105", -1),
        ("y", "999999", 500),
    ] {
        let bad = app
            .graphql_as(
                Some(&admin),
                "mutation($n: String!, $r: ID!, $bp: Int!) { createAgency(name: $n, homeRegionCode: $r, commissionBasisPoints: $bp) { id } }",
                json!({ "n": name, "r": region, "bp": bp }),
            )
            .await;
        assert_eq!(code(&bad), "BAD_USER_INPUT", "{name} {region} {bp}: {bad}");
        if !(0..=3000).contains(&bp) {
            // Too much and below nothing are told the same range.
            assert_eq!(
                bad["errors"][0]["message"],
                "commissionBasisPoints: a commission is 0 to 3000 basis points (30 %)"
            );
        }
    }
    let (_, client_id, _) = agency(&app, "正规旅行社", 500).await;
    let wrong = app
        .graphql_as(
            None,
            "mutation($c: String!) { apiClientToken(clientId: $c, clientSecret: \"guess\") { accessToken } }",
            json!({ "c": client_id }),
        )
        .await;
    assert_eq!(code(&wrong), "UNAUTHENTICATED");
    let unknown = app
        .graphql_as(None, "mutation { apiClientToken(clientId: \"dk_nobody\", clientSecret: \"guess\") { accessToken } }", json!({}))
        .await;
    assert_eq!(code(&unknown), "UNAUTHENTICATED");

    // An admin demoted a moment ago, its token not yet stopped here (as on
    // a replica that has not heard for its 2 s): it creates no credentials,
    // which would outlive the token.
    use sea_orm::ConnectionTrait;
    let agency_id = app
        .graphql_as(
            Some(&admin),
            "{ agencies(first: 1) { edges { node { id } } } }",
            json!({}),
        )
        .await["data"]["agencies"]["edges"][0]["node"]["id"]
        .clone();
    app.service_db("gateway")
        .await
        .execute_unprepared("UPDATE accounts SET role = 'TRAVELER' WHERE role = 'PLATFORM_ADMIN'")
        .await
        .expect("demoted behind the gateway's back");
    let lingering = app
        .graphql_as(
            Some(&admin),
            "mutation($a: ID!) { createApiClient(agencyId: $a, name: \"left behind\") { clientId } }",
            json!({ "a": agency_id }),
        )
        .await;
    assert_eq!(code(&lingering), "FORBIDDEN", "{lingering}");
}

/// Seats for `n` travelers of a group on `departure`, booked by the agency.
async fn group_seats(app: &TestApp, token: &str, departure: &str, n: usize, key: &str) -> Value {
    let travelers: Vec<Value> = (0..n)
        .map(|i| json!({ "name": format!("团员{i}"), "idType": "PASSPORT", "idNumber": format!("E{:08}", 10_000_000 + i) }))
        .collect();
    app.graphql_as(
        Some(token),
        "mutation($i: CreateBookingInput!, $k: String!) { createBooking(input: $i, idempotencyKey: $k) { id status } }",
        json!({ "k": key, "i": { "departureId": departure, "travelers": travelers,
                "contact": { "name": "旅行社", "phone": "010-88886666" } } }),
    )
    .await
}

async fn status_as(app: &TestApp, token: &str, id: &str, want: &[&str]) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let b = app
            .graphql_as(
                Some(token),
                "query($id: ID!) { booking(id: $id) { status reason } }",
                json!({ "id": id }),
            )
            .await;
        let status = b["data"]["booking"]["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if want.contains(&status.as_str()) {
            return status;
        }
        assert!(std::time::Instant::now() < deadline, "stayed {status}: {b}");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn an_agency_books_groups_on_a_capital_to_grassland_departure_up_to_its_seats() {
    let app = spawn_app().await;
    let chifeng = app.region_admin("chifeng@example.cn", "150400").await;
    let route = app
        .graphql_as(
            Some(&chifeng),
            "mutation { createRoute(input: { hostName: \"克什克腾旗草原旅游专业合作社\", regionCode: \"150425\",
                titleZh: \"首都—草原 五日游\", titleEn: \"Capital to Grassland, five days\",
                itinerary: [{ day: 1, title: \"北京—赤峰\", regionCodes: [\"110105\", \"150400\"] },
                            { day: 2, title: \"贡格尔草原\", regionCodes: [\"150425\"] }],
                pricePerPerson: \"2980.00\" }) { routeId } }",
            json!({}),
        )
        .await["data"]["createRoute"]["routeId"]
        .as_str()
        .expect("route")
        .to_owned();
    let departure = app
        .graphql_as(
            Some(&chifeng),
            "mutation($r: ID!, $d: Date!) { addDeparture(routeId: $r, startsOn: $d, seats: 20, cutoffDays: 3) { id } }",
            json!({ "r": route, "d": (tomorrow() + chrono::Duration::days(30)).to_string() }),
        )
        .await["data"]["addDeparture"]["id"]
        .as_str()
        .expect("departure")
        .to_owned();
    app.graphql_as(
        Some(&chifeng),
        "mutation($r: ID!) { publishRoute(routeId: $r) { status } }",
        json!({ "r": route }),
    )
    .await;
    let (_, _, token) = agency(&app, "京蒙旅游集团", 800).await;

    // A group of twelve, paid: the agency earns 8 % of 12 × 2,980.
    let twelve = TestApp::id_of(&group_seats(&app, &token, &departure, 12, "grassland-12").await);
    assert_eq!(
        status_as(&app, &token, &twelve, &["AWAITING_PAYMENT"]).await,
        "AWAITING_PAYMENT"
    );
    let paid = app
        .graphql_as(
            Some(&token),
            "mutation($id: ID!) { payBooking(bookingId: $id, paymentToken: \"tok_success\", idempotencyKey: \"grassland-12-pay\") {
                amount { amount } split { agency { amount } } } }",
            json!({ "id": twelve }),
        )
        .await;
    assert_eq!(
        paid["data"]["payBooking"]["amount"]["amount"], "35760.00",
        "{paid}"
    );
    assert_eq!(
        paid["data"]["payBooking"]["split"]["agency"]["amount"], "2860.80",
        "{paid}"
    );
    assert_eq!(
        status_as(&app, &token, &twelve, &["CONFIRMED"]).await,
        "CONFIRMED"
    );

    // Ten more do not fit in the eight seats left; eight do.
    let ten = TestApp::id_of(&group_seats(&app, &token, &departure, 10, "grassland-10").await);
    assert_eq!(
        status_as(&app, &token, &ten, &["REJECTED", "AWAITING_PAYMENT"]).await,
        "REJECTED"
    );
    let eight = TestApp::id_of(&group_seats(&app, &token, &departure, 8, "grassland-8").await);
    assert_eq!(
        status_as(&app, &token, &eight, &["REJECTED", "AWAITING_PAYMENT"]).await,
        "AWAITING_PAYMENT"
    );
    let left = app
        .graphql_as(
            None,
            "query($id: ID!) { route(id: $id) { departures { seatsLeft } } }",
            json!({ "id": route }),
        )
        .await;
    assert_eq!(
        left["data"]["route"]["departures"][0]["seatsLeft"], 0,
        "{left}"
    );
    // The agency's own list has all three; the traveler's none of them.
    let own = app
        .graphql_as(
            Some(&token),
            "{ myBookings(first: 10) { edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        own["data"]["myBookings"]["edges"].as_array().map(Vec::len),
        Some(3),
        "{own}"
    );
    let theirs = app
        .graphql(
            "{ myBookings(first: 10) { edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        theirs["data"]["myBookings"]["edges"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
}

#[tokio::test]
async fn platform_admins_list_agencies_agencies_see_their_own_staff_and_clients_and_a_revoked_client_gets_no_tokens()
 {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let (mine, client_id, client_token) = agency(&app, "草原国旅", 800).await;
    let (theirs, _, their_token) = agency(&app, "京城旅行社", 500).await;

    // The list: platform admins only, by cursor.
    let list = |token: String, after: Option<String>| {
        let app = &app;
        async move {
            app.graphql_as(
                Some(&token),
                "query($after: String) { agencies(first: 1, after: $after) { totalCount pageInfo { hasNextPage endCursor } edges { node { id name } } } }",
                json!({ "after": after }),
            )
            .await
        }
    };
    let first = list(admin.clone(), None).await;
    assert_eq!(first["data"]["agencies"]["totalCount"], 2, "{first}");
    assert_eq!(
        first["data"]["agencies"]["edges"][0]["node"]["id"],
        mine.as_str()
    );
    let cursor = first["data"]["agencies"]["pageInfo"]["endCursor"]
        .as_str()
        .map(str::to_owned);
    let second = list(admin.clone(), cursor).await;
    assert_eq!(
        second["data"]["agencies"]["edges"][0]["node"]["id"],
        theirs.as_str()
    );
    assert_eq!(second["data"]["agencies"]["pageInfo"]["hasNextPage"], false);
    assert_eq!(code(&list(client_token.clone(), None).await), "FORBIDDEN");

    // A member of staff: a registered account given the AGENCY role.
    let staff_email = "guide@caoyuan.example.cn";
    app.register(staff_email, "150430").await;
    let grant = || {
        app.graphql_as(
            Some(&admin),
            "mutation($e: String!, $a: ID!) { grantRole(email: $e, role: AGENCY, agencyId: $a) { role agencyId homeRegionCode } }",
            json!({ "e": staff_email, "a": mine }),
        )
    };
    // The grant answers the account as `me` will show it (below), and so
    // does the same grant again.
    for granted in [grant().await, grant().await] {
        assert_eq!(
            granted["data"]["grantRole"],
            json!({ "role": "AGENCY", "agencyId": mine, "homeRegionCode": "110105" }),
            "{granted}"
        );
    }
    let signed_in = app.login(staff_email).await;
    let staff = signed_in["accessToken"]
        .as_str()
        .expect("staff logs in")
        .to_owned();
    // Staff's home, as the sign-in shows it, is the agency's (as `me` and
    // the agency's staff list show it), not the one it registered with.
    assert_eq!(
        signed_in["account"]["homeRegionCode"], "110105",
        "{signed_in}"
    );
    // From 敖汉 in person, from the agency's 朝阳区 as its staff: `me` says
    // where its bookings count from, as its token does.
    let me = app
        .graphql_as(Some(&staff), "{ me { homeRegionCode } }", json!({}))
        .await;
    assert_eq!(me["data"]["me"]["homeRegionCode"], "110105", "{me}");
    // An API client's account keeps its agency and role: a grant would
    // make its secret another agency's or an admin's; and nobody
    // registers in the clients' domain.
    for role in ["PLATFORM_ADMIN", "TRAVELER"] {
        let moved = app
            .graphql_as(
                Some(&admin),
                "mutation($e: String!, $r: Role!) { grantRole(email: $e, role: $r) { role } }",
                json!({ "e": format!("{client_id}@clients.duikou"), "r": role }),
            )
            .await;
        assert_eq!(code(&moved), "CONFLICT", "{role}: {moved}");
    }
    let squatter = app
        .graphql_as(
            None,
            "mutation { register(input: { email: \"dk_new@clients.duikou\", password: \"草原上的蒙古包-2026\", displayName: \"x\", homeRegionCode: \"110105\" }) { accessToken } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&squatter), "BAD_USER_INPUT", "{squatter}");

    // The integration books; the staff member sees the booking as the
    // agency's, and the agency's people and clients.
    let room_type = app.homestay(4).await.room_type_id.to_string();
    let booked = group_booking(&app, &client_token, &room_type, "staff-sees").await;
    let booking = TestApp::id_of(&booked);
    let seen = app
        .graphql_as(
            Some(&staff),
            "{ myBookings(first: 10) { edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        seen["data"]["myBookings"]["edges"][0]["node"]["id"],
        booking.as_str(),
        "{seen}"
    );
    // Staff listed as `me` shows them: from the agency's region, not the
    // home they registered with (150430, which their colleagues and the
    // agency's integrations read).
    let inside = "query($id: ID!) { agency(id: $id) { name staff { email homeRegionCode } apiClients { clientId revokedAt } } }";
    let view = app
        .graphql_as(Some(&staff), inside, json!({ "id": mine }))
        .await;
    assert_eq!(
        view["data"]["agency"],
        json!({ "name": "草原国旅", "staff": [{ "email": staff_email, "homeRegionCode": "110105" }],
                "apiClients": [{ "clientId": client_id, "revokedAt": null }] }),
        "{view}"
    );
    // Another agency sees none of it, and may not revoke.
    assert_eq!(
        code(
            &app.graphql_as(Some(&their_token), inside, json!({ "id": mine }))
                .await
        ),
        "FORBIDDEN"
    );
    let revoke = "mutation($c: String!) { revokeApiClient(clientId: $c) { clientId revokedAt } }";
    for token in [&their_token, &staff] {
        let refused = app
            .graphql_as(Some(token), revoke, json!({ "c": client_id }))
            .await;
        assert_eq!(code(&refused), "FORBIDDEN", "{refused}");
    }

    // Revoked: its refresh token and its secret get nothing more.
    let secretless = app
        .graphql_as(
            Some(&admin),
            "mutation($a: ID!) { createApiClient(agencyId: $a, name: \"second system\") { clientId clientSecret } }",
            json!({ "a": mine }),
        )
        .await;
    let creds = &secretless["data"]["createApiClient"];
    let (second_id, second_secret) = (
        creds["clientId"].as_str().expect("id").to_owned(),
        creds["clientSecret"].as_str().expect("secret").to_owned(),
    );
    let exchange = "mutation($c: String!, $s: String!) { apiClientToken(clientId: $c, clientSecret: $s) { refreshToken } }";
    let issued = app
        .graphql_as(
            None,
            exchange,
            json!({ "c": second_id, "s": second_secret }),
        )
        .await;
    let refresh = issued["data"]["apiClientToken"]["refreshToken"]
        .as_str()
        .expect("refresh token")
        .to_owned();
    let revoked = app
        .graphql_as(Some(&admin), revoke, json!({ "c": second_id }))
        .await;
    assert!(
        revoked["data"]["revokeApiClient"]["revokedAt"].is_string(),
        "{revoked}"
    );
    let again = app
        .graphql_as(Some(&admin), revoke, json!({ "c": second_id }))
        .await;
    assert_eq!(
        again["data"]["revokeApiClient"]["revokedAt"],
        revoked["data"]["revokeApiClient"]["revokedAt"],
        "revoking twice keeps the first time"
    );
    // Its holder is told it was revoked (not taken for a typo); a wrong
    // secret learns nothing.
    let refused = app
        .graphql_as(
            None,
            exchange,
            json!({ "c": second_id, "s": second_secret }),
        )
        .await;
    assert_eq!(code(&refused), "UNAUTHENTICATED", "{refused}");
    let message = |body: &Value| {
        body["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    assert!(message(&refused).contains("was revoked"), "{refused}");
    // Told whom to ask: only a platform admin creates API clients.
    assert!(
        message(&refused).contains("ask a platform admin"),
        "{refused}"
    );
    let guessed = app
        .graphql_as(None, exchange, json!({ "c": second_id, "s": "dks_wrong" }))
        .await;
    assert_eq!(
        message(&guessed),
        "unknown client or wrong secret",
        "{guessed}"
    );
    let refused = app
        .graphql_as(
            None,
            "mutation($t: String!) { refreshToken(token: $t) { accessToken } }",
            json!({ "t": refresh }),
        )
        .await;
    assert_eq!(code(&refused), "UNAUTHENTICATED", "{refused}");
    // Not sent to apiClientToken, which refuses a revoked client too.
    assert!(
        message(&refused).contains("API client was revoked"),
        "{refused}"
    );
    // Nor can it change a password it does not have (it was told the
    // password was wrong, then that its email had ten wrong passwords).
    let no_password = app
        .graphql_as(
            Some(&client_token),
            "mutation { changePassword(currentPassword: \"dks_guess\", newPassword: \"a-new-long-password-2026\") { accessToken } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&no_password), "BAD_USER_INPUT", "{no_password}");
    assert!(
        message(&no_password).contains("no password"),
        "{no_password}"
    );
    let unknown = app
        .graphql_as(Some(&admin), revoke, json!({ "c": "dk_nobody" }))
        .await;
    assert_eq!(code(&unknown), "NOT_FOUND", "{unknown}");
    // The first client still works.
    let still = app
        .graphql_as(
            Some(&client_token),
            "{ myBookings(first: 1) { edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert!(still["errors"].is_null(), "{still}");
}

/// A booking made for an agency is the agency's: staff who leave it can no
/// longer read, list or cancel it (nor watch it), while the agency still
/// can. A traveler who joins an agency keeps their own earlier booking.
#[tokio::test]
async fn staff_who_leave_an_agency_leave_its_bookings_and_travelers_who_join_keep_theirs() {
    let app = spawn_app().await;
    let room_type = app.homestay(4).await.room_type_id.to_string();
    let (agency_id, _, client_token) = agency(&app, "草原国旅", 800).await;
    let admin = app.admin_token().await;
    let grant = |email: &'static str, role: &'static str| {
        let admin = admin.clone();
        let agency_id = agency_id.clone();
        let app = &app;
        async move {
            let granted = app
                .graphql_as(
                    Some(&admin),
                    "mutation($e: String!, $r: Role!, $a: ID) { grantRole(email: $e, role: $r, agencyId: $a) { role } }",
                    json!({ "e": email, "r": role, "a": (role == "AGENCY").then_some(agency_id) }),
                )
                .await;
            assert_eq!(granted["data"]["grantRole"]["role"], role, "{granted}");
            app.login(email).await["accessToken"]
                .as_str()
                .expect("logs in again")
                .to_owned()
        }
    };
    let read = "query($id: ID!) { booking(id: $id) { id guests { name } } }";
    let listed = |token: String| {
        let app = &app;
        async move {
            let page = app
                .graphql_as(
                    Some(&token),
                    "{ myBookings(first: 10) { totalCount edges { node { id } } } }",
                    json!({}),
                )
                .await;
            common::edges(&page, "myBookings")
                .iter()
                .filter_map(|e| e["node"]["id"].as_str().map(str::to_owned))
                .collect::<Vec<_>>()
        }
    };

    // A guide books for the agency, then leaves it.
    app.register("guide@caoyuan.example.cn", "110105").await;
    let guide = grant("guide@caoyuan.example.cn", "AGENCY").await;
    let for_agency = TestApp::id_of(&group_booking(&app, &guide, &room_type, "guide-books").await);
    assert_eq!(listed(guide.clone()).await, vec![for_agency.clone()]);
    let former = grant("guide@caoyuan.example.cn", "TRAVELER").await;
    let refused = app
        .graphql_as(Some(&former), read, json!({ "id": for_agency }))
        .await;
    assert_eq!(code(&refused), "FORBIDDEN", "{refused}");
    assert!(listed(former.clone()).await.is_empty());
    let cancel = app
        .graphql_as(
            Some(&former),
            "mutation($id: ID!) { cancelBooking(bookingId: $id, idempotencyKey: \"fired\") { status } }",
            json!({ "id": for_agency }),
        )
        .await;
    assert_eq!(code(&cancel), "FORBIDDEN", "{cancel}");
    // The agency keeps it.
    assert_eq!(listed(client_token.clone()).await, vec![for_agency.clone()]);
    let kept = app
        .graphql_as(Some(&client_token), read, json!({ "id": for_agency }))
        .await;
    assert_eq!(kept["data"]["booking"]["id"], for_agency.as_str(), "{kept}");

    // A traveler books a stay of their own, then joins the agency.
    let traveler = app.token.clone().expect("the test's traveler");
    let own = TestApp::id_of(&group_booking(&app, &traveler, &room_type, "own-trip").await);
    let joined = grant("traveler@example.cn", "AGENCY").await;
    let seen = app
        .graphql_as(Some(&joined), read, json!({ "id": own }))
        .await;
    assert_eq!(seen["data"]["booking"]["id"], own.as_str(), "{seen}");
    let theirs = listed(joined).await;
    assert!(
        theirs.contains(&own) && theirs.contains(&for_agency),
        "the agency's bookings and their own: {theirs:?}"
    );
    // The agency's integration does not see the traveler's own trip.
    assert_eq!(listed(client_token).await, [for_agency]);
}

/// A booking its staff make for an agency counts for the agency's region,
/// as its API clients' do, not for the staff member's own home: a guide
/// from 海淀区 working for a 朝阳区 agency sends the agency's tourists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agency_booking_counts_for_the_agencys_region_whoever_of_its_staff_makes_it() {
    let app = spawn_app().await;
    let agencys = app.pair("110105", "150430").await;
    let guides = app.pair("110108", "150430").await;
    let room_type = app.homestay(4).await.room_type_id.to_string();
    let (agency_id, _, _) = agency(&app, "草原国旅", 800).await;
    app.register("guide@caoyuan.example.cn", "110108").await;
    let admin = app.admin_token().await;
    let granted = app
        .graphql_as(
            Some(&admin),
            "mutation($a: ID!) { grantRole(email: \"guide@caoyuan.example.cn\", role: AGENCY, agencyId: $a) { role } }",
            json!({ "a": agency_id }),
        )
        .await;
    assert_eq!(granted["data"]["grantRole"]["role"], "AGENCY", "{granted}");
    let guide = app.login("guide@caoyuan.example.cn").await["accessToken"]
        .as_str()
        .expect("logs in again")
        .to_owned();
    let id = TestApp::id_of(&group_booking(&app, &guide, &room_type, "guide").await);
    status_as(&app, &guide, &id, &["AWAITING_PAYMENT"]).await;
    let paid = app
        .graphql_as(
            Some(&guide),
            "mutation($id: ID!) { payBooking(bookingId: $id, paymentToken: \"tok_success\", idempotencyKey: \"p\") { status } }",
            json!({ "id": id }),
        )
        .await;
    assert!(paid["errors"].is_null(), "{paid}");
    status_as(&app, &guide, &id, &["CONFIRMED"]).await;

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let credited = loop {
        let impact = app
            .graphql_as(
                Some(&guide),
                "query($id: ID!) { bookingImpact(bookingId: $id) { partnerships { partnership { id } } } }",
                json!({ "id": id }),
            )
            .await;
        let ids: Vec<String> = impact["data"]["bookingImpact"]["partnerships"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["partnership"]["id"].as_str().map(str::to_owned))
            .collect();
        if !ids.is_empty() {
            break ids;
        }
        assert!(std::time::Instant::now() < deadline, "{impact}");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    };
    assert!(
        credited.contains(&agencys.id.to_string()),
        "the agency's pair: {credited:?}"
    );
    assert!(
        !credited.contains(&guides.id.to_string()),
        "not the guide's own: {credited:?}"
    );
}

/// A capture counts among the agency's bookings even when it earns no
/// commission (a contract of 0 basis points, or a share that rounds to
/// nothing): no agency leg is posted then, and the count used to miss it.
#[tokio::test]
async fn a_booking_without_commission_still_counts_as_captured() {
    let app = spawn_app().await;
    let room_type = app.homestay(4).await.room_type_id.to_string();
    let (agency_id, _, token) = agency(&app, "公益研学社", 0).await;
    let id = TestApp::id_of(&group_booking(&app, &token, &room_type, "zero-1").await);
    app.wait_for_status_as(&token, &id, "AWAITING_PAYMENT")
        .await;
    let paid = app
        .graphql_as(
            Some(&token),
            "mutation($id: ID!) { payBooking(bookingId: $id, paymentToken: \"tok_success\", idempotencyKey: \"p\") {
                split { agency { amount } } } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(
        paid["data"]["payBooking"]["split"]["agency"]["amount"], "0.00",
        "{paid}"
    );
    let today = shared::policy::china_today(chrono::Utc::now()).to_string();
    let commission = app
        .graphql_as(
            Some(&token),
            "query($a: ID!, $d: Date!) { agency(id: $a) { commission(from: $d, to: $d) { net { amount } bookings } } }",
            json!({ "a": agency_id, "d": today }),
        )
        .await;
    assert_eq!(
        commission["data"]["agency"]["commission"],
        json!({ "net": { "amount": "0.00" }, "bookings": 1 }),
        "{commission}"
    );
}

/// Someone registered the staff member's email before they did (no mail
/// proves an address): a grant naming the person's account id (from their
/// `me { id }`) is CONFLICT and gives the squatter nothing; named right, it
/// goes through.
#[tokio::test]
async fn a_role_granted_with_an_account_id_goes_to_that_account_only() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let squatter = app.register("guide@bigagency.example.cn", "110105").await;
    let squatters_id = app
        .graphql_as(Some(&squatter), "{ me { id } }", json!({}))
        .await["data"]["me"]["id"]
        .clone();
    let grant = |id: Value| {
        app.graphql_as(
            Some(&admin),
            "mutation($e: String!, $id: ID) { grantRole(email: $e, role: PLATFORM_ADMIN, accountId: $id) { role } }",
            json!({ "e": "guide@bigagency.example.cn", "id": id }),
        )
    };
    let someone_else = grant(json!(uuid::Uuid::now_v7().to_string())).await;
    assert_eq!(code(&someone_else), "CONFLICT", "{someone_else}");
    let me = app
        .graphql_as(Some(&squatter), "{ me { role } }", json!({}))
        .await;
    assert_eq!(
        me["data"]["me"]["role"], "TRAVELER",
        "nothing granted: {me}"
    );
    let named = grant(squatters_id).await;
    assert_eq!(
        named["data"]["grantRole"]["role"], "PLATFORM_ADMIN",
        "{named}"
    );
}

/// A platform admin renames an agency or changes its commission contract:
/// bookings made after take the new rate, those made before keep theirs;
/// nobody else may, a rate out of range or another agency's name is
/// refused, and nothing else changes.
#[tokio::test]
async fn a_platform_admin_changes_an_agencys_contract_for_bookings_from_then_on() {
    let app = spawn_app().await;
    let room_type = app.homestay(4).await.room_type_id.to_string();
    let (id, _, token) = agency(&app, "草原行旅行社", 500).await;
    agency(&app, "京蒙旅行社", 300).await;
    let before = group_booking(&app, &token, &room_type, "before").await;
    assert_eq!(
        before["data"]["createBooking"]["commissionBasisPoints"], 500,
        "{before}"
    );
    let update = "mutation($a: ID!, $n: String, $bp: Int) {
        updateAgency(agencyId: $a, name: $n, commissionBasisPoints: $bp) {
            name commissionBasisPoints homeRegionCode } }";
    let admin = app.admin_token().await;
    let changed = app
        .graphql_as(Some(&admin), update, json!({ "a": id, "bp": 650 }))
        .await;
    assert_eq!(
        changed["data"]["updateAgency"],
        json!({ "name": "草原行旅行社", "commissionBasisPoints": 650, "homeRegionCode": "110105" }),
        "{changed}"
    );
    let after = group_booking(&app, &token, &room_type, "after").await;
    assert_eq!(
        after["data"]["createBooking"]["commissionBasisPoints"], 650,
        "{after}"
    );
    let first = TestApp::id_of(&before);
    let kept = app
        .graphql_as(
            Some(&token),
            "query($b: ID!) { booking(id: $b) { commissionBasisPoints } }",
            json!({ "b": first }),
        )
        .await;
    assert_eq!(
        kept["data"]["booking"]["commissionBasisPoints"], 500,
        "{kept}"
    );
    let renamed = app
        .graphql_as(Some(&admin), update, json!({ "a": id, "n": "  草原行  " }))
        .await;
    assert_eq!(
        renamed["data"]["updateAgency"]["name"], "草原行",
        "{renamed}"
    );
    for (vars, expected) in [
        (json!({ "a": id, "bp": 3001 }), "BAD_USER_INPUT"),
        (json!({ "a": id, "bp": -1 }), "BAD_USER_INPUT"),
        (json!({ "a": id, "n": "京蒙旅行社" }), "CONFLICT"),
        // Nothing to change (it answered as saved).
        (json!({ "a": id }), "BAD_USER_INPUT"),
        (
            json!({ "a": uuid::Uuid::now_v7().to_string(), "bp": 100 }),
            "NOT_FOUND",
        ),
    ] {
        let refused = app.graphql_as(Some(&admin), update, vars.clone()).await;
        assert_eq!(code(&refused), expected, "{vars}: {refused}");
    }
    for who in [Some(token.as_str()), None] {
        let refused = app
            .graphql_as(who, update, json!({ "a": id, "bp": 3000 }))
            .await;
        assert_ne!(code(&refused), "none", "{refused}");
    }
    let read = app
        .graphql_as(
            Some(&admin),
            "query($a: ID!) { agency(id: $a) { name commissionBasisPoints } }",
            json!({ "a": id }),
        )
        .await;
    assert_eq!(
        read["data"]["agency"],
        json!({ "name": "草原行", "commissionBasisPoints": 650 }),
        "{read}"
    );
}

/// An integration that asks `apiClientToken` for every job leaves at most
/// a hundred live refresh tokens behind (the oldest go, unknown from then
/// on, and ending no other session), and an expired one is deleted at the
/// next issue: before, every call left a live 30-day credential and a row
/// for good, and revoking the client walked them all under its lock.
#[tokio::test]
async fn an_api_client_keeps_a_hundred_live_refresh_tokens_and_no_expired_one() {
    use sea_orm::ConnectionTrait;
    let app = spawn_app().await;
    let (agency_id, _, _) = agency(&app, "票务通", 500).await;
    let admin = app.admin_token().await;
    let client = app
        .graphql_as(
            Some(&admin),
            "mutation($a: ID!) { createApiClient(agencyId: $a, name: \"nightly jobs\") { clientId clientSecret } }",
            json!({ "a": agency_id }),
        )
        .await;
    let creds = json!({
        "c": client["data"]["createApiClient"]["clientId"],
        "s": client["data"]["createApiClient"]["clientSecret"],
    });
    let exchange = "mutation($c: String!, $s: String!) { apiClientToken(clientId: $c, clientSecret: $s) { refreshToken } }";
    let mut refresh_tokens = Vec::new();
    for _ in 0..102 {
        let issued = app.graphql_as(None, exchange, creds.clone()).await;
        refresh_tokens.push(
            issued["data"]["apiClientToken"]["refreshToken"]
                .as_str()
                .unwrap_or_else(|| panic!("{issued}"))
                .to_owned(),
        );
    }
    let db = app.service_db("gateway").await;
    let rows = || async {
        common::count_of(
            &db,
            "SELECT count(*) AS n FROM refresh_tokens WHERE account_id =
                (SELECT account_id FROM api_clients WHERE client_id = $1)",
            vec![creds["c"].as_str().expect("client id").into()],
        )
        .await
    };
    assert_eq!(rows().await, 100);
    let refresh = "mutation($r: String!) { refreshToken(token: $r) { refreshToken } }";
    let oldest = app
        .graphql_as(None, refresh, json!({ "r": refresh_tokens[0] }))
        .await;
    assert_eq!(code(&oldest), "UNAUTHENTICATED", "{oldest}");
    // Unknown, not leaked: the newest session goes on.
    let newest = app
        .graphql_as(None, refresh, json!({ "r": refresh_tokens[101] }))
        .await;
    assert!(newest["errors"].is_null(), "{newest}");

    db.execute_unprepared(
        "UPDATE refresh_tokens SET expires_at = now() - interval '1 second'
         WHERE revoked_at IS NOT NULL",
    )
    .await
    .expect("the rotated token expired");
    let issued = app.graphql_as(None, exchange, creds.clone()).await;
    assert!(issued["errors"].is_null(), "{issued}");
    // The rotated (revoked) token, expired, is gone; the 100 live stay.
    assert_eq!(rows().await, 100);
}

/// A thousand refresh tokens of `email`'s account, used just now (rows
/// standing in for a thousand rotations).
async fn thousand_used_tokens(app: &TestApp, email: &str) {
    use sea_orm::ConnectionTrait;
    app.service_db("gateway")
        .await
        .execute_raw(sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "INSERT INTO refresh_tokens (token_hash, account_id, expires_at, revoked_at, created_at)
             SELECT 'used-' || g, a.id, now() + interval '30 days', now(), now()
             FROM accounts a, generate_series(1, 1000) g WHERE a.email = $1",
            [email.into()],
        ))
        .await
        .expect("a thousand used tokens");
}

/// A used refresh token whose row was trimmed away (a thief refreshing a
/// thousand times so that the owner's copy is forgotten) is still known as
/// a copy of a sign-in that goes on, by the session it names: presented,
/// it ends every session. It was "unknown", and the thief's chain lived on.
#[tokio::test]
async fn a_used_refresh_token_trimmed_away_still_ends_every_session() {
    let app = spawn_app().await;
    app.register("stolen@example.cn", "110108").await;
    let refresh = "mutation($t: String!) { refreshToken(token: $t) { refreshToken } }";
    let rotated = |token: String| {
        let app = &app;
        async move {
            let answer = app.graphql_as(None, refresh, json!({ "t": token })).await;
            answer["data"]["refreshToken"]["refreshToken"]
                .as_str()
                .unwrap_or_else(|| panic!("{answer}"))
                .to_owned()
        }
    };
    let owners = app.login("stolen@example.cn").await["refreshToken"]
        .as_str()
        .expect("a refresh token")
        .to_owned();
    // The thief refreshes first, then a thousand more times (stood in for
    // by a thousand used rows), and once more: the owner's copy is trimmed.
    let thiefs = rotated(owners.clone()).await;
    let gateway = app.service_db("gateway").await;
    thousand_used_tokens(&app, "stolen@example.cn").await;
    let thiefs = rotated(thiefs).await;
    let kept = common::count_of(
        &gateway,
        "SELECT COUNT(*) AS n FROM refresh_tokens
         WHERE token_hash = encode(sha256(convert_to($1, 'UTF8')), 'hex')",
        vec![owners.clone().into()],
    )
    .await;
    assert_eq!(kept, 0, "the owner's copy was trimmed away");
    // The session alone (a token's plain first part, which a log may keep)
    // ends nothing: the seal is checked.
    let session = owners.split('.').next().expect("a session");
    let forged = format!("{session}.forged.{}", "0".repeat(32));
    let refused = app.graphql_as(None, refresh, json!({ "t": forged })).await;
    assert!(
        refused.to_string().contains("unknown refresh token"),
        "{refused}"
    );
    // Nor does the live token sent with a newline, or its seal in capitals
    // (both were read as a copy of it gone missing: every session ended).
    let (body, sealed) = thiefs.rsplit_once('.').expect("sealed");
    for typo in [
        format!("{thiefs}\n"),
        format!("{body}.{}", sealed.to_uppercase()),
    ] {
        let refused = app.graphql_as(None, refresh, json!({ "t": typo })).await;
        assert!(
            refused.to_string().contains("unknown refresh token"),
            "{refused}"
        );
    }
    let thiefs = rotated(thiefs).await;
    let again = app.graphql_as(None, refresh, json!({ "t": owners })).await;
    assert_eq!(code(&again), "UNAUTHENTICATED", "{again}");
    assert!(
        again
            .to_string()
            .contains("every session of the account was ended"),
        "{again}"
    );
    let thief = app.graphql_as(None, refresh, json!({ "t": thiefs })).await;
    assert_eq!(code(&thief), "UNAUTHENTICATED", "{thief}");
}

/// Used refresh tokens are kept newest-used first: one issued long ago and
/// rotated just now stays among the thousand kept, so presented again (a
/// copy in other hands) it still ends every session. Kept newest-issued
/// first, it went at its own rotation once a thousand newer ones had been
/// used, and came back as merely "unknown".
#[tokio::test]
async fn a_long_lived_refresh_token_rotated_now_is_still_told_as_leaked() {
    let app = spawn_app().await;
    app.register("often@example.cn", "110108").await;
    let old = app.login("often@example.cn").await["refreshToken"]
        .as_str()
        .expect("a refresh token")
        .to_owned();
    // A busy other session's thousand used tokens, all issued after `old`.
    thousand_used_tokens(&app, "often@example.cn").await;
    let refresh = "mutation($t: String!) { refreshToken(token: $t) { refreshToken } }";
    let rotated = app.graphql_as(None, refresh, json!({ "t": old })).await;
    assert!(rotated["errors"].is_null(), "{rotated}");
    app.exchanged_long_ago(&json!(old)).await;
    let again = app.graphql_as(None, refresh, json!({ "t": old })).await;
    assert_eq!(code(&again), "UNAUTHENTICATED", "{again}");
    assert!(
        again
            .to_string()
            .contains("every session of the account was ended"),
        "{again}"
    );
}

/// A platform admin suspends an agency, saying why: the tokens its API
/// client and its staff hold stop at once, neither signs in again (told
/// why), and a booking it made stands; reinstated, both sign in again.
/// Only platform admins suspend; suspending again keeps the first reason.
#[tokio::test]
async fn a_suspended_agency_signs_in_nowhere_until_it_is_reinstated() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let (id, _, held) = agency(&app, "草原国旅", 800).await;
    let (client_id, secret) = api_client(&app, &admin, &id, "second system").await;
    let client_token = || {
        app.graphql_as(
            None,
            "mutation($c: String!, $s: String!) { apiClientToken(clientId: $c, clientSecret: $s) { accessToken } }",
            json!({ "c": client_id, "s": secret }),
        )
    };
    let staff_email = "guide@caoyuan.example.cn";
    app.register(staff_email, "150430").await;
    let granted = app
        .graphql_as(
            Some(&admin),
            "mutation($e: String!, $a: ID!) { grantRole(email: $e, role: AGENCY, agencyId: $a) { role } }",
            json!({ "e": staff_email, "a": id }),
        )
        .await;
    assert_eq!(granted["data"]["grantRole"]["role"], "AGENCY", "{granted}");
    let signed_in = app.login(staff_email).await;
    let staff = signed_in["accessToken"]
        .as_str()
        .expect("staff logs in")
        .to_owned();
    let staff_refresh = signed_in["refreshToken"]
        .as_str()
        .expect("a refresh token")
        .to_owned();
    // A second sign-in of the staff's, ended before the suspension.
    let ended = app.login(staff_email).await["refreshToken"]
        .as_str()
        .expect("a refresh token")
        .to_owned();
    let out = app
        .graphql_as(
            None,
            "mutation($t: String!) { logout(refreshToken: $t) }",
            json!({ "t": ended }),
        )
        .await;
    assert!(out["errors"].is_null(), "{out}");
    let room_type = app.homestay(2).await.room_type_id.to_string();
    let booked = TestApp::id_of(&group_booking(&app, &held, &room_type, "before").await);

    let suspend = |token: String, reason: &'static str| {
        let app = &app;
        let id = id.clone();
        async move {
            app.graphql_as(
                Some(&token),
                "mutation($a: ID!, $r: String!) { suspendAgency(agencyId: $a, reason: $r) { suspendedAt suspensionReason } }",
                json!({ "a": id, "r": reason }),
            )
            .await
        }
    };
    assert_eq!(code(&suspend(held.clone(), "自己停").await), "FORBIDDEN");
    assert_eq!(code(&suspend(admin.clone(), "  ").await), "BAD_USER_INPUT");
    let suspended = suspend(admin.clone(), "合同到期未续签").await;
    let answer = &suspended["data"]["suspendAgency"];
    assert_eq!(answer["suspensionReason"], "合同到期未续签", "{suspended}");
    assert!(answer["suspendedAt"].is_string(), "{suspended}");
    let again = suspend(admin.clone(), "another reason").await;
    assert_eq!(again["data"]["suspendAgency"], *answer, "{again}");

    // What they hold stops; what they ask for is refused, saying why.
    for token in [&held, &staff] {
        let me = app
            .graphql_as(Some(token), "{ me { role } }", json!({}))
            .await;
        assert_eq!(code(&me), "UNAUTHENTICATED", "{me}");
    }
    let refreshed = app
        .graphql_as(
            None,
            "mutation($t: String!) { refreshToken(token: $t) { accessToken } }",
            json!({ "t": staff_refresh }),
        )
        .await;
    // A sign-in ended before is told only that (the suspension is not its
    // holder's to learn).
    let ended = app
        .graphql_as(
            None,
            "mutation($t: String!) { refreshToken(token: $t) { accessToken } }",
            json!({ "t": ended }),
        )
        .await;
    assert_eq!(code(&ended), "UNAUTHENTICATED", "{ended}");
    assert!(!ended.to_string().contains("suspended"), "{ended}");
    for refused in [client_token().await, refreshed] {
        assert_eq!(code(&refused), "FORBIDDEN", "{refused}");
        let why = refused["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(
            why.contains("suspended") && why.contains("合同到期未续签"),
            "{refused}"
        );
    }
    // Told so however often it is tried: the right password is no wrong
    // one counted towards a lock-out (it was RATE_LIMITED at the 11th).
    for _ in 0..=identity_max_failures() {
        let login = app
            .graphql_as(
                None,
                "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { accessToken } }",
                json!({ "e": staff_email, "p": common::PASSWORD }),
            )
            .await;
        assert_eq!(code(&login), "FORBIDDEN", "{login}");
    }
    // Staff may still be given to it (ready for its return): answered as
    // granted (it was FORBIDDEN, the role granted all the same).
    let joining = "joining@caoyuan.example.cn";
    app.register(joining, "150430").await;
    let granted = app
        .graphql_as(
            Some(&admin),
            "mutation($e: String!, $a: ID!) { grantRole(email: $e, role: AGENCY, agencyId: $a) { role homeRegionCode } }",
            json!({ "e": joining, "a": id }),
        )
        .await;
    assert_eq!(
        granted["data"]["grantRole"],
        json!({ "role": "AGENCY", "homeRegionCode": "110105" }),
        "{granted}"
    );
    // Its booking stands (a platform admin reads it).
    let read = app
        .graphql_as(
            Some(&admin),
            "query($id: ID!) { booking(id: $id) { id } }",
            json!({ "id": booked }),
        )
        .await;
    assert_eq!(read["data"]["booking"]["id"], booked.as_str(), "{read}");

    // Reinstated: both sign in again.
    let reinstated = app
        .graphql_as(
            Some(&admin),
            "mutation($a: ID!) { reinstateAgency(agencyId: $a) { suspendedAt suspensionReason } }",
            json!({ "a": id }),
        )
        .await;
    assert_eq!(
        reinstated["data"]["reinstateAgency"],
        json!({ "suspendedAt": null, "suspensionReason": null }),
        "{reinstated}"
    );
    let token = client_token().await;
    assert!(
        token["data"]["apiClientToken"]["accessToken"].is_string(),
        "{token}"
    );
    assert!(app.login(staff_email).await["accessToken"].is_string());
}

/// Reports that read much of the ledger take at most half of payment's
/// database connections: with a pool of two, three agencies' commissions
/// stuck on the ledger (its table locked here, as a long read would keep
/// them) hold one connection, and a read of payment's payout runs still
/// answers (without the limit they took both, and the read waited out the
/// deadline). The two waiting for their turn give up while their caller
/// still waits, "busy with other reports", instead of queueing on (and
/// holding deliveries of payment's queue) until the first is done.
#[tokio::test]
async fn commission_reads_leave_payment_a_connection_for_payments() {
    // Callers wait 10 s: the turns given up at 5 s leave the first read,
    // let go then, time to answer well within its caller's wait.
    let settings = shared::config::Settings {
        db_max_connections: 2,
        rpc_timeout_ms: 10_000,
        ..common::test_settings()
    };
    let app = common::spawn_app_with(settings).await;
    let (agency_id, _, _) = agency(&app, "草原之旅国际旅行社", 800).await;
    let admin = app.admin_token().await;
    let ledger = common::LockHeld::begin(
        app.service_db("payment").await,
        "LOCK TABLE ledger_entries IN ACCESS EXCLUSIVE MODE",
    )
    .await;
    let today = shared::policy::china_today(chrono::Utc::now()).to_string();
    let query = "query($a: ID!, $d: Date!) { agency(id: $a) { commission(from: $d, to: $d) { bookings } } }";
    let vars = json!({ "a": agency_id, "d": today });
    let answered = std::sync::atomic::AtomicUsize::new(0);
    let reads = futures::future::join_all((0..3).map(|_| async {
        let answer = app.graphql_as(Some(&admin), query, vars.clone()).await;
        answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        answer
    }));
    let meanwhile = async {
        ledger.until_waiting(1, true).await;
        // Payment's payout runs: a read of its own table, not the ledger.
        let runs = app
            .graphql_as(
                Some(&admin),
                "{ payoutRuns(first: 1) { edges { cursor } } }",
                json!({}),
            )
            .await;
        // The two without a turn answer while the first is still held.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while answered.load(std::sync::atomic::Ordering::SeqCst) < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "the reports waiting for their turn never gave up"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        ledger.release().await;
        runs
    };
    let (answers, runs) = tokio::join!(reads, meanwhile);
    assert_eq!(runs["data"]["payoutRuns"]["edges"], json!([]), "{runs}");
    let made = answers
        .iter()
        .filter(|a| a["data"]["agency"]["commission"]["bookings"] == 0)
        .count();
    let busy = answers
        .iter()
        .filter(|a| {
            a["errors"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains(payment::messaging::REPORTS_BUSY))
        })
        .count();
    assert_eq!((made, busy), (1, 2), "{answers:#?}");
}

/// `createApiClient` sent again with its key — its answer lost — makes no
/// second client: the same one, with a new secret (the lost one no longer
/// works); copies sent at once make one; once the client has signed in
/// its secret was delivered, and the key is CONFLICT naming it; with
/// another name, IDEMPOTENCY_KEY_REUSED. (It made a client per call.)
#[tokio::test]
async fn a_create_api_client_sent_again_with_its_key_makes_one_client() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let (agency_id, _, _) = agency(&app, "再来一次旅行社", 500).await;
    let create = |key, name| keyed_api_client(&app, &admin, &agency_id, key, name);
    let creds = |body: &Value| {
        let c = &body["data"]["createApiClient"];
        match (c["clientId"].as_str(), c["clientSecret"].as_str()) {
            (Some(id), Some(secret)) => (id.to_owned(), secret.to_owned()),
            _ => panic!("no credentials: {body}"),
        }
    };
    let sign_in = |(id, secret): (String, String)| {
        let app = &app;
        async move {
            app.graphql_as(
                None,
                "mutation($c: String!, $s: String!) { apiClientToken(clientId: $c, clientSecret: $s) { accessToken } }",
                json!({ "c": id, "s": secret }),
            )
            .await
        }
    };
    let named = |name: &'static str| {
        let (app, admin, agency_id) = (&app, admin.clone(), agency_id.clone());
        async move {
            let body = app
                .graphql_as(
                    Some(&admin),
                    "query($a: ID!) { agency(id: $a) { apiClients { name } } }",
                    json!({ "a": agency_id }),
                )
                .await;
            body["data"]["agency"]["apiClients"]
                .as_array()
                .unwrap_or_else(|| panic!("{body}"))
                .iter()
                .filter(|c| c["name"] == name)
                .count()
        }
    };

    let first = creds(&create("setup-1", "订单系统").await);
    let again = creds(&create("setup-1", " 订单系统 ").await);
    assert_eq!(first.0, again.0, "the same client");
    assert_ne!(first.1, again.1, "a new secret");
    assert_eq!(named("订单系统").await, 1);
    let lost = sign_in(first.clone()).await;
    assert_eq!(code(&lost), "UNAUTHENTICATED", "the lost secret: {lost}");
    let other = create("setup-1", "对账系统").await;
    common::assert_error(&other, "IDEMPOTENCY_KEY_REUSED", &first.0);
    let signed_in = sign_in(again).await;
    assert!(signed_in["errors"].is_null(), "{signed_in}");
    let late = create("setup-1", "订单系统").await;
    common::assert_error(
        &late,
        "CONFLICT",
        &format!("{}, which has signed in", first.0),
    );

    // Copies sent at once: one client, both answered with it, and the
    // secret of the one answered last works (the other's, given a new
    // one by it, does not).
    let (a, b) = tokio::join!(create("setup-2", "夜间任务"), create("setup-2", "夜间任务"));
    let (a, b) = (creds(&a), creds(&b));
    assert_eq!(a.0, b.0);
    assert_eq!(named("夜间任务").await, 1);
    let signed_in = [sign_in(a).await, sign_in(b).await].map(|t| t["errors"].is_null());
    assert_eq!(
        signed_in.iter().filter(|ok| **ok).count(),
        1,
        "{signed_in:?}"
    );
    // Without a key, each call is a client of its own, as before.
    for _ in 0..2 {
        api_client(&app, &admin, &agency_id, "各自").await;
    }
    assert_eq!(named("各自").await, 2);
}

/// A create sent again while the client is being revoked: it waits for the
/// revocation and answers CONFLICT "revoked since", giving the revoked
/// client no new secret (it read the client before the revocation and
/// answered a secret that signs in nowhere).
#[tokio::test]
async fn a_create_sent_again_while_its_client_is_revoked_says_so() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let (agency_id, _, _) = agency(&app, "撤销中旅行社", 500).await;
    let create = || keyed_api_client(&app, &admin, &agency_id, "k", "对账");
    let first = create().await;
    let client = first["data"]["createApiClient"]["clientId"]
        .as_str()
        .unwrap_or_else(|| panic!("{first}"))
        .to_owned();
    // The revocation under way: the client's account held, as
    // revokeApiClient holds it until it commits.
    let held = common::LockHeld::begin(
        app.service_db("gateway").await,
        &format!(
            "SELECT id FROM accounts WHERE id =
                (SELECT account_id FROM api_clients WHERE client_id = '{client}') FOR UPDATE"
        ),
    )
    .await;
    let (again, ()) = tokio::join!(create(), async {
        held.until_waiting(1, true).await;
        held.run(&format!(
            "UPDATE api_clients SET revoked_at = now() WHERE client_id = '{client}'"
        ))
        .await
        .expect("revoked");
        held.release().await;
    });
    common::assert_error(&again, "CONFLICT", "revoked since");
}
