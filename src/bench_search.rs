//! `duikou bench search`: homestay search for a two-night window through the
//! gateway at several client counts, beside `{ __typename }` on the same
//! gateway in the same run (the ceiling: HTTP, JSON, auth and GraphQL with
//! no service behind). Latencies in HDR histograms, warm-up excluded. A
//! figure, not a test.

use crate::{App, Part};
use chrono::{Duration as Days, Utc};
use hdrhistogram::Histogram;
use serde_json::json;
use shared::auth::Principal;
use shared::bus::call;
use shared::config::Settings;
use shared::ids::RoomTypeId;
use shared::money::Fen;
use shared::region::RegionCode;
use shared::rpcs::{CreateHomestay, NewRoomType, SetRoomCalendar};
use std::time::{Duration, Instant};

/// One measured load.
#[derive(Debug, serde::Serialize)]
pub struct SearchRun {
    /// `search` or `typename`.
    pub query: &'static str,
    /// Concurrent clients.
    pub clients: usize,
    /// Requests answered in the measured time.
    pub requests: u64,
    /// requests / second.
    pub requests_per_second: f64,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// Slowest, milliseconds.
    pub max_ms: f64,
    /// A search run's requests/s over the `{ __typename }` ceiling's at the
    /// same clients, measured just before it (none for the ceiling itself).
    pub ratio_to_ceiling: Option<f64>,
}

const HOMESTAYS: usize = 40;

/// Runs the search benchmark on a Duikou of its own (fresh databases and
/// queues under a unique prefix on the configured servers, removed after).
pub async fn search(
    settings: Settings,
    client_counts: &[usize],
    seconds: u64,
) -> anyhow::Result<Vec<SearchRun>> {
    let (settings, _) = bench_settings(settings);
    let app = start_app(&settings, Part::All).await?;
    let result = measure(&app, client_counts, seconds).await;
    let queues = app.rt.bus.declared_queues();
    app.stop().await;
    cleanup(&settings, &queues).await;
    result
}

async fn measure(
    app: &App,
    client_counts: &[usize],
    seconds: u64,
) -> anyhow::Result<Vec<SearchRun>> {
    let addr = app
        .gateway_addr
        .ok_or_else(|| anyhow::anyhow!("no gateway"))?;
    let url = format!("http://{addr}/graphql");
    let today = Utc::now().date_naive();
    let banners = ["150430", "150423", "150428", "150522", "150525"];
    print!("  seeding {HOMESTAYS} homestays with 30 nights each… ");
    seed_room_types(app.rt.bus.as_ref(), HOMESTAYS, 5, 30, |i| {
        Ok((
            RegionCode::parse(banners[i % banners.len()])?,
            Fen::yuan(200 + (i as i64 * 7) % 300),
        ))
    })
    .await?;
    println!("done");
    let search = json!({
        "query": "query($in: Date!, $out: Date!) { searchHomestays(regionCode: \"150400\", checkIn: $in, checkOut: $out, guests: 2, first: 20) { edges { node { homestayName total { amount } } } } }",
        "variables": { "in": (today + Days::days(7)).to_string(), "out": (today + Days::days(9)).to_string() }
    });
    let typename = json!({ "query": "{ __typename }" });
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let mut runs = Vec::new();
    for &clients in client_counts {
        for (name, body) in [("typename", &typename), ("search", &search)] {
            let run = load(&http, &url, name, body, clients, seconds).await?;
            println!(
                "  {:<8} {:>3} clients: {:>7.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>7.2} ms",
                run.query, run.clients, run.requests_per_second, run.p50_ms, run.p99_ms, run.max_ms
            );
            runs.push(run);
        }
        if let Some([ceiling, search]) = runs.last_chunk_mut::<2>() {
            let ratio = search.requests_per_second / ceiling.requests_per_second.max(1.0);
            search.ratio_to_ceiling = Some(ratio);
            println!("  ratio search / __typename at {clients}: {ratio:.2}");
        }
    }
    Ok(runs)
}

/// `clients` loops sending `body` for a warm-up second and then `seconds`.
async fn load(
    http: &reqwest::Client,
    url: &str,
    query: &'static str,
    body: &serde_json::Value,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<SearchRun> {
    let warm_until = Instant::now() + Duration::from_secs(1);
    let until = warm_until + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, url, body) = (http.clone(), url.to_owned(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            loop {
                let started = Instant::now();
                if started >= until {
                    break;
                }
                let response = http.post(&url).json(&body).send().await?;
                let ok = response.status().is_success();
                let text = response.text().await?;
                if !ok || text.contains("\"errors\"") {
                    anyhow::bail!("the gateway answered an error: {text}");
                }
                // A search that found nothing would be measured cheap.
                if query == "search" && !text.contains("homestayName") {
                    anyhow::bail!("the search found no stay: {text}");
                }
                if started >= warm_until {
                    hist.record(started.elapsed().as_micros() as u64)?;
                }
            }
            Ok::<_, anyhow::Error>(hist)
        }));
    }
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for task in tasks {
        all.add(task.await??)?;
    }
    let ms = |us: u64| us as f64 / 1000.0;
    Ok(SearchRun {
        query,
        clients,
        requests: all.len(),
        requests_per_second: all.len() as f64 / seconds as f64,
        p50_ms: ms(all.value_at_quantile(0.5)),
        p99_ms: ms(all.value_at_quantile(0.99)),
        max_ms: ms(all.max()),
        ratio_to_ceiling: None,
    })
}

