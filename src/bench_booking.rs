//! `duikou bench booking` and `duikou bench contention`: bookings taken from
//! createBooking to CONFIRMED through the gateway, as clients do it (create,
//! wait for the push that it is held, pay, wait for the push that it is
//! confirmed — `bookingsUpdated` over graphql-transport-ws).
//!
//! - *booking*: many listings, 1/8/32 clients; confirmed bookings per second
//!   and create→confirmed latency, beside `pgbench -b simple-update` with
//!   the same clients on the same PostgreSQL in the same run, with the
//!   commits each booking costs counted from `pg_stat_database`.
//! - *contention*: a thousand clients race for ten rooms on one night; the
//!   time until every one has its answer, and how many got each.
//!
//! Figures, not tests.

use crate::bench_cpu::{CpuSample, shares_since};
use crate::bench_search::{bench_settings, cleanup, seed_room_types};
use crate::{App, Part};
use chrono::{Duration as Days, Utc};
use hdrhistogram::Histogram;
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};
use shared::config::Settings;
use shared::money::Fen;
use shared::region::RegionCode;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One measured booking load.
#[derive(Debug, serde::Serialize)]
pub struct BookingRun {
    /// Concurrent clients.
    pub clients: usize,
    /// Bookings confirmed in the measured time.
    pub confirmed: u64,
    /// Confirmed bookings per second.
    pub bookings_per_second: f64,
    /// create→confirmed, median, milliseconds.
    pub p50_ms: f64,
    /// create→confirmed, 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// Slowest, milliseconds.
    pub max_ms: f64,
    /// PostgreSQL commits per confirmed booking, all services together —
    /// including the status reads the clients poll with (each read is a
    /// transaction of its own).
    pub commits_per_booking: f64,
    /// Status polls per confirmed booking (`booking(id)` reads, 2 ms apart).
    pub polls_per_booking: f64,
    /// `pgbench -b simple-update` transactions per second, same clients.
    pub pgbench_tps: f64,
    /// (bookings/s × commits per booking) / pgbench tps.
    pub ratio: f64,
    /// Per cent of the machine's CPU (all cores = 100) each party used in
    /// the measured window (`bench_cpu`): duikou, bench clients,
    /// postgresql, rabbitmq, redis, other, idle.
    pub cpu_percent: BTreeMap<String, f64>,
}

/// The contention run's outcome.
#[derive(Debug, serde::Serialize)]
pub struct ContentionRun {
    /// Clients racing.
    pub clients: usize,
    /// Rooms on the night.
    pub rooms: u32,
    /// Seconds from the first request until every client had its answer.
    pub settled_seconds: f64,
    /// Seconds until every `createBooking` had answered.
    pub created_seconds: f64,
    /// Seconds until every booking had left PENDING (held or refused).
    pub answered_seconds: f64,
    /// PostgreSQL commits per client during the run, by service database
    /// (read a second after it settled: PostgreSQL publishes its counters
    /// at most once a second).
    pub commits_per_client: BTreeMap<String, f64>,
    /// Final status → bookings, as the clients saw them.
    pub outcomes: BTreeMap<String, u64>,
    /// CONFIRMED bookings in booking's database after the race: the
    /// clients' count is what they were told (pushes, or polls with
    /// `--poll`), this is what was sold.
    pub confirmed_in_database: u64,
    /// Per cent of the machine's CPU each party used from the first request
    /// until every client had its answer (as in [`BookingRun`]).
    pub cpu_percent: BTreeMap<String, f64>,
}

impl ContentionRun {
    /// Every room sold and none twice — in booking's database and as told
    /// to the clients (fewer clients than rooms: each confirmed): how many,
    /// or an error naming both counts.
    pub fn sold_exactly_the_rooms(&self) -> anyhow::Result<u64> {
        let due = u64::from(self.rooms).min(self.clients as u64);
        let told = self.outcomes.get("CONFIRMED").copied().unwrap_or(0);
        if self.confirmed_in_database != due || told != due {
            anyhow::bail!(
                "{} bookings CONFIRMED in booking's database and {told} told to the clients, for \
                 {} rooms and {} clients: exactly {due} should be",
                self.confirmed_in_database,
                self.rooms,
                self.clients
            );
        }
        Ok(due)
    }
}

