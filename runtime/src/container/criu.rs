//! Whether this host can checkpoint (and restore): a `criu` binary of a usable version whose
//! `criu check` passes on the running kernel. Decided on the first CheckpointContainer (or
//! StartContainer of a container created from a checkpoint archive) and cached for the daemon's
//! life (the kernel does not change under a running daemon; installing CRIU takes a restart to
//! notice). A check that could not finish (timeout, spawn failure) is not a verdict:
//! the next call checks again.
//!
//! Invariants: the check never hangs a request (every command runs under [`CHECK_TIMEOUT`] and
//! is killed past it); what CRIU prints is read capped while it runs ([`OUTPUT_CAP`]); the
//! verdict's reason names the missing binary or quotes the failed check.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::OnceCell;

/// How long `criu --version` or `criu check` may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(20);
/// The most bytes of one command's output kept (the rest is drained).
const OUTPUT_CAP: usize = 4096;
/// Oldest CRIU accepted: 3.16 dumps cgroup v2 and overlayfs roots as container engines need.
const MIN_VERSION: (u32, u32) = (3, 16);
/// Where a `criu` binary is looked for when `PATH` has none (root's sbin dirs are often
/// missing from a service's `PATH`).
const FALLBACK_DIRS: [&str; 3] = ["/usr/local/sbin", "/usr/sbin", "/sbin"];

/// A `criu` that passed its own check.
#[derive(Debug, Clone)]
pub struct Criu {
    pub path: PathBuf,
}

static VERDICT: OnceCell<Result<Criu, String>> = OnceCell::const_new();

/// The cached verdict: the usable `criu`, or why there is none.
pub async fn available() -> Result<Criu, String> {
    VERDICT.get_or_try_init(check).await?.clone()
}

/// `Ok(verdict)`, or `Err` when the check itself could not finish (not cached).
async fn check() -> Result<Result<Criu, String>, String> {
    let Some(path) = find() else {
        return Ok(Err(format!(
            "checkpointing needs CRIU: no `criu` binary in PATH or {}",
            FALLBACK_DIRS.join(", ")
        )));
    };
    verdict(&path).await
}

/// `Ok(Ok)`: usable; `Ok(Err)`: a definite no, with the reason; `Err`: the check did not finish.
async fn verdict(path: &Path) -> Result<Result<Criu, String>, String> {
    let (ok, version) = run(path, &["--version"]).await?;
    let parsed = parse_version(&version);
    match parsed {
        Some(v) if ok && v >= MIN_VERSION => {}
        _ => {
            return Ok(Err(format!(
                "checkpointing needs CRIU >= {}.{}; {} --version says: {}",
                MIN_VERSION.0,
                MIN_VERSION.1,
                path.display(),
                one_line(&version)
            )));
        }
    }
    let (ok, out) = run(path, &["check"]).await?;
    if !ok {
        return Ok(Err(format!(
            "checkpointing needs a kernel CRIU supports; `{} check` failed: {}",
            path.display(),
            one_line(&out)
        )));
    }
    tracing::info!(criu = %path.display(), "CRIU is usable: checkpoints enabled");
    Ok(Ok(Criu { path: path.into() }))
}

fn find() -> Option<PathBuf> {
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .chain(FALLBACK_DIRS.iter().map(PathBuf::from))
        .map(|d| d.join("criu"))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs `criu ARGS` with stdout and stderr merged into one capped buffer; `(success, output)`.
async fn run(criu: &Path, args: &[&str]) -> Result<(bool, String), String> {
    let (r, w) = std::io::pipe().map_err(|e| format!("pipe for {}: {e}", criu.display()))?;
    let w2 = w
        .try_clone()
        .map_err(|e| format!("pipe for {}: {e}", criu.display()))?;
    let mut child = tokio::process::Command::new(criu)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(w)
        .stderr(w2)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", criu.display()))?;
    let reader = tokio::net::unix::pipe::Receiver::from_owned_fd(r.into())
        .map_err(|e| format!("pipe for {}: {e}", criu.display()))?;
    let work = async {
        let out = read_capped(reader).await;
        let status = child.wait().await;
        (status, out)
    };
    match tokio::time::timeout(CHECK_TIMEOUT, work).await {
        Ok((Ok(status), out)) => Ok((status.success(), out)),
        Ok((Err(e), _)) => Err(format!("wait for {}: {e}", criu.display())),
        Err(_) => Err(format!(
            "`{} {}` did not finish within {CHECK_TIMEOUT:?}",
            criu.display(),
            args.join(" ")
        )),
    }
}

async fn read_capped(mut r: tokio::net::unix::pipe::Receiver) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = OUTPUT_CAP.saturating_sub(out.len());
                out.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `Version: 3.17` (optionally `3.17.1`, then more lines) → `(3, 17)`.
fn parse_version(out: &str) -> Option<(u32, u32)> {
    let v = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Version:"))?
        .trim();
    let mut parts = v.split('.');
    let major = parts.next()?.trim().parse().ok()?;
    let minor = parts.next()?.trim().parse().ok()?;
    Some((major, minor))
}

/// The output on one line, whitespace collapsed, at most 1 KiB (a gRPC message, not a log).
fn one_line(s: &str) -> String {
    let mut line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.is_empty() {
        line = "(no output)".into();
    }
    if line.len() > 1024 {
        let mut cut = 1024;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push('…');
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("Version: 3.17\n"), Some((3, 17)));
        assert_eq!(parse_version("Version: 4.0.1\nGitID: v4.0\n"), Some((4, 0)));
        assert_eq!(parse_version("criu: unknown\n"), None);
        assert!(parse_version("Version: 3.15\n").unwrap() < MIN_VERSION);
    }

    #[test]
    fn output_becomes_one_bounded_line() {
        assert_eq!(
            one_line("Error (criu/x.c:1): bad\n  Looks bad\n"),
            "Error (criu/x.c:1): bad Looks bad"
        );
        assert_eq!(one_line(""), "(no output)");
        assert!(one_line(&"é ".repeat(2000)).len() <= 1024 + '…'.len_utf8());
    }

    /// A stand-in `criu` printing `version`, whose `check` prints `check_out` and exits `rc`.
    fn fake_criu(dir: &Path, version: &str, check_out: &str, rc: i32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join("criu");
        let body = format!(
            "#!/bin/sh\ncase \"$1\" in\n--version) echo 'Version: {version}' ;;\n\
             check) echo '{check_out}' >&2; exit {rc} ;;\nesac\n"
        );
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[tokio::test]
    async fn verdicts_name_the_reason() {
        let t = tempfile::tempdir().unwrap();
        let ok = fake_criu(t.path(), "3.17", "Looks good.", 0);
        assert_eq!(verdict(&ok).await.unwrap().unwrap().path, ok);

        let t = tempfile::tempdir().unwrap();
        let old = fake_criu(t.path(), "3.15", "", 0);
        let e = verdict(&old).await.unwrap().unwrap_err();
        assert!(e.contains(">= 3.16") && e.contains("Version: 3.15"), "{e}");

        let t = tempfile::tempdir().unwrap();
        let broken = fake_criu(
            t.path(),
            "3.17",
            "Error (criu/vdso.c:613): vdso: Failed to fill self vdso symtable",
            1,
        );
        let e = verdict(&broken).await.unwrap().unwrap_err();
        assert!(
            e.contains("check` failed") && e.contains("Failed to fill self vdso symtable"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_missing_binary_is_reported_not_awaited() {
        let err = run(Path::new("/nonexistent/criu"), &["check"]).await.unwrap_err();
        assert!(err.contains("cannot run /nonexistent/criu"), "{err}");
    }
}
