//! The CDI spec directories: reading every `*.json`/`*.yaml` file in them (not recursively) into
//! one table of fully-qualified device names.
//!
//! Invariants: each file is read with a size cap and each directory with a file-count cap, both
//! enforced while reading; a file that cannot be read or is not a valid spec is logged and
//! skipped, never fatal for the devices of other files; a later directory has priority over an
//! earlier one; a device defined in two files of the same directory (the same priority) is a
//! conflict, never silently picked.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::schema::{self, Spec};

/// The largest spec file read (vendors' generated specs with many mounts stay far below).
pub const MAX_SPEC_BYTES: u64 = 4 << 20;
/// The most spec files read from one directory; the rest are logged and skipped.
pub const MAX_SPECS_PER_DIR: usize = 256;

/// Where a device comes from: its spec and its index in that spec's `devices`.
#[derive(Debug, Clone)]
pub struct Found {
    pub spec: Arc<Spec>,
    pub path: PathBuf,
    pub index: usize,
}

/// What a qualified name resolves to.
#[derive(Debug, Clone)]
pub enum Entry {
    Device(Found),
    /// Two files of the same priority define it.
    Conflict(PathBuf, PathBuf),
}

/// Reads every spec in `dirs` (priority ascending). A missing directory is empty; a directory
/// that exists but cannot be listed is an error (a device it holds would look unknown).
pub fn scan(dirs: &[PathBuf]) -> std::io::Result<HashMap<String, (usize, Entry)>> {
    let mut table: HashMap<String, (usize, Entry)> = HashMap::new();
    for (priority, dir) in dirs.iter().enumerate() {
        for (path, spec) in read_dir(dir)? {
            let spec = Arc::new(spec);
            let (vendor, class) = spec.vendor_class();
            for (index, d) in spec.devices.iter().enumerate() {
                let name = format!("{vendor}/{class}={}", d.name);
                let found = Entry::Device(Found {
                    spec: spec.clone(),
                    path: path.clone(),
                    index,
                });
                match table.get(&name) {
                    Some((p, Entry::Device(old))) if *p == priority => {
                        tracing::warn!(device = %name, a = %old.path.display(), b = %path.display(),
                            "CDI device defined twice at the same priority; neither is used");
                        let conflict = Entry::Conflict(old.path.clone(), path.clone());
                        table.insert(name, (priority, conflict));
                    }
                    Some((p, Entry::Conflict(..))) if *p == priority => {}
                    _ => {
                        table.insert(name, (priority, found));
                    }
                }
            }
        }
    }
    Ok(table)
}

/// The valid specs of one directory, in file-name order.
fn read_dir(dir: &Path) -> std::io::Result<Vec<(PathBuf, Spec)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut paths = Vec::new();
    for e in entries {
        let e = e?;
        let path = e.path();
        let json = match path.extension().and_then(|x| x.to_str()) {
            Some("json") => true,
            Some("yaml") => false,
            _ => continue,
        };
        if paths.len() == MAX_SPECS_PER_DIR {
            tracing::warn!(dir = %dir.display(), max = MAX_SPECS_PER_DIR,
                "too many CDI spec files; the rest are skipped");
            break;
        }
        paths.push((path, json));
    }
    paths.sort();
    let mut specs = Vec::with_capacity(paths.len());
    for (path, json) in paths {
        match read_spec(&path, json) {
            Ok(Some(spec)) => specs.push((path, spec)),
            Ok(None) => {}
            Err(error) => tracing::warn!(path = %path.display(), %error, "CDI spec file skipped"),
        }
    }
    Ok(specs)
}

/// One spec file; `None` for what is not a regular file (a directory named `x.json`). Opened
/// non-blocking, so a FIFO named like a spec cannot stall the create.
fn read_spec(path: &Path, json: bool) -> Result<Option<Spec>, String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| e.to_string())?;
    if !file.metadata().map_err(|e| e.to_string())?.is_file() {
        return Ok(None);
    }
    let mut bytes = Vec::new();
    file.take(MAX_SPEC_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_SPEC_BYTES {
        return Err(format!("larger than {MAX_SPEC_BYTES} bytes"));
    }
    schema::parse(&bytes, json).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: &str, devices: &[&str], env: &str) -> String {
        let devs: Vec<String> = devices
            .iter()
            .map(|d| format!(r#"{{"name":"{d}","containerEdits":{{"env":["{env}"]}}}}"#))
            .collect();
        format!(
            r#"{{"cdiVersion":"0.6.0","kind":"{kind}","devices":[{}]}}"#,
            devs.join(",")
        )
    }

    fn env_of(e: &Entry) -> String {
        match e {
            Entry::Device(f) => f.spec.devices[f.index].edits.env[0].clone(),
            Entry::Conflict(..) => "conflict".into(),
        }
    }

    #[test]
    fn later_dirs_win_and_same_priority_conflicts() {
        let (etc, run) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::write(etc.path().join("a.json"), spec("v.com/c", &["x", "y"], "A=etc")).unwrap();
        std::fs::write(etc.path().join("b.json"), spec("v.com/c", &["y"], "A=etc2")).unwrap();
        std::fs::write(run.path().join("a.yaml"), spec("v.com/c", &["x"], "A=run")).unwrap();
        std::fs::write(etc.path().join("broken.json"), "{not json").unwrap();
        std::fs::write(etc.path().join("ignored.txt"), spec("v.com/c", &["z"], "A=txt")).unwrap();
        std::fs::create_dir(etc.path().join("dir.json")).unwrap();
        nix::unistd::mkfifo(&etc.path().join("fifo.json"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let t = scan(&[
            etc.path().to_path_buf(),
            run.path().to_path_buf(),
            PathBuf::from("/nonexistent/cdi"),
        ])
        .unwrap();
        assert_eq!(env_of(&t["v.com/c=x"].1), "A=run");
        assert!(matches!(t["v.com/c=y"].1, Entry::Conflict(..)));
        assert!(!t.contains_key("v.com/c=z"));
    }

    #[test]
    fn oversized_file_is_skipped_others_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let big = format!(
            "{}{}",
            spec("v.com/c", &["big"], "A=1"),
            " ".repeat(MAX_SPEC_BYTES as usize)
        );
        std::fs::write(dir.path().join("big.json"), big).unwrap();
        std::fs::write(dir.path().join("ok.json"), spec("v.com/c", &["ok"], "A=1")).unwrap();
        let t = scan(&[dir.path().to_path_buf()]).unwrap();
        assert!(t.contains_key("v.com/c=ok"));
        assert!(!t.contains_key("v.com/c=big"));
    }
}
