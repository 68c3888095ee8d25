//! Crafted tarballs for every escape the applier must contain, and for overlay whiteouts.
//! These run as root (chown, mknod and trusted.* xattrs need it).

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use super::*;

struct Tar(tar::Builder<Vec<u8>>);

/// An entry written with raw header bytes, so names like `../x` and `/x` reach the applier as-is.
struct E<'a> {
    name: &'a str,
    kind: tar::EntryType,
    link: &'a str,
    data: &'a [u8],
    mode: u32,
    uid: u64,
    gid: u64,
    dev: (u32, u32),
}

fn e(name: &str, kind: tar::EntryType) -> E<'_> {
    E {
        name,
        kind,
        link: "",
        data: b"",
        mode: if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        },
        uid: 0,
        gid: 0,
        dev: (0, 0),
    }
}

fn file<'a>(name: &'a str, data: &'a [u8]) -> E<'a> {
    E {
        data,
        ..e(name, tar::EntryType::Regular)
    }
}

fn dir(name: &str) -> E<'_> {
    e(name, tar::EntryType::Directory)
}

fn symlink<'a>(name: &'a str, target: &'a str) -> E<'a> {
    E {
        link: target,
        ..e(name, tar::EntryType::Symlink)
    }
}

fn hardlink<'a>(name: &'a str, target: &'a str) -> E<'a> {
    E {
        link: target,
        ..e(name, tar::EntryType::Link)
    }
}

impl Tar {
    fn new() -> Tar {
        Tar(tar::Builder::new(Vec::new()))
    }

    fn add(mut self, en: E<'_>) -> Tar {
        let mut h = tar::Header::new_gnu();
        {
            let old = h.as_old_mut();
            old.name[..en.name.len()].copy_from_slice(en.name.as_bytes());
            old.linkname[..en.link.len()].copy_from_slice(en.link.as_bytes());
        }
        h.set_entry_type(en.kind);
        h.set_size(en.data.len() as u64);
        h.set_mode(en.mode);
        h.set_uid(en.uid);
        h.set_gid(en.gid);
        h.set_mtime(1_000_000_000);
        h.set_device_major(en.dev.0).unwrap();
        h.set_device_minor(en.dev.1).unwrap();
        h.set_cksum();
        self.0.append(&h, en.data).unwrap();
        self
    }

    fn pax(mut self, kv: &[(&str, &[u8])]) -> Tar {
        self.0.append_pax_extensions(kv.iter().copied()).unwrap();
        self
    }

