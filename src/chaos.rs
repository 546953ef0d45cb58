//! `duikou chaos`: bookings under faults, then the invariants.
//!
//! Runs the distributed stack as separate processes of this binary
//! (`duikou serve inventory`, two of `booking`, `payment`, `partnership`,
//! `gateway`) on the configured servers under fresh databases and queues,
//! drives bookings through the gateway (create → held → pay → confirmed,
//! each step retried with its idempotency key, as a careful client does),
//! and meanwhile:
//! - kills a random process with SIGKILL every few seconds and starts it
//!   again;
//! - restarts RabbitMQ (`rabbitmqctl stop_app; start_app`);
//! - restarts PostgreSQL (`pg_ctlcluster … restart`).
//!
//! When the load is done it waits until every booking has ended, then runs
//! `duikou check` over the run's databases and queues. Loopback only, and
//! bounded in time and count. A fault-injecting bus (every event two to
//! five times, shuffled, late copies) can be switched on for the services.

use crate::bench_search::{bench_settings, cleanup, seed_room_types};
use chrono::{Duration as Days, Utc};
use serde_json::{Value, json};
use shared::config::Settings;
use shared::money::Fen;
use shared::region::RegionCode;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

/// What a chaos run does.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Bookings to make.
    pub bookings: usize,
    /// Clients booking at once.
    pub clients: usize,
    /// Processes killed (SIGKILL) and started again, spread evenly over the
    /// load (the k-th once k/(kills+1) of the bookings have started).
    pub kills: usize,
    /// The least time between two kills (a part gets to start again).
    pub kill_every: Duration,
    /// RabbitMQ restarts (`stop_app`/`start_app`) during the load.
    pub broker_restarts: usize,
    /// PostgreSQL restarts during the load.
    pub postgres_restarts: usize,
    /// Deliver every event two to five times, shuffled, with late copies.
    pub faulty_bus: bool,
    /// The `duikou` binary to run the parts with.
    pub exe: PathBuf,
    /// Longest the whole run may take before it gives up.
    pub deadline: Duration,
    /// The processes to run: [`SEPARATE`] (each part its own) or [`ONE`].
    pub parts: &'static [&'static str],
}

/// What happened, and whether the invariants held.
#[derive(Debug, serde::Serialize)]
pub struct Report {
    /// Bookings asked for.
    pub bookings: usize,
    /// Final status → bookings.
    pub outcomes: BTreeMap<String, usize>,
    /// Requests that failed and were retried (connection errors, 5xx,
    /// SERVICE_UNAVAILABLE while a part was down).
    pub retried_requests: usize,
    /// Of those, answers INTERNAL or an error without a code: retried as
    /// a client would, but each is a problem (a fault must read as
    /// SERVICE_UNAVAILABLE, never as a bug).
    pub internal_errors: usize,
    /// Payments closed uncharged (a part killed mid-payment) and paid again
    /// with a new key, as the answer asks.
    pub paid_again: usize,
    /// Processes killed, by part.
    pub killed: Vec<String>,
    /// RabbitMQ restarts done.
    pub broker_restarts: usize,
    /// PostgreSQL restarts done.
    pub postgres_restarts: usize,
    /// Seconds from the first booking until every booking had ended (or
    /// until a client gave up).
    pub settled_seconds: f64,
    /// A client gave up (the run's deadline): the run did not finish.
    pub gave_up: bool,
    /// The invariants, after the run.
    pub findings: Vec<crate::check::Finding>,
    /// What else went wrong: bookings that did not end, faults planned
    /// but not made (the load ended first).
    pub problems: Vec<String>,
    /// True when every invariant held and there was no other problem.
    pub passed: bool,
    /// Where the parts' logs are.
    pub logs: String,
    /// Seconds from starting the processes until the gateway's `/readyz?all`
    /// first answered 200 (the databases were created and migrated before).
    pub ready_seconds: f64,
    /// Each process's peak resident memory (VmHWM) at the end of the run.
    pub peak_rss: Vec<PeakRss>,
}

/// One process's peak resident set.
#[derive(Debug, serde::Serialize)]
pub struct PeakRss {
    /// Part and index, e.g. `booking#2`; `all#0` for the one process.
    pub process: String,
    /// Peak resident set size in KiB (`VmHWM` in `/proc/<pid>/status`).
    pub kib: u64,
}

/// The parts started, each its own process; booking twice (competing
/// consumers of one queue).
pub const SEPARATE: &[&str] = &[
    "inventory",
    "booking",
    "booking",
    "payment",
    "partnership",
    "gateway",
];

/// Every part in one process (`duikou serve all`).
pub const ONE: &[&str] = &["all"];

/// One running part.
struct Proc {
    part: &'static str,
    index: usize,
    child: Child,
}

/// The parts of the run, and how to start one again.
struct Fleet {
    exe: PathBuf,
    env: Vec<(String, String)>,
    logs: PathBuf,
    procs: Vec<Proc>,
    starts: usize,
    /// Parts found exited on their own before a planned kill: which, and
    /// how they ended.
    crashed: Vec<(String, String)>,
}

impl Fleet {
    fn spawn(&mut self, part: &'static str, index: usize) -> anyhow::Result<Proc> {
        self.starts += 1;
        let log = std::fs::File::create(
            self.logs
                .join(format!("{part}-{index}-start{}.log", self.starts)),
        )?;
        let child = Command::new(&self.exe)
            .args(["serve", part])
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting `{} serve {part}`: {e}", self.exe.display()))?;
        Ok(Proc { part, index, child })
    }

