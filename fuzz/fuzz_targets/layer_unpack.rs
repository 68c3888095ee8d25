//! A layer (any bytes: tar, gzip, zstd) applied into a fresh root: it may fail, but it must not
//! panic, and nothing may appear outside the root.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let base = tempfile::tempdir().unwrap();
    let outside = base.path().join("outside");
    let layer = base.path().join("a/b/layer");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::create_dir_all(&layer).unwrap();
    let _ = crius_image::unpack::apply_to_dir(data, &layer);
    assert!(
        std::fs::read_dir(&outside).unwrap().next().is_none(),
        "an entry escaped into a sibling directory"
    );
    let siblings: Vec<_> = std::fs::read_dir(base.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(siblings.len(), 2, "an entry escaped next to the layer: {siblings:?}");
    assert_eq!(std::fs::read_dir(layer.parent().unwrap()).unwrap().count(), 1);
});
