//! Choosing an index entry for a platform: the order of preference, and what is never chosen.

use super::*;

fn entry(digest: &str, os: &str, arch: &str, variant: Option<&str>) -> ImageIndexEntry {
    serde_json::from_value(serde_json::json!({
        "mediaType": oci_client::manifest::OCI_IMAGE_MEDIA_TYPE,
        "digest": digest, "size": 1,
        "platform": {"os": os, "architecture": arch, "variant": variant}
    }))
    .unwrap()
}

fn linux(digest: &str, arch: &str, variant: Option<&str>) -> ImageIndexEntry {
    entry(digest, "linux", arch, variant)
}

fn pick(entries: &[ImageIndexEntry], platform: &str) -> Option<String> {
    pick_platform(entries, &platform.parse().unwrap()).map(|e| e.digest.clone())
}

#[test]
fn amd64_takes_its_own_level_then_the_next_lower_one() {
    let all = vec![
        linux("arm", "arm64", Some("v8")),
        linux("v1", "amd64", None),
        linux("v3", "amd64", Some("v3")),
        linux("v2", "amd64", Some("v2")),
        linux("v4", "amd64", Some("v4")),
    ];
    assert_eq!(pick(&all, "linux/amd64/v4").as_deref(), Some("v4"));
    assert_eq!(pick(&all, "linux/amd64/v3").as_deref(), Some("v3"));
    assert_eq!(pick(&all, "linux/amd64/v2").as_deref(), Some("v2"));
    assert_eq!(pick(&all, "linux/amd64").as_deref(), Some("v1"));
    // Without a v3 entry a v4 host falls to v2; a baseline host never takes a higher level.
    let no_v3: Vec<_> = all
        .iter()
        .filter(|e| e.digest != "v3" && e.digest != "v4")
        .cloned()
        .collect();
    assert_eq!(pick(&no_v3, "linux/amd64/v4").as_deref(), Some("v2"));
    let high = vec![linux("v2", "amd64", Some("v2")), linux("v3", "amd64", Some("v3"))];
    assert_eq!(pick(&high, "linux/amd64/v1"), None);
    // An explicit v1 is the same platform as no variant; the first listed wins a tie.
    let tie = vec![
        linux("explicit", "amd64", Some("v1")),
        linux("bare", "amd64", None),
    ];
    assert_eq!(pick(&tie, "linux/amd64/v3").as_deref(), Some("explicit"));
}

#[test]
fn arm64_matches_with_or_without_its_variant_only() {
    let with = vec![linux("amd", "amd64", None), linux("v8", "arm64", Some("v8"))];
    let without = vec![linux("amd", "amd64", None), linux("bare", "arm64", None)];
    let arm32 = vec![linux("amd", "amd64", None), linux("v7", "arm", Some("v7"))];
    for wanted in ["linux/arm64/v8", "linux/arm64", "linux/aarch64"] {
        assert_eq!(pick(&with, wanted).as_deref(), Some("v8"), "{wanted}");
        assert_eq!(pick(&without, wanted).as_deref(), Some("bare"), "{wanted}");
        assert_eq!(pick(&arm32, wanted), None, "{wanted}");
    }
}

#[test]
fn arm_v7_falls_back_to_v6_then_v5() {
    let all = vec![
        linux("v5", "arm", Some("v5")),
        linux("v6", "arm", Some("v6")),
        linux("v7", "arm", Some("v7")),
        linux("arm64", "arm64", Some("v8")),
    ];
    assert_eq!(pick(&all, "linux/arm/v7").as_deref(), Some("v7"));
    assert_eq!(pick(&all[..2], "linux/arm/v7").as_deref(), Some("v6"));
    assert_eq!(pick(&all[..1], "linux/arm/v7").as_deref(), Some("v5"));
    assert_eq!(pick(&all[1..], "linux/arm/v6").as_deref(), Some("v6"));
    assert_eq!(pick(&all[2..], "linux/arm/v6"), None, "v6 cannot run v7 code");
    // A bare `arm` entry is v7 by convention.
    let bare = vec![linux("bare", "arm", None)];
    assert_eq!(pick(&bare, "linux/arm/v7").as_deref(), Some("bare"));
    assert_eq!(pick(&bare, "linux/arm/v6"), None);
}

#[test]
fn other_systems_and_entries_without_a_platform_are_ignored() {
    let mut no_platform = linux("none", "amd64", None);
    no_platform.platform = None;
    let list = vec![
        entry("win", "windows", "amd64", None),
        entry("darwin", "darwin", "arm64", None),
        no_platform,
    ];
    assert_eq!(pick(&list, "linux/amd64"), None);
    assert_eq!(pick(&list, "linux/arm64"), None);
    assert_eq!(pick(&list, "windows/amd64").as_deref(), Some("win"));
    let mixed = [&list[..], &[linux("lin", "amd64", None)]].concat();
    assert_eq!(pick(&mixed, "linux/amd64").as_deref(), Some("lin"));
}

#[test]
fn a_configured_platform_overrides_the_host() {
    let list = vec![
        linux("amd", "amd64", None),
        linux("arm", "arm64", Some("v8")),
        linux("s390", "s390x", None),
    ];
    let configured: Platform = "linux/arm64/v8".parse().unwrap();
    assert_eq!(pick_platform(&list, &configured).unwrap().digest, "arm");
    assert_eq!(pick(&list, "linux/s390x").as_deref(), Some("s390"));
    #[cfg(target_arch = "x86_64")]
    assert_eq!(pick_platform(&list, &Platform::host()).unwrap().digest, "amd");
}

#[test]
fn an_index_without_a_match_names_the_wanted_platform() {
    let d = format!("sha256:{}", "b".repeat(64));
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": oci_client::manifest::OCI_IMAGE_INDEX_MEDIA_TYPE,
        "manifests": [
            {"mediaType": oci_client::manifest::OCI_IMAGE_MEDIA_TYPE, "digest": d, "size": 1,
             "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": oci_client::manifest::OCI_IMAGE_MEDIA_TYPE, "digest": d, "size": 1,
             "platform": {"os": "windows", "architecture": "arm64"}}
        ]
    });
    let bytes = index.to_string();
    let arm64: Platform = "linux/arm64".parse().unwrap();
    let e = decode_manifest("sha256:idx", bytes.as_bytes(), &arm64).unwrap_err();
    assert!(matches!(&e, RegistryError::NoPlatform { wanted, .. } if wanted == "linux/arm64/v8"));
    let text = e.to_string();
    assert!(text.contains("no image for linux/arm64/v8"), "{text}");
    assert!(text.contains("offers: linux/amd64, windows/arm64/v8"), "{text}");
    let amd64: Platform = "linux/amd64".parse().unwrap();
    match decode_manifest("sha256:idx", bytes.as_bytes(), &amd64).unwrap() {
        Decoded::Index { platform_manifest } => assert_eq!(platform_manifest, d),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_offered_list_in_an_error_is_bounded() {
    let long = "x".repeat(10_000);
    let entries: Vec<_> = (0..20).map(|n| linux(&format!("d{n}"), &long, None)).collect();
    let text = offered(&entries);
    assert!(text.len() < 8 * 70 + 20, "{} bytes", text.len());
    assert!(text.ends_with("12 more"), "{text}");
    assert_eq!(offered(&[]), "nothing");
}
