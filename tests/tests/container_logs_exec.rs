//! CRI logs written by the shim and ExecSync through the exec helper, via the real daemon:
//! stdout and stderr records, a 40 KiB line split into `P` records, a reopen after rotation,
//! exec output and exit codes, and an exec timeout that kills the process.

use std::time::Duration;

use crius_tests::containers::{World, log_lines, read_log};
use crius_tests::util;
use tonic::Code;

#[tokio::test]
async fn stdout_stderr_long_lines_and_reopen() {
    let mut w = World::new().await.unwrap();
    let script = "echo hello World; echo oops >&2; head -c 40960 /dev/zero | tr '\\0' x; echo; \
                  printf tail-without-newline";
    let id = w.run("logger", &["sh", "-c", script]).await;
    let s = w.wait_exited(&id).await.unwrap();
    assert_eq!(s.exit_code, 0);
    let log = std::path::PathBuf::from(&s.log_path);
    assert_eq!(log, w.log_dir.join("logger.log"));
    let recs = read_log(&log);
    for r in &recs {
        assert!(
            r.time.ends_with('Z') && r.time.contains('T'),
            "RFC3339Nano UTC: {r:?}"
        );
        assert!(r.tag == "F" || r.tag == "P", "{r:?}");
        assert!(r.text.len() <= 16 * 1024, "records stay within 16 KiB");
    }
    let out = log_lines(&recs, "stdout");
    assert_eq!(out[0], "hello World");
    assert_eq!(out[1], "x".repeat(40960));
    assert_eq!(out[2], "tail-without-newline");
    assert_eq!(log_lines(&recs, "stderr"), ["oops"]);
    let long: Vec<_> = recs
        .iter()
        .filter(|r| r.text.starts_with('x'))
        .map(|r| r.tag.as_str())
        .collect();
    assert_eq!(long, ["P", "P", "F"]);
    // stdout and stderr are separate pipes, so "oops" may be logged before or after it.
    let tail = recs.iter().find(|r| r.text == "tail-without-newline").unwrap();
    assert_eq!(tail.tag, "P", "an unterminated last fragment is partial");

    // Reopen: only for a running container; after rotation the shim writes a fresh file.
    assert_eq!(
        w.d.runtime
            .reopen_container_log(k8s_cri::v1::ReopenContainerLogRequest {
                container_id: id.clone()
            })
            .await
            .unwrap_err()
            .code(),
        Code::FailedPrecondition
    );
    let ticker = w
        .run(
            "ticker",
            &[
                "sh",
                "-c",
                "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.05; done",
            ],
        )
        .await;
    let tlog = w.log_dir.join("ticker.log");
    wait_for(|| !read_log(&tlog).is_empty()).await;
    let rotated = w.log_dir.join("ticker.log.1");
    std::fs::rename(&tlog, &rotated).unwrap();
    w.d.runtime
        .reopen_container_log(k8s_cri::v1::ReopenContainerLogRequest {
            container_id: ticker.clone(),
        })
        .await
        .unwrap();
    wait_for(|| !read_log(&tlog).is_empty()).await;
    let old_len = std::fs::metadata(&rotated).unwrap().len();
    wait_for(|| read_log(&tlog).len() >= 3).await;
    assert_eq!(
        std::fs::metadata(&rotated).unwrap().len(),
        old_len,
        "the old file stopped growing"
    );
    let first_new = &log_lines(&read_log(&tlog), "stdout")[0];
    let last_old = log_lines(&read_log(&rotated), "stdout").pop().unwrap();
    let n = |s: &str| s.trim_start_matches("tick ").parse::<u64>().unwrap();
    assert_eq!(
        n(first_new),
        n(&last_old) + 1,
        "no line lost or repeated across the reopen"
    );
    w.teardown().await.unwrap();
}

async fn wait_for(mut f: impl FnMut() -> bool) {
    for _ in 0..600 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition not reached within 30 s");
}

#[tokio::test]
async fn exec_output_exit_codes_and_timeout() {
    let mut w = World::new().await.unwrap();
    let id = w.run("execme", &["sleep", "1000"]).await;

    let r = w.exec(&id, &["echo", "-n", "hello"], 0).await.unwrap();
    assert_eq!(
        (r.stdout.as_slice(), r.stderr.as_slice(), r.exit_code),
        (&b"hello"[..], &b""[..], 0)
    );
    let r = w
        .exec(&id, &["sh", "-c", "echo out; echo err >&2; exit 42"], 10)
        .await
        .unwrap();
    assert_eq!(
        (r.stdout.as_slice(), r.stderr.as_slice(), r.exit_code),
        (&b"out\n"[..], &b"err\n"[..], 42)
    );
    let r = w.exec(&id, &["sh", "-c", "kill -9 $$"], 10).await.unwrap();
    assert_eq!(r.exit_code, 137);
    // The exec runs in the container: same hostname, its env (HOME from the image's passwd),
    // its PID namespace.
    let r = w
        .exec(
            &id,
            &[
                "sh",
                "-c",
                "hostname; echo $PATH; echo HOME=$HOME; cat /proc/1/cmdline",
            ],
            10,
        )
        .await
        .unwrap();
    let out = String::from_utf8(r.stdout).unwrap();
    assert!(out.starts_with("ctr-pod\n"), "{out}");
    assert!(out.contains("\nHOME=/root\n"), "{out}");
    assert!(out.contains("/usr/bin") && out.contains("sleep"), "{out}");
    let missing = w.exec(&id, &["/no/such/binary"], 10).await.unwrap_err();
    assert!(
        missing.message().contains("/no/such/binary"),
        "{}",
        missing.message()
    );

    let marker = "sleep 7777";
    let t = w
        .exec(&id, &["sh", "-c", "exec sleep 7777"], 1)
        .await
        .unwrap_err();
    assert_eq!(t.code(), Code::DeadlineExceeded);
    wait_for(|| util::pids_mentioning(marker).is_empty()).await;
    let still = w.exec(&id, &["ps", "-o", "args"], 10).await.unwrap();
    let procs = String::from_utf8(still.stdout).unwrap();
    assert!(!procs.contains(marker), "the timed-out exec was killed: {procs}");

    w.stop(&id, 0).await.unwrap();
    let stopped = w.exec(&id, &["true"], 10).await.unwrap_err();
    assert_eq!(stopped.code(), Code::FailedPrecondition);
    w.teardown().await.unwrap();
}
