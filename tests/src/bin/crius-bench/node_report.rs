//! Running scenarios 9–11 on every runtime and turning their figures into report rows.
//!
//! Scenario 9 compares runtimes at the same pod count: when one reaches fewer pods than asked
//! before the start deadline, the others are measured again at the count every runtime reached,
//! and the rows say which count that was.

use crate::churn::{self, Churn};
use crate::leaks::KINDS;
use crate::node_scale::{NodeScale, Plan, node_scale};
use crate::poll::{self, Steady};
use crate::report::{Cell, Row};
use crate::runtimes::Runtime;
use crate::scenarios::Fail;
use crate::{order, push_cells, value_rows};
use std::collections::BTreeMap;

/// Per runtime: its figures, or the cell every row shows instead (not supported, or failed).
type PerRuntime<T> = BTreeMap<&'static str, std::result::Result<T, Cell>>;

/// Scenarios 9 and (when `plan.steady_secs` is set) 10; rows of 9 only when `rows9`.
pub async fn node_scale_rows(rts: &mut [Runtime], plan: Plan, image: &str, rows9: bool) -> Vec<Row> {
    let mut results: PerRuntime<NodeScale> = BTreeMap::new();
    for k in order(rts.len(), 0) {
        let r = &mut rts[k];
        eprintln!("  {}: {} pods", r.name, plan.pods);
        results.insert(r.name, done(r.name, node_scale(r, plan, image).await));
    }
    let reached: Vec<usize> = results.values().flatten().map(|n| n.reached).collect();
    let common = reached.iter().copied().min().unwrap_or(plan.pods);
    if common > 0 && common < plan.pods {
        eprintln!(
            "  not every runtime reached {} pods; again at {common}, the count all reached",
            plan.pods
        );
        let again = Plan { pods: common, ..plan };
        for k in order(rts.len(), 1) {
            let r = &mut rts[k];
            if results
                .get(r.name)
                .is_some_and(|n| n.as_ref().is_ok_and(|n| n.reached > common))
            {
                results.insert(r.name, done(r.name, node_scale(r, again, image).await));
            }
        }
    }
    let names: Vec<&str> = rts.iter().map(|r| r.name).collect();
    let n = if common > 0 { common } else { plan.pods };
    let mut rows = Vec::new();
    if rows9 {
        rows.extend(scale_rows(&names, &results, plan, n));
    }
    if let Some(secs) = plan.steady_secs {
        let steady: PerRuntime<Steady> = results
            .iter()
            .map(|(k, v)| {
                let s = v
                    .clone()
                    .and_then(|n| n.steady.ok_or_else(|| Cell::NotMeasured("not run".into())));
                (*k, s)
            })
            .collect();
        rows.extend(steady_rows(&names, &steady, secs, n));
    }
    rows
}

/// A runtime's figures, or the cell its rows show: a failure is reported there (and on stderr)
/// rather than ending the benchmark, so the other runtime's figures still get written.
fn done<T>(runtime: &str, r: std::result::Result<T, Fail>) -> std::result::Result<T, Cell> {
    match r {
        Ok(v) => Ok(v),
        Err(Fail::Unsupported(m)) => Err(Cell::NotSupported(m)),
        Err(Fail::Other(e)) => {
            eprintln!("  {runtime}: failed: {e:#}");
            Err(Cell::NotMeasured(format!("failed: {e:#}")))
        }
    }
}

fn scale_rows(names: &[&str], results: &PerRuntime<NodeScale>, plan: Plan, n: usize) -> Vec<Row> {
    let k = plan.in_flight;
    let mut rows = value_rows(&[
        format!(
            "9. pods running (asked {}, start deadline {} s)",
            plan.pods,
            plan.start_deadline.as_secs()
        ),
        format!("9. {n} pods x 1 container to running, {k} in flight (wall)"),
        format!("9. daemon RSS with {n} pods"),
        format!("9. shims' total PSS, {n} pods"),
        format!("9. pod infra total PSS, {n} pods (containerd: busybox sh stand-in for pause)"),
        "9. per-pod overhead (shim + infra PSS per pod)".to_string(),
        format!("9. teardown of {n} pods, {k} in flight (wall)"),
    ]);
    for name in names {
        let cells = match &results[name] {
            Ok(s) => vec![
                Cell::Value(s.reached as f64, ""),
                Cell::Value(s.to_running.as_secs_f64(), "s"),
                Cell::Value(s.daemon_rss_kb as f64, "kB"),
                Cell::Value(s.shims_pss_kb as f64, "kB"),
                Cell::Value(s.infra_pss_kb as f64, "kB"),
                Cell::Value(s.per_pod_kb(), "kB"),
                Cell::Value(s.teardown.as_secs_f64(), "s"),
            ],
            Err(c) => vec![c.clone(); 7],
        };
        if let Ok(s) = &results[name]
            && let Some(why) = &s.shortfall
        {
            eprintln!("  {name}: reached {} of {}: {why}", s.reached, plan.pods);
        }
        push_cells(&mut rows, name, cells);
    }
    rows
}

/// The latency series of scenario 10, in report order.
const SERIES: [&str; 13] = [
    "ListPodSandbox",
    "ListContainers",
    poll::RELIST,
    "ListContainerStats",
    "ListPodSandboxStats",
    "ImageFsInfo",
    "PodSandboxStatus",
    "ListContainers (of a pod)",
    "ContainerStatus",
    poll::POD_STATUS,
    poll::FULL_PASS,
    poll::CONTROL_RPC,
    poll::CONTROL_WAKE,
];