const ROOM_TYPES: usize = 100;
const NIGHTS: i64 = 60;

/// A GraphQL client of the bench: one traveler's token, and the traveler's
/// feed of pushes (shared by every client task).
#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    url: String,
    token: String,
    polls: Arc<AtomicU64>,
    feed: Arc<Feed>,
}

/// The latest status of each of the traveler's bookings, as pushed by
/// `bookingsUpdated`.
#[derive(Default)]
struct Feed {
    statuses: std::sync::Mutex<std::collections::HashMap<String, String>>,
    changed: tokio::sync::Notify,
    /// Why the feed ended, once it has: no push comes after.
    ended: std::sync::Mutex<Option<String>>,
}

impl Feed {
    /// Subscribes to the traveler's feed on the gateway at `url`.
    async fn connect(url: &str, token: &str) -> anyhow::Result<Arc<Feed>> {
        use futures::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
        let mut request = url.replace("http://", "ws://").into_client_request()?;
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse()?);
        let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
        let init = json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } });
        ws.send(Message::Text(init.to_string().into())).await?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) if t.contains("connection_ack") => break,
                Some(Ok(Message::Text(t))) => anyhow::bail!("the feed was refused: {t}"),
                Some(Ok(_)) => continue,
                _ => anyhow::bail!("the feed closed before it was acknowledged"),
            }
        }
        let subscribe = json!({ "id": "feed", "type": "subscribe",
            "payload": { "query": "subscription { bookingsUpdated { id status } }" } });
        ws.send(Message::Text(subscribe.to_string().into())).await?;
        let feed = Arc::new(Feed::default());
        let keep = feed.clone();
        tokio::spawn(async move {
            let ended = loop {
                let message = match ws.next().await {
                    Some(Ok(message)) => message,
                    Some(Err(e)) => break e.to_string(),
                    None => break "the gateway closed the socket".to_owned(),
                };
                let text = match message {
                    Message::Text(text) => text,
                    Message::Close(frame) => break format!("closed: {frame:?}"),
                    _ => continue,
                };
                let Ok(v) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                if matches!(v["type"].as_str(), Some("error" | "complete")) {
                    break format!("the subscription ended: {text}");
                }
                let b = &v["payload"]["data"]["bookingsUpdated"];
                if let (Some(id), Some(status)) = (b["id"].as_str(), b["status"].as_str()) {
                    keep.statuses
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(id.to_owned(), status.to_owned());
                    keep.changed.notify_waiters();
                }
            };
            *keep.ended.lock().unwrap_or_else(|p| p.into_inner()) = Some(ended);
            keep.changed.notify_waiters();
        });
        Ok(feed)
    }

    /// Waits for a push that moves booking `id` out of `from` (30 s at most).
    async fn wait_past(&self, id: &str, from: &[&str]) -> anyhow::Result<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let status = self
                .statuses
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(id)
                .cloned();
            if let Some(status) = status.filter(|s| !from.contains(&s.as_str())) {
                return Ok(status);
            }
            if let Some(why) = self.ended.lock().unwrap_or_else(|p| p.into_inner()).clone() {
                anyhow::bail!("the feed of pushes ended ({why}) before booking {id} left {from:?}");
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left, notified).await.is_err() {
                anyhow::bail!("no push moved booking {id} past {from:?} in 30 s");
            }
        }
    }
}

impl Client {
    /// The gateway's answer, errors and all.
    async fn post(&self, query: &str, variables: Value) -> anyhow::Result<Value> {
        Ok(self
            .http
            .post(&self.url)
            .bearer_auth(&self.token)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await?
            .json()
            .await?)
    }

    async fn send(&self, query: &str, variables: Value) -> anyhow::Result<Value> {
        let body = self.post(query, variables).await?;
        if !body["errors"].is_null() {
            anyhow::bail!("the gateway answered an error: {body}");
        }
        Ok(body)
    }

