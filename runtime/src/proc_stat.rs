//! `/proc/<pid>/stat` (proc(5)): `<pid> (<comm>) <state> <ppid> …`. The one reader and parser
//! for what the daemon asks of a process: its command name (is it a shim?), whether it still
//! runs (not a zombie), and the counters the metrics report.
//!
//! Invariants: a read stops at the caller's cap while reading; the comm is what lies between the
//! first `(` and the last `)` (a comm may itself hold spaces and parentheses), and fields are
//! counted after that last `)`; a line that does not have that shape parses to `None`.

use std::io::Read;

/// One parsed `stat` line, borrowing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat<'a> {
    pub comm: &'a str,
    /// Fields 3 (state) onwards.
    rest: Vec<&'a str>,
}

impl<'a> Stat<'a> {
    pub fn parse(line: &'a str) -> Option<Stat<'a>> {
        let open = line.find('(')?;
        let close = line.rfind(')')?;
        if close < open {
            return None;
        }
        Some(Stat {
            comm: &line[open + 1..close],
            rest: line[close + 1..].split_ascii_whitespace().collect(),
        })
    }

    /// The state letter (field 3): `R`, `S`, `Z` …
    pub fn state(&self) -> Option<char> {
        self.rest.first()?.chars().next()
    }

    /// Whether the process still runs: it has a state, and it is not a zombie or dead.
    pub fn live(&self) -> bool {
        !matches!(self.state(), None | Some('Z' | 'X' | 'x'))
    }

    /// Field `n` as proc(5) numbers them (utime is 14), as a number.
    pub fn field(&self, n: usize) -> Option<u64> {
        self.rest.get(n.checked_sub(3)?)?.parse().ok()
    }
}

/// The `stat` line of `pid` (a number or `self`), at most `cap` bytes of it.
pub fn read(pid: impl std::fmt::Display, cap: u64) -> Option<String> {
    let mut line = String::new();
    std::fs::File::open(format!("/proc/{pid}/stat"))
        .and_then(|f| f.take(cap).read_to_string(&mut line))
        .ok()?;
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::Stat;

    #[test]
    fn reads_stop_at_the_cap() {
        let whole = super::read("self", 4096).unwrap();
        assert!(whole.len() > 20, "{whole}");
        assert_eq!(super::read("self", 20).unwrap().len(), 20);
        assert_eq!(super::read(i32::MAX, 4096), None);
    }

    #[test]
    fn comm_state_and_fields() {
        let s = Stat::parse("42 (my (odd) prog) S 1 42 42 0 -1 4194560 10 0 0 0 7 3").unwrap();
        assert_eq!(s.comm, "my (odd) prog");
        assert_eq!(s.state(), Some('S'));
        assert!(s.live());
        assert_eq!(
            (s.field(4), s.field(14), s.field(15)),
            (Some(1), Some(7), Some(3))
        );
        assert_eq!(s.field(16), None);
        for dead in ["42 (a) Z 1", "42 (a) X 1", "42 (a) x 1", "42 (a)"] {
            assert!(!Stat::parse(dead).unwrap().live(), "{dead}");
        }
        for bad in ["", "42 (a", "42 a) S", "42 )a( S"] {
            assert_eq!(Stat::parse(bad), None, "{bad}");
        }
    }
}
