//! Where the machine's CPU went during a measured window: Duikou, the
//! bench's own clients (threads of this process named [`CLIENT_THREAD`]),
//! PostgreSQL, RabbitMQ, Redis, the rest, and idle — read from `/proc` (Linux; nothing elsewhere). The
//! benchmarks print it beside their figures, so "what bounds it" is a
//! reading anyone can repeat, not a profile only the author ran.

use std::collections::{BTreeMap, HashMap};

/// CPU time at one moment, in the kernel's clock ticks.
pub struct CpuSample {
    /// Every CPU's busy and idle ticks together, and the idle part.
    machine: (u64, u64),
    /// Each process we account for (this one thread by thread, by tid):
    /// (group, ticks spent so far).
    processes: HashMap<u32, (&'static str, u64)>,
}

/// The name of the threads the benches run their clients on; their CPU
/// counts as `bench clients`, the rest of this process as `duikou`.
pub const CLIENT_THREAD: &str = "bench-client";

/// The group another process counts in, by its command name.
fn group(comm: &str) -> Option<&'static str> {
    match comm {
        "postgres" => Some("postgresql"),
        "beam.smp" => Some("rabbitmq"),
        "redis-server" => Some("redis"),
        _ => None,
    }
}

/// `(comm, utime + stime)` from a `/proc/<pid>/stat` line. The command
/// name is in parentheses and may itself hold spaces and parentheses, so
/// the fields are counted from the last `)`.
fn parse_stat(line: &str) -> Option<(&str, u64)> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let comm = line.get(open + 1..close)?;
    // After ")": state is field 3 of the line, utime 14 and stime 15.
    let mut fields = line.get(close + 1..)?.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((comm, utime + stime))
}

/// `(all ticks, idle ticks)` from the `cpu` line of `/proc/stat`: user,
/// nice, system, idle, iowait, irq, softirq, steal.
fn parse_machine(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let idle = ticks.get(3)? + ticks.get(4)?;
    Some((ticks.iter().sum(), idle))
}

impl CpuSample {
    /// Reads the machine's and every accounted process's CPU time now;
    /// None where there is no `/proc`.
    pub fn now() -> Option<CpuSample> {
        let machine = parse_machine(&std::fs::read_to_string("/proc/stat").ok()?)?;
        let me = std::process::id();
        let mut processes = HashMap::new();
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            if pid == me {
                continue;
            }
            // A process may exit between the listing and the read.
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            if let Some((comm, ticks)) = parse_stat(&stat)
                && let Some(group) = group(comm)
            {
                processes.insert(pid, (group, ticks));
            }
        }
        // This process thread by thread: the clients' threads apart.
        for entry in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
            let Some(tid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            if let Some((comm, ticks)) = parse_stat(&stat) {
                let group = if comm == CLIENT_THREAD {
                    "bench clients"
                } else {
                    "duikou"
                };
                processes.insert(tid, (group, ticks));
            }
        }
        Some(CpuSample { machine, processes })
    }

    /// Per cent of the whole machine (every core together is 100) each
    /// group used from `self` to `later`, with `idle` and `other` (the
    /// kernel's own threads, every other process, and processes that
    /// ended in between, threads of this process too).
    pub fn shares_until(&self, later: &CpuSample) -> BTreeMap<String, f64> {
        let total = later.machine.0.saturating_sub(self.machine.0);
        if total == 0 {
            return BTreeMap::new();
        }
        let mut ticks: BTreeMap<&str, u64> = BTreeMap::new();
        for (pid, (group, after)) in &later.processes {
            // A process that started in between counts from zero.
            let before = self.processes.get(pid).map_or(0, |(_, t)| *t);
            *ticks.entry(group).or_default() += after.saturating_sub(before);
        }
        let idle = later.machine.1.saturating_sub(self.machine.1);
        let accounted: u64 = ticks.values().sum::<u64>() + idle;
        ticks.insert("idle", idle);
        ticks.insert("other", total.saturating_sub(accounted));
        let percent = |t: u64| (1000.0 * t as f64 / total as f64).round() / 10.0;
        ticks
            .into_iter()
            .map(|(group, t)| (group.to_owned(), percent(t)))
            .collect()
    }
}

/// The shares from `before` until now; empty where there is no `/proc`.
pub fn shares_since(before: Option<CpuSample>) -> BTreeMap<String, f64> {
    before
        .zip(CpuSample::now())
        .map(|(before, now)| before.shares_until(&now))
        .unwrap_or_default()
}

/// `postgresql 35.0 %, duikou 34.1 %, …`, largest first.
pub fn describe(shares: &BTreeMap<String, f64>) -> String {
    let mut by_size: Vec<(&String, &f64)> = shares.iter().collect();
    by_size.sort_by(|a, b| b.1.total_cmp(a.1));
    by_size
        .iter()
        .map(|(group, p)| format!("{group} {p:.1} %"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_name_with_spaces_and_parentheses_is_read_whole() {
        let line = "4242 (tokio (rt) worker) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    1234 567 8 9 20 0 4 0 100 0 0";
        assert_eq!(parse_stat(line), Some(("tokio (rt) worker", 1801)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn the_machine_line_sums_busy_and_idle_ticks() {
        let stat = "cpu  100 5 50 800 40 3 2 0 0 0\ncpu0 50 2 25 400 20 1 1 0 0 0\n";
        assert_eq!(parse_machine(stat), Some((1000, 840)));
    }

    #[test]
    fn shares_cover_the_whole_machine_and_count_only_the_window() {
        let before = CpuSample {
            machine: (1_000, 500),
            processes: HashMap::from([(1, ("postgresql", 100)), (2, ("duikou", 50))]),
        };
        let after = CpuSample {
            machine: (2_000, 700),
            processes: HashMap::from([
                (1, ("postgresql", 500)),
                (2, ("duikou", 350)),
                // Started in the window: all of its time is in it.
                (3, ("postgresql", 100)),
            ]),
        };
        let shares = before.shares_until(&after);
        assert_eq!(shares["postgresql"], 50.0);
        assert_eq!(shares["duikou"], 30.0);
        assert_eq!(shares["idle"], 20.0);
        assert_eq!(shares["other"], 0.0);
        assert_eq!(
            describe(&shares),
            "postgresql 50.0 %, duikou 30.0 %, idle 20.0 %, other 0.0 %"
        );
    }
}
