//! The exit file: how a container's init ended, written once by the shim and read by the daemon
//! (also after a daemon restart).
//!
//! Invariant: the file is written to a temporary name in the same directory, fsynced, renamed
//! over the final name and the directory fsynced, so a reader sees either no file or a complete
//! one, even after a crash.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// The exit status, or 128 + signal number when init was killed by a signal.
    pub exit_code: i32,
    /// When the shim reaped init, in nanoseconds since the Unix epoch (UTC).
    pub finished_at: i64,
    /// The container's memory cgroup recorded an OOM kill.
    pub oom_killed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ExitFileError {
    #[error("cannot write exit file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read exit file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("exit file {path} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl ExitStatus {
    /// Maps a wait status: a normal exit keeps its code, a signal death becomes 128 + signal.
    pub fn code_from_wait(exited: Option<i32>, signaled: Option<i32>) -> i32 {
        match (exited, signaled) {
            (Some(code), _) => code,
            (None, Some(sig)) => 128 + sig,
            (None, None) => 255,
        }
    }

    /// Writes `self` to `path` atomically (tmp + fsync + rename + fsync of the directory).
    pub fn write_atomic(&self, path: &Path) -> Result<(), ExitFileError> {
        let err = |source| ExitFileError::Write {
            path: path.to_path_buf(),
            source,
        };
        let body = serde_json::to_vec(self).map_err(|e| err(io::Error::other(e)))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let tmp = dir.join(format!(
            ".{}.tmp",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("exit")
        ));
        let mut f = fs::File::create(&tmp).map_err(err)?;
        f.write_all(&body).map_err(err)?;
        f.sync_all().map_err(err)?;
        drop(f);
        fs::rename(&tmp, path).map_err(err)?;
        fs::File::open(dir).and_then(|d| d.sync_all()).map_err(err)?;
        Ok(())
    }

    /// Reads the exit file; `Ok(None)` when it does not exist (init has not exited or the shim
    /// died before writing it).
    pub fn read(path: &Path) -> Result<Option<ExitStatus>, ExitFileError> {
        match fs::read(path) {
            Ok(body) => serde_json::from_slice(&body)
                .map(Some)
                .map_err(|source| ExitFileError::Corrupt {
                    path: path.to_path_buf(),
                    source,
                }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ExitFileError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_deaths_are_128_plus_signal() {
        assert_eq!(ExitStatus::code_from_wait(Some(3), None), 3);
        assert_eq!(ExitStatus::code_from_wait(None, Some(9)), 137);
        assert_eq!(ExitStatus::code_from_wait(None, Some(15)), 143);
    }

    #[test]
    fn write_then_read_and_no_temp_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exit.json");
        assert_eq!(ExitStatus::read(&path).unwrap(), None);
        let st = ExitStatus {
            exit_code: 137,
            finished_at: 1_764_000_000_000_000_001,
            oom_killed: true,
        };
        st.write_atomic(&path).unwrap();
        assert_eq!(ExitStatus::read(&path).unwrap(), Some(st));
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("exit.json")]);
    }

    #[test]
    fn corrupt_file_is_an_error_not_a_status() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exit.json");
        fs::write(&path, b"{\"exit_code\":").unwrap();
        assert!(matches!(
            ExitStatus::read(&path),
            Err(ExitFileError::Corrupt { .. })
        ));
    }
}
