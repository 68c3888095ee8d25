//! The attach socket protocol: `<shim dir>/attach.sock` is a `SOCK_SEQPACKET` listener served by
//! the shim; every packet is one message whose first byte says what it is (conmon's design).
//!
//! Shim → client: [`OUT_STDOUT`] or [`OUT_STDERR`] followed by live output bytes (a tty
//! container's output is all stdout). The shim closes the connection once the container's init
//! has exited and its output is drained.
//! Client → shim: [`IN_STDIN`] followed by bytes for the container's stdin, or [`IN_STDIN_EOF`]
//! (alone) when the client's stdin ended. Hanging up detaches.
//!
//! Invariants: one client at a time owns the container's stdin (the first one that sends
//! stdin); a packet never exceeds [`MAX_PACKET`] bytes; output is fanned out to every client.

/// Output packet tags.
pub const OUT_STDOUT: u8 = 1;
pub const OUT_STDERR: u8 = 2;
/// Input packet tags.
pub const IN_STDIN: u8 = 0;
pub const IN_STDIN_EOF: u8 = 3;
/// Largest packet either side sends: one tag byte and up to 32 KiB of data.
pub const MAX_PACKET: usize = 1 + MAX_DATA;
/// Largest data payload of one packet.
pub const MAX_DATA: usize = 32 * 1024;

/// `tag` followed by `data` (callers keep `data` within [`MAX_DATA`]).
pub fn packet(tag: u8, data: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(1 + data.len());
    p.push(tag);
    p.extend_from_slice(data);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_carry_their_tag_first() {
        assert_eq!(packet(OUT_STDERR, b"x"), vec![2, b'x']);
        assert_eq!(packet(IN_STDIN_EOF, b""), vec![3]);
    }
}
