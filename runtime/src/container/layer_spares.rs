//! Writable-layer directory sets made ahead of time. A create renames a ready set
//! (`<root>/layer-spares/<name>/{upper,work}`) into place as `<root>/containers/<id>` instead of
//! making the three directories itself: on ext4 each of those `mkdir`s costs 0.1–0.4 ms and
//! grows while a burst of creates runs (docs/PERFORMANCE.md), and the create waits for them.
//!
//! Invariants:
//! - A set is made whole under a `tmp-` name (the directory 0700, `work` 0700, `upper` 0755:
//!   what `rootfs::prepare_dirs` makes) and only then renamed to its ready name, so a set found
//!   under a ready name is whole and empty; [`LayerSpares::new`] removes `tmp-` leftovers of a
//!   crash.
//! - Taking a set is one `rename(2)` of a slot name on the same file system (no listing); two
//!   creates racing for one set get it once, the other takes the next or makes its own
//!   directories.
//! - Ready sets are named by slot, `0` to [`SPARES`] − 1, so at most [`SPARES`] are ready and
//!   the directory's listing is the same after any number of creates; one refill runs at a
//!   time, on the blocking pool, after a take. Spares own nothing else: they survive restarts
//!   and are reused.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::dir_names::entry_names;

/// Ready sets kept: kubelet creates a pod's containers one after the other.
pub(crate) const SPARES: usize = 2;

const TMP_PREFIX: &str = "tmp-";

pub(crate) struct LayerSpares {
    dir: PathBuf,
    next: AtomicU64,
    refilling: AtomicBool,
}

impl LayerSpares {
    /// The spares of `root` (`<root>/layer-spares`); removes sets a crash left half made.
    /// Blocking.
    pub(crate) fn new(root: &Path) -> LayerSpares {
        let dir = root.join("layer-spares");
        for name in entry_names(&dir)
            .into_iter()
            .filter(|n| n.starts_with(TMP_PREFIX))
        {
            let _ = std::fs::remove_dir_all(dir.join(name));
        }
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        LayerSpares {
            dir,
            next: AtomicU64::new(seed),
            refilling: AtomicBool::new(false),
        }
    }

    /// Renames a ready set to `layer_dir`, which must not exist yet. False when no set is
    /// ready (the caller makes the directories itself). Blocking.
    pub(crate) fn take(&self, layer_dir: &Path) -> bool {
        for slot in 0..SPARES {
            match std::fs::rename(self.dir.join(slot.to_string()), layer_dir) {
                Ok(()) => return true,
                // Not made yet, or another create took it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    tracing::debug!(error = %e, slot, "cannot take a spare writable layer");
                    return false;
                }
            }
        }
        false
    }

    /// Makes sets until [`SPARES`] are ready, on the blocking pool of the current runtime (none:
    /// nothing is made). Returns at once.
    pub(crate) fn refill_in_background(self: &Arc<Self>) {
        if self.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.refilling.store(false, Ordering::Release);
            return;
        };
        rt.spawn_blocking(move || {
            this.refill();
            this.refilling.store(false, Ordering::Release);
        });
    }

    /// Blocking: makes a set for every empty slot.
    pub(crate) fn refill(&self) {
        for slot in 0..SPARES {
            if self.dir.join(slot.to_string()).exists() {
                continue;
            }
            if let Err(e) = self.make_one(slot) {
                tracing::debug!(error = %e, "cannot make a spare writable layer");
                return;
            }
        }
    }

    fn make_one(&self, slot: usize) -> std::io::Result<()> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        crate::private::create_dir(&self.dir)?;
        let tmp = self.dir.join(format!("{TMP_PREFIX}{n:x}"));
        let made = (|| {
            crate::private::create_dir(&tmp)?;
            crate::private::create_dir(&tmp.join("work"))?;
            std::fs::DirBuilder::new().mode(0o755).create(tmp.join("upper"))?;
            // A set cannot replace one that filled the slot meanwhile: that one is not empty.
            std::fs::rename(&tmp, self.dir.join(slot.to_string()))
        })();
        if made.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        made
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_taken_set_has_the_modes_a_create_makes_and_the_pool_refills() {
        let root = tempfile::tempdir().unwrap();
        let containers = root.path().join("containers");
        std::fs::create_dir(&containers).unwrap();
        let spares = LayerSpares::new(root.path());
        assert!(!spares.take(&containers.join("a")), "nothing is ready at first");
        spares.refill();
        assert_eq!(entry_names(&spares.dir).len(), SPARES);
        assert!(spares.take(&containers.join("a")));
        assert!(spares.take(&containers.join("b")));
        assert!(!spares.take(&containers.join("c")), "both sets were taken");
        for id in ["a", "b"] {
            let layer = containers.join(id);
            assert_eq!(mode(&layer), 0o700);
            assert_eq!(mode(&layer.join("work")), 0o700);
            assert_eq!(mode(&layer.join("upper")), 0o755);
            assert_eq!(entry_names(&layer.join("upper")), Vec::<String>::new());
        }
        spares.refill();
        let mut names = entry_names(&spares.dir);
        names.sort();
        assert_eq!(names, ["0", "1"], "refilled to the cap, under the same names");
        spares.refill();
        assert_eq!(entry_names(&spares.dir).len(), SPARES);
    }

    #[test]
    fn half_made_sets_are_never_taken_and_go_at_start() {
        let root = tempfile::tempdir().unwrap();
        let containers = root.path().join("containers");
        std::fs::create_dir(&containers).unwrap();
        let half = root.path().join("layer-spares").join(format!("{TMP_PREFIX}1"));
        std::fs::create_dir_all(half.join("work")).unwrap();
        let spares = LayerSpares {
            dir: root.path().join("layer-spares"),
            next: AtomicU64::new(0),
            refilling: AtomicBool::new(false),
        };
        assert!(!spares.take(&containers.join("a")), "a tmp- set is not ready");
        LayerSpares::new(root.path());
        assert!(!half.exists(), "start-up removes it");
    }
}
