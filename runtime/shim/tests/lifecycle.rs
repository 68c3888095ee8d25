//! The shim on its own, as the daemon drives it: a busybox-static bundle in a temp dir,
//! `crius-shim create` with a report pipe on fd 3, control requests over `ctl.sock`, the CRI
//! log, the exit file, the exec helper, and nothing left behind after `shutdown`.
//! Needs root (fails otherwise); runs against whichever cgroup layout the host mounts (v1 or v2).

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crius_shim_api::*;
use oci_spec::runtime::{LinuxBuilder, ProcessBuilder, RootBuilder, Spec};

const SHIM: &str = env!("CARGO_BIN_EXE_crius-shim");

/// Panics when not root: the shim creates namespaces, mounts and cgroups.
fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the shim lifecycle tests need root: the shim creates namespaces, mounts and cgroups"
    );
}

/// The directory a container's cgroup gets: in the memory hierarchy under cgroup v1, in the
/// unified hierarchy under v2.
fn cgroup_dir(cgroup_path: &str) -> PathBuf {
    let root = Path::new("/sys/fs/cgroup");
    let rel = cgroup_path.trim_start_matches('/');
    if root.join("cgroup.controllers").exists() {
        root.join(rel)
    } else {
        root.join("memory").join(rel)
    }
}

/// One container under test; `Drop` removes everything it may have left.
struct Ctr {
    id: String,
    dir: tempfile::TempDir,
    shim_pid: Option<i32>,
    /// Sets `ShimConfig::poststop_hooks`, so Shutdown deletes through libcontainer (as it does for
    /// a spec with poststop hooks); otherwise it leaves state and cgroup to the daemon.
    libcontainer_delete: bool,
    /// The CRI log and the shim's stderr both go to /dev/full, which refuses every write.
    full_disk: bool,
}

