//! The attach socket (`<shim dir>/attach.sock`, `SOCK_SEQPACKET`, protocol in
//! `crius_shim_api::attach`): live output fanned out to every client, one client's input
//! forwarded to the container's stdin. Driven by the monitor's `poll` loop; never blocks.
//!
//! Invariants: a slow client never stalls the shim or other clients — its packets queue up to
//! [`MAX_QUEUED`] bytes, beyond that it is disconnected; only the stdin owner's socket is read
//! while stdin bytes wait for the container, so input is never dropped or reordered; after
//! [`AttachHub::finish`] (init exited) queued output is flushed, then every client is closed and
//! new connections are closed at once.
//!
//! A terminal container's input goes to the pty master; there `stdin_once` only ends input
//! forwarding and never closes the master (that would hang up the container's terminal).

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use crius_shim_api::attach::{IN_STDIN, IN_STDIN_EOF, MAX_DATA, MAX_PACKET, packet};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags};
use nix::sys::socket::{
    AddressFamily, Backlog, MsgFlags, SockFlag, SockType, UnixAddr, accept4, bind, listen, recv, send, socket,
};

use crate::proc_setup;

/// Output a client may have waiting before it is dropped as too slow.
pub const MAX_QUEUED: usize = 4 << 20;

struct Client {
    id: u64,
    fd: OwnedFd,
    queue: VecDeque<Vec<u8>>,
    queued: usize,
}

/// What the container's stdin should do after [`AttachHub::service`].
#[derive(Debug, PartialEq, Eq)]
pub enum StdinAction {
    Keep,
    /// `stdin_once`: the first stdin client detached; close the container's stdin for good.
    Close,
}

/// Indices of the hub's entries in the monitor's poll set.
pub struct Slots {
    listener: Option<usize>,
    clients: Vec<(u64, usize)>,
    stdin: Option<usize>,
}

/// What `poll` reported for the hub's entries.
pub struct Events {
    accept: bool,
    clients: Vec<(u64, PollFlags)>,
    stdin_writable: bool,
}

pub struct AttachHub {
    listener: OwnedFd,
    clients: Vec<Client>,
    next_id: u64,
    stdin_owner: Option<u64>,
    /// Bytes read from the owner that the container has not taken yet.
    pending: Vec<u8>,
    stdin_once: bool,
    /// No more input is forwarded (stdin_once fired, or the container exited).
    stdin_closed: bool,
    closing: bool,
}

impl AttachHub {
    /// Binds `<dir>/<ATTACH_SOCKET>` (any length of `dir`), replacing a stale socket.
    pub fn bind(dir: &Path, stdin_once: bool) -> io::Result<AttachHub> {
        let name = crius_shim_api::ATTACH_SOCKET;
        let _ = std::fs::remove_file(dir.join(name));
        let d = std::fs::File::open(dir)?;
        let fd = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        let addr = UnixAddr::new(&crius_shim_api::short_socket_path(&d, name))?;
        bind(fd.as_raw_fd(), &addr)?;
        listen(&fd, Backlog::new(64).unwrap_or(Backlog::MAXCONN))?;
        Ok(AttachHub::from_listener(fd, stdin_once))
    }

    /// Resumes on a listener passed across the monitor re-exec.
    pub fn from_listener(listener: OwnedFd, stdin_once: bool) -> AttachHub {
        let _ = proc_setup::set_nonblocking(&listener);
        AttachHub {
            listener,
            clients: Vec::new(),
            next_id: 0,
            stdin_owner: None,
            pending: Vec::new(),
            stdin_once,
            stdin_closed: false,
            closing: false,
        }
    }

    pub fn listener(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }

