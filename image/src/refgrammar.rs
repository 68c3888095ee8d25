//! The image reference grammar, `[domain/]path[:tag][@algorithm:hex]`, checked by hand.
//!
//! Why not a regex: the one oci-spec compiles for this grammar stays resident in the daemon at
//! about 19 MB (heaptrack) once the first reference is parsed, twice the daemon's idle RSS.
//!
//! Invariants: a name that passes has a lowercase path of `[a-z0-9]+` components joined by `.`,
//! `_`, `__` or dashes, an optional domain (`host[:port]`, the host a dotted name or a bracketed
//! IPv6 address) recognised as docker does (a first component with `.` or `:`, or `localhost`),
//! at most 255 bytes in all; a tag is `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`; a digest is a known
//! algorithm with a hex value of that algorithm's length.

/// A reference split into its parts, not yet normalised.
#[derive(Debug, PartialEq, Eq)]
pub struct Parts<'a> {
    pub domain: Option<&'a str>,
    pub path: &'a str,
    pub tag: Option<&'a str>,
    pub digest: Option<&'a str>,
}

const NAME_MAX: usize = 255;
const TAG_MAX: usize = 128;

/// Splits and checks `s`; the error says what is wrong.
pub fn split(s: &str) -> Result<Parts<'_>, &'static str> {
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => (r, Some(check_digest(d)?)),
        None => (s, None),
    };
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => {
            let at = last_slash + i;
            (&rest[..at], Some(check_tag(&rest[at + 1..])?))
        }
        None => (rest, None),
    };
    if name.is_empty() {
        return Err("the name is empty");
    }
    if name.len() > NAME_MAX {
        return Err("the name is longer than 255 bytes");
    }
    let (domain, path) = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => (Some(first), rest),
        _ => (None, name),
    };
    if let Some(d) = domain {
        check_domain(d)?;
    }
    for component in path.split('/') {
        check_path_component(component)?;
    }
    Ok(Parts {
        domain,
        path,
        tag,
        digest,
    })
}

fn check_tag(tag: &str) -> Result<&str, &'static str> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut chars = tag.chars();
    match chars.next() {
        Some(c) if word(c) => {}
        _ => return Err("a tag starts with a letter, digit or '_'"),
    }
    if tag.len() > TAG_MAX || !chars.all(|c| word(c) || c == '.' || c == '-') {
        return Err("a tag is at most 128 of [A-Za-z0-9_.-]");
    }
    Ok(tag)
}

fn check_digest(d: &str) -> Result<&str, &'static str> {
    let (algorithm, hex) = d.split_once(':').ok_or("a digest is <algorithm>:<hex>")?;
    let want = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err("unsupported digest algorithm (sha256, sha384 or sha512)"),
    };
    if hex.len() != want || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("the digest's hex value has the wrong length or characters");
    }
    Ok(d)
}

/// `[a-z0-9]+` runs joined by one `.`, one or two `_`, or any number of `-`.
fn check_path_component(c: &str) -> Result<(), &'static str> {
    if c.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err("repository name must be lowercase");
    }
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return Err("a path component starts and ends with [a-z0-9]");
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return Err("a path component joins [a-z0-9] runs with '.', '_', '__' or dashes");
        }
    }
    Ok(())
}

/// `host[:port]`: dotted labels of `[A-Za-z0-9-]` (no dash at either end) or `[ipv6]`.
fn check_domain(d: &str) -> Result<(), &'static str> {
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or("an IPv6 host needs its closing ']'")?;
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("the bracketed host is not an IPv6 address");
        }
        match after {
            "" => return Ok(()),
            p => (
                None,
                Some(p.strip_prefix(':').ok_or("only a port may follow ']'")?),
            ),
        }
    } else {
        match d.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(d), None),
        }
    };
    if let Some(p) = port
        && (p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("a registry port is digits");
    }
    if let Some(h) = host {
        let label_ok = |l: &str| {
            let b = l.as_bytes();
            !b.is_empty()
                && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        };
        if !h.split('.').all(label_ok) {
            return Err("a registry host is dot-separated labels of [A-Za-z0-9-]");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(s: &str) -> (Option<&str>, &str, Option<&str>, Option<&str>) {
        let p = split(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        (p.domain, p.path, p.tag, p.digest)
    }

    #[test]
    fn accepts_the_shapes_in_use() {
        let d = format!("sha256:{}", "f".repeat(64));
        assert_eq!(parts("busybox"), (None, "busybox", None, None));
        assert_eq!(parts("foo/bar:1.2"), (None, "foo/bar", Some("1.2"), None));
        assert_eq!(
            parts("test.com:tag"),
            (None, "test.com", Some("tag"), None),
            "no '/': a tag"
        );
        assert_eq!(parts("test:5000/repo"), (Some("test:5000"), "repo", None, None));
        assert_eq!(
            parts("localhost/a/b_c__d---e.f"),
            (Some("localhost"), "a/b_c__d---e.f", None, None)
        );
        assert_eq!(
            parts(&format!("127.0.0.1:5000/t/busybox:x@{d}")),
            (Some("127.0.0.1:5000"), "t/busybox", Some("x"), Some(d.as_str()))
        );
        assert_eq!(parts("[::1]:5000/r"), (Some("[::1]:5000"), "r", None, None));
        assert_eq!(
            parts("xn--n3h.com/img:xn--n3h.com"),
            (Some("xn--n3h.com"), "img", Some("xn--n3h.com"), None)
        );
        let long = format!("sha512:{}", "a".repeat(128));
        assert_eq!(parts(&format!("r@{long}")).3, Some(long.as_str()));
    }

    #[test]
    fn refuses_what_the_grammar_does_not_allow() {
        for bad in [
            "",
            ":tag",
            &format!("@sha256:{}", "f".repeat(64)),
            "repo@sha256:ffff",
            &format!("repo@md5:{}", "f".repeat(64)),
            "Uppercase:tag",
            "Upper/lower",
            "host:5000/Upper/lower",
            "aa/asdf$$^/aa",
            "bad name!",
            "a//b",
            "a/-b",
            "a/b.",
            "a/b..c",
            "a/b___c",
            "repo:-tag",
            &format!("repo:{}", "t".repeat(129)),
            &"a".repeat(256),
            "-host.com/r",
            "host.com:port/r",
            "[zz]:5000/r",
        ] {
            assert!(split(bad).is_err(), "{bad:?} passed");
        }
    }
}
