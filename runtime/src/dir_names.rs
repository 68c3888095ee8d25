//! Listing crius's own directories by entry name: the container and pod directories under root
//! and state, and the writable-layer spares. Blocking.

use std::path::Path;

/// The entry names of `dir`, in directory order; none when it cannot be read (it does not
/// exist yet, say). Names that are not UTF-8 come lossily converted, so they match no id.
pub(crate) fn entry_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The entries of `dir` named by a whole crius id ([`cri_api::validate::full_id`]).
pub(crate) fn id_names(dir: &Path) -> Vec<String> {
    let mut names = entry_names(dir);
    names.retain(|n| cri_api::validate::full_id(n));
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_told_from_other_entries_and_a_missing_dir_is_empty() {
        let d = tempfile::tempdir().unwrap();
        let id = "ab".repeat(32);
        for n in [id.as_str(), "ab", "layer-spares", &"AB".repeat(32)] {
            std::fs::create_dir(d.path().join(n)).unwrap();
        }
        assert_eq!(entry_names(d.path()).len(), 4);
        assert_eq!(id_names(d.path()), [id]);
        assert!(entry_names(&d.path().join("missing")).is_empty());
    }
}