    fn start_all(&mut self, parts: &'static [&'static str]) -> anyhow::Result<()> {
        for (index, part) in parts.iter().enumerate() {
            let proc = self.spawn(part, index)?;
            self.procs.push(proc);
        }
        Ok(())
    }

    /// SIGKILL to the `i`-th process, then the same part again. One that
    /// had exited on its own is noted in `crashed` (killing what is left of
    /// it would hide the crash), and started again all the same.
    async fn kill_and_restart(&mut self, i: usize) -> anyhow::Result<String> {
        let (part, index) = (self.procs[i].part, self.procs[i].index);
        if let Some(status) = self.procs[i].child.try_wait()? {
            self.crashed
                .push((format!("{part}#{index}"), status.to_string()));
        }
        self.procs[i].child.kill().await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let fresh = self.spawn(part, index)?;
        self.procs[i] = fresh;
        Ok(format!("{part}#{index}"))
    }

    /// Starts again each part that exited on its own, as a process manager
    /// would, noting it in `crashed` (the run reports it): a part that had
    /// died for good (its start cut by a database restart) left the clients
    /// retrying until the run's deadline.
    fn revive(&mut self) -> anyhow::Result<()> {
        for i in 0..self.procs.len() {
            if let Some(status) = self.procs[i].child.try_wait()? {
                let (part, index) = (self.procs[i].part, self.procs[i].index);
                self.crashed
                    .push((format!("{part}#{index}"), status.to_string()));
                self.procs[i] = self.spawn(part, index)?;
            }
        }
        Ok(())
    }

    /// Each running process's peak resident set, from `/proc` (Linux).
    fn peak_rss(&self) -> Vec<PeakRss> {
        self.procs
            .iter()
            .filter_map(|p| {
                let status =
                    std::fs::read_to_string(format!("/proc/{}/status", p.child.id()?)).ok()?;
                let kib = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))?
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .ok()?;
                Some(PeakRss {
                    process: format!("{}#{}", p.part, p.index),
                    kib,
                })
            })
            .collect()
    }

    /// The parts that exited on their own, and how they ended: those
    /// found so before a planned kill, and those no longer running now.
    fn exited(&mut self) -> Vec<(String, String)> {
        let now = self
            .procs
            .iter_mut()
            .filter_map(|p| match p.child.try_wait() {
                Ok(Some(status)) => Some((format!("{}#{}", p.part, p.index), status.to_string())),
                Ok(None) => None,
                Err(e) => Some((format!("{}#{}", p.part, p.index), e.to_string())),
            })
            .collect::<Vec<_>>();
        self.crashed.iter().cloned().chain(now).collect()
    }

    async fn stop(&mut self) {
        for p in &mut self.procs {
            let _ = p.child.kill().await;
        }
    }
}

/// A random number without another dependency: UUIDv7 carries 74 bits.
fn random(below: usize) -> usize {
    (uuid::Uuid::now_v7().as_u128() as u64 % below.max(1) as u64) as usize
}

/// A client that retries what failed for lack of a running part.
#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    url: String,
    token: String,
    retried: Arc<AtomicUsize>,
    internal: Arc<AtomicUsize>,
    paid_again: Arc<AtomicUsize>,
    until: Instant,
}

/// How a GraphQL request ended.
enum Answer {
    /// Data, no error.
    Data(Value),
    /// An error the request itself caused (its code).
    Refused(String),
}

