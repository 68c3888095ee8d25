//! Links `crius-shim` as a position-dependent (non-PIE) executable.
//!
//! A PIE binary dirties its RELRO pages (vtables, `.data.rel.ro`) with load-time relocations in
//! every process, ~450 kB private per shim here; a non-PIE link resolves them at link time, so
//! those pages stay clean and shared between all shims (measured with 20 idle re-exec'd shims:
//! 459 kB PSS per shim as PIE, 227 kB non-PIE). The objects stay PIC; only the final link
//! changes, which needs no `--target` or RUSTFLAGS.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu")
    {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
