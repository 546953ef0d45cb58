//! `duikou`: run Duikou, migrate its databases, seed demonstration data.

use clap::{Parser, Subcommand};
use duikou::{App, Part, migrate};
use shared::config::Settings;
use std::path::PathBuf;

// The services and the gateway allocate many small, short-lived objects
// from many threads (JSON, GraphQL values); glibc's malloc took a fifth of
// the gateway's CPU in the search benchmark (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "duikou",
    version,
    about = "Duikou (对口): poverty-relief travel routes and rural homestays, with every yuan traced."
)]
struct Cli {
    /// Optional TOML file; DUIKOU_* environment variables override it.
    #[arg(long, global = true, env = "DUIKOU_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run Duikou: every part in one process (default), or one part.
    ///
    /// With no DUIKOU_POSTGRES_URL / DUIKOU_AMQP_URL it runs embedded
    /// (SQLite files under ./data, the in-process bus); with them, on the
    /// real servers, where N copies of any part share the work.
    Serve {
        /// Which part to run.
        #[arg(value_enum, default_value = "all")]
        part: Part,
    },
    /// Create each service's database if missing and run its migrations.
    Migrate,
    /// Check the invariants across the services' databases and the broker:
    /// capacity = live holds, sagas ended, one capture and one ledger
    /// transaction per confirmed booking, balanced ledger, impact totals =
    /// recomputation, outboxes drained, dead-letter queues empty. Exits 1
    /// when one fails, 2 when it cannot check (a server away, a wrong
    /// setting). Read-only.
    Check {
        /// How long a saga step, payment or outbox row may still be in flight.
        #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(i64).range(0..=31_622_400))]
        grace_seconds: i64,
    },
    /// Bookings under faults, then the invariants: the parts run as
    /// processes of their own on the configured servers (fresh databases
    /// and queues, removed after); while clients book (retrying with their
    /// idempotency keys), random parts are killed with SIGKILL and started
    /// again, RabbitMQ is restarted, PostgreSQL is restarted. Ends with
    /// `duikou check`; exits 1 when an invariant fails. Restarting the
    /// servers needs rabbitmqctl and pg_ctlcluster on this machine.
    Chaos {
        /// Bookings to make (at least one: a run over nothing proves
        /// nothing).
        #[arg(long, default_value_t = 1000,
              value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
        bookings: usize,
        /// Clients booking at once.
        #[arg(long, default_value_t = 16,
              value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000))]
        clients: usize,
        /// Processes to kill (SIGKILL) and restart, spread over the load.
        #[arg(long, default_value_t = 10,
              value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=10_000))]
        kills: usize,
        /// The least seconds between two kills (they are spread evenly over
        /// the load).
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=86_400))]
        kill_every: u64,
        /// RabbitMQ restarts during the load.
        #[arg(long, default_value_t = 1,
              value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=100))]
        broker_restarts: usize,
        /// PostgreSQL restarts during the load.
        #[arg(long, default_value_t = 1,
              value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=100))]
        postgres_restarts: usize,
        /// Also deliver every event two to five times, shuffled, some late.
        #[arg(long)]
        faulty_bus: bool,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..=86_400))]
        deadline: u64,
        /// Where to write the JSON report.
        #[arg(long, default_value = "target/chaos/report.json")]
        json: PathBuf,
    },
    /// Load demonstration data and exit: the catalogue (homestays in 敖汉旗,
    /// 黎平 and 四子王旗; the 首都—草原, 千里草原大道 and 香格里拉 routes),
    /// the Beijing–Inner Mongolia partnerships and agreement, and demo
    /// accounts (a traveler, the 赤峰市 admin, an agency's API client) whose
    /// credentials are printed. Everything is marked [演示] / demo.
    Seed {
        /// Required: say that you want demonstration data.
        #[arg(long)]
        demo: bool,
    },
    /// Measure; prints a table and writes JSON. Needs the real servers
    /// (DUIKOU_POSTGRES_URL and DUIKOU_AMQP_URL, or the local defaults).
    Bench {
        #[command(subcommand)]
        what: Bench,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// Homestay search (two nights, 40 homestays) through the gateway at
    /// several client counts, beside `{ __typename }` on the same gateway.
    Search {
        /// Concurrent clients per run, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
        clients: Vec<usize>,
        /// Measured seconds per run (after one second of warm-up).
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Where to write the JSON results.
        #[arg(long, default_value = "target/bench/search.json")]
        json: PathBuf,
    },
    /// Bookings from createBooking to CONFIRMED through the gateway (create,
    /// wait for the push, pay, wait for the push) over 100 room types,
    /// beside `pgbench -b simple-update` with the same clients on the same
    /// PostgreSQL.
    Booking {
        /// Concurrent clients per run, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
        clients: Vec<usize>,
        /// Measured seconds per run (after two seconds of warm-up).
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Poll `booking(id)` every 2 ms instead of waiting for pushes.
        #[arg(long)]
        poll: bool,
        /// Where to write the JSON results.
        #[arg(long, default_value = "target/bench/booking.json")]
        json: PathBuf,
    },
    /// Hold requests answered per second by inventory (bus, outbox, the
    /// conditional UPDATE) with 1, 8 and 64 in flight, on one hot room
    /// type and spread over 1,000.
    Holds {
        /// Requests in flight per run, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
        clients: Vec<usize>,
        /// Measured seconds per run (after one second of warm-up).
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Where to write the JSON results.
        #[arg(long, default_value = "target/bench/holds.json")]
        json: PathBuf,
    },
    /// Many clients race to book a few rooms on one night: the time until
    /// every client has its answer, and the count of each outcome.
    Contention {
        /// Racing clients.
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        /// Rooms on the night.
        #[arg(long, default_value_t = 10)]
        rooms: u32,
        /// Poll `booking(id)` every 2 ms instead of waiting for pushes.
        #[arg(long)]
        poll: bool,
        /// Where to write the JSON results.
        #[arg(long, default_value = "target/bench/contention.json")]
        json: PathBuf,
    },
    /// Start-to-ready time of `duikou serve` and each process's peak
    /// memory (VmHWM) under a booking load, for every part in one process
    /// and for the parts as processes of their own.
    Resources {
        /// Bookings made while measuring.
        #[arg(long, default_value_t = 300)]
        bookings: usize,
        /// Clients booking at once.
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// Where to write the JSON results.
        #[arg(long, default_value = "target/bench/resources.json")]
        json: PathBuf,
    },
    /// Events per second end to end: outbox → RabbitMQ (confirms) → inbox handler committed.
    Events {
        /// Events per run (after a warm-up of a tenth of that).
        #[arg(long, default_value_t = 5000)]
        events: i64,
        /// Competing consumers per run, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,4")]
        consumers: Vec<usize>,
        /// Where to write the JSON results.
        #[arg(long, default_value = "target/bench/events.json")]
        json: PathBuf,
    },
}