impl Ctr {
    fn new(tag: &str) -> Ctr {
        let id = format!("shimtest-{tag}-{}", std::process::id());
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("bundle/rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).unwrap();
        for d in ["proc", "dev", "sys", "tmp", "etc"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for app in ["sh", "echo", "sleep", "cat", "head", "tr", "id", "grep"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(app)).unwrap();
        }
        std::fs::create_dir_all(dir.path().join("shim")).unwrap();
        Ctr {
            id,
            dir,
            shim_pid: None,
            libcontainer_delete: false,
            full_disk: false,
        }
    }

    fn cgroup_path(&self) -> String {
        format!("/crius-shimtest-{}", self.id)
    }
    fn shim_dir(&self) -> PathBuf {
        self.dir.path().join("shim")
    }
    fn youki_root(&self) -> PathBuf {
        self.dir.path().join("youki")
    }
    fn log(&self) -> PathBuf {
        self.dir.path().join("ctr.log")
    }
    fn bundle(&self) -> PathBuf {
        self.dir.path().join("bundle")
    }

    fn write_spec(&self, args: &[&str]) {
        let mut spec = Spec::default();
        let process = ProcessBuilder::default()
            .args(args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .env(vec!["PATH=/bin".to_string()])
            .cwd("/")
            .build()
            .unwrap();
        let linux = spec.linux().clone().unwrap();
        let linux = LinuxBuilder::default()
            .namespaces(linux.namespaces().clone().unwrap())
            .masked_paths(linux.masked_paths().clone().unwrap_or_default())
            .readonly_paths(linux.readonly_paths().clone().unwrap_or_default())
            .cgroups_path(PathBuf::from(self.cgroup_path()))
            .build()
            .unwrap();
        spec.set_process(Some(process))
            .set_root(Some(
                RootBuilder::default()
                    .path(self.bundle().join("rootfs"))
                    .readonly(false)
                    .build()
                    .unwrap(),
            ))
            .set_linux(Some(linux));
        spec.save(self.bundle().join("config.json")).unwrap();
        let cfg = ShimConfig {
            version: PROTOCOL_VERSION,
            id: self.id.clone(),
            bundle: self.bundle(),
            youki_root: self.youki_root(),
            shim_dir: self.shim_dir(),
            log_path: Some(if self.full_disk {
                PathBuf::from("/dev/full")
            } else {
                self.log()
            }),
            terminal: false,
            stdin: false,
            stdin_once: false,
            cgroup_path: self.cgroup_path(),
            systemd_cgroup: false,
            shim_cgroup: None,
            kill_all_on_exit: false,
            poststop_hooks: self.libcontainer_delete,
            runtime: None,
            cgroup_v1_mounts: None,
            restore_images: None,
        };
        std::fs::write(
            self.shim_dir().join(CONFIG_FILE),
            serde_json::to_vec(&cfg).unwrap(),
        )
        .unwrap();
    }

    fn create(&mut self) -> CreateReport {
        let (r, w) = nix::unistd::pipe().unwrap();
        let mut cmd = Command::new(SHIM);
        cmd.args(["create", "--config"])
            .arg(self.shim_dir().join(CONFIG_FILE))
            .stdin(Stdio::null())
            .stdout(Stdio::from(w))
            .stderr(if self.full_disk {
                std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap()
            } else {
                std::fs::File::create(self.shim_dir().join(SHIM_LOG)).unwrap()
            });
        let status = cmd.status().unwrap();
        assert!(status.success(), "the first shim process exits 0 after detaching");
        drop(cmd);
        let report: CreateReport = read_frame(&mut std::fs::File::from(r)).unwrap();
        if let CreateReport::Created { shim_pid, .. } = report {
            self.shim_pid = Some(shim_pid);
        }
        report
    }

    fn call(&self, req: Request) -> Response {
        let mut s = connect_control(&self.shim_dir()).unwrap();
        write_frame(&mut s, &RequestEnvelope::new(req)).unwrap();
        let env: ResponseEnvelope = read_frame(&mut s).unwrap();
        assert_eq!(env.version, PROTOCOL_VERSION);
        env.response
    }

    fn state(&self) -> ShimState {
        match self.call(Request::State) {
            Response::State(s) => s,
            other => panic!("state answered {other:?}"),
        }
    }

    fn wait_exit(&self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(e) = ExitStatus::read(&self.shim_dir().join(EXIT_FILE)).unwrap() {
                assert_eq!(self.state().exit, Some(e));
                return e;
            }
            assert!(Instant::now() < deadline, "container did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn shutdown(&mut self) {
        assert_eq!(self.call(Request::Shutdown), Response::Ok);
        let pid = self.shim_pid.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{pid}")).exists() && proc_alive(pid) {
            assert!(
                Instant::now() < deadline,
                "shim {pid} did not exit after shutdown"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        if self.libcontainer_delete {
            assert!(
                !self.youki_root().join(&self.id).exists(),
                "libcontainer state removed"
            );
            assert!(
                !cgroup_dir(&self.cgroup_path()).exists(),
                "container cgroup removed"
            );
        } else {
            // The daemon's teardown removes both; the shim leaves no process in the cgroup.
            let procs = std::fs::read_to_string(cgroup_dir(&self.cgroup_path()).join("cgroup.procs"))
                .unwrap_or_default();
            assert!(procs.trim().is_empty(), "processes left in the cgroup: {procs}");
        }
        assert!(!self.shim_dir().join(CONTROL_SOCKET).exists());
    }

    fn exec(&self, args: &[&str]) -> (String, String, Vec<ExecReport>) {
        let req = ExecRequest {
            version: PROTOCOL_VERSION,
            id: self.id.clone(),
            youki_root: self.youki_root(),
            bundle: self.bundle(),
            scratch_dir: self.shim_dir(),
            args: args.iter().map(|s| s.to_string()).collect(),
            console_socket: None,
            runtime: None,
            systemd_cgroup: false,
        };
        let (r, w) = nix::unistd::pipe().unwrap();
        let wfd = w.as_raw_fd();
        let mut cmd = Command::new(SHIM);
        cmd.args(["exec-helper", "--request", &serde_json::to_string(&req).unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: dup2 is async-signal-safe.
        unsafe { cmd.pre_exec(move || nix::unistd::dup2(wfd, REPORT_FD).map(|_| ()).map_err(Into::into)) };
        let child = cmd.spawn().unwrap();
        drop(w);
        let out = child.wait_with_output().unwrap();
        let mut reports = Vec::new();
        let mut f = std::fs::File::from(r);
        while let Ok(rep) = read_frame::<_, ExecReport>(&mut f) {
            reports.push(rep);
        }
        (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
            reports,
        )
    }
}

fn proc_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        .unwrap_or(false)
}

impl Drop for Ctr {
    fn drop(&mut self) {
        if let Some(pid) = self.shim_pid {
            if connect_control(&self.shim_dir()).is_ok() {
                let _ =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.call(Request::Shutdown)));
            }
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        for ctl in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = std::fs::remove_dir(ctl.path().join(self.cgroup_path().trim_start_matches('/')));
        }
        // Under cgroup v2 the container's cgroup sits directly in the unified root.
        let _ = std::fs::remove_dir(cgroup_dir(&self.cgroup_path()));
    }
}

fn log_records(path: &Path) -> Vec<(String, String, String)> {
    let mut text = String::new();
    std::fs::File::open(path)
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    text.lines()
        .map(|l| {
            let mut p = l.splitn(4, ' ');
            let ts = p.next().unwrap();
            assert!(
                ts.ends_with('Z') && ts.len() == 30,
                "RFC3339Nano UTC timestamp: {ts}"
            );
            (
                p.next().unwrap().into(),
                p.next().unwrap().into(),
                p.next().unwrap_or("").into(),
            )
        })
        .collect()
}

#[test]
fn create_start_logs_exit_and_shutdown() {
    require_root();
    let mut c = Ctr::new("logs");
    c.write_spec(&[
        "sh",
        "-c",
        "echo hello World; echo oops >&2; head -c 40960 /dev/zero | tr '\\0' x; echo; exit 3",
    ]);
    let CreateReport::Created { pid, shim_pid } = c.create() else {
        panic!("create failed")
    };
    assert!(pid > 0 && shim_pid > 0 && pid != shim_pid);
    assert_eq!(c.state().status, ProcessStatus::Created);
    assert_eq!(c.call(Request::Start), Response::Ok);
    let exit = c.wait_exit();
    assert_eq!(exit.exit_code, 3);
    assert!(!exit.oom_killed);
    let cmdline = std::fs::read(format!("/proc/{shim_pid}/cmdline")).unwrap();
    assert!(
        cmdline.split(|&b| b == 0).nth(1) == Some(b"monitor"),
        "the shim re-exec'd into monitor mode"
    );
    assert!(matches!(
        c.call(Request::Start),
        Response::Error {
            code: ErrorCode::WrongState,
            ..
        }
    ));

    let recs = log_records(&c.log());
    assert!(recs.contains(&("stdout".into(), "F".into(), "hello World".into())));
    assert!(recs.contains(&("stderr".into(), "F".into(), "oops".into())));
    let long: Vec<_> = recs
        .iter()
        .filter(|r| r.0 == "stdout" && r.2.starts_with('x'))
        .collect();
    assert_eq!(
        long.iter().map(|r| r.1.as_str()).collect::<Vec<_>>(),
        ["P", "P", "F"]
    );
    assert_eq!(long.iter().map(|r| r.2.len()).sum::<usize>(), 40960);

    std::fs::rename(c.log(), c.dir.path().join("ctr.log.1")).unwrap();
    assert_eq!(c.call(Request::ReopenLog), Response::Ok);
    assert!(c.log().exists(), "reopen creates the file again");
    c.shutdown();
}

/// With its CRI log and its own stderr both refusing every write (/dev/full, as a full disk
/// does), the shim still drains the container's output, answers and records the exit: a full
/// disk costs log records, never the container.
#[test]
fn a_full_disk_costs_log_records_not_the_container() {
    require_root();
    let mut c = Ctr::new("full");
    c.full_disk = true;
    c.write_spec(&[
        "sh",
        "-c",
        "head -c 4194304 /dev/zero | tr '\\0' y; echo; echo done >&2; exit 7",
    ]);
    let CreateReport::Created { .. } = c.create() else {
        panic!("create failed")
    };
    assert_eq!(c.call(Request::Start), Response::Ok);
    // A shim that stopped reading would leave `tr` blocked on a full pipe, and a dead one
    // would write no exit file: either way no exit within wait_exit's 30 s.
    let exit = c.wait_exit();
    assert_eq!(exit.exit_code, 7);
    assert_eq!(c.state().status, ProcessStatus::Exited);
    c.shutdown();
}

#[test]
fn sigkill_is_exit_137_and_exec_runs_inside() {
    require_root();
    let mut c = Ctr::new("kill");
    c.write_spec(&["sleep", "1000"]);
    let CreateReport::Created { .. } = c.create() else {
        panic!("create failed")
    };
    assert_eq!(c.call(Request::Start), Response::Ok);
    assert_eq!(c.state().status, ProcessStatus::Running);

    let (out, err, reports) = c.exec(&["sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!((out.as_str(), err.as_str()), ("out\n", "err\n"));
    assert!(matches!(
        reports[..],
        [ExecReport::Started { .. }, ExecReport::Exited { exit_code: 7 }]
    ));
    let (out, _, _) = c.exec(&["cat", "/proc/self/status"]);
    let seccomp_line = out.lines().find(|l| l.starts_with("Seccomp:")).unwrap();
    assert!(
        seccomp_line.ends_with('0'),
        "no filter in the spec, none applied: {seccomp_line}"
    );
    let (_, _, reports) = c.exec(&["/no/such/binary"]);
    assert!(matches!(reports[..], [ExecReport::Failed { .. }]), "{reports:?}");

    assert_eq!(
        c.call(Request::Kill {
            signal: 9,
            all: false
        }),
        Response::Ok
    );
    assert_eq!(c.wait_exit().exit_code, 137);
    assert_eq!(
        c.call(Request::Kill {
            signal: 15,
            all: true
        }),
        Response::Ok,
        "killing an exited container is a no-op"
    );
    c.shutdown();
}

#[test]
fn created_container_can_be_removed_without_start() {
    require_root();
    let mut c = Ctr::new("created");
    c.libcontainer_delete = true;
    c.write_spec(&["sleep", "1000"]);
    let CreateReport::Created { pid, .. } = c.create() else {
        panic!("create failed")
    };
    c.shutdown();
    assert!(!proc_alive(pid), "init is gone");
}

#[test]
fn bad_command_is_reported_and_leaves_nothing() {
    require_root();
    let mut c = Ctr::new("bad");
    c.write_spec(&["/no/such/program"]);
    match c.create() {
        CreateReport::Failed { message } => assert!(message.contains("no/such/program"), "{message}"),
        other => panic!("expected a failure, got {other:?}"),
    }
    assert!(!c.youki_root().join(&c.id).exists());
    assert!(!c.shim_dir().join(CONTROL_SOCKET).exists());
    assert!(!cgroup_dir(&c.cgroup_path()).exists(), "container cgroup removed");
}

/// Signals 1..=31 ignored or blocked, per a `/proc/<pid>/status` text: `(SigIgn, SigBlk)`.
fn standard_signals_ignored_and_blocked(status: &str) -> (u64, u64) {
    let mask = |key: &str| {
        let line = status.lines().find(|l| l.starts_with(key)).unwrap();
        u64::from_str_radix(line[key.len()..].trim(), 16).unwrap() & 0x7fff_ffff
    };
    (mask("SigIgn:"), mask("SigBlk:"))
}

/// The init process and an exec'd process start with the signal state runc gives them: nothing
/// ignored (the shim, a Rust program, ignores SIGPIPE) and nothing blocked.
#[test]
fn workloads_start_with_default_signal_dispositions() {
    require_root();
    let mut c = Ctr::new("signals");
    c.write_spec(&["sh", "-c", "cat /proc/self/status; exec sleep 1000"]);
    let CreateReport::Created { .. } = c.create() else {
        panic!("create failed")
    };
    assert_eq!(c.call(Request::Start), Response::Ok);
    let deadline = Instant::now() + Duration::from_secs(10);
    let init_status = loop {
        let text: Vec<String> = log_records(&c.log()).into_iter().map(|r| r.2).collect();
        if text.iter().any(|l| l.starts_with("SigBlk:")) && text.iter().any(|l| l.starts_with("SigIgn:")) {
            break text.join("\n");
        }
        assert!(
            Instant::now() < deadline,
            "the init process printed no status: {text:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        standard_signals_ignored_and_blocked(&init_status),
        (0, 0),
        "init: {init_status}"
    );
    let (out, _, _) = c.exec(&["cat", "/proc/self/status"]);
    assert_eq!(standard_signals_ignored_and_blocked(&out), (0, 0), "exec: {out}");
    assert_eq!(
        c.call(Request::Kill {
            signal: 9,
            all: false
        }),
        Response::Ok
    );
    c.wait_exit();
    c.shutdown();
}
