//! Validation of identifiers and names that arrive over the wire.
//!
//! Invariant: an id that passes [`object_id`] is 1..=64 lowercase hex characters and can be joined
//! to a directory path without escaping it; names that pass [`metadata_name`] are never used as paths.

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

/// Checks a metadata name (pod or container name, namespace). Names are keys in the name index,
/// never path components, but control characters would corrupt logs and the index key format.
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
    if let Some(ch) = value.chars().find(|c| c.is_control() || *c == '/') {
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
    fn names_reject_control_chars_and_slashes() {
        assert!(metadata_name("name", "nginx-7d9f").is_ok());
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
