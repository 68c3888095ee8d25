//! A container writing as fast as it can (`yes` on stdout, on stderr, through a terminal) does
//! not starve its shim's control socket: ContainerStatus, ReopenContainerLog and ExecSync answer
//! while it runs, StopContainer finishes within its grace period + 2 s, and the CRI log (before
//! and after the reopen) holds only whole, well-formed records.

use std::io::BufRead;
use std::path::Path;
use std::time::{Duration, Instant};

use crius_tests::containers::World;
use crius_tests::pods::PodCleanup;
use k8s_cri::v1::*;

/// How long one control RPC may take while the container floods its output.
const ANSWER: Duration = Duration::from_secs(5);
const GRACE_SECONDS: i64 = 2;

/// Answers `f` within [`ANSWER`], or fails naming `what`.
async fn answered<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    let t = Instant::now();
    let v = tokio::time::timeout(ANSWER, f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not answer within {ANSWER:?} during the flood"));
    eprintln!("{what}: {:?}", t.elapsed());
    v
}

/// `2026-11-27T07:08:09.123456789Z`
fn is_rfc3339_nano(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 30
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            29 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// Checks every record of a CRI log file, streaming (the file may be hundreds of MB); returns
/// the number of records. Every record's text is `y`, and every one is `F` but possibly the
/// last: `yes` killed in the middle of a write may leave a `y` without its newline.
fn check_log(path: &Path, stream: &str) -> u64 {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut n = 0;
    let mut partial_at = None;
    for (i, line) in std::io::BufReader::with_capacity(1 << 20, f)
        .split(b'\n')
        .enumerate()
    {
        let line = line.unwrap();
        let text = String::from_utf8_lossy(&line);
        let mut p = text.splitn(4, ' ');
        let (t, s, tag, body) = (p.next(), p.next(), p.next(), p.next());
        let ok = t.is_some_and(is_rfc3339_nano)
            && s == Some(stream)
            && matches!(tag, Some("F" | "P"))
            && body == Some("y");
        assert!(ok, "{} record {i} is torn or malformed: {text:?}", path.display());
        assert_eq!(
            partial_at,
            None,
            "{}: a P record before record {i}",
            path.display()
        );
        if tag == Some("P") {
            partial_at = Some(i);
        }
        n += 1;
    }
    n
}

/// Runs `cmd` (with a terminal when `tty`), exercises the control RPCs during the flood, stops
/// it and checks its logs.
async fn flood(w: &mut World, name: &str, cmd: &[&str], tty: bool, stream: &str) {
    let mut config = w.config(name, cmd);
    config.tty = tty;
    let id = w.create(config).await.expect("create");
    w.start(&id).await.expect("start");
    let log = w.log_dir.join(format!("{name}.log"));
    let rotated = w.log_dir.join(format!("{name}.log.1"));
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let st = answered("ContainerStatus", w.status(&id)).await.expect("status");
    assert_eq!(st.status.unwrap().state, ContainerState::ContainerRunning as i32);
    std::fs::rename(&log, &rotated).unwrap();
    let req = ReopenContainerLogRequest {
        container_id: id.clone(),
    };
    answered("ReopenContainerLog", w.d.runtime.reopen_container_log(req))
        .await
        .expect("reopen");
    let out = answered("ExecSync", w.exec(&id, &["echo", "still here"], 10))
        .await
        .expect("exec");
    assert_eq!(
        (out.exit_code, out.stdout.as_slice()),
        (0, b"still here\n".as_slice())
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    let t = Instant::now();
    w.stop(&id, GRACE_SECONDS).await.expect("stop");
    let took = t.elapsed();
    eprintln!("{name}: StopContainer took {took:?}");
    assert!(
        took <= Duration::from_secs(GRACE_SECONDS as u64 + 2),
        "{name}: StopContainer took {took:?}"
    );
    let s = w.state(&id).await;
    assert_eq!(s.state, ContainerState::ContainerExited as i32, "{s:?}");

    let before = check_log(&rotated, stream);
    let after = check_log(&log, stream);
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "{name}: {before} records ({} B) before the reopen, {after} ({} B) after",
        size(&rotated),
        size(&log)
    );
    assert!(before > 0 && after > 0, "the flood reached both files");
    w.remove(&id).await.expect("remove");
    // The logs can be large: give the space back before the next case.
    std::fs::remove_file(&rotated).unwrap();
    std::fs::remove_file(&log).unwrap();
}

#[tokio::test]
async fn yes_on_stdout_stderr_and_tty_never_starves_the_shim() {
    let mut w = World::new().await.unwrap();
    let _clean = PodCleanup::new(&w.d);
    flood(&mut w, "stdout", &["yes"], false, "stdout").await;
    flood(&mut w, "stderr", &["sh", "-c", "exec yes >&2"], false, "stderr").await;
    // A terminal merges both streams into stdout; the shim drops the pty's `\r`.
    flood(&mut w, "tty", &["yes"], true, "stdout").await;
    w.teardown().await.unwrap();
}