    /// The new booking's id, or None when the create was refused SOLD_OUT
    /// at once (the stay was just refused to another client).
    async fn create(
        &self,
        room_type: &str,
        night: chrono::NaiveDate,
    ) -> anyhow::Result<Option<String>> {
        let key = uuid::Uuid::now_v7().to_string();
        let body = self
            .post(
                "mutation($input: CreateBookingInput!, $key: String!) { createBooking(input: $input, idempotencyKey: $key) { id } }",
                json!({ "key": key, "input": {
                    "roomTypeId": room_type, "checkIn": night.to_string(),
                    "checkOut": (night + Days::days(1)).to_string(),
                    "travelers": [{ "name": "张三", "idType": "RESIDENT_ID", "idNumber": "11010519491231002X" }],
                    "contact": { "name": "张三", "phone": "13800138000" } } }),
            )
            .await?;
        if body["errors"][0]["extensions"]["code"] == "SOLD_OUT" {
            return Ok(None);
        }
        body["data"]["createBooking"]["id"]
            .as_str()
            .map(|id| Some(id.to_owned()))
            .ok_or_else(|| anyhow::anyhow!("the gateway answered no booking: {body}"))
    }

    /// Polls until the booking leaves `from` (2 ms apart, 30 s at most):
    /// what a client without the feed would do (`--poll`).
    async fn poll_past(&self, id: &str, from: &[&str]) -> anyhow::Result<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.polls.fetch_add(1, Ordering::Relaxed);
            let body = self
                .send(
                    "query($id: ID!) { booking(id: $id) { status } }",
                    json!({ "id": id }),
                )
                .await?;
            let status = body["data"]["booking"]["status"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if !from.contains(&status.as_str()) {
                return Ok(status);
            }
            if Instant::now() > deadline {
                anyhow::bail!("booking {id} stayed {status} for 30 s");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn pay(&self, id: &str) -> anyhow::Result<()> {
        self.send(
            "mutation($id: ID!, $key: String!) { payBooking(bookingId: $id, paymentToken: \"tok_success\", idempotencyKey: $key) { status } }",
            json!({ "id": id, "key": format!("pay-{id}") }),
        )
        .await?;
        Ok(())
    }

    /// Waits until the booking leaves `from`: by its pushes, or polling.
    async fn wait_past(&self, id: &str, from: &[&str], poll: bool) -> anyhow::Result<String> {
        if poll {
            self.poll_past(id, from).await
        } else {
            self.feed.wait_past(id, from).await
        }
    }

    /// create → held → pay → confirmed: the final status, and when the
    /// create and the hold were answered.
    async fn book(
        &self,
        room_type: &str,
        night: chrono::NaiveDate,
        poll: bool,
    ) -> anyhow::Result<Booked> {
        let Some(id) = self.create(room_type, night).await? else {
            let now = Instant::now();
            return Ok(Booked {
                status: REFUSED_AT_CREATE.to_owned(),
                created: now,
                answered: now,
            });
        };
        let created = Instant::now();
        let mut status = self.wait_past(&id, &["PENDING"], poll).await?;
        let answered = Instant::now();
        if status == "AWAITING_PAYMENT" {
            self.pay(&id).await?;
            status = self
                .wait_past(&id, &["PENDING", "AWAITING_PAYMENT"], poll)
                .await?;
        }
        self.feed
            .statuses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        Ok(Booked {
            status,
            created,
            answered,
        })
    }
}

/// The outcome of a create refused SOLD_OUT at once, with no booking.
pub const REFUSED_AT_CREATE: &str = "SOLD_OUT at create";

/// One client's booking: its final status, when `createBooking` answered
/// and when the hold was answered.
struct Booked {
    status: String,
    created: Instant,
    answered: Instant,
}

/// A fresh Duikou on the configured servers, a traveler logged in, and
/// `room_types` room types with `rooms` rooms for `NIGHTS` nights.
/// The bench's clients run on a runtime of their own, on one thread named
/// [`crate::bench_cpu::CLIENT_THREAD`], so that the CPU they take is told
/// apart from Duikou's in the same process. Shut it down with
/// `shutdown_background` (dropping a runtime inside another blocks).
fn clients_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(crate::bench_cpu::CLIENT_THREAD)
        .enable_all()
        .build()?)
}

