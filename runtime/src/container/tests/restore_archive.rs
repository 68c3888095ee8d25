//! Extraction of hostile and valid checkpoint archives: every refusal is `Invalid` and leaves
//! no extraction directory behind.

use super::*;

const SPEC: &[u8] = br#"{"ociVersion":"1.0.2","process":{"user":{"uid":0,"gid":0},"args":["/bin/sh","-c","count"],"cwd":"/"},"root":{"path":"rootfs"}}"#;
const CONFIG: &[u8] = br#"{"id":"c1","name":"counter","rootfsImage":"busybox","rootfsImageRef":"sha256:00","rootfsImageName":"docker.io/library/busybox:latest","runtime":"crius"}"#;

/// Appends an entry with a raw name (the tar crate's path setters refuse `..` and absolute
/// names, which is what these tests need to write).
fn raw(b: &mut tar::Builder<Vec<u8>>, name: &str, kind: EntryType, link: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

fn file(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
    raw(b, name, EntryType::Regular, "", data);
}

fn diff_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (n, d) in files {
        file(&mut b, n, d);
    }
    b.into_inner().unwrap()
}

/// A valid archive, with `extra` appended after the layout's entries.
fn archive(extra: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    raw(&mut b, "checkpoint/", EntryType::Directory, "", b"");
    file(&mut b, "checkpoint/inventory.img", b"inv");
    file(&mut b, "checkpoint/pages-1.img", &[7u8; 4096]);
    file(&mut b, CONFIG_DUMP, CONFIG);
    file(&mut b, SPEC_DUMP, SPEC);
    file(&mut b, ROOTFS_DIFF, &diff_tar(&[("data/count.txt", b"41")]));
    file(&mut b, DELETED_FILES, br#"["/etc/motd"]"#);
    file(&mut b, "stats-dump", b"ignored");
    extra(&mut b);
    b.into_inner().unwrap()
}

struct Case {
    _t: tempfile::TempDir,
    archive: PathBuf,
    dest: PathBuf,
}

fn case(body: &[u8]) -> Case {
    let t = tempfile::tempdir().unwrap();
    let archive = t.path().join("ckpt.tar");
    std::fs::write(&archive, body).unwrap();
    let dest = t.path().join("restore");
    Case { archive, dest, _t: t }
}

/// The archive is refused as Invalid for the reason `want` names, and nothing is left.
fn refused(body: &[u8], limits: &Limits, want: &str) {
    let c = case(body);
    let e = extract(&c.archive, &c.dest, limits).unwrap_err();
    assert!(matches!(e, RestoreError::Invalid { .. }), "{want}: {e}");
    assert!(e.to_string().contains(want), "{want}: {e}");
    assert!(!c.dest.exists(), "{want}: extraction dir left behind");
}

#[test]
fn a_valid_archive_is_extracted_privately_and_decoded() {
    use std::os::unix::fs::PermissionsExt;
    let c = case(&archive(|_| {}));
    let x = extract(&c.archive, &c.dest, &Limits::default()).unwrap();
    assert_eq!(
        x.config.image_candidates(),
        vec!["docker.io/library/busybox:latest", "sha256:00", "busybox"]
    );
    let args = x.spec.process().as_ref().unwrap().args().clone().unwrap();
    assert_eq!(args, vec!["/bin/sh", "-c", "count"]);
    assert_eq!(x.deleted, vec!["/etc/motd".to_string()]);
    assert_eq!(
        std::fs::read(x.dir.join(CHECKPOINT_DIR).join("pages-1.img"))
            .unwrap()
            .len(),
        4096
    );
    assert!(
        !c.dest.join("stats-dump").exists(),
        "names outside the layout are skipped"
    );
    let mode = std::fs::metadata(&c.dest).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    let mode = std::fs::metadata(c.dest.join(CONFIG_DUMP))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn rootfs_changes_are_applied_inside_the_root() {
    let c = case(&archive(|_| {}));
    let x = extract(&c.archive, &c.dest, &Limits::default()).unwrap();
    let rootfs = c._t.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/motd"), b"hi").unwrap();
    apply_rootfs_changes(&c.archive, &x, &rootfs, &Limits::default()).unwrap();
    assert_eq!(std::fs::read(rootfs.join("data/count.txt")).unwrap(), b"41");
    assert!(!rootfs.join("etc/motd").exists());
}

#[test]
fn a_diff_cannot_write_or_delete_outside_the_root() {
    let outside_dir = tempfile::tempdir().unwrap();
    let victim = outside_dir.path().join("victim");
    std::fs::write(&victim, b"keep").unwrap();
    let escape = diff_tar(&[("../../escaped", b"x")]);
    let c = case(&archive(|_| {}));
    let mut x = extract(&c.archive, &c.dest, &Limits::default()).unwrap();
    std::fs::write(c.dest.join(ROOTFS_DIFF), &escape).unwrap();
    // A symlink in the rootfs pointing out, and a deleted path through it.
    let rootfs = c._t.path().join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    std::os::unix::fs::symlink(outside_dir.path(), rootfs.join("out")).unwrap();
    x.deleted = vec!["/out/victim".into()];
    apply_rootfs_changes(&c.archive, &x, &rootfs, &Limits::default()).unwrap();
    assert!(rootfs.join("escaped").exists(), "`..` is cleaned to the root");
    assert!(!c._t.path().join("escaped").exists());
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
}

#[test]
fn a_compressed_or_oversized_diff_is_refused() {
    let c = case(&archive(|_| {}));
    let x = extract(&c.archive, &c.dest, &Limits::default()).unwrap();
    let rootfs = c._t.path().join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    let few = Limits {
        entries: 0,
        ..Limits::default()
    };
    let e = apply_rootfs_changes(&c.archive, &x, &rootfs, &few).unwrap_err();
    assert!(matches!(e, RestoreError::Invalid { .. }), "{e}");
    std::fs::write(c.dest.join(ROOTFS_DIFF), [0x1f, 0x8b, 8, 0, 0, 0]).unwrap();
    let e = apply_rootfs_changes(&c.archive, &x, &rootfs, &Limits::default()).unwrap_err();
    assert!(e.to_string().contains("compressed"), "{e}");
}

#[test]
fn hostile_entries_are_refused_and_nothing_is_left() {
    let l = Limits::default();
    refused(&archive(|b| file(b, "../escape", b"x")), &l, "plain components");
    refused(
        &archive(|b| file(b, "checkpoint/../../escape", b"x")),
        &l,
        "plain components",
    );
    refused(&archive(|b| file(b, "/etc/passwd", b"x")), &l, "plain components");
    refused(
        &archive(|b| raw(b, "checkpoint/link", EntryType::Symlink, "/etc", b"")),
        &l,
        "Symlink",
    );
    refused(
        &archive(|b| raw(b, "checkpoint/hard", EntryType::Link, "config.dump", b"")),
        &l,
        "Link",
    );
    refused(
        &archive(|b| raw(b, "checkpoint/dev", EntryType::Char, "", b"")),
        &l,
        "Char",
    );
    refused(
        &archive(|b| file(b, "checkpoint/inventory.img", b"again")),
        &l,
        "appears twice",
    );
    refused(
        &archive(|b| raw(b, "spec.dump/", EntryType::Directory, "", b"")),
        &l,
        "Directory",
    );
    let mut b = tar::Builder::new(Vec::new());
    file(&mut b, "checkpoint", b"a file");
    file(&mut b, "checkpoint/inventory.img", b"inv");
    refused(&b.into_inner().unwrap(), &l, "needs a directory");
    refused(
        &archive(|b| file(b, "checkpoint/a/b/c.img", b"x")),
        &l,
        "too deep",
    );
}

#[test]
fn limits_are_enforced_while_reading() {
    let body = archive(|_| {});
    let small_file = Limits {
        file: 1024,
        ..Limits::default()
    };
    refused(&body, &small_file, "over its 1024-byte limit");
    let small_total = Limits {
        total: 4096,
        ..Limits::default()
    };
    refused(&body, &small_total, "exceed the 4096-byte limit");
    let few = Limits {
        entries: 3,
        ..Limits::default()
    };
    refused(&body, &few, "more than 3 entries");
    let small_dump = Limits {
        dump: 16,
        ..Limits::default()
    };
    refused(&body, &small_dump, "over its 16-byte limit");
}

#[test]
fn archives_without_the_layout_are_refused() {
    let l = Limits::default();
    refused(
        b"this is not a tar archive at all, just some text",
        &l,
        "not a valid tar",
    );
    refused(&[], &l, "config.dump is missing");
    let mut b = tar::Builder::new(Vec::new());
    file(&mut b, "checkpoint/inventory.img", b"inv");
    file(&mut b, SPEC_DUMP, SPEC);
    refused(&b.into_inner().unwrap(), &l, "config.dump is missing");
    let mut b = tar::Builder::new(Vec::new());
    file(&mut b, "checkpoint/inventory.img", b"inv");
    file(&mut b, CONFIG_DUMP, CONFIG);
    refused(&b.into_inner().unwrap(), &l, "spec.dump is missing");
    let mut b = tar::Builder::new(Vec::new());
    file(&mut b, CONFIG_DUMP, CONFIG);
    file(&mut b, SPEC_DUMP, SPEC);
    refused(
        &b.into_inner().unwrap(),
        &l,
        "checkpoint/ (CRIU's images) is missing",
    );
    let mut b = tar::Builder::new(Vec::new());
    file(&mut b, "checkpoint/inventory.img", b"inv");
    file(&mut b, CONFIG_DUMP, b"{}");
    file(&mut b, SPEC_DUMP, SPEC);
    refused(&b.into_inner().unwrap(), &l, "names no image");
    let c = case(&archive(|_| {}));
    std::fs::remove_file(&c.archive).unwrap();
    std::fs::create_dir(&c.archive).unwrap();
    let e = extract(&c.archive, &c.dest, &l).unwrap_err();
    assert!(e.to_string().contains("regular file"), "{e}");
    assert!(!c.dest.exists());
}

#[test]
fn deleted_files_must_be_absolute_without_parent_dirs() {
    let mut b = tar::Builder::new(Vec::new());
    file(&mut b, "checkpoint/inventory.img", b"inv");
    file(&mut b, CONFIG_DUMP, CONFIG);
    file(&mut b, SPEC_DUMP, SPEC);
    file(&mut b, DELETED_FILES, br#"["/../../etc/shadow"]"#);
    refused(
        &b.into_inner().unwrap(),
        &Limits::default(),
        "not an absolute path without",
    );
}
