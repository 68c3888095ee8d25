//! Validation of identifiers, names and other strings that arrive over the wire, before they
//! reach a file, a path, an environment variable or the database.
//!
//! Invariants: an id that passes [`object_id`] is 1..=64 lowercase hex characters and can be
//! joined to a directory path without escaping it; a name that passes [`metadata_name`] is never
//! used as a path and holds none of the separators of the formats it is written into (CNI_ARGS
//! `K=V;K=V`, the name index, log lines). DNS settings and hostnames: [`dns`]; label and
//! annotation size caps: [`maps`].

mod dns;
mod id;
mod maps;

pub use dns::{DNS_OPTIONS_MAX, DNS_SEARCHES_MAX, DNS_SERVERS_MAX, HOSTNAME_MAX, dns_config, hostname};
pub use id::{PREFIX_CANDIDATES, full_id, plausible_id, resolve_id};
pub use maps::{ANNOTATIONS_TOTAL_MAX, LABEL_KEY_MAX, LABELS_TOTAL_MAX, annotations, labels};

/// Why a piece of wire input was refused. Always maps to gRPC `InvalidArgument`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidInput {
    #[error("{what} must not be empty")]
    Empty { what: &'static str },
    #[error("{what} {value:?} is not a valid id (1 to 64 lowercase hex characters)")]
    BadId { what: &'static str, value: String },
    #[error("{what} {value:?} is too long ({len} bytes, at most {max})")]
    TooLong {
        what: &'static str,
        value: String,
        len: usize,
        max: usize,
    },
    #[error("{what} {value:?} contains a forbidden character {ch:?}")]
    BadChar {
        what: &'static str,
        value: String,
        ch: char,
    },
    #[error("{what} {value:?} is invalid: {reason}")]
    Malformed {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("{what} has {count} entries, at most {max} are allowed")]
    TooMany {
        what: &'static str,
        count: usize,
        max: usize,
    },
    #[error(
        "{what} prefix {prefix:?} is ambiguous: it matches {candidates}{}",
        if *more { " and more" } else { "" }
    )]
    AmbiguousId {
        what: &'static str,
        prefix: String,
        candidates: String,
        more: bool,
    },
    #[error("{what} total {total} bytes, at most {max} are allowed")]
    TooLarge {
        what: &'static str,
        total: usize,
        max: usize,
    },
}

/// Full length of the ids crius generates (sha256-sized, like containerd and CRI-O).
pub const ID_LEN: usize = 64;

/// Checks a sandbox/container id or a unique prefix of one, as clients send them.
pub fn object_id(what: &'static str, value: &str) -> Result<(), InvalidInput> {
    if value.is_empty() {
        return Err(InvalidInput::Empty { what });
    }
    if value.len() > ID_LEN
        || !value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(InvalidInput::BadId {
            what,
            value: value.to_string(),
        });
    }
    Ok(())
}

/// Longest metadata name accepted (Kubernetes object names are at most 253 bytes).
pub const NAME_MAX: usize = 253;

/// Characters refused in metadata names besides control characters: `/` (a path separator and
/// the container name index separator), `;` and `=` (the CNI_ARGS pair and key separators: a pod
/// name `x;K8S_POD_NAMESPACE=kube-system` would otherwise forge a key the plugins read).
/// Kubernetes object names, namespaces and UIDs never contain any of them.
const NAME_FORBIDDEN: &[char] = &['/', ';', '='];

/// Checks a metadata name (pod or container name, namespace, uid). Names are keys in the name
/// index and values in CNI_ARGS, never path components; see [`NAME_FORBIDDEN`]. Control
/// characters (newline, NUL, ...) would forge log lines and break the NUL-separated index key.
pub fn metadata_name(what: &'static str, value: &str) -> Result<(), InvalidInput> {
    if value.is_empty() {
        return Err(InvalidInput::Empty { what });
    }
    if value.len() > NAME_MAX {
        return Err(InvalidInput::TooLong {
            what,
            value: value.to_string(),
            len: value.len(),
            max: NAME_MAX,
        });
    }
    if let Some(ch) = value
        .chars()
        .find(|c| c.is_control() || NAME_FORBIDDEN.contains(c))
    {
        return Err(InvalidInput::BadChar {
            what,
            value: value.to_string(),
            ch,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_hex_and_bounded() {
        assert!(object_id("id", "abc123").is_ok());
        assert!(object_id("id", &"a".repeat(64)).is_ok());
        assert_eq!(object_id("id", ""), Err(InvalidInput::Empty { what: "id" }));
        assert!(matches!(
            object_id("id", &"a".repeat(65)),
            Err(InvalidInput::BadId { .. })
        ));
        assert!(matches!(
            object_id("id", "../etc"),
            Err(InvalidInput::BadId { .. })
        ));
        assert!(matches!(object_id("id", "ABC"), Err(InvalidInput::BadId { .. })));
    }

    #[test]
    fn names_reject_control_chars_and_separators() {
        assert!(metadata_name("name", "nginx-7d9f").is_ok());
        assert!(metadata_name("uid", "0b1c2d3e-aaaa-bbbb-cccc-0123456789ab").is_ok());
        assert!(metadata_name("name", "Mixed_Case.name").is_ok());
        for (bad, ch) in [
            ("a;b", ';'),
            ("K8S_POD_NAME=x", '='),
            ("a\0b", '\0'),
            ("a\rb", '\r'),
            ("a\tb", '\t'),
            ("a\u{7f}b", '\u{7f}'),
        ] {
            assert_eq!(
                metadata_name("metadata.name", bad),
                Err(InvalidInput::BadChar {
                    what: "metadata.name",
                    value: bad.into(),
                    ch
                }),
                "{bad:?}"
            );
        }
        assert!(metadata_name("name", "").is_err());
        assert!(matches!(
            metadata_name("name", "a/b"),
            Err(InvalidInput::BadChar { ch: '/', .. })
        ));
        assert!(matches!(
            metadata_name("name", "a\nb"),
            Err(InvalidInput::BadChar { .. })
        ));
        assert!(matches!(
            metadata_name("name", &"x".repeat(254)),
            Err(InvalidInput::TooLong { .. })
        ));
    }
}
