//! The OCI runtime command line (runc, crun): the argv of each verb the shim uses, and running
//! one call with a timeout and its output captured.
//!
//! Invariants: every call is bounded by a timeout (the runtime is SIGKILLed past it); what the
//! runtime prints is read while it runs and kept only up to [`OUTPUT_CAP`] bytes per stream, so
//! a chatty or hung runtime can neither block the shim nor grow its memory; a failure's error
//! message carries the runtime's stderr (and its log file's messages) so the daemon's error
//! says why.

use std::ffi::OsString;
use std::io::Read;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crius_shim_api::OciRuntime;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// The most bytes kept of a call's stdout and of its stderr.
pub const OUTPUT_CAP: usize = 16 * 1024;
/// How long `create` may take (it sets up namespaces, mounts and cgroups).
pub const CREATE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the other verbs may take.
pub const VERB_TIMEOUT: Duration = Duration::from_secs(10);
/// The runtime's own log, in the shim dir (JSON lines; its messages end up in error messages).
pub const RUNTIME_LOG: &str = "runtime.log";

/// One runtime, as the argv builder needs it.
pub struct Cli<'a> {
    pub rt: &'a OciRuntime,
    /// `--systemd-cgroup`: the spec's cgroupsPath is `<slice>:<prefix>:<name>`.
    pub systemd: bool,
    /// The runtime's log file (`--log`, `--log-format json`).
    pub log: Option<&'a Path>,
}

impl Cli<'_> {
    fn global(&self) -> Vec<OsString> {
        let mut v: Vec<OsString> = vec!["--root".into(), self.rt.root.clone().into()];
        if let Some(log) = self.log {
            v.extend(["--log".into(), log.into(), "--log-format".into(), "json".into()]);
        }
        if self.systemd {
            v.push("--systemd-cgroup".into());
        }
        v
    }

    fn with(&self, verb: &[OsString]) -> Vec<OsString> {
        let mut v = self.global();
        v.extend_from_slice(verb);
        v
    }

    /// `create --bundle B --pid-file P [--console-socket S] ID`
    pub fn create(&self, id: &str, bundle: &Path, pid_file: &Path, console: Option<&Path>) -> Vec<OsString> {
        let mut verb: Vec<OsString> = vec![
            "create".into(),
            "--bundle".into(),
            bundle.into(),
            "--pid-file".into(),
            pid_file.into(),
        ];
        if let Some(s) = console {
            verb.extend(["--console-socket".into(), s.into()]);
        }
        verb.push(id.into());
        self.with(&verb)
    }

    pub fn start(&self, id: &str) -> Vec<OsString> {
        self.with(&["start".into(), id.into()])
    }

    /// `kill [--all] ID SIGNAL` (the signal as a number, which runc and crun both take).
    pub fn kill(&self, id: &str, signal: i32, all: bool) -> Vec<OsString> {
        let mut verb: Vec<OsString> = vec!["kill".into()];
        if all {
            verb.push("--all".into());
        }
        verb.extend([id.into(), signal.to_string().into()]);
        self.with(&verb)
    }

    pub fn delete(&self, id: &str) -> Vec<OsString> {
        self.with(&["delete".into(), "--force".into(), id.into()])
    }

    pub fn state(&self, id: &str) -> Vec<OsString> {
        self.with(&["state".into(), id.into()])
    }

    /// `exec --detach --pid-file P --process J [--console-socket S] ID`: the process's terminal
    /// comes from `process.terminal` in J; detached, the runtime passes its own stdio to the
    /// process (no terminal) and exits once the process runs.
    pub fn exec(&self, id: &str, process: &Path, pid_file: &Path, console: Option<&Path>) -> Vec<OsString> {
        let mut verb: Vec<OsString> = vec![
            "exec".into(),
            "--detach".into(),
            "--pid-file".into(),
            pid_file.into(),
            "--process".into(),
            process.into(),
        ];
        if let Some(s) = console {
            verb.extend(["--console-socket".into(), s.into()]);
        }
        verb.push(id.into());
        self.with(&verb)
    }

    pub fn command(&self, args: Vec<OsString>) -> Command {
        let mut c = Command::new(&self.rt.path);
        c.args(args);
        c
    }
}

/// What one call printed and how it ended.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Runs `cmd` (stdin /dev/null, stdout and stderr captured) within `timeout`. `Err` says what
/// went wrong, including the runtime's stderr when it failed.
pub fn run(rt: &OciRuntime, mut cmd: Command, verb: &str, timeout: Duration) -> Result<Output, String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = run_captured(rt, cmd, verb, timeout)?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(failure(rt, verb, &out.status, &out.stderr, None))
    }
}

