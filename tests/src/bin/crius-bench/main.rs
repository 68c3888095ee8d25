//! `crius-bench`: measures crius and containerd side by side through one CRI client.
//!
//! It starts a local registry on 127.0.0.1, pushes its images there (built from busybox-static),
//! starts each runtime with its own directories and socket, runs the scenarios with the runtimes
//! alternating run by run, prints a table and writes it as Markdown. Neither runtime can reach any
//! registry but the local one (crius through `fallback = false` mirrors, containerd through
//! certs.d hosts.toml files with a `[host]` table).

mod churn;
mod flood;
mod growth;
mod leaks;
mod node_report;
mod node_scale;
mod poll;
mod report;
mod runtimes;
mod scenarios;
mod scrape;
mod stalls;
mod stats;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use crius_tests::Registry;
use crius_tests::images::{self, ImageSpec};

use report::{Cell, Row};
use runtimes::Runtime;
use scenarios::{Outcome, outcome};

#[derive(Parser, Debug)]
#[command(about = "Benchmark crius against containerd through the same CRI client")]
struct Args {
    /// Runtimes to compare, in order.
    #[arg(long, value_delimiter = ',', default_value = "crius,containerd")]
    runtimes: Vec<String>,
    /// Sequential pods in the lifecycle scenario.
    #[arg(long, default_value_t = 20)]
    pods: usize,
    /// Pods started in the concurrent scenario, and how many at once.
    #[arg(long, default_value_t = 20)]
    concurrent: usize,
    #[arg(long, default_value_t = 10)]
    in_flight: usize,
    /// Rounds of the concurrent scenario per runtime.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Pulls of the big image per runtime.
    #[arg(long, default_value_t = 5)]
    pulls: usize,
    /// Size of the pulled image in MiB.
    #[arg(long, default_value_t = 50)]
    pull_mb: usize,
    /// Running pods for the memory scenario.
    #[arg(long, default_value_t = 20)]
    memory_pods: usize,
    /// ExecSync round trips.
    #[arg(long, default_value_t = 50)]
    execs: usize,
    /// Seconds `yes` runs in the log throughput scenario.
    #[arg(long, default_value_t = 10)]
    log_secs: u64,
    /// Seconds an exec client stalls in the stalled-exec scenario.
    #[arg(long, default_value_t = 60)]
    stall_secs: u64,
    /// Running pods (one container each) while the metrics endpoint is scraped.
    #[arg(long, default_value_t = 110)]
    scrape_pods: usize,
    /// Scrapes of the metrics endpoint.
    #[arg(long, default_value_t = 100)]
    scrapes: usize,
    /// Pods (one container each) of the node-scale scenarios 9 and 10, started and torn down
    /// `--in-flight` at a time.
    #[arg(long, default_value_t = 110)]
    scale_pods: usize,
    /// No pod of scenario 9 is started after this many seconds; the figures say how many ran.
    #[arg(long, default_value_t = 300)]
    scale_deadline_secs: u64,
    /// Seconds of kubelet-shaped polling in scenario 10.
    #[arg(long, default_value_t = 60)]
    steady_secs: u64,
    /// Pods created, started, stopped and removed in the churn scenario 11.
    #[arg(long, default_value_t = 1000)]
    churn_pods: usize,
    /// Pods filled in scenario 12.
    #[arg(long, default_value_t = 5)]
    growth_pods: usize,
    /// Containers created and started, one after the other, in each pod of scenario 12.
    #[arg(long, default_value_t = 8)]
    growth_containers: usize,
    /// Scenarios to run (numbers); all by default.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,4,5,6,7,8,9,10,11,12")]
    only: Vec<u32>,
    /// Where to write the Markdown table.
    #[arg(long, default_value = "crius-bench.md")]
    markdown: PathBuf,
}

