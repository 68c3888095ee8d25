//! Attach through the streaming server with the suite's own SPDY client: critest's `/bin/sh`
//! with stdin_once (write `echo -n hello`, read exactly `hello`, close stdin, the container
//! exits), several clients seeing the same live output, and a terminal container with resize
//! that survives a detach.

use std::time::Duration;

use crius_tests::containers::World;
use crius_tests::streaming::{RemoteCommand, Stdio};
use k8s_cri::v1::{AttachRequest, ContainerState};
use tonic::Code;

async fn attach_url(w: &mut World, id: &str, io: Stdio) -> Result<String, tonic::Status> {
    let req = AttachRequest {
        container_id: id.into(),
        stdin: io.stdin,
        tty: io.tty,
        stdout: io.stdout,
        stderr: io.stderr,
    };
    w.d.runtime.attach(req).await.map(|r| r.into_inner().url)
}

/// Sends `echo -n ping-<n>` through `writer` until `reader` has seen one, so both are known
/// to be connected to the container's live output (output from before a client connected is
/// not replayed to it, so the writer pings again while the reader sees nothing).
async fn until_both_attached(writer: &mut RemoteCommand, reader: &mut RemoteCommand) {
    for n in 0..400 {
        writer.write(format!("echo -n ping-{n}\n").as_bytes()).await;
        let out = reader.stdout.as_mut().unwrap();
        if let Ok(chunk) = tokio::time::timeout(Duration::from_millis(250), out.next()).await {
            reader.seen.extend(chunk.expect("output continues"));
            if String::from_utf8_lossy(&reader.seen).contains("ping-") {
                return;
            }
        }
    }
    panic!("the second client never saw output");
}

#[tokio::test]
async fn attach_stdin_once_fan_out_and_terminal_resize() {
    let mut w = World::new().await.unwrap();

    // critest's shell container: stdin + stdin_once, no terminal.
    let mut cfg = w.config("shell", &["/bin/sh"]);
    cfg.stdin = true;
    cfg.stdin_once = true;
    let id = w.create(cfg).await.unwrap();
    assert_eq!(
        attach_url(
            &mut w,
            &id,
            Stdio {
                stdout: true,
                ..Default::default()
            }
        )
        .await
        .unwrap_err()
        .code(),
        Code::FailedPrecondition,
        "a created container cannot be attached"
    );
    w.start(&id).await.unwrap();

    let io = Stdio {
        stdin: true,
        stdout: true,
        stderr: true,
        tty: false,
    };
    let url = attach_url(&mut w, &id, io).await.unwrap();
    assert!(url.contains("/attach/"), "{url}");
    let mut a = RemoteCommand::start(&url, io).await.unwrap();
    let watch_io = Stdio { stdin: false, ..io };
    let url = attach_url(&mut w, &id, watch_io).await.unwrap();
    let mut b = RemoteCommand::start(&url, watch_io).await.unwrap();
    until_both_attached(&mut a, &mut b).await;
    let a_before = a.seen.len();
    let b_before = b.seen.len();
    // Let the pings drain, then ask for exactly hello.
    a.write(b"echo -n done-pinging\n").await;
    a.read_stdout_until(|s| s.ends_with("done-pinging")).await;
    b.read_stdout_until(|s| s.ends_with("done-pinging")).await;
    let (a_mark, b_mark) = (a.seen.len(), b.seen.len());
    assert!(a_mark > a_before && b_mark > b_before);
    a.write(b"echo -n hello\n").await;
    let got_a = a.read_stdout_until(|s| s.len() >= a_mark + 5).await;
    let got_b = b.read_stdout_until(|s| s.len() >= b_mark + 5).await;
    assert_eq!(&got_a[a_mark..], "hello");
    assert_eq!(&got_b[b_mark..], "hello", "every attached client sees the output");

    // stdin_once: the first client's stdin ends, the container's stdin closes, sh exits.
    a.close_stdin().await;
    let fa = a.finish().await;
    let fb = b.finish().await;
    assert!(fa.stderr.is_empty() && fb.stderr.is_empty());
    assert_eq!(fa.exit_code(), 0);
    assert_eq!(fb.exit_code(), 0);
    let st = w.wait_exited(&id).await.unwrap();
    assert_eq!(st.exit_code, 0, "sh read EOF and exited cleanly");
    assert_eq!(
        attach_url(&mut w, &id, io).await.unwrap_err().code(),
        Code::FailedPrecondition
    );

    // A terminal container: resize goes to the pty; a detach leaves it running.
    let mut cfg = w.config("term", &["/bin/sh"]);
    cfg.stdin = true;
    cfg.tty = true;
    let term = w.create(cfg).await.unwrap();
    w.start(&term).await.unwrap();
    let tio = Stdio {
        stdin: true,
        stdout: true,
        stderr: false,
        tty: true,
    };
    let bad = Stdio { stderr: true, ..tio };
    assert_eq!(
        attach_url(&mut w, &term, bad).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let url = attach_url(&mut w, &term, tio).await.unwrap();
    let mut c = RemoteCommand::start(&url, tio).await.unwrap();
    c.resize(123, 45).await;
    let mut n = 0;
    while !String::from_utf8_lossy(&c.seen).contains("45 123") {
        n += 1;
        assert!(
            n < 200,
            "size never showed: {:?}",
            String::from_utf8_lossy(&c.seen)
        );
        c.write(b"stty size\n").await;
        // Every line typed is echoed, so there is always a next chunk.
        let chunk = c
            .stdout
            .as_mut()
            .unwrap()
            .next()
            .await
            .expect("terminal output continues");
        c.seen.extend_from_slice(&chunk);
    }
    drop(c);
    assert_eq!(
        w.state(&term).await.state,
        ContainerState::ContainerRunning as i32,
        "detach keeps it running"
    );

    let url = attach_url(&mut w, &term, tio).await.unwrap();
    let d = RemoteCommand::start(&url, tio).await.unwrap();
    d.write(b"exit 5\n").await;
    let f = d.finish().await;
    assert_eq!(
        f.exit_code(),
        0,
        "attach itself succeeds when the container exits"
    );
    assert_eq!(w.wait_exited(&term).await.unwrap().exit_code, 5);

    w.teardown().await.unwrap();
}