async fn start(
    settings: &Settings,
    room_types: usize,
    rooms: u32,
) -> anyhow::Result<(App, Client, Vec<String>, tokio::runtime::Runtime)> {
    let app = crate::bench_search::start_app(settings, Part::All).await?;
    match prepare(&app, room_types, rooms).await {
        Ok((client, ids, clients)) => Ok((app, client, ids, clients)),
        Err(e) => {
            // Nothing of a bench that could not begin is left behind.
            let queues = app.rt.bus.declared_queues();
            app.stop().await;
            cleanup(settings, &queues).await;
            Err(e)
        }
    }
}

/// The traveler, the room types on sale and the clients' runtime with the
/// traveler's feed connected.
async fn prepare(
    app: &App,
    room_types: usize,
    rooms: u32,
) -> anyhow::Result<(Client, Vec<String>, tokio::runtime::Runtime)> {
    let addr = app
        .gateway_addr
        .ok_or_else(|| anyhow::anyhow!("no gateway"))?;
    let url = format!("http://{addr}/graphql");
    let token =
        crate::bench_search::register_traveler(&reqwest::Client::new(), &url, "bench").await?;
    // Built here, used only from the clients' runtime: its connections'
    // tasks run there.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .build()?;
    let ids = seed_room_types(app.rt.bus.as_ref(), room_types, rooms, NIGHTS + 2, |_| {
        Ok((RegionCode::parse("150430")?, Fen::yuan(300)))
    })
    .await?
    .iter()
    .map(ToString::to_string)
    .collect();
    let polls = Arc::new(AtomicU64::new(0));
    let clients = clients_runtime()?;
    let connected = clients
        .spawn({
            let (url, token) = (url.clone(), token.clone());
            async move { Feed::connect(&url, &token).await }
        })
        .await;
    let feed = match connected.map_err(anyhow::Error::from).and_then(|r| r) {
        Ok(feed) => feed,
        Err(e) => {
            clients.shutdown_background();
            return Err(e);
        }
    };
    Ok((
        Client {
            http,
            url,
            token,
            polls,
            feed,
        },
        ids,
        clients,
    ))
}

/// Commits so far in the bench's databases.
async fn commits(postgres: &str, prefix: &str) -> anyhow::Result<i64> {
    Ok(commits_by_database(postgres, prefix).await?.values().sum())
}

/// The scratch database pgbench runs in (named under the bench's prefix,
/// so that `scripts/test` drops it if a killed bench left it).
fn pgbench_database(prefix: &str) -> String {
    format!("{prefix}pgbench")
}

/// Commits so far in each of the bench's service databases, by service
/// (pgbench's scratch database left out).
async fn commits_by_database(
    postgres: &str,
    prefix: &str,
) -> anyhow::Result<BTreeMap<String, i64>> {
    let db = sea_orm::Database::connect(shared::db::with_database(postgres, "postgres")?).await?;
    let rows = db
        .query_all_raw(sea_orm::Statement::from_sql_and_values(
            db.get_database_backend(),
            "SELECT datname, CAST(xact_commit AS BIGINT) AS n FROM pg_stat_database \
             WHERE datname LIKE $1 AND datname <> $2",
            [format!("{prefix}%").into(), pgbench_database(prefix).into()],
        ))
        .await?;
    db.close().await?;
    rows.iter()
        .map(|r| {
            let name: String = r.try_get("", "datname")?;
            let service = name.strip_prefix(prefix).unwrap_or(&name).to_owned();
            Ok((service, r.try_get("", "n")?))
        })
        .collect()
}