// One thread for the whole client, so that what is timed is the runtime and not the client's
// own thread hand-offs: on a multi-thread runtime each RPC hops between the caller, tonic's
// buffer task and the connection task on other threads, and on 2 vCPUs every hop can wait for
// a CPU. Measured with 110 pods polled: Version p50 / p99 0.41 / 3.88 → 0.21 / 0.83 ms.
// Invariant: nothing in the bench blocks its thread on work another of its own tasks must do
// (the blocking HTTP client of the scrape scenario runs on `spawn_blocking`).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let registry = Registry::start()?;
    let reg = registry.addr.clone();
    eprintln!("registry on {reg}; pushing images");
    let small = images::push(&registry, "bench/busybox", "1", &ImageSpec::busybox())
        .await?
        .reference;
    let big = images::push(
        &registry,
        "bench/big",
        "1",
        &ImageSpec::busybox_with_random_mb(args.pull_mb.saturating_sub(1).max(1)),
    )
    .await?
    .reference;
    let pause_spec = ImageSpec {
        cmd: vec![
            "sh".into(),
            "-c".into(),
            "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait; done".into(),
        ],
        ..ImageSpec::busybox()
    };
    let pause = images::push(&registry, "pause", "3.9", &pause_spec)
        .await?
        .reference;

    let mut rts = Vec::new();
    for name in &args.runtimes {
        let r = match name.as_str() {
            "crius" => Runtime::start_crius(&reg).await?,
            "containerd" => Runtime::start_containerd(&reg, &pause)
                .await
                .context("containerd (apt-get install containerd runc)")?,
            other => anyhow::bail!("unknown runtime {other:?} (crius, containerd)"),
        };
        rts.push(r);
    }
    let names: Vec<&'static str> = rts.iter().map(|r| r.name).collect();
    // Idle footprint: each daemon just started, before any scenario has made it allocate.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let fresh_rss: BTreeMap<&str, u64> = rts
        .iter()
        .map(|r| {
            (
                r.name,
                r.daemon_pid()
                    .map(|p| scenarios::proc_kb(p as i32, "status", "VmRSS:"))
                    .unwrap_or(0),
            )
        })
        .collect();
    let mut rows = Vec::new();

    // The image the container scenarios run (untimed). Without PullImage, those scenarios report
    // "not supported" on their own.
    for r in rts.iter_mut() {
        outcome(scenarios::ensure_image(r, &small).await)?;
    }

    let run = |n: u32| args.only.contains(&n);
    if run(1) {
        eprintln!("scenario 1: pull a {} MiB image x{}", args.pull_mb, args.pulls);
        let mut pulls: BTreeMap<&str, std::result::Result<Vec<Duration>, String>> = BTreeMap::new();
        for i in 0..args.pulls {
            for k in order(rts.len(), i) {
                let r = &mut rts[k];
                let entry = pulls.entry(r.name).or_insert_with(|| Ok(Vec::new()));
                if let Ok(samples) = entry {
                    match outcome(scenarios::pull_once(r, &big).await)? {
                        Outcome::Done(d) => samples.push(d),
                        Outcome::Unsupported(m) => *entry = Err(m),
                    }
                }
            }
        }
        rows.push(times_row(
            &format!("1. PullImage {} MiB", args.pull_mb),
            &names,
            &pulls,
        ));
    }

    if run(2) {
        eprintln!("scenario 2: pod lifecycle x{}", args.pods);
        let mut steps: BTreeMap<&str, BTreeMap<&'static str, Vec<Duration>>> = BTreeMap::new();
        let mut unsupported: BTreeMap<&str, String> = BTreeMap::new();
        for i in 0..args.pods {
            for k in order(rts.len(), i) {
                let r = &mut rts[k];
                if unsupported.contains_key(r.name) {
                    continue;
                }
                let out = steps.entry(r.name).or_default();
                if let Outcome::Unsupported(m) =
                    outcome(scenarios::lifecycle_once(r, &format!("seq-{i}"), &small, out).await)?
                {
                    unsupported.insert(r.name, m);
                }
            }
        }
        for step in scenarios::STEPS {
            let per: BTreeMap<&str, std::result::Result<Vec<Duration>, String>> = names
                .iter()
                .map(|n| {
                    let samples = steps
                        .get(n)
                        .and_then(|m| m.get(step))
                        .cloned()
                        .unwrap_or_default();
                    let v = match (samples.is_empty(), unsupported.get(n)) {
                        (true, Some(m)) => Err(m.clone()),
                        (true, None) => Err("no samples".to_string()),
                        (false, _) => Ok(samples),
                    };
                    (*n, v)
                })
                .collect();
            rows.push(times_row(&format!("2. {step}"), &names, &per));
        }
    }

    if run(3) {
        eprintln!(
            "scenario 3: {} pods concurrently, {} in flight, x{}",
            args.concurrent, args.in_flight, args.rounds
        );
        let mut conc: BTreeMap<&str, std::result::Result<Vec<Duration>, String>> = BTreeMap::new();
        for round in 0..args.rounds {
            for k in order(rts.len(), round) {
                let r = &mut rts[k];
                let entry = conc.entry(r.name).or_insert_with(|| Ok(Vec::new()));
                if let Ok(samples) = entry {
                    match outcome(
                        scenarios::concurrent_start(r, round, args.concurrent, args.in_flight, &small).await,
                    )? {
                        Outcome::Done(d) => samples.push(d),
                        Outcome::Unsupported(m) => *entry = Err(m),
                    }
                }
            }
        }
        rows.push(times_row(
            &format!(
                "3. {} pods x 1 container, {} in flight (wall)",
                args.concurrent, args.in_flight
            ),
            &names,
            &conc,
        ));
    }

    if run(4) {
        eprintln!("scenario 4: memory with {} pods", args.memory_pods);
        let mut mem_rows = value_rows(&[
            "4. daemon RSS idle (just started)",
            "4. daemon RSS after scenarios 1-3, no pods",
            "4. daemon RSS with pods",
            "4. shim PSS per container",
            "4. shim RSS per container",
            "4. pod infra (pause) PSS per pod",
        ]);
        for r in rts.iter_mut() {
            match outcome(scenarios::memory(r, args.memory_pods, &small).await)? {
                Outcome::Done(m) => {
                    let values = [
                        fresh_rss[r.name] as f64,
                        m.daemon_idle_kb as f64,
                        m.daemon_loaded_kb as f64,
                        m.shim_pss_kb,
                        m.shim_rss_kb,
                    ];
                    let mut cells: Vec<Cell> = values.iter().map(|v| Cell::Value(*v, "kB")).collect();
                    cells.push(m.infra_pss_kb.map_or_else(
                        || Cell::NotMeasured("pause is a busybox stand-in here".into()),
                        |v| Cell::Value(v, "kB"),
                    ));
                    push_cells(&mut mem_rows, r.name, cells);
                }
                Outcome::Unsupported(m) => {
                    // Idle daemon RSS needs no verb.
                    mem_rows[0]
                        .cells
                        .push((r.name.to_string(), Cell::Value(fresh_rss[r.name] as f64, "kB")));
                    for row in mem_rows.iter_mut().skip(1) {
                        row.cells
                            .push((r.name.to_string(), Cell::NotSupported(m.clone())));
                    }
                }
            }
        }
        rows.extend(mem_rows);
    }

    if run(5) {
        eprintln!("scenario 5: ExecSync `true` x{}", args.execs);
        let mut execs: BTreeMap<&str, std::result::Result<Vec<Duration>, String>> = BTreeMap::new();
        for r in rts.iter_mut() {
            let v = match outcome(scenarios::exec_sync(r, args.execs, &small).await)? {
                Outcome::Done(s) => Ok(s),
                Outcome::Unsupported(m) => Err(m),
            };
            execs.insert(r.name, v);
        }
        rows.push(times_row("5. ExecSync `true`", &names, &execs));
    }

    if run(6) {
        eprintln!("scenario 6: `yes` into the CRI log for {} s", args.log_secs);
        let mut flood_rows = value_rows(&[
            "6. `yes` log throughput (CRI log file growth)",
            "6. shim CPU per GB logged",
            "6. daemon CPU per GB logged",
        ]);
        for r in rts.iter_mut() {
            let cells = match outcome(flood::log_throughput(r, args.log_secs, &small).await)? {
                Outcome::Done(t) => vec![
                    Cell::Value(t.mb_per_s, "MB/s"),
                    Cell::Value(t.shim_cpu_s_per_gb, "CPU s/GB"),
                    Cell::Value(t.daemon_cpu_s_per_gb, "CPU s/GB"),
                ],
                Outcome::Unsupported(m) => vec![Cell::NotSupported(m); 3],
            };
            push_cells(&mut flood_rows, r.name, cells);
        }
        rows.extend(flood_rows);
    }

    if run(7) {
        eprintln!(
            "scenario 7: exec `yes` with a client stalled {} s",
            args.stall_secs
        );
        let secs = args.stall_secs;
        let mut stall_rows = value_rows(&[
            "7. daemon RSS before a stalled exec of `yes`".to_string(),
            format!("7. daemon RSS max during {secs} s of it"),
            format!("7. daemon RSS at the end of the {secs} s"),
        ]);
        for r in rts.iter_mut() {
            let cells = match outcome(flood::stalled_exec(r, secs, &small).await)? {
                Outcome::Done(m) => [m.before_kb, m.max_kb, m.end_kb]
                    .iter()
                    .map(|v| Cell::Value(*v as f64, "kB"))
                    .collect(),
                Outcome::Unsupported(m) => vec![Cell::NotSupported(m); 3],
            };
            push_cells(&mut stall_rows, r.name, cells);
        }
        rows.extend(stall_rows);
    }

    if run(8) {
        eprintln!(
            "scenario 8: {} scrapes of /metrics with {} pods",
            args.scrapes, args.scrape_pods
        );
        let pods = args.scrape_pods;
        let mut cost_rows = value_rows(&[
            format!("8. daemon CPU per /metrics scrape, {pods} pods"),
            format!("8. /metrics answer size, {pods} pods"),
        ]);
        let mut times: BTreeMap<&str, std::result::Result<Vec<Duration>, String>> = BTreeMap::new();
        for r in rts.iter_mut() {
            match outcome(scrape::scrape_cost(r, pods, args.scrapes, &small).await)? {
                Outcome::Done(c) => {
                    let cells = vec![
                        Cell::Value(c.cpu_ms_per_scrape, "ms"),
                        Cell::Value(c.bytes as f64 / 1024.0, "KiB"),
                    ];
                    push_cells(&mut cost_rows, r.name, cells);
                    times.insert(r.name, Ok(c.times));
                }
                Outcome::Unsupported(m) => {
                    push_cells(&mut cost_rows, r.name, vec![Cell::NotSupported(m.clone()); 2]);
                    times.insert(r.name, Err(m));
                }
            }
        }
        rows.extend(cost_rows);
        rows.push(times_row(
            &format!("8. /metrics scrape wall time, {pods} pods"),
            &names,
            &times,
        ));
    }

    if run(9) || run(10) {
        eprintln!(
            "scenario 9{}: {} pods, {} in flight",
            if run(10) { " and 10" } else { "" },
            args.scale_pods,
            args.in_flight
        );
        let plan = node_scale::Plan {
            pods: args.scale_pods,
            in_flight: args.in_flight,
            start_deadline: Duration::from_secs(args.scale_deadline_secs),
            steady_secs: run(10).then_some(args.steady_secs),
        };
        rows.extend(node_report::node_scale_rows(&mut rts, plan, &small, run(9)).await);
    }

    if run(11) {
        eprintln!(
            "scenario 11: churn of {} pods, {} in flight",
            args.churn_pods, args.in_flight
        );
        rows.extend(node_report::churn_rows(&mut rts, args.churn_pods, args.in_flight, &small).await);
    }

    if run(12) {
        let per_pod = args.growth_containers.max(1);
        eprintln!(
            "scenario 12: {per_pod} containers created and started in each of {} pods",
            args.growth_pods
        );
        let mut fills: BTreeMap<&str, growth::Growth> = BTreeMap::new();
        let mut unsupported: BTreeMap<&str, String> = BTreeMap::new();
        for round in 0..args.growth_pods {
            for k in order(rts.len(), round) {
                let r = &mut rts[k];
                if unsupported.contains_key(r.name) {
                    continue;
                }
                let out = fills.entry(r.name).or_default();
                if let Outcome::Unsupported(m) =
                    outcome(growth::fill_one_pod(r, round, per_pod, &small, out).await)?
                {
                    unsupported.insert(r.name, m);
                }
            }
        }
        let positions = [(0, "1st"), (per_pod - 1, "last")];
        for verb in ["CreateContainer", "StartContainer"] {
            for (pos, label) in positions {
                let per: BTreeMap<&str, std::result::Result<Vec<Duration>, String>> = names
                    .iter()
                    .map(|n| {
                        let samples = fills.get(n).and_then(|g| g.of(verb).get(&pos)).cloned();
                        let v = match (samples, unsupported.get(n)) {
                            (Some(s), _) if !s.is_empty() => Ok(s),
                            (_, Some(m)) => Err(m.clone()),
                            _ => Err("no samples".to_string()),
                        };
                        (*n, v)
                    })
                    .collect();
                let what = format!("12. {verb}, {label} of {per_pod} containers in one pod");
                rows.push(times_row(&what, &names, &per));
            }
        }
    }

    for r in rts {
        r.shutdown().await;
    }
    drop(registry);

    print!("{}", report::text(&rows, &names));
    let header = format!(
        "# crius performance\n\nThe latest figures of `crius-bench` (tests/src/bin/crius-bench): crius beside \
         containerd 1.6 (Debian, with runc) in one run, through the same Rust CRI client, runtimes alternating \
         run by run, images from a local registry on 127.0.0.1. Reproduce with `make bench` (installs \
         containerd if missing, builds release binaries). Rows a runtime does not serve yet say \
         \"not supported\".\n\n## Run of {}\n\nMachine: {} cores, kernel {}. Command: `{}`.\n",
        now_utc(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel(),
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    std::fs::write(&args.markdown, report::markdown(&rows, &names, &header))?;
    eprintln!("wrote {}", args.markdown.display());
    Ok(())
}

/// Empty rows named `whats`, to be filled runtime by runtime.
fn value_rows(whats: &[impl ToString]) -> Vec<Row> {
    whats
        .iter()
        .map(|w| Row {
            what: w.to_string(),
            cells: Vec::new(),
        })
        .collect()
}

/// Adds one runtime's cells to `rows`, one each, in order.
fn push_cells(rows: &mut [Row], runtime: &str, cells: Vec<Cell>) {
    for (row, c) in rows.iter_mut().zip(cells) {
        row.cells.push((runtime.to_string(), c));
    }
}

/// Runtime order for run `i`: alternating, so drift hits every runtime alike.
fn order(n: usize, i: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    if i % 2 == 1 {
        v.reverse();
    }
    v
}

fn times_row(
    what: &str,
    names: &[&str],
    data: &BTreeMap<&str, std::result::Result<Vec<Duration>, String>>,
) -> Row {
    let cells = names
        .iter()
        .map(|n| {
            let cell = match data.get(n) {
                Some(Ok(s)) => {
                    stats::summarize(s).map_or(Cell::NotSupported("no samples".into()), Cell::Times)
                }
                Some(Err(m)) => Cell::NotSupported(m.clone()),
                None => Cell::NotSupported("not run".into()),
            };
            (n.to_string(), cell)
        })
        .collect();
    Row {
        what: what.to_string(),
        cells,
    }
}

fn kernel() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn now_utc() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