/// Spawns `cmd` and waits for it within `timeout`, reading whichever of stdout and stderr were
/// piped (capped). Exit status is returned as is.
pub fn run_captured(
    rt: &OciRuntime,
    mut cmd: Command,
    verb: &str,
    timeout: Duration,
) -> Result<Output, String> {
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {} {verb}: {e}", rt.path.display()))?;
    drop(cmd);
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut err = Vec::new();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    for fd in [stdout.as_ref().map(AsFd::as_fd), stderr.as_ref().map(AsFd::as_fd)]
        .into_iter()
        .flatten()
    {
        crate::proc_setup::set_nonblocking(&fd).map_err(|e| format!("{} {verb}: {e}", rt.path.display()))?;
    }
    while stdout.is_some() || stderr.is_some() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out(rt, verb, timeout, child));
        }
        let mut fds = Vec::new();
        if let Some(s) = &stdout {
            fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
        }
        if let Some(s) = &stderr {
            fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
        }
        let ms = PollTimeout::try_from(left.min(Duration::from_millis(100))).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, ms) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(format!("{} {verb}: poll: {e}", rt.path.display())),
        }
        if stdout.as_mut().is_some_and(|s| !read_some(s, &mut out)) {
            stdout = None;
        }
        if stderr.as_mut().is_some_and(|s| !read_some(s, &mut err)) {
            stderr = None;
        }
    }
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                return Ok(Output {
                    status,
                    stdout: out,
                    stderr: err,
                });
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            Ok(None) => return Err(timed_out(rt, verb, timeout, child)),
            Err(e) => return Err(format!("{} {verb}: wait: {e}", rt.path.display())),
        }
    }
}