impl Client {
    /// Sends until the gateway answers with data or an error of the
    /// request's own; transport errors, 5xx and SERVICE_UNAVAILABLE are
    /// retried with backoff (the same idempotency key each time).
    async fn send(&self, query: &str, variables: &Value) -> anyhow::Result<Answer> {
        let mut pause = Duration::from_millis(50);
        loop {
            if Instant::now() > self.until {
                anyhow::bail!("the run's deadline passed");
            }
            let sent = self
                .http
                .post(&self.url)
                .bearer_auth(&self.token)
                .timeout(Duration::from_secs(15))
                .json(&json!({ "query": query, "variables": variables }))
                .send()
                .await;
            let body: Option<Value> = match sent {
                Ok(r) if !r.status().is_server_error() => r.json().await.ok(),
                // A panic answers 500 (INTERNAL): a bug, not a fault.
                Ok(r) if r.status() == reqwest::StatusCode::INTERNAL_SERVER_ERROR => r
                    .json()
                    .await
                    .ok()
                    .or_else(|| Some(json!({ "errors": [{}] }))),
                _ => None,
            };
            let code = body.as_ref().and_then(|b| {
                b["errors"][0]["extensions"]["code"]
                    .as_str()
                    .map(str::to_owned)
            });
            match (body, code) {
                (Some(b), None) if b["errors"].is_null() => return Ok(Answer::Data(b)),
                (Some(_), Some(code)) if code != "SERVICE_UNAVAILABLE" && code != "INTERNAL" => {
                    return Ok(Answer::Refused(code));
                }
                (Some(_), code) if code.as_deref() != Some("SERVICE_UNAVAILABLE") => {
                    self.internal.fetch_add(1, Ordering::Relaxed);
                    self.retried.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                _ => {
                    self.retried.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    async fn status(&self, id: &str) -> anyhow::Result<String> {
        let query = "query($id: ID!) { booking(id: $id) { status } }";
        match self.send(query, &json!({ "id": id })).await? {
            Answer::Data(b) => Ok(b["data"]["booking"]["status"]
                .as_str()
                .unwrap_or_default()
                .to_owned()),
            Answer::Refused(code) => anyhow::bail!("reading {id}: {code}"),
        }
    }

    /// Booking `id`'s history and payments, one line.
    async fn story(&self, id: &str) -> anyhow::Result<String> {
        let query = "query($id: ID!) { booking(id: $id) { status
            history { at status cause } payment { status failureReason } } }";
        Ok(match self.send(query, &json!({ "id": id })).await? {
            Answer::Data(b) => format!("booking {id}: {}", b["data"]["booking"]),
            Answer::Refused(code) => format!("booking {id}: reading it: {code}"),
        })
    }

    /// Polls until the booking is in none of `from`.
    async fn wait_past(&self, id: &str, from: &[&str]) -> anyhow::Result<String> {
        loop {
            if let Some(status) = self.wait_past_within(id, from, Duration::MAX).await? {
                return Ok(status);
            }
        }
    }

    /// Polls until the booking is in none of `from` (its status), or
    /// `within` has passed (None).
    async fn wait_past_within(
        &self,
        id: &str,
        from: &[&str],
        within: Duration,
    ) -> anyhow::Result<Option<String>> {
        let started = Instant::now();
        loop {
            let status = self.status(id).await?;
            if !from.contains(&status.as_str()) {
                return Ok(Some(status));
            }
            if started.elapsed() >= within {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Books one stay to its end: create, wait for the hold, pay, wait.
    async fn book(
        &self,
        n: usize,
        room_type: &str,
        night: chrono::NaiveDate,
    ) -> anyhow::Result<(Option<String>, String)> {
        let create = "mutation($input: CreateBookingInput!, $key: String!) {
            createBooking(input: $input, idempotencyKey: $key) { id } }";
        let vars = json!({ "key": format!("chaos-{n}"), "input": {
            "roomTypeId": room_type, "checkIn": night.to_string(),
            "checkOut": (night + Days::days(1)).to_string(),
            "travelers": [{ "name": "张三", "idType": "RESIDENT_ID", "idNumber": "11010519491231002X" }],
            "contact": { "name": "张三", "phone": "13800138000" } } });
        let id = match self.send(create, &vars).await? {
            Answer::Data(b) => b["data"]["createBooking"]["id"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| anyhow::anyhow!("no booking id in {b}"))?,
            // The stay was just refused to another client: nothing booked.
            Answer::Refused(code) if code == "SOLD_OUT" => {
                return Ok((None, crate::bench_booking::REFUSED_AT_CREATE.to_owned()));
            }
            Answer::Refused(code) => anyhow::bail!("booking {n} refused: {code}"),
        };
        if self.wait_past(&id, &["PENDING"]).await? != "AWAITING_PAYMENT" {
            let status = self.status(&id).await?;
            return Ok((Some(id), status));
        }
        let pay = "mutation($id: ID!, $key: String!) {
            payBooking(bookingId: $id, paymentToken: \"tok_success\", idempotencyKey: $key) { status } }";
        let mut attempt = 0;
        loop {
            let key = match attempt {
                0 => format!("chaos-pay-{n}"),
                _ => format!("chaos-pay-{n}-{attempt}"),
            };
            // CONFLICT: a payment of this booking is in flight or it ended;
            // the booking's status tells which.
            let answer = self.send(pay, &json!({ "id": id, "key": key })).await?;
            let waiting = ["PENDING", "AWAITING_PAYMENT"];
            if let Some(status) = self
                .wait_past_within(&id, &waiting, Duration::from_secs(5))
                .await?
            {
                return Ok((Some(id), status));
            }
            // Still waiting: a payment closed uncharged (its part killed
            // mid-payment, then reconciled) is PAYMENT_DECLINED, "pay
            // again" (FAILED when answered first-hand); any other answer is
            // asked again with its key, which tells how it ended.
            let declined = match &answer {
                Answer::Data(b) => b["data"]["payBooking"]["status"] == "FAILED",
                Answer::Refused(code) => code == "PAYMENT_DECLINED",
            };
            if declined {
                attempt += 1;
                self.paid_again.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The timings the run's parts get, short enough that unpaid bookings end
/// within the run, kept on the settings the final check reads: with the
/// defaults there it allowed a minute where the parts take ten seconds
/// (a reconciler that never marked a capture could not fail the check).
fn with_chaos_timings(settings: Settings) -> Settings {
    Settings {
        hold_seconds: 60,
        hold_grace_seconds: 10,
        pending_retry_seconds: 5,
        reconcile_after_seconds: 5,
        rpc_timeout_ms: 3000,
        ..settings
    }
}

fn env_for(
    settings: &Settings,
    gateway_addr: &str,
    faulty: bool,
) -> anyhow::Result<Vec<(String, String)>> {
    let postgres = settings
        .postgres()
        .ok_or_else(|| anyhow::anyhow!("chaos needs PostgreSQL"))?;
    let amqp = settings
        .amqp()
        .ok_or_else(|| anyhow::anyhow!("chaos needs RabbitMQ"))?;
    let mut env = vec![
        ("DUIKOU_POSTGRES_URL", postgres.to_owned()),
        ("DUIKOU_AMQP_URL", amqp.to_owned()),
        ("DUIKOU_DB_PREFIX", settings.db_prefix.clone()),
        ("DUIKOU_BUS_PREFIX", settings.bus_prefix.clone()),
        ("DUIKOU_GATEWAY_ADDR", gateway_addr.to_owned()),
        ("DUIKOU_DEMO", "false".to_owned()),
        ("DUIKOU_RATE_LIMIT", "0".to_owned()),
        // The run's timings (`with_chaos_timings`), which the check reads too.
        ("DUIKOU_HOLD_SECONDS", settings.hold_seconds.to_string()),
        (
            "DUIKOU_HOLD_GRACE_SECONDS",
            settings.hold_grace_seconds.to_string(),
        ),
        (
            "DUIKOU_PENDING_RETRY_SECONDS",
            settings.pending_retry_seconds.to_string(),
        ),
        (
            "DUIKOU_RECONCILE_AFTER_SECONDS",
            settings.reconcile_after_seconds.to_string(),
        ),
        ("DUIKOU_RPC_TIMEOUT_MS", settings.rpc_timeout_ms.to_string()),
        (
            "DUIKOU_JWT_SECRET",
            format!("chaos-{}-{}", settings.db_prefix, "k".repeat(32)),
        ),
        ("DUIKOU_LOG_FORMAT", "pretty".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
    ];
    if let Some(redis) = settings.redis() {
        env.push(("DUIKOU_REDIS_URL", redis.to_owned()));
    }
    if faulty {
        env.push(("DUIKOU_FAULTS", "all".to_owned()));
    }
    Ok(env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

/// A port free at this moment on loopback (for the gateway process).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn wait_ready(http: &reqwest::Client, base: &str, until: Instant) -> anyhow::Result<()> {
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz?all")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > until {
            anyhow::bail!("the gateway at {base} never became ready");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn run_command(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .map_err(|e| anyhow::anyhow!("`{program}` could not run: {e}"))?;
    if !out.status.success() {
        anyhow::bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Held by a server restart for its whole length, on its blocking thread:
/// a run that ends (interrupted, or a client past the deadline) while a
/// restart is under way, which aborting its task does not stop, waits for
/// it ([`restarts_done`]) before checking or removing anything — else the
/// removal met a stopped server and left the run's queues or databases.
static RESTARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn restarting() -> std::sync::MutexGuard<'static, ()> {
    RESTARTING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Returns once no server restart is under way.
async fn restarts_done() {
    let _ = tokio::task::spawn_blocking(|| drop(restarting())).await;
}

/// `rabbitmqctl stop_app`, a pause, `start_app`.
async fn restart_broker() -> anyhow::Result<()> {
    tokio::task::spawn_blocking(|| {
        let _restarting = restarting();
        let stopped = run_command("rabbitmqctl", &["-q", "--timeout", "60", "stop_app"]);
        std::thread::sleep(Duration::from_secs(2));
        // Started whatever the stop answered (a stop the CLI gave up on may
        // still stop it): the broker is never left stopped. Bounded, and a
        // start that did not answer is confirmed with `await_startup`, so a
        // chaos run never waits on the CLI for ever.
        let started = run_command("rabbitmqctl", &["-q", "--timeout", "60", "start_app"])
            .or_else(|_| run_command("rabbitmqctl", &["-q", "--timeout", "60", "await_startup"]));
        stopped.and(started)
    })
    .await?
}

/// `pg_ctlcluster <version> <cluster> restart`: the run's PostgreSQL,
/// found before the run ([`restart_targets`]).
async fn restart_postgres(cluster: Cluster) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || {
        let _restarting = restarting();
        run_command(
            "pg_ctlcluster",
            &[
                "--skip-systemctl-redirect",
                &cluster.version,
                &cluster.name,
                "restart",
            ],
        )
    })
    .await?
}

/// A local PostgreSQL cluster, as `pg_ctlcluster` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cluster {
    version: String,
    name: String,
}

/// The cluster on `port` in `pg_lsclusters --no-header`'s lines (version,
/// cluster, port, status, …): the one online, if two share the port.
fn cluster_on(clusters: &str, port: u16) -> Option<Cluster> {
    let on_port = clusters.lines().filter_map(|line| {
        let mut fields = line.split_whitespace();
        let (version, name, on) = (fields.next()?, fields.next()?, fields.next()?);
        let online = fields.next() == Some("online");
        (on.parse() == Ok(port)).then(|| {
            let cluster = Cluster {
                version: version.to_owned(),
                name: name.to_owned(),
            };
            (online, cluster)
        })
    });
    let all: Vec<(bool, Cluster)> = on_port.collect();
    all.iter()
        .find(|(online, _)| *online)
        .or_else(|| all.first())
        .map(|(_, cluster)| cluster.clone())
}

/// Whether `host` (as a URL gives it) is this machine: empty, `localhost`,
/// a loopback address or a socket directory (`/…`, `%2F…`).
fn on_this_machine(host: &str) -> bool {
    host.is_empty()
        || host.starts_with('/')
        || host.to_ascii_lowercase().starts_with("%2f")
        || shared::db::loopback_host(host)
}

/// Where PostgreSQL is reached through `url`, read by the driver itself
/// (sqlx: the URL's `host`, `hostaddr` and `port` parameters, then
/// `PGHOSTADDR`, `PGHOST` and `PGPORT`): whether that is this machine (a
/// socket or a loopback host), the host, and the port.
fn postgres_server(url: &str) -> anyhow::Result<(bool, String, u16)> {
    use std::str::FromStr;
    let options = sea_orm::sqlx::postgres::PgConnectOptions::from_str(url)
        .map_err(|e| anyhow::anyhow!("DUIKOU_POSTGRES_URL is not a PostgreSQL URL: {e}"))?;
    let host = options.get_host().to_owned();
    let local = options.get_socket().is_some() || on_this_machine(&host);
    Ok((local, host, options.get_port()))
}

/// The servers the plan restarts, checked and found before the run: a
/// chaos run restarts this machine's RabbitMQ (`rabbitmqctl`: the default
/// node, on 5672) and the PostgreSQL cluster on the run's port
/// (`pg_ctlcluster`), so run against servers elsewhere it would restart
/// ones it does not use, and pass without its own ever going down.
/// Returns the cluster to restart, when the plan restarts PostgreSQL.
async fn restart_targets(settings: &Settings, plan: &Plan) -> anyhow::Result<Option<Cluster>> {
    let refuse = |variable: &str, what: String, restarts: &str| {
        anyhow::anyhow!(
            "{variable} names {what}: a chaos run restarts {restarts}, so it runs only against \
             that one"
        )
    };
    if plan.broker_restarts > 0 {
        let url = settings
            .amqp()
            .ok_or_else(|| anyhow::anyhow!("a broker restart needs DUIKOU_AMQP_URL"))?;
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| anyhow::anyhow!("DUIKOU_AMQP_URL is not a URL: {e}"))?;
        let host = parsed.host_str().unwrap_or_default().to_owned();
        let port = parsed.port().unwrap_or(5672);
        if !on_this_machine(&host) || port != 5672 {
            return Err(refuse(
                "DUIKOU_AMQP_URL",
                format!("{host}:{port}"),
                "this machine's RabbitMQ (its default node, on loopback port 5672)",
            ));
        }
    }
    if plan.postgres_restarts == 0 {
        return Ok(None);
    }
    let url = settings
        .postgres()
        .ok_or_else(|| anyhow::anyhow!("a PostgreSQL restart needs DUIKOU_POSTGRES_URL"))?;
    let (local, host, port) = postgres_server(url)?;
    if !local {
        return Err(refuse(
            "DUIKOU_POSTGRES_URL",
            format!("{host}:{port}"),
            "this machine's PostgreSQL cluster on the run's port",
        ));
    }
    let out = Command::new("pg_lsclusters")
        .arg("--no-header")
        .output()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "`pg_lsclusters` could not run ({e}): a PostgreSQL restart needs postgresql-common"
            )
        })?;
    let clusters = String::from_utf8_lossy(&out.stdout);
    cluster_on(&clusters, port).map(Some).ok_or_else(|| {
        anyhow::anyhow!(
            "no local PostgreSQL cluster listens on port {port} (pg_lsclusters: {}): a chaos \
             run restarts the cluster the run uses",
            clusters.trim()
        )
    })
}

/// The queues the run's parts declare (for removal afterwards).
pub(crate) fn run_queues(settings: &Settings) -> Vec<String> {
    let bus = settings.bus();
    ["inventory", "booking", "payment", "partnership"]
        .iter()
        .flat_map(|s| {
            let events = format!("{s}.events");
            [
                bus.queue(&events),
                bus.dead_queue(&events),
                bus.rpc_queue(s),
            ]
        })
        .collect()
}

/// Runs the plan and reports; the databases and queues are removed after.
pub async fn run(settings: Settings, plan: Plan) -> anyhow::Result<Report> {
    let cluster = restart_targets(&settings, &plan).await?;
    let (settings, prefix) = bench_settings(settings);
    let settings = with_chaos_timings(settings);
    let logs = std::env::temp_dir().join(format!("duikou-chaos-{}", prefix.trim_end_matches('_')));
    std::fs::create_dir_all(&logs)?;
    // Interrupted (Ctrl-C, SIGTERM): the run's tasks are aborted and its
    // processes killed as they are dropped (`kill_on_drop`), and its
    // databases and queues removed as after any run, once a server restart
    // in progress has finished (it runs on a blocking thread): RabbitMQ is
    // not left stopped, and the removal finds the servers up.
    let result = tokio::select! {
        result = run_in(&settings, &plan, &logs, cluster) => result,
        () = crate::shutdown_signal() => Err(anyhow::anyhow!(
            "interrupted: the parts were stopped and the run's databases and queues removed"
        )),
    };
    restarts_done().await;
    cleanup(&settings, &run_queues(&settings)).await;
    result
}

/// Aborts the tasks it holds when dropped: a run whose future is dropped
/// (interrupted) leaves no client booking and no fault task holding the
/// processes alive.
struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

async fn run_in(
    settings: &Settings,
    plan: &Plan,
    logs: &Path,
    cluster: Option<Cluster>,
) -> anyhow::Result<Report> {
    let until = Instant::now() + plan.deadline;
    crate::migrate(settings).await?;
    let port = free_port()?;
    let base = format!("http://127.0.0.1:{port}");
    let mut fleet = Fleet {
        exe: plan.exe.clone(),
        env: env_for(settings, &format!("127.0.0.1:{port}"), plan.faulty_bus)?,
        logs: logs.to_owned(),
        procs: Vec::new(),
        starts: 0,
        crashed: Vec::new(),
    };
    let starting = Instant::now();
    fleet.start_all(plan.parts)?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let outcome = async {
        wait_ready(&http, &base, until).await?;
        let ready_seconds = starting.elapsed().as_secs_f64();
        println!(
            "  {} process(es) ready after {ready_seconds:.2} s; logs in {}",
            plan.parts.len(),
            logs.display()
        );
        let client = seed(&http, &base, until).await?;
        let room_types = {
            let rt = shared::runtime::Runtime::connect(settings.clone()).await?;
            let listing = |i: usize| Ok((RegionCode::parse("150430")?, Fen::yuan(300 + i as i64)));
            // Forty roomy stays, and a last one with two rooms that many want.
            let roomy = seed_room_types(rt.bus.as_ref(), 40, 200, 30, listing).await;
            let crowded = seed_room_types(rt.bus.as_ref(), 1, 2, 30, listing).await;
            // 海淀 sends the tourists to 敖汉: every confirmed booking counts.
            let pair = shared::bus::call(
                rt.bus.as_ref(),
                &shared::rpcs::CreatePartnership {
                    sponsor: RegionCode::parse("110108")?,
                    beneficiary: RegionCode::parse("150430")?,
                    since: None,
                    notes: None,
                    demo: false,
                    by: shared::auth::Principal::platform(),
                },
            )
            .await;
            rt.shutdown().await;
            pair?;
            let mut ids = roomy?;
            ids.extend(crowded?);
            ids
        };
        let mut report = load(
            settings,
            plan,
            client,
            room_types,
            Arc::new(Mutex::new(fleet)),
            cluster,
        )
        .await?;
        report.ready_seconds = ready_seconds;
        Ok::<_, anyhow::Error>(report)
    }
    .await;
    let mut report = outcome?;
    report.logs = logs.display().to_string();
    Ok(report)
}

/// Registers the run's traveler; a client with its token.
async fn seed(http: &reqwest::Client, base: &str, until: Instant) -> anyhow::Result<Client> {
    let url = format!("{base}/graphql");
    let token = crate::bench_search::register_traveler(http, &url, "chaos").await?;
    Ok(Client {
        http: http.clone(),
        url,
        token,
        retried: Arc::default(),
        internal: Arc::default(),
        paid_again: Arc::default(),
        until,
    })
}

async fn load(
    settings: &Settings,
    plan: &Plan,
    client: Client,
    room_types: Vec<shared::ids::RoomTypeId>,
    fleet: Arc<Mutex<Fleet>>,
    cluster: Option<Cluster>,
) -> anyhow::Result<Report> {
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    // The faults, in the order of the load's progress at which they are
    // due. A booking past the next fault's mark waits until that fault is
    // under way: the load cannot outrun its faults (on a fast machine, or
    // while a broker restart holds the fault loop), so every planned fault
    // happens with bookings still to come.
    let mut due = planned_faults(plan);
    let gate = Arc::new(AtomicUsize::new(
        due.first().map_or(usize::MAX, |(mark, _)| *mark),
    ));
    let today = shared::policy::china_today(Utc::now());
    let progress = indicatif::ProgressBar::new(plan.bookings as u64);
    progress.set_style(indicatif::ProgressStyle::with_template(
        "  {bar:40} {pos}/{len} bookings ended [{elapsed}] {msg}",
    )?);
    let mut workers = Vec::new();
    for _ in 0..plan.clients {
        let (client, next, gate, room_types, progress) = (
            client.clone(),
            next.clone(),
            gate.clone(),
            room_types.clone(),
            progress.clone(),
        );
        let total = plan.bookings;
        workers.push(tokio::spawn(async move {
            let mut ended = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                while n >= gate.load(Ordering::Acquire) {
                    if Instant::now() > client.until {
                        anyhow::bail!("the run's deadline passed while a fault was being made");
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                // Every fourth booking wants the crowded last room type.
                let room_type = if n % 4 == 0 {
                    room_types[room_types.len() - 1]
                } else {
                    room_types[n % (room_types.len() - 1)]
                };
                let night = today + Days::days(1 + (n % 20) as i64);
                let (id, status) = client.book(n, &room_type.to_string(), night).await?;
                progress.inc(1);
                let crowded = n % 4 == 0;
                // A booking with rooms to spare that did not confirm: its
                // story, for the report.
                let story = match (crowded, status.as_str(), id) {
                    (false, s, Some(id)) if s != "CONFIRMED" => Some(client.story(&id).await?),
                    _ => None,
                };
                ended.push((crowded, status, story));
            }
            Ok::<_, anyhow::Error>(ended)
        }));
    }
    let plan_until = client.until;
    let watchdog = {
        let fleet = fleet.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if let Err(e) = fleet.lock().await.revive() {
                    tracing::warn!(error = %e, "a part that exited could not be started again");
                }
            }
        })
    };
    // The faults made so far, read also when the task failed or was stopped.
    let done = Arc::new(std::sync::Mutex::new(FaultsDone::default()));
    let faults = {
        let (fleet, plan, next, gate, progress, made) = (
            fleet.clone(),
            plan.clone(),
            next.clone(),
            gate.clone(),
            progress.clone(),
            done.clone(),
        );
        let done = move |note: &dyn Fn(&mut FaultsDone)| {
            note(
                &mut made
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            );
        };
        tokio::spawn(async move {
            // However this task ends (done, failed, panicked, aborted), no
            // booking stays held back.
            let _open = OpenOnDrop(gate.clone());
            let mut last_kill: Option<Instant> = None;
            async {
                while let Some(&(mark, fault)) = due.first() {
                    let spaced = fault != Fault::Kill
                        || last_kill.is_none_or(|at| at.elapsed() >= plan.kill_every);
                    if next.load(Ordering::Relaxed) < mark || !spaced {
                        if Instant::now() > plan_until {
                            anyhow::bail!("the run's deadline passed before every fault was made");
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                    due.remove(0);
                    // Let the load go on while the fault is made.
                    let mark = due.first().map_or(usize::MAX, |(mark, _)| *mark);
                    gate.store(mark, Ordering::Release);
                    match fault {
                        Fault::BrokerRestart => {
                            progress.set_message("restarting RabbitMQ");
                            done(&|d| d.under_way = Some(("restarting RabbitMQ".into(), None)));
                            restart_broker().await?;
                            done(&|d| d.broker += 1);
                        }
                        Fault::PostgresRestart => {
                            progress.set_message("restarting PostgreSQL");
                            let cluster = cluster.clone().ok_or_else(|| {
                                anyhow::anyhow!("no PostgreSQL cluster was found to restart")
                            })?;
                            done(&|d| d.under_way = Some(("restarting PostgreSQL".into(), None)));
                            restart_postgres(cluster).await?;
                            done(&|d| d.postgres += 1);
                        }
                        Fault::Kill => {
                            let mut fleet = fleet.lock().await;
                            let victim = random(fleet.procs.len());
                            let label = format!(
                                "{}#{}",
                                fleet.procs[victim].part, fleet.procs[victim].index
                            );
                            done(&|d| {
                                d.under_way =
                                    Some((format!("killing {label}"), Some(label.clone())));
                            });
                            let killed = fleet.kill_and_restart(victim).await?;
                            progress.set_message(format!("killed {killed}"));
                            done(&|d| d.killed.push(killed.clone()));
                            last_kill = Some(Instant::now());
                        }
                    }
                    done(&|d| d.under_way = None);
                }
                Ok::<_, anyhow::Error>(())
            }
            .await
        })
    };
    let abort = AbortOnDrop(
        workers
            .iter()
            .map(tokio::task::JoinHandle::abort_handle)
            .chain([faults.abort_handle(), watchdog.abort_handle()])
            .collect(),
    );
    let mut outcomes = BTreeMap::new();
    let mut roomy_lost = BTreeMap::new();
    let mut stories = Vec::new();
    let mut gave_up = None;
    for worker in workers {
        let failure = match worker.await {
            Ok(Ok(ended)) => {
                for (crowded, status, story) in ended {
                    if !crowded && status != "CONFIRMED" {
                        *roomy_lost.entry(status.clone()).or_insert(0) += 1;
                    }
                    if let Some(story) = story {
                        stories.push(story);
                    }
                    *outcomes.entry(status).or_insert(0) += 1;
                }
                continue;
            }
            Ok(Err(e)) => e,
            Err(e) => e.into(),
        };
        gave_up = Some(failure);
        break;
    }
    // What went wrong beside the invariants; a fault that failed (a restart
    // the CLI could not make) is one of them, said beside the rest rather
    // than in place of the report.
    let mut problems = Vec::new();
    // A fault under way when a client gave up, cut off by the stop.
    let mut cut_off = false;
    let fault_failed = |ended: Result<anyhow::Result<()>, tokio::task::JoinError>| match ended {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!("a fault could not be made: {e:#}")),
        Err(e) if e.is_cancelled() => None,
        Err(e) => Some(format!("the faults' task failed: {e}")),
    };
    let failed_fault;
    if let Some(failure) = &gave_up {
        // A client gave up (the run's deadline): every other client, the
        // watchdog and the faults stop (a fault task that had failed first
        // says why), and a server restart under way ends, before the
        // invariants are checked once — they name what they can of what was
        // left unfinished (a booking still PENDING, a dead letter).
        for task in &abort.0 {
            task.abort();
        }
        let ended = faults.await;
        cut_off = ended
            .as_ref()
            .is_err_and(tokio::task::JoinError::is_cancelled);
        failed_fault = fault_failed(ended);
        restarts_done().await;
        progress.abandon_with_message(format!("a client gave up: {failure:#}"));
    } else {
        failed_fault = fault_failed(faults.await);
        watchdog.abort();
        progress.finish_and_clear();
        println!(
            "  every booking ended after {:.1} s; checking the invariants…",
            started.elapsed().as_secs_f64()
        );
    }
    let a_fault_failed = failed_fault.is_some();
    problems.extend(failed_fault);
    let settled_seconds = started.elapsed().as_secs_f64();
    // Everything has ended; what is in flight now are the tails (a capture's
    // impact, a relay's last rows): give them a moment, then check — once
    // only when a client gave up. A check that cannot run is a problem.
    let checked = if gave_up.is_some() {
        crate::check::run(settings, chrono::Duration::seconds(0)).await
    } else {
        settle_and_check(settings).await
    };
    let findings = checked.unwrap_or_else(|e| {
        problems.push(format!("the invariants could not be checked: {e:#}"));
        Vec::new()
    });
    // Read before the parts are stopped (a part stopped reads as exited).
    let peak_rss = fleet.lock().await.peak_rss();
    // Each part still running: one that died on its own (not killed by the
    // run) would be hidden by its replica or by the restarts.
    let mut exited = fleet.lock().await.exited();
    fleet.lock().await.stop().await;
    let done = std::mem::take(
        &mut *done
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    if cut_off && let Some((what, victim)) = &done.under_way {
        problems.push(format!(
            "the run stopped while {what}: that fault is not counted"
        ));
        // The kill's own SIGKILL, not a crash: its last entry for that part.
        if let Some(at) = victim
            .as_ref()
            .and_then(|victim| exited.iter().rposition(|(part, _)| part == victim))
        {
            exited.remove(at);
        }
    }
    let internal_errors = client.internal.load(Ordering::Relaxed);
    problems.extend(gave_up.iter().map(|failure| {
        format!(
            "a client gave up ({failure:#}) after {settled_seconds:.0} s; the outcomes count {} \
             of the {} bookings (those of the clients heard before it)",
            outcomes.values().sum::<usize>(),
            plan.bookings
        )
    }));
    if gave_up.is_none() {
        // Too few faults made for the load is said only when none failed
        // (a fault that failed says why).
        problems.extend(self::problems(&outcomes, plan, &done, !a_fault_failed));
    }
    problems.extend(
        exited
            .into_iter()
            .map(|(part, status)| format!("{part} exited on its own ({status}): see its log")),
    );
    problems.extend(roomy_lost.iter().map(|(status, n)| {
        format!(
            "{n} bookings of a stay with rooms to spare ended {status}, not CONFIRMED: \
             a client that paid with a good card lost its booking"
        )
    }));
    problems.extend(stories.into_iter().take(5));
    if internal_errors > 0 {
        problems.push(format!(
            "{internal_errors} answers were INTERNAL or had no error code (a fault must read as \
             SERVICE_UNAVAILABLE): see the gateway's log"
        ));
    }
    let passed = findings.iter().all(|f| f.holds) && problems.is_empty();
    Ok(Report {
        bookings: plan.bookings,
        outcomes,
        retried_requests: client.retried.load(Ordering::Relaxed),
        internal_errors,
        paid_again: client.paid_again.load(Ordering::Relaxed),
        killed: done.killed,
        broker_restarts: done.broker,
        postgres_restarts: done.postgres,
        settled_seconds,
        gave_up: gave_up.is_some(),
        findings,
        problems,
        passed,
        logs: String::new(),
        ready_seconds: 0.0,
        peak_rss,
    })
}

/// Opens the load's gate when dropped.
struct OpenOnDrop(Arc<AtomicUsize>);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.store(usize::MAX, Ordering::Release);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Kill,
    BrokerRestart,
    PostgresRestart,
}

/// Each planned fault with the number of bookings started at which it is
/// due, earliest first: kills spread evenly, RabbitMQ restarts over the
/// first third of the load, PostgreSQL restarts over the first two thirds.
/// By progress, not by the clock: a faster machine finishes the load
/// sooner, and every planned fault must happen in it.
fn planned_faults(plan: &Plan) -> Vec<(usize, Fault)> {
    let n = plan.bookings;
    let mut due: Vec<(usize, Fault)> = (0..plan.kills)
        .map(|k| (n * (k + 1) / (plan.kills + 1), Fault::Kill))
        .chain((0..plan.broker_restarts).map(|k| {
            (
                n * (k + 1) / (3 * plan.broker_restarts),
                Fault::BrokerRestart,
            )
        }))
        .chain((0..plan.postgres_restarts).map(|k| {
            (
                n * 2 * (k + 1) / (3 * plan.postgres_restarts),
                Fault::PostgresRestart,
            )
        }))
        .collect();
    due.sort_by_key(|(mark, _)| *mark);
    due
}

#[derive(Default)]
struct FaultsDone {
    killed: Vec<String>,
    broker: usize,
    postgres: usize,
    /// The fault being made, and for a kill its victim (`booking#1`): one
    /// cut off by the run's stop is said so, its victim not taken for a
    /// part that exited on its own.
    under_way: Option<(String, Option<String>)>,
}

/// Checks until every invariant holds or 60 s have passed (outboxes and
/// impact catch up a little after the last booking ends); the last
/// findings.
async fn settle_and_check(settings: &Settings) -> anyhow::Result<Vec<crate::check::Finding>> {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let findings = crate::check::run(settings, chrono::Duration::seconds(0)).await?;
        if findings.iter().all(|f| f.holds) || Instant::now() > until {
            return Ok(findings);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Prints the report as a table.
/// A run passes only if every booking ended (CONFIRMED, or refused) and
/// every planned fault was made: a run whose load ended before its faults
/// proved nothing about them.
fn problems(
    outcomes: &BTreeMap<String, usize>,
    plan: &Plan,
    done: &FaultsDone,
    count_faults: bool,
) -> Vec<String> {
    let ended = [
        "CONFIRMED",
        "REJECTED",
        "EXPIRED",
        "CANCELLED",
        crate::bench_booking::REFUSED_AT_CREATE,
    ];
    let mut problems: Vec<String> = outcomes
        .iter()
        .filter(|(status, _)| !ended.contains(&status.as_str()))
        .map(|(status, n)| format!("{n} bookings ended the run {status:?}, not in a final status"))
        .collect();
    for (what, made, planned) in [
        ("kills", done.killed.len(), plan.kills),
        ("RabbitMQ restarts", done.broker, plan.broker_restarts),
        ("PostgreSQL restarts", done.postgres, plan.postgres_restarts),
    ] {
        if count_faults && made < planned {
            problems.push(format!(
                "{made} of {planned} {what} made before the load ended: give it more bookings"
            ));
        }
    }
    problems
}

pub fn print(report: &Report) {
    println!("  bookings: {}", report.bookings);
    for (status, n) in &report.outcomes {
        println!("    {status:<18} {n}");
    }
    println!(
        "  faults: {} kills ({}), {} RabbitMQ restarts, {} PostgreSQL restarts; {} requests \
         retried ({} INTERNAL or without a code); {} payments closed uncharged and paid again",
        report.killed.len(),
        report.killed.join(", "),
        report.broker_restarts,
        report.postgres_restarts,
        report.retried_requests,
        report.internal_errors,
        report.paid_again
    );
    for problem in &report.problems {
        println!("  PROBLEM: {problem}");
    }
    if report.gave_up {
        println!(
            "  gave up after {:.1} s; invariants then:",
            report.settled_seconds
        );
    } else {
        println!("  settled in {:.1} s; invariants:", report.settled_seconds);
    }
    crate::check::report(&report.findings);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_postgresql_restarted_is_the_cluster_on_the_run_s_port() {
        let clusters = "13  main 5433 down   postgres /var/lib/postgresql/13/main /var/log/13.log\n\
                        14  old  5432 down   postgres /var/lib/postgresql/14/old /var/log/14.log\n\
                        15  main 5432 online postgres /var/lib/postgresql/15/main /var/log/15.log\n";
        let cluster = |version: &str, name: &str| Cluster {
            version: version.to_owned(),
            name: name.to_owned(),
        };
        assert_eq!(cluster_on(clusters, 5432), Some(cluster("15", "main")));
        assert_eq!(cluster_on(clusters, 5433), Some(cluster("13", "main")));
        assert_eq!(cluster_on(clusters, 5434), None);
    }

    #[test]
    fn postgresql_is_found_where_the_driver_finds_it() {
        let server = |url: &str| {
            postgres_server(url)
                .ok()
                .map(|(local, _, port)| (local, port))
        };
        assert_eq!(server("postgres://root@127.0.0.1:5433"), Some((true, 5433)));
        assert_eq!(
            server("postgresql://root@localhost:5432/x"),
            Some((true, 5432))
        );
        assert_eq!(
            server("postgres://root@127.0.0.1/?port=5433"),
            Some((true, 5433))
        );
        assert_eq!(server("postgres://root@[::1]:5432/x"), Some((true, 5432)));
        assert_eq!(
            server("postgres://root@%2fvar%2frun%2fpostgresql:5432"),
            Some((true, 5432))
        );
        // The driver's last word on the host is the one that counts.
        assert_eq!(
            server("postgres://root@127.0.0.1:5432/?host=db.example.cn"),
            Some((false, 5432))
        );
        assert_eq!(
            server("postgres://root@127.0.0.1:5432/?hostaddr=127.0.0.1&host=db.example.cn"),
            Some((false, 5432))
        );
        assert_eq!(server("postgres://root@10.0.0.7:5432"), Some((false, 5432)));
        for local in [
            "127.0.0.1",
            "localhost",
            "[::1]",
            "",
            "%2fvar%2frun%2fpostgresql",
            "/tmp",
        ] {
            assert!(on_this_machine(local), "{local}");
        }
        for elsewhere in ["db.example.cn", "10.0.0.7", "[2001:db8::1]"] {
            assert!(!on_this_machine(elsewhere), "{elsewhere}");
        }
    }

    #[tokio::test]
    async fn restarts_of_servers_off_this_machine_are_refused() {
        let plan = Plan {
            bookings: 10,
            clients: 1,
            kills: 0,
            kill_every: Duration::from_secs(1),
            broker_restarts: 1,
            postgres_restarts: 0,
            faulty_bus: false,
            exe: PathBuf::new(),
            deadline: Duration::from_secs(1),
            parts: SEPARATE,
        };
        let with = |amqp: &str| Settings {
            postgres_url: Some("postgres://root@db.example.cn".into()),
            amqp_url: Some(amqp.into()),
            ..Settings::default()
        };
        let local = with("amqp://guest:guest@127.0.0.1:5672/%2f");
        assert_eq!(restart_targets(&local, &plan).await.ok(), Some(None));
        for elsewhere in [
            "amqp://guest:guest@10.0.0.7:5672/%2f",
            "amqp://guest:guest@127.0.0.1:5673/%2f",
        ] {
            let refused = restart_targets(&with(elsewhere), &plan).await;
            let said = refused.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(
                said.starts_with("DUIKOU_AMQP_URL names"),
                "{elsewhere}: {said}"
            );
        }
        // A PostgreSQL restart planned: the database elsewhere is refused
        // (without one, kills alone, it is not asked about).
        let restarts_postgres = Plan {
            postgres_restarts: 1,
            ..plan
        };
        let said = restart_targets(&local, &restarts_postgres)
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            said.starts_with("DUIKOU_POSTGRES_URL names db.example.cn"),
            "{said}"
        );
    }

    #[test]
    fn faults_are_due_in_order_inside_the_load() {
        let plan = Plan {
            bookings: 1000,
            clients: 16,
            kills: 10,
            kill_every: Duration::from_secs(1),
            broker_restarts: 1,
            postgres_restarts: 1,
            faulty_bus: false,
            exe: PathBuf::new(),
            deadline: Duration::from_secs(1),
            parts: SEPARATE,
        };
        let due = planned_faults(&plan);
        assert_eq!(due.len(), 12);
        assert!(due.windows(2).all(|w| w[0].0 <= w[1].0));
        assert!(due.iter().all(|(mark, _)| (1..1000).contains(mark)));
        assert!(due.contains(&(333, Fault::BrokerRestart)));
        assert!(due.contains(&(666, Fault::PostgresRestart)));
        assert_eq!(due.last(), Some(&(909, Fault::Kill)));
    }
}
