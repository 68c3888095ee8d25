//! Exec through the streaming server with the suite's own SPDY client, against a real daemon and
//! container: exact output and exit codes, stdin half-close, a terminal with stdin and resizes,
//! a client that goes away (its process is killed), and the RPC's refusals.

use crius_tests::containers::World;
use crius_tests::streaming::{RemoteCommand, Stdio, bounded};
use k8s_cri::v1::ExecRequest;
use tonic::Code;

const OUT: Stdio = Stdio {
    stdin: false,
    stdout: true,
    stderr: true,
    tty: false,
};

async fn exec_url(w: &mut World, id: &str, cmd: &[&str], io: Stdio) -> Result<String, tonic::Status> {
    let req = ExecRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty: io.tty,
        stdin: io.stdin,
        stdout: io.stdout,
        stderr: io.stderr,
    };
    w.d.runtime.exec(req).await.map(|r| r.into_inner().url)
}

/// Processes in the container whose command line contains `needle` (ExecSync + ps).
async fn procs_with(w: &mut World, id: &str, needle: &str) -> Vec<String> {
    let r = w.exec(id, &["ps", "-o", "pid,args"], 30).await.expect("ps");
    String::from_utf8_lossy(&r.stdout)
        .lines()
        .filter(|l| l.contains(needle) && !l.contains("ps -o"))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn exec_streams_output_exit_codes_terminal_and_resize() {
    let mut w = World::new().await.unwrap();
    let id = w.run("target", &["sleep", "3600"]).await;

    // critest: exact stdout, empty stderr, Success.
    let url = exec_url(&mut w, &id, &["echo", "-n", "hello"], OUT)
        .await
        .unwrap();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.contains("/exec/"),
        "{url}"
    );
    let f = RemoteCommand::start(&url, OUT).await.unwrap().finish().await;
    assert_eq!(String::from_utf8_lossy(&f.stdout), "hello");
    assert!(f.stderr.is_empty(), "{:?}", f.stderr);
    assert_eq!(f.status["status"], "Success");

    // A non-zero exit is a NonZeroExitCode status carrying the code; stderr is its own stream.
    let cmd = ["sh", "-c", "echo -n partial; echo -n oops >&2; exit 3"];
    let url = exec_url(&mut w, &id, &cmd, OUT).await.unwrap();
    let f = RemoteCommand::start(&url, OUT).await.unwrap().finish().await;
    assert_eq!(
        (f.stdout.as_slice(), f.stderr.as_slice()),
        (&b"partial"[..], &b"oops"[..])
    );
    assert_eq!(f.exit_code(), 3);

    // stdin without a terminal: the client's half-close is the process's EOF.
    let io = Stdio { stdin: true, ..OUT };
    let url = exec_url(&mut w, &id, &["cat"], io).await.unwrap();
    let rc = RemoteCommand::start(&url, io).await.unwrap();
    rc.write(b"line one\n").await;
    rc.write(b"line two").await;
    rc.close_stdin().await;
    let f = rc.finish().await;
    assert_eq!(String::from_utf8_lossy(&f.stdout), "line one\nline two");
    assert_eq!(f.exit_code(), 0);

    // critest: tty + stdin; the process has a terminal and reads what the client types.
    let tty = Stdio {
        stdin: true,
        stdout: true,
        stderr: false,
        tty: true,
    };
    let url = exec_url(
        &mut w,
        &id,
        &["sh", "-c", "tty; read x; echo got-$x; exit 4"],
        tty,
    )
    .await
    .unwrap();
    let mut rc = RemoteCommand::start(&url, tty).await.unwrap();
    assert!(rc.stderr.is_none(), "a terminal has no stderr stream");
    rc.read_stdout_until(|s| s.contains("/dev/pts/")).await;
    rc.write(b"abc\n").await;
    let f = rc.finish().await;
    let out = String::from_utf8_lossy(&f.stdout).into_owned();
    assert!(out.contains("got-abc\r\n"), "terminal output uses CRLF: {out:?}");
    assert_eq!(f.exit_code(), 4);

    // Resize: every newline prints the terminal size the client last set.
    let cmd = [
        "sh",
        "-c",
        "while read x; do echo line; stty size; echo rc=$?; done; : resize-marker",
    ];
    let url = exec_url(&mut w, &id, &cmd, tty).await.unwrap();
    let mut rc = RemoteCommand::start(&url, tty).await.unwrap();
    for (width, height) in [(123u16, 45u16), (80, 10)] {
        rc.resize(width, height).await;
        let want = format!("{height} {width}\r\n");
        // A hang guard, not a timing check: the echo of each newline comes back at once, while
        // `stty` is a fork and exec away, so newlines are paced and the wait is bounded in time.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !String::from_utf8_lossy(&rc.seen).contains(&want) {
            assert!(
                std::time::Instant::now() < deadline,
                "size {want:?} never showed: {:?}",
                String::from_utf8_lossy(&rc.seen)
            );
            rc.write(b"\n").await;
            let out = rc.stdout.as_mut().unwrap();
            let chunk = out.next().await.expect("output continues");
            rc.seen.extend_from_slice(&chunk);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    // (a forked child may briefly carry the same command line before it execs stty)
    assert!(!procs_with(&mut w, &id, "resize-marker").await.is_empty());

    // The client goes away mid-exec: the exec'd process is killed, nothing is left running.
    drop(rc);
    bounded("exec process killed after the client left", async {
        while !procs_with(&mut w, &id, "resize-marker").await.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;
    let leftovers: Vec<_> = std::fs::read_dir(w.d.state.join("containers").join(&id).join("shim"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("exec-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "console sockets and scratch files are removed: {leftovers:?}"
    );

    // Refusals at the RPC.
    let both = Stdio { tty: true, ..OUT };
    assert_eq!(
        exec_url(&mut w, &id, &["true"], both).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let none = Stdio::default();
    assert_eq!(
        exec_url(&mut w, &id, &["true"], none).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(
        exec_url(&mut w, &id, &[], OUT).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let unknown = "0".repeat(64);
    assert_eq!(
        exec_url(&mut w, &unknown, &["true"], OUT)
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    let done = w.run("done", &["true"]).await;
    w.wait_exited(&done).await.unwrap();
    assert_eq!(
        exec_url(&mut w, &done, &["true"], OUT).await.unwrap_err().code(),
        Code::FailedPrecondition
    );

    w.teardown().await.unwrap();
}