    /// Adds the hub's fds to `fds`. `accepting`: take new clients (not before the container
    /// runs; they wait in the backlog). `stdin`: where container input goes, if anywhere.
    pub fn register<'a>(
        &'a self,
        fds: &mut Vec<PollFd<'a>>,
        accepting: bool,
        stdin: Option<BorrowedFd<'a>>,
    ) -> Slots {
        let listener = accepting.then(|| {
            fds.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let blocked = !self.pending.is_empty();
        let clients = self
            .clients
            .iter()
            .map(|c| {
                let mut flags = PollFlags::empty();
                if !c.queue.is_empty() {
                    flags |= PollFlags::POLLOUT;
                }
                let waiting_for_container = blocked && self.stdin_owner == Some(c.id);
                if !self.closing && !waiting_for_container {
                    flags |= PollFlags::POLLIN;
                }
                // Empty flags still report POLLHUP/POLLERR.
                fds.push(PollFd::new(c.fd.as_fd(), flags));
                (c.id, fds.len() - 1)
            })
            .collect();
        let stdin = match stdin {
            Some(fd) if blocked => {
                fds.push(PollFd::new(fd, PollFlags::POLLOUT));
                Some(fds.len() - 1)
            }
            _ => None,
        };
        Slots {
            listener,
            clients,
            stdin,
        }
    }

    /// Reads the results of `poll` for the entries [`AttachHub::register`] added.
    pub fn events(fds: &[PollFd<'_>], slots: Slots) -> Events {
        let rev = |i: usize| fds[i].revents().unwrap_or(PollFlags::empty());
        Events {
            accept: slots.listener.is_some_and(|i| !rev(i).is_empty()),
            clients: slots
                .clients
                .into_iter()
                .map(|(id, i)| (id, rev(i)))
                .filter(|(_, r)| !r.is_empty())
                .collect(),
            stdin_writable: slots.stdin.is_some_and(|i| !rev(i).is_empty()),
        }
    }

    /// Accepts, reads input, flushes queued output and forwards stdin.
    pub fn service(&mut self, ev: Events, stdin: Option<BorrowedFd<'_>>) -> StdinAction {
        if ev.accept {
            self.accept_all();
        }
        if ev.stdin_writable {
            self.write_stdin(stdin);
        }
        let mut action = StdinAction::Keep;
        for (id, revents) in ev.clients {
            if revents.contains(PollFlags::POLLOUT) && !self.flush(id) {
                action = self.drop_client(id).max_with(action);
                continue;
            }
            if revents.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
                match self.read_client(id, stdin) {
                    Ok(a) => action = a.max_with(action),
                    Err(()) => action = self.drop_client(id).max_with(action),
                }
            }
        }
        if self.closing {
            self.clients.retain(|c| !c.queue.is_empty());
        }
        action
    }

    /// Sends output to every client (`tag`: `OUT_STDOUT` or `OUT_STDERR`).
    pub fn broadcast(&mut self, tag: u8, data: &[u8]) {
        if self.clients.is_empty() {
            return;
        }
        let mut dead = Vec::new();
        for chunk in data.chunks(MAX_DATA) {
            let p = packet(tag, chunk);
            for c in &mut self.clients {
                if dead.contains(&c.id) {
                    continue;
                }
                if c.queue.is_empty() {
                    match send(
                        c.fd.as_raw_fd(),
                        &p,
                        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
                    ) {
                        Ok(_) => continue,
                        Err(Errno::EAGAIN) => {}
                        Err(_) => {
                            dead.push(c.id);
                            continue;
                        }
                    }
                }
                c.queued += p.len();
                c.queue.push_back(p.clone());
                if c.queued > MAX_QUEUED {
                    note!("crius-shim: attach client {} is too slow; disconnecting it", c.id);
                    dead.push(c.id);
                }
            }
        }
        for id in dead {
            let _ = self.drop_client(id);
        }
    }

    /// The container's init has exited: no more input, flush and close every client.
    pub fn finish(&mut self) {
        if self.closing {
            return;
        }
        self.closing = true;
        self.stdin_closed = true;
        self.stdin_owner = None;
        self.pending.clear();
        self.clients.retain(|c| !c.queue.is_empty());
    }

    fn accept_all(&mut self) {
        loop {
            match accept4(
                self.listener.as_raw_fd(),
                SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            ) {
                Ok(fd) => {
                    // SAFETY: accept4 just returned this fd; nothing else owns it.
                    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                    if self.closing {
                        continue; // dropped: the client sees EOF at once
                    }
                    self.next_id += 1;
                    self.clients.push(Client {
                        id: self.next_id,
                        fd,
                        queue: VecDeque::new(),
                        queued: 0,
                    });
                }
                Err(Errno::EINTR) | Err(Errno::ECONNABORTED) => {}
                Err(_) => return,
            }
        }
    }

    /// Sends what a client has queued. False when the client is gone.
    fn flush(&mut self, id: u64) -> bool {
        let Some(c) = self.clients.iter_mut().find(|c| c.id == id) else {
            return true;
        };
        while let Some(p) = c.queue.front() {
            match send(
                c.fd.as_raw_fd(),
                p,
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            ) {
                Ok(_) => {
                    c.queued -= p.len();
                    c.queue.pop_front();
                }
                Err(Errno::EAGAIN) | Err(Errno::EINTR) => return true,
                Err(_) => return false,
            }
        }
        true
    }

    /// Reads a client's packets until it would block. Err: the client hung up.
    fn read_client(&mut self, id: u64, stdin: Option<BorrowedFd<'_>>) -> Result<StdinAction, ()> {
        let mut buf = vec![0u8; MAX_PACKET];
        loop {
            if self.closing || (!self.pending.is_empty() && self.stdin_owner == Some(id)) {
                return Ok(StdinAction::Keep);
            }
            let Some(c) = self.clients.iter().find(|c| c.id == id) else {
                return Ok(StdinAction::Keep);
            };
            let n = match recv(c.fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => return Err(()),
                Ok(n) => n,
                Err(Errno::EAGAIN) => return Ok(StdinAction::Keep),
                Err(Errno::EINTR) => continue,
                Err(_) => return Err(()),
            };
            match buf[0] {
                IN_STDIN if !self.stdin_closed && stdin.is_some() => {
                    let owner = *self.stdin_owner.get_or_insert(id);
                    if owner == id {
                        self.pending.extend_from_slice(&buf[1..n]);
                        self.write_stdin(stdin);
                    }
                }
                IN_STDIN_EOF if self.stdin_owner == Some(id) => {
                    self.pending.clear();
                    return Ok(self.release_stdin());
                }
                _ => {}
            }
        }
    }

    fn write_stdin(&mut self, stdin: Option<BorrowedFd<'_>>) {
        let Some(fd) = stdin else {
            self.pending.clear();
            return;
        };
        let _ = proc_setup::set_nonblocking(&fd);
        while !self.pending.is_empty() {
            match nix::unistd::write(fd, &self.pending) {
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(Errno::EAGAIN) => return,
                Err(Errno::EINTR) => {}
                Err(_) => {
                    // The container closed its stdin or exited: nothing will read it.
                    self.pending.clear();
                    return;
                }
            }
        }
    }

    /// The owner's stdin ended (EOF or detach).
    fn release_stdin(&mut self) -> StdinAction {
        self.stdin_owner = None;
        if self.stdin_once && !self.stdin_closed {
            self.stdin_closed = true;
            return StdinAction::Close;
        }
        StdinAction::Keep
    }

    fn drop_client(&mut self, id: u64) -> StdinAction {
        self.clients.retain(|c| c.id != id);
        if self.stdin_owner == Some(id) {
            self.pending.clear();
            return self.release_stdin();
        }
        StdinAction::Keep
    }
}

impl StdinAction {
    fn max_with(self, other: StdinAction) -> StdinAction {
        if self == StdinAction::Close || other == StdinAction::Close {
            StdinAction::Close
        } else {
            StdinAction::Keep
        }
    }
}

#[cfg(test)]
mod tests {
    use crius_shim_api::attach::{OUT_STDOUT, packet};
    use nix::poll::{PollTimeout, poll};

    use super::*;

    fn connect(dir: &Path) -> OwnedFd {
        let d = std::fs::File::open(dir).unwrap();
        let fd = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        let addr = UnixAddr::new(&crius_shim_api::short_socket_path(
            &d,
            crius_shim_api::ATTACH_SOCKET,
        ))
        .unwrap();
        nix::sys::socket::connect(fd.as_raw_fd(), &addr).unwrap();
        fd
    }

    /// One round of the monitor's loop for the hub alone.
    fn turn(hub: &mut AttachHub, stdin: &OwnedFd) -> StdinAction {
        let ev = {
            let mut fds = Vec::new();
            let slots = hub.register(&mut fds, true, Some(stdin.as_fd()));
            poll(&mut fds, PollTimeout::from(200u16)).unwrap();
            AttachHub::events(&fds, slots)
        };
        hub.service(ev, Some(stdin.as_fd()))
    }

    fn read_some(fd: &OwnedFd) -> Vec<u8> {
        let mut buf = vec![0u8; MAX_PACKET];
        let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
        buf.truncate(n);
        buf
    }

    #[test]
    fn output_fans_out_and_one_client_owns_stdin_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut hub = AttachHub::bind(dir.path(), true).unwrap();
        let (stdin_r, stdin_w) = nix::unistd::pipe().unwrap();
        let a = connect(dir.path());
        let b = connect(dir.path());
        while hub.clients.len() < 2 {
            turn(&mut hub, &stdin_w);
        }
        hub.broadcast(OUT_STDOUT, b"hi");
        assert_eq!(read_some(&a), packet(OUT_STDOUT, b"hi"));
        assert_eq!(read_some(&b), packet(OUT_STDOUT, b"hi"));

        send(a.as_raw_fd(), &packet(IN_STDIN, b"from-a"), MsgFlags::empty()).unwrap();
        turn(&mut hub, &stdin_w);
        send(b.as_raw_fd(), &packet(IN_STDIN, b"from-b"), MsgFlags::empty()).unwrap();
        turn(&mut hub, &stdin_w);
        let mut got = [0u8; 64];
        let n = nix::unistd::read(stdin_r.as_raw_fd(), &mut got).unwrap();
        assert_eq!(&got[..n], b"from-a", "only the first stdin client is forwarded");

        drop(a);
        let mut action = StdinAction::Keep;
        for _ in 0..10 {
            action = turn(&mut hub, &stdin_w);
            if action == StdinAction::Close {
                break;
            }
        }
        assert_eq!(
            action,
            StdinAction::Close,
            "stdin_once closes after the owner detaches"
        );

        hub.finish();
        hub.broadcast(OUT_STDOUT, b"late");
        drop(hub);
        let mut buf = [0u8; 16];
        // b sees EOF once the hub is gone (it was closed by finish).
        let _ = nix::sys::socket::setsockopt(
            &b,
            nix::sys::socket::sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::from(libc::timeval {
                tv_sec: 5,
                tv_usec: 0,
            }),
        );
        assert_eq!(recv(b.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap(), 0);
    }
}