/// `pgbench -b simple-update` on a scratch database: transactions/s.
fn pgbench(postgres: &str, database: &str, clients: usize, seconds: u64) -> anyhow::Result<f64> {
    let url = shared::db::with_database(postgres, database)?;
    let run = |args: &[&str]| -> anyhow::Result<String> {
        let out = std::process::Command::new("pgbench")
            .args(args)
            .arg(&url)
            .output()
            .map_err(|e| {
                anyhow::anyhow!("pgbench could not run ({e}); install postgresql-contrib")
            })?;
        if !out.status.success() {
            anyhow::bail!("pgbench failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    run(&["-i", "-q", "-s", "1"])?;
    let threads = clients.min(2).to_string();
    let report = run(&[
        "-b",
        "simple-update",
        "-c",
        &clients.to_string(),
        "-j",
        &threads,
        "-T",
        &seconds.to_string(),
    ])?;
    report
        .lines()
        .find_map(|l| {
            l.strip_prefix("tps = ")
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse().ok())
        })
        .ok_or_else(|| anyhow::anyhow!("no tps in pgbench's report: {report}"))
}

/// The booking benchmark.
pub async fn booking(
    settings: Settings,
    client_counts: &[usize],
    seconds: u64,
    poll: bool,
) -> anyhow::Result<Vec<BookingRun>> {
    let (settings, prefix) = bench_settings(settings);
    let postgres = settings
        .postgres()
        .ok_or_else(|| anyhow::anyhow!("the booking bench needs PostgreSQL"))?
        .to_owned();
    print!("  seeding {ROOM_TYPES} room types × {NIGHTS} nights… ");
    let (app, client, room_types, clients_rt) = start(&settings, ROOM_TYPES, 500).await?;
    println!("done");
    let pgbench_db = pgbench_database(&prefix);
    let result = async {
        shared::db::ensure_database(&postgres, &pgbench_db).await?;
        let mut runs = Vec::new();
        for &clients in client_counts {
            runs.push(
                booking_run(
                    clients_rt.handle(),
                    &client,
                    &room_types,
                    (&postgres, &prefix),
                    (clients, seconds),
                    poll,
                )
                .await?,
            );
            let tps = pgbench(&postgres, &pgbench_db, clients, seconds)?;
            let run = runs.last_mut().ok_or_else(|| anyhow::anyhow!("no run"))?;
            run.pgbench_tps = tps;
            run.ratio = run.bookings_per_second * run.commits_per_booking / tps.max(1.0);
            println!(
                "  {:>3} clients: {:>6.1} bookings/s  p50 {:>6.1} ms  p99 {:>6.1} ms  max {:>7.1} ms  {:>5.1} commits/booking ({:.1} polls)  pgbench {:>7.0} tps  ratio {:.2}",
                run.clients, run.bookings_per_second, run.p50_ms, run.p99_ms, run.max_ms,
                run.commits_per_booking, run.polls_per_booking, run.pgbench_tps, run.ratio
            );
            if !run.cpu_percent.is_empty() {
                println!("       CPU of the machine: {}", crate::bench_cpu::describe(&run.cpu_percent));
            }
        }
        Ok::<_, anyhow::Error>(runs)
    }
    .await;
    clients_rt.shutdown_background();
    let queues = app.rt.bus.declared_queues();
    app.stop().await;
    cleanup(&settings, &queues).await;
    let _ = shared::db::drop_database(&postgres, &pgbench_db).await;
    result
}

async fn booking_run(
    clients_rt: &tokio::runtime::Handle,
    client: &Client,
    room_types: &[String],
    (postgres, prefix): (&str, &str),
    (clients, seconds): (usize, u64),
    poll: bool,
) -> anyhow::Result<BookingRun> {
    let warm_until = Instant::now() + Duration::from_secs(2);
    let until = warm_until + Duration::from_secs(seconds);
    let today = Utc::now().date_naive();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (client, room_types) = (client.clone(), room_types.to_vec());
        tasks.push(clients_rt.spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut n: usize = c * 7919;
            loop {
                let started = Instant::now();
                if started >= until {
                    break;
                }
                n = n.wrapping_add(1);
                let room_type = &room_types[n % room_types.len()];
                let night = today + Days::days(1 + (n / room_types.len()) as i64 % NIGHTS);
                let status = client.book(room_type, night, poll).await?.status;
                if status != "CONFIRMED" {
                    anyhow::bail!("a booking ended {status}");
                }
                if started >= warm_until {
                    hist.record(started.elapsed().as_micros() as u64)?;
                }
            }
            Ok::<_, anyhow::Error>(hist)
        }));
    }
    // Count commits over the measured window only.
    tokio::time::sleep_until(warm_until.into()).await;
    let before = commits(postgres, prefix).await?;
    let cpu_before = CpuSample::now();
    let polls_before = client.polls.load(Ordering::Relaxed);
    tokio::time::sleep_until(until.into()).await;
    let cpu_percent = shares_since(cpu_before);
    let after = commits(postgres, prefix).await?;
    let polls = client.polls.load(Ordering::Relaxed) - polls_before;
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for task in tasks {
        all.add(task.await??)?;
    }
    let ms = |us: u64| us as f64 / 1000.0;
    let confirmed = all.len();
    Ok(BookingRun {
        clients,
        confirmed,
        bookings_per_second: confirmed as f64 / seconds as f64,
        p50_ms: ms(all.value_at_quantile(0.5)),
        p99_ms: ms(all.value_at_quantile(0.99)),
        max_ms: ms(all.max()),
        commits_per_booking: (after - before) as f64 / confirmed.max(1) as f64,
        polls_per_booking: polls as f64 / confirmed.max(1) as f64,
        pgbench_tps: 0.0,
        ratio: 0.0,
        cpu_percent,
    })
}

