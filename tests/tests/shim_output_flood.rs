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

/// What the container of the full-disk case runs: a numbered 1000-byte line about every
/// millisecond on stdout, and the number in /tmp/n, so ExecSync can tell it is still going.
const WRITER: &str = "L=$(head -c 1000 /dev/zero | tr '\\000' x); i=0; \
    while :; do i=$((i+1)); echo \"$i $L\"; echo $i > /tmp/n; usleep 1000; done";

/// The WRITER's line count so far, read inside the container (again when the read fell between
/// the writer's truncation of /tmp/n and its write).
async fn lines_written(w: &mut World, id: &str) -> u64 {
    for _ in 0..20 {
        let out = answered("ExecSync", w.exec(id, &["cat", "/tmp/n"], 10))
            .await
            .expect("exec");
        if let Ok(n) = String::from_utf8_lossy(&out.stdout).trim().parse() {
            return n;
        }
    }
    panic!("/tmp/n never held a number");
}

/// Checks that every record of a WRITER log is whole; returns how many there are.
fn check_writer_log(path: &Path) -> usize {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let filler = "x".repeat(1000);
    for (i, line) in text.lines().enumerate() {
        let mut p = line.splitn(5, ' ');
        let ok = p.next().is_some_and(is_rfc3339_nano)
            && p.next() == Some("stdout")
            && p.next() == Some("F")
            && p.next().is_some_and(|n| n.parse::<u64>().is_ok())
            && p.next() == Some(filler.as_str());
        assert!(ok, "{} record {i} is torn or malformed: {line:?}", path.display());
    }
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{}: a torn last record",
        path.display()
    );
    text.lines().count()
}

/// Waits up to 30 s until the file system at `dir` has less than 64 KiB left.
async fn wait_full(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = nix::sys::statvfs::statvfs(dir).expect("statvfs");
        let free = st.blocks_available() as u64 * st.fragment_size() as u64;
        if free < 64 * 1024 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} still has {free} bytes free",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A full log disk costs log records, never the container: its output goes on being drained
/// (it does not block on a full pipe), the shim answers and says once that records are being
/// dropped, the file holds only whole records, and once the space is back and the log reopened,
/// records are written again.
#[tokio::test]
async fn a_full_log_disk_drops_records_and_the_container_goes_on() {
    let mut w = World::new().await.unwrap();
    let _clean = PodCleanup::new(&w.d);
    // 1 MiB for the pod's logs; the daemon's drop unmounts it whatever happens.
    nix::mount::mount(
        Some("tmpfs"),
        &w.log_dir,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=1m,mode=0755"),
    )
    .expect("a small tmpfs on the pod's log directory");
    let id = w.run("writer", &["sh", "-c", WRITER]).await;
    let log = w.log_dir.join("writer.log");
    let shim_log = w.d.state.join("containers").join(&id).join("shim/shim.log");
    wait_full(&w.log_dir).await;

    let before = lines_written(&mut w, &id).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = lines_written(&mut w, &id).await;
    eprintln!("lines written with the log disk full: {before} then {after} a second later");
    assert!(
        after > before + 100,
        "the container goes on writing with its log disk full: {before} then {after}"
    );
    assert_eq!(w.state(&id).await.state, ContainerState::ContainerRunning as i32);
    let kept = check_writer_log(&log);
    let said = std::fs::read_to_string(&shim_log).unwrap();
    assert_eq!(
        said.matches("dropping records").count(),
        1,
        "the shim says once that records are dropped: {said:?}"
    );
    eprintln!("{kept} whole records on the full disk of {after} lines");

    // The space comes back: the old file goes, the log is reopened, records are written again.
    std::fs::remove_file(&log).unwrap();
    let req = ReopenContainerLogRequest {
        container_id: id.clone(),
    };
    answered("ReopenContainerLog", w.d.runtime.reopen_container_log(req))
        .await
        .expect("reopen");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let resumed = check_writer_log(&log);
    assert!(resumed > 0, "records are written again after the reopen");
    let said = std::fs::read_to_string(&shim_log).unwrap();
    assert!(
        said.contains("writing again"),
        "the shim says records flow again: {said:?}"
    );

    w.stop(&id, GRACE_SECONDS).await.expect("stop");
    w.remove(&id).await.expect("remove");
    nix::mount::umount2(&w.log_dir, nix::mount::MntFlags::MNT_DETACH).expect("umount");
    w.teardown().await.unwrap();
}
