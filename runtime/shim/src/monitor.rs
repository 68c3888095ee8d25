//! The shim's event loop: one `poll` over the control socket, a SIGCHLD signalfd, the
//! container's stdout/stderr (or pty master) and the attach socket with its clients
//! (`attach`). No threads, no async runtime.
//!
//! Invariants: the shim is a child subreaper and reaps every child; init's exit is recorded once
//! — after the output pipes have been drained (for at most [`EXIT_DRAIN`], a leftover process
//! may write forever), so the log is complete when the exit file appears — in the exit file
//! (atomically) and in memory. A control request is answered before the loop acts on an
//! [`Outcome`] (re-exec after `start`, exit after `shutdown`). Work per wake-up is bounded: each
//! output stream is read for at most [`PUMP_BUDGET`] bytes, logged with one `write` per batch,
//! then the signal fd, the attach clients and the control socket get their turn, so a container
//! flooding its output cannot starve the control socket.

use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use crius_shim_api::{
    ErrorCode, ExitStatus, PROTOCOL_VERSION, ProcessStatus, Request, RequestEnvelope, Response,
    ResponseEnvelope, ShimConfig, ShimState, read_frame, write_frame,
};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::attach::{AttachHub, StdinAction};
use crate::cgroup;
use crate::log::{LineSplitter, LogFile, Stream, now_ns, rfc3339_nano};

/// How long a control client may take to send its request.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the exit of a container sharing its PID namespace waits for the rest of its
/// processes to go after SIGKILL.
const KILL_ALL_WAIT: Duration = Duration::from_millis(500);
/// How long `shutdown` waits for a SIGKILLed init before giving up on it.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// The most bytes read from one output stream per loop pass (four pipe-sized reads).
const PUMP_BUDGET: usize = 64 * 1024;
/// How long init's exit waits for the rest of its output (a process it left behind may hold
/// the pipe and write without end).
const EXIT_DRAIN: Duration = Duration::from_secs(2);

/// One output stream of the container: the read end we own and its line splitter.
pub struct Output {
    pub fd: OwnedFd,
    pub split: LineSplitter,
}

impl Output {
    pub fn new(fd: OwnedFd, stream: Stream) -> Self {
        Output {
            fd,
            split: LineSplitter::new(stream),
        }
    }
}

/// Lets a created container run; only the pre-start shim (which holds libcontainer's handle)
/// has one.
pub type Starter = Box<dyn FnMut() -> Result<(), String>>;
/// Deletes libcontainer's state and the container's cgroup; called by `shutdown` for a
/// systemd-driven container.
pub type Teardown = fn(&ShimConfig) -> Result<(), String>;

/// Why the loop returned.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The container was started: re-exec into the small monitor mode.
    Reexec,
    /// The daemon removed the container: exit.
    Exit,
}

pub struct Monitor {
    pub cfg: ShimConfig,
    pub pid: Pid,
    pub status: ProcessStatus,
    pub exit: Option<ExitStatus>,
    pub stdout: Option<Output>,
    pub stderr: Option<Output>,
    /// The write end of the container's stdin, held open while the container may read it.
    pub stdin: Option<OwnedFd>,
    pub ctl: UnixListener,
    pub log: LogFile,
    pub starter: Option<Starter>,
    pub teardown: Teardown,
    /// The attach socket; `None` only when it could not be bound.
    pub attach: Option<AttachHub>,
    sigfd: SignalFd,
}