/// CONFIRMED bookings in the bench's booking database.
async fn confirmed_in(settings: &Settings) -> anyhow::Result<u64> {
    let db = shared::db::connect_existing(settings, "booking").await?;
    let confirmed = shared::db::count(&db, "bookings WHERE status = 'CONFIRMED'", vec![]).await?;
    db.close().await?;
    Ok(confirmed)
}

/// The contention benchmark.
pub async fn contention(
    settings: Settings,
    clients: usize,
    rooms: u32,
    poll: bool,
) -> anyhow::Result<ContentionRun> {
    let (settings, _) = bench_settings(settings);
    let (app, client, room_types, clients_rt) = start(&settings, 1, rooms).await?;
    let room_type = room_types
        .first()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no room type"))?;
    let night = Utc::now().date_naive() + Days::days(1);
    let postgres = settings
        .postgres()
        .ok_or_else(|| anyhow::anyhow!("the contention bench needs PostgreSQL"))?
        .to_owned();
    let prefix = settings.db_prefix.clone();
    let result = async {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let before = commits_by_database(&postgres, &prefix).await?;
        let cpu_before = CpuSample::now();
        let started = Instant::now();
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                let (client, room_type) = (client.clone(), room_type.clone());
                clients_rt.spawn(async move { client.book(&room_type, night, poll).await })
            })
            .collect();
        let mut outcomes = BTreeMap::new();
        let (mut created, mut answered) = (Duration::ZERO, Duration::ZERO);
        for task in tasks {
            let booked = task.await??;
            *outcomes.entry(booked.status).or_insert(0) += 1;
            created = created.max(booked.created - started);
            answered = answered.max(booked.answered - started);
        }
        let settled_seconds = started.elapsed().as_secs_f64();
        let cpu_percent = shares_since(cpu_before);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let after = commits_by_database(&postgres, &prefix).await?;
        let confirmed_in_database = confirmed_in(&settings).await?;
        let commits_per_client = after
            .iter()
            .map(|(service, n)| {
                let spent = n - before.get(service).copied().unwrap_or(0);
                (service.clone(), spent as f64 / clients as f64)
            })
            .collect();
        Ok::<_, anyhow::Error>(ContentionRun {
            clients,
            rooms,
            settled_seconds,
            created_seconds: created.as_secs_f64(),
            answered_seconds: answered.as_secs_f64(),
            commits_per_client,
            outcomes,
            confirmed_in_database,
            cpu_percent,
        })
    }
    .await;
    clients_rt.shutdown_background();
    let queues = app.rt.bus.declared_queues();
    app.stop().await;
    cleanup(&settings, &queues).await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_contention_run_that_sold_a_room_twice_or_left_one_is_refused() {
        let run = |told: u64, in_database: u64| ContentionRun {
            clients: 1000,
            rooms: 10,
            settled_seconds: 1.0,
            created_seconds: 0.5,
            answered_seconds: 0.8,
            commits_per_client: BTreeMap::new(),
            outcomes: BTreeMap::from([("CONFIRMED".to_owned(), told)]),
            confirmed_in_database: in_database,
            cpu_percent: BTreeMap::new(),
        };
        assert_eq!(run(10, 10).sold_exactly_the_rooms().ok(), Some(10));
        for (told, in_database) in [(10, 11), (11, 11), (9, 10), (10, 9)] {
            let refused = run(told, in_database).sold_exactly_the_rooms();
            assert!(refused.is_err(), "{told} told, {in_database} stored");
        }
    }
}