/// `count` homestays, each with one two-guest room type on sale with
/// `rooms` rooms a night for `nights` nights from today; `listing(i)` says
/// where the i-th is and what a night costs. Returns the room types.
pub(crate) async fn seed_room_types(
    bus: &dyn shared::bus::Bus,
    count: usize,
    rooms: u32,
    nights: i64,
    listing: impl Fn(usize) -> anyhow::Result<(RegionCode, Fen)>,
) -> anyhow::Result<Vec<RoomTypeId>> {
    let today = shared::policy::china_today(Utc::now());
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        let (region_code, price) = listing(i)?;
        let created = call(
            bus,
            &CreateHomestay {
                idempotency_key: None,
                host_name: format!("牧户 {i}"),
                host_id: None,
                region_code,
                name: format!("草原民宿 {i}"),
                name_en: format!("Grassland homestay {i}"),
                room_type: NewRoomType {
                    name: "双床".into(),
                    name_en: "Twin".into(),
                    beds: 2,
                    max_guests: 2,
                    rooms,
                },
                details: Default::default(),
                cancellation_policy: None,
                unpublished: false,
                by: Principal::platform(),
            },
        )
        .await?;
        call(
            bus,
            &SetRoomCalendar {
                room_type_id: created.room_type_id,
                from: today,
                to: today + Days::days(nights),
                rooms: None,
                price: Some(price),
                closed: Some(false),
                min_stay: Some(1),
                by: Principal::platform(),
            },
        )
        .await?;
        ids.push(created.room_type_id);
    }
    Ok(ids)
}

/// Registers a traveler of 海淀区 through the gateway at `url`; its access
/// token.
pub(crate) async fn register_traveler(
    http: &reqwest::Client,
    url: &str,
    name: &str,
) -> anyhow::Result<String> {
    let registered: serde_json::Value = http
        .post(url)
        .json(&json!({
            "query": "mutation($input: RegisterInput!) { register(input: $input) { accessToken } }",
            "variables": { "input": { "email": format!("{name}@duikou.test"),
                                      "password": format!("草原上的蒙古包-{name}"),
                                      "displayName": name, "homeRegionCode": "110108" } }
        }))
        .send()
        .await?
        .json()
        .await?;
    registered["data"]["register"]["accessToken"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("registration failed: {registered}"))
}

/// Settings for a bench of its own: fresh databases and queues under a
/// unique prefix (returned), no demo data, no rate limit, any free port.
pub(crate) fn bench_settings(mut settings: Settings) -> (Settings, String) {
    let id = uuid::Uuid::now_v7().simple().to_string()[20..].to_owned();
    settings.db_prefix = format!("bench_{id}_");
    settings.bus_prefix = format!("bench.{id}.");
    settings.gateway_addr = "127.0.0.1:0".into();
    settings.demo_data = Some(false);
    settings.rate_limit = 0;
    let prefix = settings.db_prefix.clone();
    (settings, prefix)
}

/// Starts the bench's own Duikou; when that fails part-way, drops what the
/// parts that did start made (their databases, event, dead-letter and RPC
/// queues: a failed start names no queues) before returning the error.
pub(crate) async fn start_app(settings: &Settings, part: Part) -> anyhow::Result<App> {
    match App::start(settings.clone(), part).await {
        Ok(app) => Ok(app),
        Err(e) => {
            let queues = crate::chaos::run_queues(settings);
            cleanup(settings, &queues).await;
            Err(e)
        }
    }
}

/// Drops the bench's queues and databases.
pub(crate) async fn cleanup(settings: &Settings, queues: &[String]) {
    if let Err(e) = drop_redis_keys(settings).await {
        tracing::warn!(error = %e, "the run's Redis keys were not removed (they expire)");
    }
    if let Some(amqp) = settings.amqp()
        && let Err(e) = shared::bus::amqp::admin::delete(amqp, &settings.bus(), queues).await
    {
        tracing::warn!(error = %e, prefix = %settings.bus_prefix, "the run's queues were not all removed");
    }
    if let Some(postgres) = settings.postgres() {
        for service in ["inventory", "booking", "payment", "partnership", "gateway"] {
            let name = shared::db::database_name(settings, service);
            if let Err(e) = shared::db::drop_database(postgres, &name).await {
                tracing::warn!(error = %e, database = %name, "the run's database was not removed");
            }
        }
    }
}

/// Deletes every Redis key of a run (cached answers, persisted queries,
/// rate-limit counters: all under `<db_prefix>`). They would expire by
/// themselves, the persisted queries only after a day.
pub async fn drop_redis_keys(settings: &Settings) -> anyhow::Result<()> {
    let Some(url) = settings.redis() else {
        return Ok(());
    };
    let mut conn = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let pattern = format!("{}*", settings.db_prefix);
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            redis::cmd("DEL")
                .arg(&keys)
                .query_async::<()>(&mut conn)
                .await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}
