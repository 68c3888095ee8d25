//! The pod's hostname and DNS settings, which become lines of `hostname`, `hosts` and
//! `resolv.conf` (and the `dns` capability argument of CNI plugins).
//!
//! Invariant: whatever passes here cannot add a line, a field or a comment to those files: no
//! whitespace, no control character, no `#` or `;` (resolv.conf comments) in any value.

use super::InvalidInput;

/// Longest hostname the kernel accepts (`HOST_NAME_MAX`); Kubernetes pod hostnames (a DNS
/// label, or the FQDN with `setHostnameAsFQDN`) are held to the same 64 bytes.
pub const HOSTNAME_MAX: usize = 64;
/// glibc reads at most 3 `nameserver` lines (MAXNS); kubelet trims the list to 3 likewise.
pub const DNS_SERVERS_MAX: usize = 3;
/// Kubernetes' MaxDNSSearchPaths; kubelet trims the merged list to fit.
pub const DNS_SEARCHES_MAX: usize = 32;
/// Kubernetes' MaxDNSSearchListChars: the search line's length, domains joined by spaces.
pub const DNS_SEARCH_LINE_MAX: usize = 2048;
/// More options than resolv.conf has; a bound on the line, not a policy.
pub const DNS_OPTIONS_MAX: usize = 32;
const DNS_OPTION_LEN_MAX: usize = 255;
const DNS_NAME_MAX: usize = 253;
const DNS_LABEL_MAX: usize = 63;

/// Checks a pod hostname as an RFC 1123 host name: dot-separated labels of ASCII letters, digits
/// and `-`, each 1..=63 bytes and neither starting nor ending with `-`, at most
/// [`HOSTNAME_MAX`] bytes in all.
pub fn hostname(what: &'static str, value: &str) -> Result<(), InvalidInput> {
    if value.is_empty() {
        return Err(InvalidInput::Empty { what });
    }
    if value.len() > HOSTNAME_MAX {
        return Err(too_long(what, value, HOSTNAME_MAX));
    }
    dns_labels(what, value, false)
}

/// Checks a CRI `DNSConfig`: every server an IP address, every search domain a DNS name, every
/// option `name` or `name:value` of `[A-Za-z0-9._-]` (plus `:`), within the limits above.
pub fn dns_config(servers: &[String], searches: &[String], options: &[String]) -> Result<(), InvalidInput> {
    count("dns_config.servers", servers.len(), DNS_SERVERS_MAX)?;
    count("dns_config.searches", searches.len(), DNS_SEARCHES_MAX)?;
    count("dns_config.options", options.len(), DNS_OPTIONS_MAX)?;
    for s in servers {
        // std's parser takes exactly an address: no zone, port, brackets or whitespace.
        if s.parse::<std::net::IpAddr>().is_err() {
            return Err(malformed("dns_config.servers", s, "not an IP address"));
        }
    }
    for s in searches {
        let what = "dns_config.searches";
        if s.is_empty() {
            return Err(InvalidInput::Empty { what });
        }
        // A trailing dot (fully qualified) is allowed, as Kubernetes does.
        let name = s.strip_suffix('.').unwrap_or(s);
        if name.len() > DNS_NAME_MAX {
            return Err(too_long(what, s, DNS_NAME_MAX));
        }
        dns_labels(what, name, true)?;
    }
    let line = searches.iter().map(String::len).sum::<usize>() + searches.len().saturating_sub(1);
    if line > DNS_SEARCH_LINE_MAX {
        return Err(InvalidInput::TooLarge {
            what: "dns_config.searches",
            total: line,
            max: DNS_SEARCH_LINE_MAX,
        });
    }
    for o in options {
        let what = "dns_config.options";
        if o.is_empty() {
            return Err(InvalidInput::Empty { what });
        }
        if o.len() > DNS_OPTION_LEN_MAX {
            return Err(too_long(what, o, DNS_OPTION_LEN_MAX));
        }
        if let Some(ch) = o
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':')))
        {
            return Err(bad_char(what, o, ch));
        }
        if o.starts_with(':') {
            return Err(malformed(what, o, "the option name before ':' is empty"));
        }
    }
    Ok(())
}

/// Dot-separated labels of letters, digits and `-` (and `_` when `underscore`: search domains
/// come from the node's own resolv.conf too, where service-style `_x` labels occur).
fn dns_labels(what: &'static str, name: &str, underscore: bool) -> Result<(), InvalidInput> {
    for label in name.split('.') {
        if let Some(ch) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || (underscore && *c == '_')))
        {
            return Err(bad_char(what, name, ch));
        }
        if label.is_empty() {
            return Err(malformed(
                what,
                name,
                "has an empty label (`..`, or a leading dot)",
            ));
        }
        if label.len() > DNS_LABEL_MAX {
            return Err(malformed(what, name, "has a label longer than 63 bytes"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(malformed(what, name, "has a label that starts or ends with '-'"));
        }
    }
    Ok(())
}

fn count(what: &'static str, count: usize, max: usize) -> Result<(), InvalidInput> {
    if count > max {
        return Err(InvalidInput::TooMany { what, count, max });
    }
    Ok(())
}

fn too_long(what: &'static str, value: &str, max: usize) -> InvalidInput {
    InvalidInput::TooLong {
        what,
        value: value.to_string(),
        len: value.len(),
        max,
    }
}

