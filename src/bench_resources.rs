//! `duikou bench resources`: how long `duikou serve` takes to be ready and
//! how much memory each process needs at its peak — for the one process
//! and for the parts as processes of their own — under a booking load.
//! It is the chaos run (`chaos.rs`) with no faults: the same processes, the
//! same clients, the same invariant check at the end.

use crate::chaos::{self, PeakRss, Plan};
use shared::config::Settings;
use std::path::PathBuf;
use std::time::Duration;

/// One layout measured.
#[derive(Debug, serde::Serialize)]
pub struct ResourcesRun {
    /// `one process` or `separate processes`.
    pub layout: &'static str,
    /// Bookings made during the run.
    pub bookings: usize,
    /// Seconds from starting the processes until `/readyz?all` answered 200
    /// (every service answering).
    pub ready_seconds: f64,
    /// Each process's peak resident set at the end of the run.
    pub peak_rss: Vec<PeakRss>,
    /// Whether every invariant held after the load and nothing else went
    /// wrong (the run's `passed`: no part crashed, every booking ended).
    pub passed: bool,
}

/// Runs both layouts with `bookings` bookings by `clients` clients.
pub async fn resources(
    settings: Settings,
    exe: PathBuf,
    bookings: usize,
    clients: usize,
) -> anyhow::Result<Vec<ResourcesRun>> {
    let mut runs = Vec::new();
    for (layout, parts) in [
        ("one process", chaos::ONE),
        ("separate processes", chaos::SEPARATE),
    ] {
        println!("  {layout}: {bookings} bookings by {clients} clients…");
        let plan = Plan {
            bookings,
            clients,
            kills: 0,
            kill_every: Duration::from_secs(3600),
            broker_restarts: 0,
            postgres_restarts: 0,
            faulty_bus: false,
            exe: exe.clone(),
            deadline: Duration::from_secs(600),
            parts,
        };
        let report = chaos::run(settings.clone(), plan).await?;
        if !report.passed {
            // What went wrong, not only that something did.
            chaos::print(&report);
        }
        let run = ResourcesRun {
            layout,
            bookings,
            ready_seconds: report.ready_seconds,
            peak_rss: report.peak_rss,
            passed: report.passed,
        };
        print(&run);
        runs.push(run);
    }
    Ok(runs)
}

fn print(run: &ResourcesRun) {
    println!(
        "    ready after {:.2} s; {}",
        run.ready_seconds,
        if run.passed {
            "every invariant holds"
        } else {
            "the run DID NOT PASS (above)"
        }
    );
    for p in &run.peak_rss {
        println!(
            "    {:<14} peak RSS {:>6.1} MiB",
            p.process,
            p.kib as f64 / 1024.0
        );
    }
}
