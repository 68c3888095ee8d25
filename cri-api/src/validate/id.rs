//! Resolution of the ids clients send: the full id crius issued or a unique prefix of one (crictl
//! and kubectl-debugging operators send prefixes, containerd and CRI-O accept them).
//!
//! Invariants: one rule for every pod and container verb; an id crius could never have issued
//! (critest probes with UUIDs) names nothing; an exact id wins over longer ids it prefixes; an
//! ambiguous prefix is refused naming the candidates, never resolved to one of them.

use super::{InvalidInput, object_id};

/// How many stored ids a lookup asks for: enough to name candidates in the error, bounded.
pub const PREFIX_CANDIDATES: usize = 4;

/// What `query` names among `matches`, the stored ids that start with it in key order (at most
/// [`PREFIX_CANDIDATES`] of them). `Ok(None)`: nothing (also for a foreign-looking id).
pub fn resolve_id(
    what: &'static str,
    query: &str,
    matches: &[String],
) -> Result<Option<String>, InvalidInput> {
    if let Err(e) = object_id(what, query) {
        return match e {
            InvalidInput::BadId { .. } => Ok(None),
            e => Err(e),
        };
    }
    match matches {
        [] => Ok(None),
        [one] => Ok(Some(one.clone())),
        // Key order puts the exact id first among those it prefixes.
        [first, ..] if first == query => Ok(Some(first.clone())),
        _ => Err(InvalidInput::AmbiguousId {
            what,
            prefix: query.to_string(),
            candidates: matches
                .iter()
                .map(|m| m[..m.len().min(12)].to_string())
                .collect::<Vec<_>>()
                .join(", "),
            more: matches.len() >= PREFIX_CANDIDATES,
        }),
    }
}

/// Whether `query` could be an id crius issued or a prefix of one (for lookups that must not
/// even touch the store otherwise).
pub fn plausible_id(query: &str) -> bool {
    object_id("id", query).is_ok()
}

/// Whether `s` is a whole id as crius issues them (64 lowercase hex characters), not a prefix:
/// how directories named by container or pod id are told from anything else beside them.
pub fn full_id(s: &str) -> bool {
    s.len() == super::ID_LEN && plausible_id(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn full_ids_prefixes_and_ambiguity() {
        let a = "ab".repeat(32);
        let b = format!("ab{}", "cd".repeat(31));
        assert_eq!(
            resolve_id("container id", &a, &ids(&[&a])).unwrap(),
            Some(a.clone())
        );
        assert_eq!(
            resolve_id("container id", "abab", &ids(&[&a])).unwrap(),
            Some(a.clone())
        );
        assert_eq!(resolve_id("container id", "ff", &[]).unwrap(), None);
        let e = resolve_id("container id", "ab", &ids(&[&a, &b])).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("ambiguous") && msg.contains("abababababab") && msg.contains("abcdcdcdcdcd"),
            "{msg}"
        );
        assert!(!msg.contains("more"), "{msg}");
    }

    #[test]
    fn an_exact_id_wins_over_the_ids_it_prefixes() {
        let short = "abc".to_string();
        let long = format!("abc{}", "0".repeat(61));
        assert_eq!(
            resolve_id("pod sandbox id", "abc", &[short.clone(), long]).unwrap(),
            Some(short)
        );
    }

    #[test]
    fn foreign_ids_name_nothing_and_empty_is_invalid() {
        assert_eq!(resolve_id("container id", "3f2b-uuid-like", &[]).unwrap(), None);
        assert_eq!(resolve_id("container id", &"a".repeat(65), &[]).unwrap(), None);
        assert!(matches!(
            resolve_id("container id", "", &[]),
            Err(InvalidInput::Empty { .. })
        ));
        assert!(!plausible_id("") && !plausible_id("XYZ") && plausible_id("0a"));
        assert!(full_id(&"0a".repeat(32)) && !full_id("0a") && !full_id(&"0A".repeat(32)));
        assert!(!full_id(&"0a".repeat(33)) && !full_id(&format!("{}g", "0".repeat(63))));
    }

    #[test]
    fn a_full_candidate_list_says_there_are_more() {
        let m: Vec<String> = (0..PREFIX_CANDIDATES).map(|i| format!("a{i}")).collect();
        let msg = resolve_id("container id", "a", &m).unwrap_err().to_string();
        assert!(msg.contains("and more"), "{msg}");
    }
}