impl Monitor {
    /// `sigfd` must watch SIGCHLD, which the caller has blocked.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: ShimConfig,
        pid: Pid,
        status: ProcessStatus,
        stdout: Option<Output>,
        stderr: Option<Output>,
        stdin: Option<OwnedFd>,
        ctl: UnixListener,
        log: LogFile,
        sigfd: SignalFd,
        teardown: Teardown,
    ) -> Self {
        Monitor {
            cfg,
            pid,
            status,
            exit: None,
            stdout,
            stderr,
            stdin,
            ctl,
            log,
            starter: None,
            teardown,
            attach: None,
            sigfd,
        }
    }

    /// Runs until the container is started (pre-start shim) or removed.
    pub fn run(&mut self) -> io::Result<Outcome> {
        self.ctl.set_nonblocking(true)?;
        self.reap();
        loop {
            let (ctl_ev, sig_ev, out_ev, err_ev, att_ev) = {
                let mut fds = vec![
                    PollFd::new(self.ctl.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.sigfd.as_fd(), PollFlags::POLLIN),
                ];
                let out_i = self.stdout.as_ref().map(|o| {
                    fds.push(PollFd::new(o.fd.as_fd(), PollFlags::POLLIN));
                    fds.len() - 1
                });
                let err_i = self.stderr.as_ref().map(|o| {
                    fds.push(PollFd::new(o.fd.as_fd(), PollFlags::POLLIN));
                    fds.len() - 1
                });
                // Attach clients wait in the backlog until the container runs.
                let accepting = self.status != ProcessStatus::Created;
                let stdin = stdin_target(&self.cfg, &self.stdout, &self.stdin);
                let att_slots = self
                    .attach
                    .as_ref()
                    .map(|a| a.register(&mut fds, accepting, stdin));
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) => {}
                    Err(Errno::EINTR) => continue,
                    Err(e) => return Err(e.into()),
                }
                let ready = |i: usize| fds[i].revents().is_some_and(|r| !r.is_empty());
                (
                    ready(0),
                    ready(1),
                    out_i.is_some_and(ready),
                    err_i.is_some_and(ready),
                    att_slots.map(|s| AttachHub::events(&fds, s)),
                )
            };
            if out_ev {
                self.pump(Stream::Stdout, PUMP_BUDGET);
            }
            if err_ev {
                self.pump(Stream::Stderr, PUMP_BUDGET);
            }
            if sig_ev {
                while let Ok(Some(_)) = self.sigfd.read_signal() {}
                self.reap();
            }
            if let (Some(ev), Some(hub)) = (att_ev, self.attach.as_mut()) {
                let stdin = stdin_target(&self.cfg, &self.stdout, &self.stdin);
                if hub.service(ev, stdin) == StdinAction::Close && !self.cfg.terminal {
                    // CRI stdin_once: the container reads EOF.
                    self.stdin = None;
                }
            }
            if let (Some(_), Some(hub)) = (self.exit, self.attach.as_mut()) {
                hub.finish();
            }
            if ctl_ev && let Some(outcome) = self.accept_all() {
                return Ok(outcome);
            }
        }
    }

    /// Reads what one stream has ready, up to `budget` bytes, and logs it (one log write for the
    /// whole batch). Returns true when the budget ran out before the stream would block.
    fn pump(&mut self, which: Stream, budget: usize) -> bool {
        let slot = match which {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        };
        let Some(out) = slot else { return false };
        let mut buf = [0u8; 16 * 1024];
        let mut taken = 0;
        let eof = loop {
            if taken >= budget {
                break false;
            }
            let want = buf.len().min(budget - taken);
            match nix::unistd::read(out.fd.as_raw_fd(), &mut buf[..want]) {
                Ok(0) => break true,
                Ok(n) => {
                    taken += n;
                    let ts = rfc3339_nano(now_ns());
                    // LogFile never fails a write: a refused batch is dropped and reported
                    // by it, so output is drained and attached whatever the log's disk does.
                    let _ = out.split.feed(&buf[..n], &ts, &mut self.log);
                    if let Some(hub) = self.attach.as_mut() {
                        let tag = match which {
                            Stream::Stdout => crius_shim_api::attach::OUT_STDOUT,
                            Stream::Stderr => crius_shim_api::attach::OUT_STDERR,
                        };
                        hub.broadcast(tag, &buf[..n]);
                    }
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => break false,
                // EIO: the pty's last slave closed.
                Err(_) => break true,
            }
        };
        if eof {
            let ts = rfc3339_nano(now_ns());
            let _ = out.split.finish(&ts, &mut self.log);
            *slot = None;
        }
        let _ = self.log.flush();
        !eof && taken >= budget
    }

    /// Reaps every exited child; records init's exit.
    fn reap(&mut self) {
        loop {
            let (pid, exited, signaled) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, Some(code), None),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, None, Some(sig as i32)),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(e) => {
                    note!("crius-shim {}: waitpid: {e}", self.cfg.id);
                    return;
                }
            };
            if pid == self.pid && self.exit.is_none() {
                self.init_exited(ExitStatus::code_from_wait(exited, signaled));
            }
        }
    }

    fn init_exited(&mut self, exit_code: i32) {
        let finished_at = now_ns();
        if self.cfg.kill_all_on_exit {
            cgroup::kill_remaining(&self.cfg.cgroup_path, KILL_ALL_WAIT);
        }
        let deadline = Instant::now() + EXIT_DRAIN;
        loop {
            let more_out = self.pump(Stream::Stdout, PUMP_BUDGET);
            let more_err = self.pump(Stream::Stderr, PUMP_BUDGET);
            if !(more_out || more_err) || Instant::now() >= deadline {
                break;
            }
        }
        let baseline = std::fs::read_to_string(self.cfg.shim_dir.join(cgroup::OOM_BASELINE))
            .ok()
            .and_then(|s| s.trim().parse().ok());
        let st = ExitStatus {
            exit_code,
            finished_at,
            // 128 + SIGKILL: what the OOM killer leaves.
            oom_killed: cgroup::oom_killed(&self.cfg.cgroup_path, exit_code == 137, baseline),
        };
        let path = self.cfg.shim_dir.join(crius_shim_api::EXIT_FILE);
        if let Err(e) = st.write_atomic(&path) {
            note!("crius-shim {}: {e}", self.cfg.id);
        }
        self.exit = Some(st);
        self.status = ProcessStatus::Exited;
        self.stdin = None;
    }

    fn accept_all(&mut self) -> Option<Outcome> {
        loop {
            let conn = match self.ctl.accept() {
                Ok((c, _)) => c,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    note!("crius-shim {}: accept: {e}", self.cfg.id);
                    return None;
                }
            };
            if let Some(outcome) = self.serve(conn) {
                return Some(outcome);
            }
        }
    }

    fn serve(&mut self, mut conn: UnixStream) -> Option<Outcome> {
        let setup = conn
            .set_nonblocking(false)
            .and_then(|_| conn.set_read_timeout(Some(CLIENT_TIMEOUT)))
            .and_then(|_| conn.set_write_timeout(Some(CLIENT_TIMEOUT)));
        if setup.is_err() {
            return None;
        }
        let env: RequestEnvelope = match read_frame(&mut conn) {
            Ok(e) => e,
            Err(e) => {
                let _ = reply(&mut conn, error(ErrorCode::Failed, format!("bad request: {e}")));
                return None;
            }
        };
        if env.version != PROTOCOL_VERSION {
            let msg = format!("protocol version {} is not {PROTOCOL_VERSION}", env.version);
            let _ = reply(&mut conn, error(ErrorCode::Version, msg));
            return None;
        }
        let (response, outcome) = self.handle(env.request);
        let _ = reply(&mut conn, response);
        outcome
    }

    fn handle(&mut self, req: Request) -> (Response, Option<Outcome>) {
        match req {
            Request::State => (
                Response::State(ShimState {
                    pid: self.pid.as_raw(),
                    status: self.status,
                    exit: self.exit,
                }),
                None,
            ),
            Request::Start => self.start(),
            Request::Kill { signal, all } => (self.kill(signal, all), None),
            Request::ReopenLog => match self.log.reopen() {
                Ok(()) => (Response::Ok, None),
                Err(e) => (error(ErrorCode::Failed, format!("reopen log: {e}")), None),
            },
            Request::Resize { width, height } => (self.resize(width, height), None),
            Request::Shutdown => self.shutdown(),
        }
    }

    fn start(&mut self) -> (Response, Option<Outcome>) {
        if self.status != ProcessStatus::Created {
            let msg = format!("container {} is {:?}, not created", self.cfg.id, self.status);
            return (error(ErrorCode::WrongState, msg), None);
        }
        let Some(mut start) = self.starter.take() else {
            return (
                error(ErrorCode::WrongState, "this shim cannot start".into()),
                None,
            );
        };
        match start() {
            Ok(()) => {
                self.status = ProcessStatus::Running;
                (Response::Ok, Some(Outcome::Reexec))
            }
            Err(e) => {
                self.starter = Some(start);
                (error(ErrorCode::Failed, e), None)
            }
        }
    }

    fn kill(&mut self, signal: i32, all: bool) -> Response {
        let sig = match Signal::try_from(signal) {
            Ok(s) => s,
            Err(_) => return error(ErrorCode::Failed, format!("invalid signal {signal}")),
        };
        if self.exit.is_some() {
            return Response::Ok;
        }
        if let Some(rt) = &self.cfg.runtime {
            // The runtime knows how to reach the container's processes (a sandboxed runtime's
            // init is not the workload); an init that just exited is not an error. The call
            // holds the loop for at most its timeout (`oci_cli::VERB_TIMEOUT`).
            match crate::external::kill(&self.cfg, rt, signal, all) {
                Ok(()) => return Response::Ok,
                Err(e) => note!("crius-shim {}: {e}; signalling init directly", self.cfg.id),
            }
        }
        if all {
            for pid in cgroup::pids(&self.cfg.cgroup_path) {
                let _ = kill(Pid::from_raw(pid), sig);
            }
        }
        match kill(self.pid, sig) {
            Ok(()) | Err(Errno::ESRCH) => Response::Ok,
            Err(e) => error(ErrorCode::Failed, format!("kill {}: {e}", self.pid)),
        }
    }

    fn resize(&mut self, width: u16, height: u16) -> Response {
        let Some(master) = self.cfg.terminal.then_some(()).and(self.stdout.as_ref()) else {
            return error(ErrorCode::WrongState, "container has no terminal".into());
        };
        let ws = libc::winsize {
            ws_row: height,
            ws_col: width,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which outlives the call.
        let rc = unsafe { libc::ioctl(master.fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        if rc == 0 {
            Response::Ok
        } else {
            error(
                ErrorCode::Failed,
                format!("resize: {}", io::Error::last_os_error()),
            )
        }
    }

    fn shutdown(&mut self) -> (Response, Option<Outcome>) {
        if self.exit.is_none() {
            for pid in cgroup::pids(&self.cfg.cgroup_path) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            let _ = kill(self.pid, Signal::SIGKILL);
            let deadline = Instant::now() + KILL_WAIT;
            while self.exit.is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
                self.reap();
            }
        }
        self.flush_partials();
        // A cgroupfs container's cgroup and libcontainer state dir are removed by the daemon
        // right after this answer (its teardown does it for every container), far cheaper than
        // libcontainer's delete, which on cgroup v1 parses the mount table twice per
        // controller. A systemd scope is stopped through systemd, and poststop hooks are run,
        // only by that delete; an external runtime always deletes its own container.
        let embedded_cgroupfs = self.cfg.runtime.is_none() && !self.cfg.systemd_cgroup;
        let response = if embedded_cgroupfs && !self.cfg.poststop_hooks {
            Response::Ok
        } else {
            match (self.teardown)(&self.cfg) {
                Ok(()) => Response::Ok,
                Err(e) => error(ErrorCode::Failed, e),
            }
        };
        let _ = std::fs::remove_file(self.cfg.shim_dir.join(crius_shim_api::CONTROL_SOCKET));
        let _ = std::fs::remove_file(self.cfg.shim_dir.join(crius_shim_api::ATTACH_SOCKET));
        (response, Some(Outcome::Exit))
    }

    /// Writes any unterminated fragments as `P` records (before a re-exec or exit).
    pub fn flush_partials(&mut self) {
        let ts = rfc3339_nano(now_ns());
        for out in [&mut self.stdout, &mut self.stderr].into_iter().flatten() {
            let _ = out.split.finish(&ts, &mut self.log);
        }
        let _ = self.log.flush();
    }
}

/// Where attach input goes: the pty master of a terminal container, else the stdin pipe; only
/// when the container was created with stdin.
fn stdin_target<'a>(
    cfg: &ShimConfig,
    stdout: &'a Option<Output>,
    stdin: &'a Option<OwnedFd>,
) -> Option<std::os::fd::BorrowedFd<'a>> {
    if !cfg.stdin {
        return None;
    }
    if cfg.terminal {
        stdout.as_ref().map(|o| o.fd.as_fd())
    } else {
        stdin.as_ref().map(|f| f.as_fd())
    }
}

fn error(code: ErrorCode, message: String) -> Response {
    Response::Error { code, message }
}

fn reply(conn: &mut UnixStream, response: Response) -> Result<(), crius_shim_api::FrameError> {
    write_frame(conn, &ResponseEnvelope::new(response))
}