    fn bytes(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

/// A sandbox: `base/outside` is a host directory the layer must never touch, `base/layer` the root.
struct Case {
    _base: tempfile::TempDir,
    outside: std::path::PathBuf,
    layer: std::path::PathBuf,
}

fn case() -> Case {
    let base = tempfile::tempdir().unwrap();
    let outside = base.path().join("outside");
    let layer = base.path().join("a/b/layer");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::create_dir_all(&layer).unwrap();
    Case {
        outside,
        layer,
        _base: base,
    }
}

fn apply(c: &Case, tar: Vec<u8>) -> Result<String, UnpackError> {
    apply_to_dir(&tar[..], &c.layer)
}

fn outside_is_empty(c: &Case) -> bool {
    std::fs::read_dir(&c.outside).unwrap().next().is_none()
        && std::fs::read_dir(c.layer.parent().unwrap()).unwrap().count() == 1
}

#[test]
fn preserves_ownership_modes_xattrs_times_and_nodes() {
    let c = case();
    let tar = Tar::new()
        .add(dir("usr/"))
        .pax(&[
            ("SCHILY.xattr.user.note", b"hi"),
            ("SCHILY.xattr.security.capability", b""),
        ])
        .add(E {
            mode: 0o4755,
            uid: 1000,
            gid: 1001,
            ..file("usr/suid", b"#!/bin/sh\n")
        })
        .add(symlink("usr/link", "/usr/suid"))
        .add(hardlink("usr/hard", "usr/suid"))
        .add(E {
            dev: (1, 3),
            mode: 0o666,
            ..e("null", tar::EntryType::Char)
        })
        .add(E {
            mode: 0o600,
            uid: 5,
            gid: 6,
            ..e("fifo", tar::EntryType::Fifo)
        })
        .bytes();
    apply(&c, tar).unwrap();
    let m = std::fs::symlink_metadata(c.layer.join("usr/suid")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o4755);
    assert_eq!((m.uid(), m.gid()), (1000, 1001));
    assert_eq!(m.mtime(), 1_000_000_000);
    assert_eq!(m.nlink(), 2, "the hardlink shares the inode");
    let mut v = vec![0u8; 16];
    let p = std::ffi::CString::new(c.layer.join("usr/suid").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid path/name pointers and buffer.
    let n = unsafe { libc::getxattr(p.as_ptr(), c"user.note".as_ptr(), v.as_mut_ptr().cast(), v.len()) };
    assert_eq!(&v[..n as usize], b"hi");
    assert_eq!(
        std::fs::read_link(c.layer.join("usr/link")).unwrap(),
        Path::new("/usr/suid")
    );
    let null = std::fs::symlink_metadata(c.layer.join("null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), libc::makedev(1, 3));
    assert_eq!(null.mode() & 0o7777, 0o666);
    let fifo = std::fs::symlink_metadata(c.layer.join("fifo")).unwrap();
    assert!(fifo.file_type().is_fifo());
    assert_eq!((fifo.uid(), fifo.gid()), (5, 6));
    assert_eq!(
        std::fs::metadata(c.layer.join("usr")).unwrap().mtime(),
        1_000_000_000
    );
}

#[test]
fn dot_dot_and_absolute_names_stay_inside() {
    let c = case();
    let tar = Tar::new()
        .add(file("../../../outside/dotdot", b"x"))
        .add(file("/outside/abs", b"y"))
        .add(file("./a/../../b", b"z"))
        .bytes();
    apply(&c, tar).unwrap();
    assert!(outside_is_empty(&c));
    assert_eq!(std::fs::read(c.layer.join("outside/dotdot")).unwrap(), b"x");
    assert_eq!(std::fs::read(c.layer.join("outside/abs")).unwrap(), b"y");
    assert_eq!(std::fs::read(c.layer.join("b")).unwrap(), b"z");
}

#[test]
fn symlinks_pointing_out_resolve_inside() {
    let c = case();
    let abs = c.outside.to_str().unwrap().to_string();
    let tar = Tar::new()
        .add(symlink("abs", &abs))
        .add(file("abs/f1", b"1"))
        .add(symlink("rel", "../../../../../../.."))
        .add(file(&format!("rel{abs}/f2"), b"2"))
        .add(symlink("root", "/"))
        .add(dir("root/d/"))
        .bytes();
    apply(&c, tar).unwrap();
    assert!(outside_is_empty(&c));
    let inner = c.layer.join(abs.trim_start_matches('/'));
    assert_eq!(std::fs::read(inner.join("f1")).unwrap(), b"1");
    assert_eq!(std::fs::read(inner.join("f2")).unwrap(), b"2");
    assert!(c.layer.join("d").is_dir());
    // The symlinks themselves are stored verbatim for the container to resolve.
    assert_eq!(std::fs::read_link(c.layer.join("abs")).unwrap(), Path::new(&abs));
}

#[test]
fn final_component_symlink_is_replaced_not_followed() {
    let c = case();
    let victim = c.outside.join("victim");
    let tar = Tar::new()
        .add(symlink("f", victim.to_str().unwrap()))
        .add(file("f", b"new"))
        .bytes();
    apply(&c, tar).unwrap();
    assert!(!victim.exists());
    assert!(std::fs::symlink_metadata(c.layer.join("f")).unwrap().is_file());
}

#[test]
fn hardlinks_cannot_reach_outside() {
    let c = case();
    let secret = c.outside.join("secret");
    std::fs::write(&secret, b"s").unwrap();
    let rel = "../../../outside/secret".to_string();
    for tar in [
        Tar::new().add(hardlink("h", &rel)).bytes(),
        Tar::new().add(hardlink("h", secret.to_str().unwrap())).bytes(),
        Tar::new()
            .add(symlink("s", c.outside.to_str().unwrap()))
            .add(hardlink("h", "s/secret"))
            .bytes(),
    ] {
        assert!(apply(&c, tar).is_err(), "a link to a file outside must fail");
        assert_eq!(std::fs::metadata(&secret).unwrap().nlink(), 1);
    }
    assert!(!c.layer.join("h").exists());
}

#[test]
fn parent_replaced_by_symlink_stays_inside() {
    let c = case();
    let tar = Tar::new()
        .add(dir("d/"))
        .add(file("d/a", b"a"))
        .add(symlink("d", c.outside.to_str().unwrap()))
        .add(file("d/b", b"b"))
        .bytes();
    apply(&c, tar).unwrap();
    assert!(outside_is_empty(&c));
    let inner = c.layer.join(c.outside.to_str().unwrap().trim_start_matches('/'));
    assert_eq!(std::fs::read(inner.join("b")).unwrap(), b"b");
    assert!(
        std::fs::symlink_metadata(c.layer.join("d"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn whiteouts_and_opaque_dirs_become_overlay_markers() {
    let c = case();
    let tar = Tar::new()
        .add(dir("etc/"))
        .add(E {
            uid: 7,
            gid: 8,
            ..file("etc/.wh.passwd", b"")
        })
        .add(dir("var/"))
        .add(file("var/keep", b"k"))
        .add(file("var/.wh..wh..opq", b""))
        .add(file(".wh..wh.plnk", b""))
        .bytes();
    apply(&c, tar).unwrap();
    let wh = std::fs::symlink_metadata(c.layer.join("etc/passwd")).unwrap();
    assert!(wh.file_type().is_char_device());
    assert_eq!(wh.rdev(), 0);
    assert_eq!((wh.uid(), wh.gid()), (7, 8));
    assert!(!c.layer.join("etc/.wh.passwd").exists());
    assert!(!c.layer.join("var/.wh..wh..opq").exists());
    assert!(c.layer.join("var/keep").exists());
    let p = std::ffi::CString::new(c.layer.join("var").as_os_str().as_encoded_bytes()).unwrap();
    let mut v = [0u8; 4];
    // SAFETY: valid path/name pointers and buffer.
    let n = unsafe {
        libc::getxattr(
            p.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            v.as_mut_ptr().cast(),
            v.len(),
        )
    };
    assert_eq!(&v[..n.max(0) as usize], b"y");
    assert_eq!(
        std::fs::read_dir(&c.layer).unwrap().count(),
        2,
        "etc and var only"
    );
}

#[test]
fn whiteouts_of_dot_and_dot_dot_are_rejected() {
    for name in ["d/.wh..", "d/.wh..."] {
        let c = case();
        let tar = Tar::new()
            .add(dir("d/"))
            .add(file("d/keep", b"k"))
            .add(file(name, b""))
            .bytes();
        let err = apply(&c, tar).unwrap_err();
        assert!(matches!(err, UnpackError::Invalid { .. }), "{name}: {err}");
        assert!(c.layer.join("d/keep").exists(), "{name}");
    }
}

#[test]
fn later_entries_replace_earlier_ones() {
    let c = case();
    let tar = Tar::new()
        .add(dir("x/"))
        .add(file("x/inner", b"i"))
        .add(file("x", b"now a file"))
        .add(file("y", b"old"))
        .add(dir("y/"))
        .bytes();
    apply(&c, tar).unwrap();
    assert_eq!(std::fs::read(c.layer.join("x")).unwrap(), b"now a file");
    assert!(c.layer.join("y").is_dir());
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

#[test]
fn compression_by_magic_and_diff_id_verification() {
    let root = tempfile::tempdir().unwrap();
    let layers = Layers::open(root.path()).unwrap();
    let tar = Tar::new().add(dir("bin/")).add(file("bin/sh", b"sh")).bytes();
    let diff_id = crate::content::sha256_digest(&tar);
    let blobs = root.path().join("blobs");
    std::fs::create_dir(&blobs).unwrap();
    let variants = [
        ("raw", tar.clone()),
        ("gz", gzip(&tar)),
        ("zst", zstd::encode_all(&tar[..], 3).unwrap()),
    ];
    for (i, (name, bytes)) in variants.iter().enumerate() {
        let blob = blobs.join(name);
        std::fs::write(&blob, bytes).unwrap();
        let chain = crate::content::sha256_digest(format!("{i}").as_bytes());
        let dir = layers.unpack(&blob, &diff_id, &chain).unwrap();
        assert_eq!(std::fs::read(dir.join("bin/sh")).unwrap(), b"sh", "{name}");
        assert!(layers.contains(&chain));
    }
    let wrong = crate::content::sha256_digest(b"not it");
    let chain = crate::content::sha256_digest(b"bad");
    let err = layers.unpack(&blobs.join("gz"), &wrong, &chain).unwrap_err();
    assert!(
        matches!(err, LayerError::Unpack(UnpackError::DiffIdMismatch { .. })),
        "{err}"
    );
    assert!(!layers.contains(&chain));
    let names: Vec<_> = std::fs::read_dir(root.path().join("layers"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(names.len(), 3, "no temp dir left behind");
    std::fs::create_dir(root.path().join("layers/.tmp-crashed")).unwrap();
    Layers::open(root.path()).unwrap();
    assert!(!root.path().join("layers/.tmp-crashed").exists());
    layers.remove(&chain).unwrap();
}

#[test]
fn garbage_is_a_tar_error() {
    let c = case();
    let err = apply(&c, vec![0x42; 1024]).unwrap_err();
    assert!(matches!(err, UnpackError::Tar(_)), "{err}");
}

#[test]
fn chain_ids_follow_the_spec() {
    let d1 = format!("sha256:{}", "1".repeat(64));
    let d2 = format!("sha256:{}", "2".repeat(64));
    let ids = chain_ids(&[d1.clone(), d2.clone()]);
    assert_eq!(ids[0], d1);
    assert_eq!(
        ids[1],
        crate::content::sha256_digest(format!("{d1} {d2}").as_bytes())
    );
}