fn bad_char(what: &'static str, value: &str, ch: char) -> InvalidInput {
    InvalidInput::BadChar {
        what,
        value: value.to_string(),
        ch,
    }
}

fn malformed(what: &'static str, value: &str, reason: &'static str) -> InvalidInput {
    InvalidInput::Malformed {
        what,
        value: value.to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    fn what(e: InvalidInput) -> &'static str {
        match e {
            InvalidInput::Empty { what }
            | InvalidInput::BadId { what, .. }
            | InvalidInput::TooLong { what, .. }
            | InvalidInput::BadChar { what, .. }
            | InvalidInput::Malformed { what, .. }
            | InvalidInput::AmbiguousId { what, .. }
            | InvalidInput::TooMany { what, .. }
            | InvalidInput::TooLarge { what, .. } => what,
        }
    }

    #[test]
    fn hostnames_are_rfc1123() {
        for ok in ["web-0", "a", "Web0", "web-0.svc.cluster.local", &"a".repeat(63)] {
            assert_eq!(hostname("hostname", ok), Ok(()), "{ok:?}");
        }
        let long_fqdn = format!("{}.{}", "a".repeat(40), "b".repeat(24));
        assert_eq!(long_fqdn.len(), 65);
        assert!(matches!(
            hostname("hostname", &long_fqdn),
            Err(InvalidInput::TooLong { max: 64, .. })
        ));
        assert!(matches!(
            hostname("hostname", ""),
            Err(InvalidInput::Empty { .. })
        ));
        for (bad, ch) in [
            ("web\n10.0.0.1 evil", '\n'),
            ("a b", ' '),
            ("a\tb", '\t'),
            ("a\0b", '\0'),
            ("a;b", ';'),
            ("a=b", '='),
            ("a/b", '/'),
            ("a_b", '_'),
            ("a#b", '#'),
        ] {
            assert!(
                matches!(hostname("hostname", bad), Err(InvalidInput::BadChar { ch: c, .. }) if c == ch),
                "{bad:?}"
            );
        }
        for bad in ["-web", "web-", "a..b", ".a", "a.", &"a".repeat(64)] {
            assert!(
                matches!(
                    hostname("hostname", bad),
                    Err(InvalidInput::Malformed { .. } | InvalidInput::TooLong { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn servers_must_be_ip_addresses() {
        assert_eq!(dns_config(&v(&["10.96.0.10", "fd00::a"]), &[], &[]), Ok(()));
        for bad in [
            "10.0.0.1\nnameserver 6.6.6.6",
            "10.0.0.1 ",
            "dns.example.com",
            "10.0.0.1:53",
            "fe80::1%eth0",
            "",
        ] {
            let e = dns_config(&v(&[bad]), &[], &[]).unwrap_err();
            assert!(matches!(e, InvalidInput::Malformed { .. }), "{bad:?}: {e}");
            assert_eq!(what(e), "dns_config.servers");
        }
        assert!(matches!(
            dns_config(&v(&["1.1.1.1", "1.1.1.2", "1.1.1.3", "1.1.1.4"]), &[], &[]),
            Err(InvalidInput::TooMany { max: 3, .. })
        ));
    }

    #[test]
    fn searches_must_be_dns_names() {
        let ok = v(&[
            "default.svc.cluster.local",
            "svc.cluster.local.",
            "Corp.Example.com",
            "_tcp.example.org",
        ]);
        assert_eq!(dns_config(&[], &ok, &[]), Ok(()));
        for bad in [
            "a.com\nnameserver 6.6.6.6",
            "a.com b.com",
            "a.com#x",
            "a;b",
            "a..b",
            "-a.com",
            "",
            ".",
        ] {
            let e = dns_config(&[], &v(&[bad]), &[]).unwrap_err();
            assert_eq!(what(e), "dns_config.searches", "{bad:?}");
        }
        let label = "a".repeat(63);
        let long = [label.as_str(); 4].join(".");
        assert!(matches!(
            dns_config(&[], &v(&[&long]), &[]),
            Err(InvalidInput::TooLong { max: 253, .. })
        ));
        assert!(matches!(
            dns_config(&[], &vec!["a.b".to_string(); 33], &[]),
            Err(InvalidInput::TooMany { max: 32, .. })
        ));
        let wide = vec![format!("{}.{}", "a".repeat(63), "b".repeat(63)); 32];
        assert!(matches!(
            dns_config(&[], &wide, &[]),
            Err(InvalidInput::TooLarge { max: 2048, .. })
        ));
    }

    #[test]
    fn options_are_name_or_name_colon_value() {
        let ok = v(&[
            "ndots:5",
            "timeout:2",
            "rotate",
            "single-request-reopen",
            "edns0",
            "use-vc",
        ]);
        assert_eq!(dns_config(&[], &[], &ok), Ok(()));
        for bad in [
            "ndots:5\nnameserver 6.6.6.6",
            "ndots 5",
            "a;b",
            "a=b",
            "#x",
            "",
            ":5",
        ] {
            let e = dns_config(&[], &[], &v(&[bad])).unwrap_err();
            assert_eq!(what(e), "dns_config.options", "{bad:?}");
        }
        assert!(matches!(
            dns_config(&[], &[], &vec!["rotate".to_string(); 33]),
            Err(InvalidInput::TooMany { max: 32, .. })
        ));
        assert!(matches!(
            dns_config(&[], &[], &v(&[&"a".repeat(256)])),
            Err(InvalidInput::TooLong { max: 255, .. })
        ));
    }
}