/// Reads what is there without blocking (the fd is non-blocking); false at EOF or on error.
/// Keeps up to the cap and drops the rest.
fn read_some(src: &mut impl Read, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 4096];
    loop {
        match src.read(&mut chunk) {
            Ok(0) => return false,
            Ok(n) => {
                let room = OUTPUT_CAP.saturating_sub(buf.len());
                buf.extend_from_slice(&chunk[..n.min(room)]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// Reads what `fd` holds now (it is made non-blocking), up to the cap.
pub fn drain(fd: &std::os::fd::OwnedFd, buf: &mut Vec<u8>) {
    if crate::proc_setup::set_nonblocking(fd).is_err() {
        return;
    }
    if let Ok(dup) = fd.try_clone() {
        read_some(&mut std::fs::File::from(dup), buf);
    }
}

fn timed_out(rt: &OciRuntime, verb: &str, timeout: Duration, mut child: Child) -> String {
    let _ = child.kill();
    let _ = child.wait();
    format!(
        "{} {verb} did not finish within {timeout:?}; killed",
        rt.path.display()
    )
}

/// `<runtime> <verb> failed (exit status 1): <stderr>; log: <messages>`, one line.
pub fn failure(
    rt: &OciRuntime,
    verb: &str,
    status: &ExitStatus,
    stderr: &[u8],
    log: Option<&Path>,
) -> String {
    let mut msg = format!("{} {verb} failed ({status})", rt.path.display());
    let text = one_line(&String::from_utf8_lossy(stderr));
    if !text.is_empty() {
        msg.push_str(": ");
        msg.push_str(&text);
    }
    if let Some(logged) = log
        .map(log_messages)
        .filter(|m| !m.is_empty() && !text.contains(m.as_str()))
    {
        msg.push_str("; runtime log: ");
        msg.push_str(&logged);
    }
    msg
}

/// The `msg` of each JSON line of the runtime's log (the last [`OUTPUT_CAP`] bytes of it).
pub fn log_messages(path: &Path) -> String {
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = std::io::Seek::seek(
        &mut f,
        std::io::SeekFrom::Start(len.saturating_sub(OUTPUT_CAP as u64)),
    );
    let mut body = Vec::new();
    let _ = f.take(OUTPUT_CAP as u64).read_to_end(&mut body);
    String::from_utf8_lossy(&body)
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            let level = v.get("level").and_then(|x| x.as_str()).unwrap_or("");
            matches!(level, "error" | "fatal" | "warning" | "warn")
                .then(|| v.get("msg").and_then(|m| m.as_str()).map(str::to_string))
                .flatten()
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn one_line(s: &str) -> String {
    s.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Reads a pid file the runtime wrote (a decimal number, a few bytes).
pub fn read_pid_file(path: &Path) -> Result<i32, String> {
    let mut body = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(64).read_to_string(&mut body))
        .map_err(|e| format!("read pid file {}: {e}", path.display()))?;
    body.trim()
        .parse::<i32>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("pid file {} holds {body:?}, not a pid", path.display()))
}

/// The pid file of one call in `dir`.
pub fn pid_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.pid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> OciRuntime {
        OciRuntime {
            handler: "runc".into(),
            path: "/usr/sbin/runc".into(),
            root: "/run/crius/runtimes/runc".into(),
        }
    }

    fn s(v: Vec<OsString>) -> Vec<String> {
        v.into_iter().map(|a| a.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn argv_of_every_verb() {
        let rt = rt();
        let log = Path::new("/s/runtime.log");
        let cli = Cli {
            rt: &rt,
            systemd: false,
            log: Some(log),
        };
        let g = "--root /run/crius/runtimes/runc --log /s/runtime.log --log-format json";
        let j = |v: Vec<OsString>| s(v).join(" ");
        assert_eq!(
            j(cli.create("c1", Path::new("/b"), Path::new("/s/init.pid"), None)),
            format!("{g} create --bundle /b --pid-file /s/init.pid c1")
        );
        assert_eq!(
            j(cli.create(
                "c1",
                Path::new("/b"),
                Path::new("/p"),
                Some(Path::new("/s/c.sock"))
            )),
            format!("{g} create --bundle /b --pid-file /p --console-socket /s/c.sock c1")
        );
        assert_eq!(j(cli.start("c1")), format!("{g} start c1"));
        assert_eq!(j(cli.kill("c1", 15, false)), format!("{g} kill c1 15"));
        assert_eq!(j(cli.kill("c1", 9, true)), format!("{g} kill --all c1 9"));
        assert_eq!(j(cli.delete("c1")), format!("{g} delete --force c1"));
        assert_eq!(j(cli.state("c1")), format!("{g} state c1"));
        assert_eq!(
            j(cli.exec("c1", Path::new("/s/p.json"), Path::new("/s/e.pid"), None)),
            format!("{g} exec --detach --pid-file /s/e.pid --process /s/p.json c1")
        );
        assert_eq!(
            j(cli.exec(
                "c1",
                Path::new("/p.json"),
                Path::new("/e.pid"),
                Some(Path::new("/t.sock"))
            )),
            format!("{g} exec --detach --pid-file /e.pid --process /p.json --console-socket /t.sock c1")
        );
        let sd = Cli {
            rt: &rt,
            systemd: true,
            log: None,
        };
        assert_eq!(
            j(sd.start("c1")),
            "--root /run/crius/runtimes/runc --systemd-cgroup start c1"
        );
    }

    #[test]
    fn failures_carry_stderr_and_time_out() {
        let mut rt = rt();
        rt.path = "/bin/sh".into();
        let cli = Cli {
            rt: &rt,
            systemd: false,
            log: None,
        };
        let mut c = cli.command(vec![
            "-c".into(),
            "echo out; echo 'no such container' >&2; exit 3".into(),
        ]);
        c.env_clear();
        let e = run(&rt, c, "state", VERB_TIMEOUT).unwrap_err();
        assert!(
            e.contains("/bin/sh state failed") && e.contains("no such container"),
            "{e}"
        );
        let ok = run(
            &rt,
            cli.command(vec!["-c".into(), "echo '{}'".into()]),
            "state",
            VERB_TIMEOUT,
        )
        .unwrap();
        assert_eq!(ok.stdout, b"{}\n");
        let t0 = Instant::now();
        let e = run(
            &rt,
            cli.command(vec!["-c".into(), "sleep 30".into()]),
            "start",
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(e.contains("did not finish"), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(5));
        let big = run(
            &rt,
            cli.command(vec!["-c".into(), "head -c 1000000 /dev/zero".into()]),
            "state",
            VERB_TIMEOUT,
        )
        .unwrap();
        assert_eq!(big.stdout.len(), OUTPUT_CAP, "capped while reading");
    }

    #[test]
    fn log_messages_keep_errors_only() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("runtime.log");
        std::fs::write(
            &p,
            "{\"level\":\"info\",\"msg\":\"hi\"}\nnot json\n{\"level\":\"error\",\"msg\":\"exec: no such file\"}\n",
        )
        .unwrap();
        assert_eq!(log_messages(&p), "exec: no such file");
        assert_eq!(log_messages(&d.path().join("none")), "");
        std::fs::write(d.path().join("x.pid"), "4242\n").unwrap();
        assert_eq!(read_pid_file(&pid_file(d.path(), "x")), Ok(4242));
        std::fs::write(d.path().join("y.pid"), "nope").unwrap();
        assert!(read_pid_file(&pid_file(d.path(), "y")).is_err());
    }
}
