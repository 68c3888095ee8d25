//! Size caps on the label and annotation maps of pods and containers, which crius stores in
//! every record and returns in every List call.
//!
//! The Kubernetes API server caps annotations at 256 KiB in all (keys plus values) and holds a
//! label to a qualified-name key (prefix ≤ 253, name ≤ 63) and a value ≤ 63 bytes. The CRI labels
//! kubelet sends are not all API labels, though: it adds `io.kubernetes.pod.name` (a pod name,
//! up to 253 bytes), `io.kubernetes.pod.namespace` and `io.kubernetes.pod.uid`, so a 63-byte
//! value cap would refuse kubelet's own pods. Labels therefore get the key cap and the same
//! 256 KiB total as annotations instead of a per-value cap.
//!
//! Invariant: no key is empty or holds a control character (API keys never do); values are
//! opaque (annotation values carry multi-line JSON, e.g. kubectl's last-applied-configuration).

use std::collections::HashMap;

use super::InvalidInput;

/// Kubernetes' TotalAnnotationSizeLimitB.
pub const ANNOTATIONS_TOTAL_MAX: usize = 256 * 1024;
/// The same total for labels (see the module docs for why not a per-value cap).
pub const LABELS_TOTAL_MAX: usize = 256 * 1024;
/// A qualified name: a DNS-subdomain prefix (≤ 253), `/`, and a name (≤ 63).
pub const LABEL_KEY_MAX: usize = 253 + 1 + 63;

/// Checks a label map (`what` names the field, e.g. `config.labels`).
pub fn labels(what: &'static str, map: &HashMap<String, String>) -> Result<(), InvalidInput> {
    check(what, map, LABELS_TOTAL_MAX)
}

/// Checks an annotation map.
pub fn annotations(what: &'static str, map: &HashMap<String, String>) -> Result<(), InvalidInput> {
    check(what, map, ANNOTATIONS_TOTAL_MAX)
}

fn check(what: &'static str, map: &HashMap<String, String>, total_max: usize) -> Result<(), InvalidInput> {
    let mut total = 0usize;
    for (k, v) in map {
        if k.is_empty() {
            return Err(InvalidInput::Malformed {
                what,
                value: String::new(),
                reason: "a key is empty",
            });
        }
        if k.len() > LABEL_KEY_MAX {
            return Err(InvalidInput::TooLong {
                what,
                value: k.clone(),
                len: k.len(),
                max: LABEL_KEY_MAX,
            });
        }
        if let Some(ch) = k.chars().find(|c| c.is_control()) {
            return Err(InvalidInput::BadChar {
                what,
                value: k.clone(),
                ch,
            });
        }
        total += k.len() + v.len();
    }
    if total > total_max {
        return Err(InvalidInput::TooLarge {
            what,
            total,
            max: total_max,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn kubelet_labels_pass() {
        let pod_name = format!("{}.example", "a".repeat(245));
        assert_eq!(pod_name.len(), 253);
        let m = map(&[
            ("io.kubernetes.pod.name", &pod_name),
            ("io.kubernetes.pod.namespace", "default"),
            ("io.kubernetes.pod.uid", "0b1c2d3e-aaaa-bbbb-cccc-0123456789ab"),
            ("io.kubernetes.container.name", "POD"),
            ("app.kubernetes.io/name", "web"),
        ]);
        assert_eq!(labels("config.labels", &m), Ok(()));
        let json = map(&[(
            "kubectl.kubernetes.io/last-applied-configuration",
            "{\n  \"a\": 1\n}\n",
        )]);
        assert_eq!(annotations("config.annotations", &json), Ok(()));
    }

    #[test]
    fn totals_are_capped_at_256k() {
        let big = "v".repeat(ANNOTATIONS_TOTAL_MAX - 1);
        assert_eq!(annotations("config.annotations", &map(&[("k", &big)])), Ok(()));
        let over = "v".repeat(ANNOTATIONS_TOTAL_MAX);
        assert_eq!(
            annotations("config.annotations", &map(&[("k", &over)])),
            Err(InvalidInput::TooLarge {
                what: "config.annotations",
                total: ANNOTATIONS_TOTAL_MAX + 1,
                max: ANNOTATIONS_TOTAL_MAX
            })
        );
        // Many small entries count together.
        let many: HashMap<String, String> = (0..3000)
            .map(|i| (format!("key-{i:05}"), "x".repeat(80)))
            .collect();
        assert!(matches!(
            labels("config.labels", &many),
            Err(InvalidInput::TooLarge {
                what: "config.labels",
                ..
            })
        ));
    }

    #[test]
    fn keys_are_bounded_non_empty_and_printable() {
        let key = "k".repeat(LABEL_KEY_MAX);
        assert_eq!(labels("config.labels", &map(&[(&key, "v")])), Ok(()));
        let long = "k".repeat(LABEL_KEY_MAX + 1);
        assert!(matches!(
            labels("config.labels", &map(&[(&long, "v")])),
            Err(InvalidInput::TooLong {
                max: LABEL_KEY_MAX,
                ..
            })
        ));
        assert!(matches!(
            labels("config.labels", &map(&[("", "v")])),
            Err(InvalidInput::Malformed { .. })
        ));
        assert!(matches!(
            annotations("config.annotations", &map(&[("a\nb", "v")])),
            Err(InvalidInput::BadChar { ch: '\n', .. })
        ));
    }
}