fn steady_rows(names: &[&str], results: &PerRuntime<Steady>, secs: u64, n: usize) -> Vec<Row> {
    let mut rows = value_rows(&[
        format!("10. runtime CPU over {secs} s of kubelet-shaped polling, {n} pods (daemon + shims)"),
        "10. of which the daemon".to_string(),
        "10. of which shims and pod infra processes".to_string(),
    ]);
    for name in names {
        let cells = match &results[name] {
            Ok(s) => vec![
                Cell::Value(s.daemon_cpu_s + s.shims_cpu_s, "CPU s"),
                Cell::Value(s.daemon_cpu_s, "CPU s"),
                Cell::Value(s.shims_cpu_s, "CPU s"),
            ],
            Err(c) => vec![c.clone(); 3],
        };
        if let Ok(s) = &results[name] {
            for (rpc, e) in &s.failed {
                eprintln!("  {name}: {rpc} failed while polled (the loop went on without it): {e}");
            }
            for t in &s.slow {
                let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
                eprintln!(
                    "  {name}: relist {:.2} ms ({:.2} + {:.2}); at that tick Version took {:.2} ms and the timer woke {:.2} ms late; \
                     during the relist the daemon's threads waited {:.2} ms and the bench's {:.2} ms for a CPU, steal {:.0} ms, major faults {} + {}",
                    ms(t.relist),
                    ms(t.list_pods),
                    ms(t.list_containers),
                    ms(t.version),
                    ms(t.lateness),
                    ms(t.waits.daemon_queued),
                    ms(t.waits.bench_queued),
                    ms(t.waits.steal),
                    t.waits.daemon_major_faults,
                    t.waits.bench_major_faults
                );
            }
        }
        push_cells(&mut rows, name, cells);
    }
    for series in SERIES {
        let mut row = Row {
            what: format!("10. latency: {series}"),
            cells: Vec::new(),
        };
        for name in names {
            let cell = match &results[name] {
                Ok(s) if s.unsupported.contains(series) => Cell::NotSupported("UNIMPLEMENTED".into()),
                Ok(s) if !s.latencies.contains_key(series) && s.failed.contains_key(series) => {
                    Cell::NotMeasured(format!("failed: {}", s.failed[series]))
                }
                Ok(s) => s
                    .latencies
                    .get(series)
                    .and_then(|v| crate::stats::summarize(v))
                    .map_or(Cell::NotMeasured("no samples".into()), Cell::Tail),
                Err(c) => c.clone(),
            };
            row.cells.push((name.to_string(), cell));
        }
        rows.push(row);
    }
    rows
}

/// Scenario 11 on every runtime.
pub async fn churn_rows(rts: &mut [Runtime], pods: usize, in_flight: usize, image: &str) -> Vec<Row> {
    let mut results: PerRuntime<Churn> = BTreeMap::new();
    for k in order(rts.len(), 1) {
        let r = &mut rts[k];
        eprintln!("  {}: churn of {pods} pods", r.name);
        let res = done(r.name, churn::churn(r, pods, in_flight, image).await);
        if let Ok(c) = &res {
            eprintln!(
                "  {}: the audit saw with {} pods alive: {}",
                r.name,
                c.live_pods,
                c.seen_live.counts()
            );
            eprintln!(
                "  {}: leaked after {:.0} s of settling: {}; fds {:+}, threads {:+}, RSS {:+} kB{}",
                r.name,
                c.settled_after.as_secs_f64(),
                c.leaks.describe(usize::MAX),
                c.leaks.fds,
                c.leaks.threads,
                c.leaks.rss_kb,
                c.leaks
                    .redb_bytes
                    .map_or(String::new(), |b| format!(", redb {b:+} bytes"))
            );
        }
        results.insert(r.name, res);
    }
    let names: Vec<&str> = rts.iter().map(|r| r.name).collect();
    let mut whats = vec![format!(
        "11. churn of {pods} pods (create, start, stop, remove), {in_flight} in flight (wall)"
    )];
    whats.extend(KINDS.iter().map(|k| format!("11. leaked {k}")));
    whats.extend([
        "11. daemon open fds, after - before".to_string(),
        "11. daemon threads, after - before".to_string(),
        format!("11. daemon RSS growth after {pods} pods"),
        "11. redb file growth".to_string(),
        "11. what leaked".to_string(),
        format!("11. audit check: what it sees with {in_flight} pods alive"),
    ]);
    let mut rows = value_rows(&whats);
    for name in &names {
        let cells = match &results[name] {
            Ok(c) => {
                let l = &c.leaks;
                let mut cells = vec![Cell::Value(c.wall.as_secs_f64(), "s")];
                cells.extend(l.new.iter().map(|v| Cell::Value(v.len() as f64, "")));
                cells.push(Cell::Value(l.fds as f64, ""));
                cells.push(Cell::Value(l.threads as f64, ""));
                cells.push(Cell::Value(l.rss_kb as f64, "kB"));
                cells.push(l.redb_bytes.map_or(Cell::NotMeasured("crius only".into()), |b| {
                    Cell::Value(b as f64 / 1024.0, "KiB")
                }));
                cells.push(Cell::Text(l.describe(3)));
                cells.push(Cell::Text(c.seen_live.counts()));
                cells
            }
            Err(c) => vec![c.clone(); whats.len()],
        };
        push_cells(&mut rows, name, cells);
    }
    rows
}