/// Runs the command; an error is one line on stderr and exit status 1 —
/// never a stack trace, even with `RUST_BACKTRACE` set (a refused setting or
/// a port in use is not a crash).
#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {}", duikou::explained(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        // `check` says it could not check (2), not that an invariant broke (1).
        Err(e) if matches!(cli.command, Command::Check { .. }) => {
            eprintln!("Error: could not check the invariants: {e}");
            std::process::exit(2);
        }
        Err(e) => return Err(e.into()),
    };
    shared::telemetry::init(&settings.log_format);
    match cli.command {
        Command::Serve { part } => serve(settings, part).await,
        Command::Bench {
            what:
                Bench::Booking {
                    clients,
                    seconds,
                    poll,
                    json,
                },
        } => {
            println!(
                "bookings create → CONFIRMED through the gateway vs pgbench simple-update, {seconds} s per run:"
            );
            let runs =
                duikou::bench_booking::booking(on_local_servers(settings), &clients, seconds, poll)
                    .await?;
            write_json(&json, &runs)?;
            Ok(())
        }
        Command::Bench {
            what:
                Bench::Holds {
                    clients,
                    seconds,
                    json,
                },
        } => {
            println!("hold requests answered by inventory, {seconds} s per run:");
            let runs =
                duikou::bench_holds::holds(on_local_servers(settings), &clients, seconds).await?;
            write_json(&json, &runs)?;
            Ok(())
        }
        Command::Bench {
            what:
                Bench::Contention {
                    clients,
                    rooms,
                    poll,
                    json,
                },
        } => {
            println!("{clients} clients racing for {rooms} rooms on one night:");
            let run =
                duikou::bench_booking::contention(on_local_servers(settings), clients, rooms, poll)
                    .await?;
            println!(
                "  all created after {:.2} s, all held or refused after {:.2} s",
                run.created_seconds, run.answered_seconds
            );
            println!(
                "  commits per client: {}",
                run.commits_per_client
                    .iter()
                    .map(|(service, n)| format!("{service} {n:.2}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            if !run.cpu_percent.is_empty() {
                println!(
                    "  CPU of the machine while racing: {}",
                    duikou::bench_cpu::describe(&run.cpu_percent)
                );
            }
            println!(
                "  settled in {:.2} s: {}",
                run.settled_seconds,
                run.outcomes
                    .iter()
                    .map(|(status, n)| format!("{n} {status}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            write_json(&json, &run)?;
            let due = run.sold_exactly_the_rooms()?;
            println!("  exactly {due} confirmed, in the database as told to the clients");
            Ok(())
        }
        Command::Bench {
            what:
                Bench::Search {
                    clients,
                    seconds,
                    json,
                },
        } => {
            let settings = on_local_servers(settings);
            println!(
                "homestay search through the gateway vs {{ __typename }}, {seconds} s per run:"
            );
            let runs = duikou::bench_search::search(settings, &clients, seconds).await?;
            write_json(&json, &runs)?;
            Ok(())
        }
        Command::Bench {
            what:
                Bench::Resources {
                    bookings,
                    clients,
                    json,
                },
        } => {
            println!("start-to-ready and peak memory of `duikou serve`:");
            let runs = duikou::bench_resources::resources(
                on_local_servers(settings),
                std::env::current_exe()?,
                bookings,
                clients,
            )
            .await?;
            write_json(&json, &runs)?;
            Ok(())
        }
        Command::Bench {
            what:
                Bench::Events {
                    events,
                    consumers,
                    json,
                },
        } => {
            let postgres = settings
                .postgres()
                .unwrap_or("postgres://root@127.0.0.1:5432")
                .to_owned();
            let amqp = settings
                .amqp()
                .unwrap_or("amqp://guest:guest@127.0.0.1:5672/%2f")
                .to_owned();
            println!("events end to end (outbox → RabbitMQ → inbox), {events} events per run:");
            let runs = duikou::bench::events(&postgres, &amqp, events, &consumers).await?;
            write_json(&json, &runs)?;
            Ok(())
        }
        Command::Chaos {
            bookings,
            clients,
            kills,
            kill_every,
            broker_restarts,
            postgres_restarts,
            faulty_bus,
            deadline,
            json,
        } => {
            let plan = duikou::chaos::Plan {
                bookings,
                clients,
                kills,
                kill_every: std::time::Duration::from_secs(kill_every),
                broker_restarts,
                postgres_restarts,
                faulty_bus,
                exe: std::env::current_exe()?,
                deadline: std::time::Duration::from_secs(deadline),
                parts: duikou::chaos::SEPARATE,
            };
            println!(
                "chaos: {bookings} bookings by {clients} clients; {kills} kills, {broker_restarts} RabbitMQ and {postgres_restarts} PostgreSQL restarts{}",
                if faulty_bus { ", faulty bus" } else { "" }
            );
            // An earlier run's report must not stand for this one if it
            // ends without one.
            match std::fs::remove_file(&json) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
            let report = duikou::chaos::run(on_local_servers(settings), plan).await?;
            duikou::chaos::print(&report);
            write_json(&json, &report)?;
            if report.passed {
                Ok(())
            } else {
                anyhow::bail!(
                    "the chaos run did not pass: see the PROBLEM lines and the invariants above"
                )
            }
        }
        Command::Check { grace_seconds } => {
            // Exit 2 when it could not check at all (a server away, a wrong
            // setting): monitoring must tell that from an inconsistency (1).
            let checked = match settings.check() {
                Ok(()) => {
                    // A reader gone already (`| head -0`) is no error here.
                    use std::io::Write as _;
                    let _ = writeln!(std::io::stdout(), "invariants ({} mode):", settings.mode());
                    duikou::check::run(&settings, chrono::Duration::seconds(grace_seconds))
                        .await
                        // sea-orm's words for an error of ours, not the reader's.
                        .map_err(|e| format!("{e:#}").replace("Custom Error: ", ""))
                }
                Err(e) => Err(e),
            };
            let findings = match checked {
                Ok(findings) => findings,
                Err(e) => {
                    eprintln!("Error: could not check the invariants: {e}");
                    std::process::exit(2);
                }
            };
            if duikou::check::report(&findings) {
                Ok(())
            } else {
                anyhow::bail!("an invariant does not hold")
            }
        }
        Command::Seed { demo } => {
            if !demo {
                anyhow::bail!("only demonstration data can be seeded: `duikou seed --demo`");
            }
            let mut settings = settings;
            settings.demo_data = Some(true);
            settings.seed_demo_accounts = true;
            settings.gateway_addr = "127.0.0.1:0".into();
            // Seeding runs inside each service's start: show that it moves.
            let progress = indicatif::ProgressBar::new_spinner();
            progress.set_style(indicatif::ProgressStyle::with_template(
                "{spinner} {msg} [{elapsed}]",
            )?);
            progress.set_message(
                "migrating the databases and seeding homestays, routes, certifications, partnerships, accounts…",
            );
            progress.enable_steady_tick(std::time::Duration::from_millis(120));
            let app = App::start(settings, Part::All).await;
            progress.finish_and_clear();
            let app = app?;
            match &app.demo_accounts {
                Some(accounts) => println!("{}", accounts.describe()),
                None => println!(
                    "Demonstration data was there already (the agency secret was shown when it was created)."
                ),
            }
            // Each is seeded only where there is none at all (each service's
            // startup): say so, not that it was done.
            println!(
                "The demo homestays and routes are seeded into a catalogue with none, and the \
                 京蒙协作 partnerships where there are none; what was there is left as it was."
            );
            app.stop().await;
            Ok(())
        }
        Command::Migrate => {
            settings.check().map_err(anyhow::Error::msg)?;
            migrate(&settings).await?;
            println!(
                "migrated the databases of the gateway, inventory, booking, payment and partnership"
            );
            if settings.amqp().is_some() {
                println!(
                    "declared the event queues of inventory, booking, payment and partnership"
                );
            }
            Ok(())
        }
    }
}

fn write_json(path: &std::path::Path, runs: &impl serde::Serialize) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_vec_pretty(runs)?)?;
    println!("wrote {}", path.display());
    Ok(())
}

async fn serve(settings: Settings, part: Part) -> anyhow::Result<()> {
    // Listening for SIGTERM from the first moment.
    let stop = duikou::shutdown_signal();
    tokio::pin!(stop);
    let mode = settings.mode();
    // Embedded, each process has its own in-process bus: a part alone
    // would hear nothing from the others.
    if mode == "embedded" && part != Part::All {
        anyhow::bail!(
            "one part alone needs the servers (DUIKOU_POSTGRES_URL and DUIKOU_AMQP_URL); \
             without them `duikou serve` runs every part in one process"
        );
    }
    let mut servers = settings.servers();
    // Only the gateway reads Redis (rate limits, caches).
    if !matches!(part, Part::All | Part::Gateway) {
        servers.retain(|(what, _)| !matches!(*what, "Redis" | "limits"));
    }
    let json = settings.log_format.eq_ignore_ascii_case("json");
    let settings_drain = settings.drain_seconds;
    // A stop asked for while connecting (waiting for the broker, which it
    // would do for ever) ends it there: nothing has started. Asked for
    // later, it waits for the start to end (migrations and seeding run to
    // their end), then stops.
    let connected = tokio::select! {
        connected = App::connect(settings, part) => connected?,
        () = &mut stop => {
            eprintln!("Asked to stop while connecting: stopped.");
            return Ok(());
        }
    };
    let app = App::start_connected(connected, part).await?;
    let graphql = app
        .gateway_addr
        .map(|addr| format!("http://{addr}/graphql"));
    if json {
        // JSON lines only on stdout, for whatever collects them.
        let servers: Vec<String> = servers.iter().map(|(w, at)| format!("{w} {at}")).collect();
        if let Some(accounts) = &app.demo_accounts {
            tracing::info!(accounts = accounts.describe(), "demonstration accounts");
        }
        tracing::info!(
            mode,
            part = ?part,
            servers = servers.join("; "),
            graphql = graphql.as_deref().unwrap_or("-"),
            "Duikou is running"
        );
    } else {
        println!("Duikou is running ({mode} mode, part: {part:?}).");
        for (what, where_) in servers {
            println!("  {what:<10} {where_}");
        }
        if let Some(accounts) = &app.demo_accounts {
            println!("{}", accounts.describe());
        }
        if let (Some(graphql), Some(addr)) = (&graphql, app.gateway_addr) {
            println!("  GraphQL:  {graphql}");
            println!("  GraphiQL: http://{addr}/");
        }
        println!("Press Ctrl-C to stop.");
    }
    stop.await;
    if json {
        tracing::info!("stopping: finishing messages in flight (again to stop at once)");
    } else {
        println!("Stopping: finishing messages in flight… (again to stop at once)");
    }
    // Asked again, it stops at once: what was in flight is delivered again
    // to the next start.
    let drain = std::time::Duration::from_secs(settings_drain);
    tokio::select! {
        () = async {
            app.drain(drain).await;
            app.stop().await;
        } => {}
        () = duikou::shutdown_signal() => {
            anyhow::bail!("asked twice to stop: stopped without finishing what was in flight");
        }
    }
    if json {
        tracing::info!("stopped");
    } else {
        println!("Stopped.");
    }
    Ok(())
}

/// The configured servers, or the local defaults for what is not set:
/// benches measure the distributed stack.
fn on_local_servers(mut settings: Settings) -> Settings {
    settings
        .postgres_url
        .get_or_insert_with(|| "postgres://root@127.0.0.1:5432".to_owned().into());
    settings
        .amqp_url
        .get_or_insert_with(|| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned().into());
    // Redis too: the distributed stack keeps its limits and catalogue cache there.
    settings
        .redis_url
        .get_or_insert_with(|| "redis://127.0.0.1:6379".to_owned().into());
    settings
}
