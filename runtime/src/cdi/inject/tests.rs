use super::*;
use oci_spec::runtime::{LinuxBuilder, Process, User};

/// A spec dir holding `text` as `vendor.json`.
fn dir_with(text: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("vendor.json"), text).unwrap();
    d
}

fn resolve(d: &tempfile::TempDir, names: &[&str]) -> Result<Injection, CdiError> {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    Injection::resolve(&[d.path().to_path_buf()], &names)
}

/// A spec as `spec::build` leaves it: a process run by uid 1000, one mount, resources.
fn base_spec() -> Spec {
    let mut user = User::default();
    user.set_uid(1000).set_gid(1000);
    let mut p = Process::default();
    p.set_env(Some(vec!["PATH=/bin".into(), "FOO=old".into()]))
        .set_user(user);
    let mut s = Spec::default();
    s.set_process(Some(p))
        .set_hooks(None)
        .set_mounts(None)
        .set_linux(Some(LinuxBuilder::default().build().unwrap()));
    s
}

const SPEC: &str = r#"{
  "cdiVersion": "0.7.0",
  "kind": "vendor.com/device",
  "devices": [
    {"name": "null", "containerEdits": {
       "env": ["FOO=from-device"],
       "deviceNodes": [{"path": "/dev/cdi-null", "hostPath": "/dev/null", "permissions": "rw"}],
       "mounts": [{"hostPath": "MOUNT", "containerPath": "/opt/vendor"}],
       "hooks": [{"hookName": "createContainer", "path": "/bin/sh", "args": ["sh", "-c", "true"]}],
       "additionalGids": [44, 0]}},
    {"name": "zero", "containerEdits": {
       "deviceNodes": [{"path": "/dev/zero", "permissions": "none", "uid": 7}]}}
  ],
  "containerEdits": {"env": ["VENDOR=1"]}
}"#;

fn spec_dir() -> (tempfile::TempDir, tempfile::TempDir) {
    let src = tempfile::tempdir().unwrap();
    let text = SPEC.replace("MOUNT", &src.path().to_string_lossy());
    (dir_with(&text), src)
}

#[test]
fn a_device_brings_its_nodes_env_mounts_hooks_and_gids() {
    let (d, src) = spec_dir();
    let inj = resolve(&d, &["vendor.com/device=null", "vendor.com/device=zero"]).unwrap();
    let mut s = base_spec();
    inj.apply(&mut s);
    let p = s.process().as_ref().unwrap();
    let env = p.env().as_ref().unwrap();
    assert_eq!(env, &["PATH=/bin", "VENDOR=1", "FOO=from-device"]);
    assert_eq!(p.user().additional_gids().as_deref(), Some(&[44][..]));

    let lx = s.linux().as_ref().unwrap();
    let devs = lx.devices().as_ref().unwrap();
    let null = devs
        .iter()
        .find(|d| d.path() == Path::new("/dev/cdi-null"))
        .unwrap();
    assert_eq!(
        (null.typ(), null.major(), null.minor()),
        (LinuxDeviceType::C, 1, 3)
    );
    // Owner unset: the process's user, as the reference does for a non-root process.
    assert_eq!((null.uid(), null.gid()), (Some(1000), Some(1000)));
    let zero = devs.iter().find(|d| d.path() == Path::new("/dev/zero")).unwrap();
    assert_eq!((zero.major(), zero.minor(), zero.uid()), (1, 5, Some(7)));
    let rules = lx.resources().as_ref().unwrap().devices().as_ref().unwrap();
    assert_eq!(rules.len(), 1, "`none` adds no rule: {rules:?}");
    assert_eq!(
        (rules[0].major(), rules[0].minor(), rules[0].access().as_deref()),
        (Some(1), Some(3), Some("rw"))
    );

    let m = &s.mounts().as_ref().unwrap()[0];
    assert_eq!(m.destination(), Path::new("/opt/vendor"));
    assert_eq!(m.source().as_deref(), Some(src.path()));
    assert_eq!(m.options().as_deref(), Some(&["bind".to_string()][..]));
    let hooks = s.hooks().as_ref().unwrap().create_container().as_ref().unwrap();
    assert_eq!(hooks[0].path(), Path::new("/bin/sh"));
    assert_eq!(hooks[0].args().as_ref().unwrap()[0], "sh");
}

#[test]
fn spec_level_edits_apply_once_and_mounts_sort_parents_first() {
    let (d, _src) = spec_dir();
    let inj = resolve(&d, &["vendor.com/device=zero", "vendor.com/device=null"]).unwrap();
    assert_eq!(inj.env.iter().filter(|e| *e == "VENDOR=1").count(), 1);
    let mut s = base_spec();
    let mut deep = Mount::default();
    deep.set_destination("/opt/vendor/lib/deep".into());
    s.set_mounts(Some(vec![deep]));
    inj.apply(&mut s);
    let dests: Vec<_> = s
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.destination().clone())
        .collect();
    assert_eq!(
        dests,
        [
            PathBuf::from("/opt/vendor"),
            PathBuf::from("/opt/vendor/lib/deep")
        ]
    );
}

#[test]
fn unknown_and_malformed_names_are_named() {
    let (d, _src) = spec_dir();
    let e = resolve(&d, &["vendor.com/device=gone"]).unwrap_err();
    assert!(
        matches!(&e, CdiError::UnknownDevice(n) if n == "vendor.com/device=gone"),
        "{e}"
    );
    let e = resolve(&d, &["not-qualified"]).unwrap_err();
    assert!(
        matches!(&e, CdiError::InvalidName(m) if m.contains("not-qualified")),
        "{e}"
    );
    // Nothing requested: nothing read, not even a missing directory.
    assert!(
        Injection::resolve(&[PathBuf::from("/nonexistent")], &[])
            .unwrap()
            .devices
            .is_empty()
    );
}

#[test]
fn host_facts_are_checked_before_anything_exists() {
    let edits = |e: &str| {
        format!(
            r#"{{"cdiVersion":"0.7.0","kind":"v.com/c","devices":[{{"name":"d","containerEdits":{e}}}]}}"#
        )
    };
    let cases = [
        (
            r#"{"deviceNodes":[{"path":"/dev/none-such-cdi"}]}"#,
            "none-such-cdi",
        ),
        (
            r#"{"deviceNodes":[{"path":"/dev/x","hostPath":"/dev/null","type":"b"}]}"#,
            "type c",
        ),
        (
            r#"{"deviceNodes":[{"path":"/dev/x","hostPath":"/etc/hostname"}]}"#,
            "not a device",
        ),
        (
            r#"{"mounts":[{"hostPath":"/none/such","containerPath":"/x"}]}"#,
            "/none/such",
        ),
        (
            r#"{"hooks":[{"hookName":"poststop","path":"/none/hook"}]}"#,
            "/none/hook",
        ),
    ];
    for (e, want) in cases {
        let d = dir_with(&edits(e));
        let err = resolve(&d, &["v.com/c=d"]).unwrap_err();
        assert!(matches!(err, CdiError::Invalid { .. }), "{e}: {err}");
        assert!(
            err.to_string().contains(want) && err.to_string().contains("v.com/c=d"),
            "{err}"
        );
    }
    let d = dir_with(&edits(r#"{"intelRdt":{"closID":"gold"}}"#));
    assert!(matches!(
        resolve(&d, &["v.com/c=d"]),
        Err(CdiError::Unsupported { .. })
    ));
    // Type and major given: a host node that is absent is not needed.
    let d = dir_with(&edits(
        r#"{"deviceNodes":[{"path":"/dev/x","hostPath":"/dev/absent","type":"c","major":10,"minor":200}]}"#,
    ));
    let inj = resolve(&d, &["v.com/c=d"]).unwrap();
    assert_eq!((inj.nodes[0].0.major(), inj.nodes[0].0.minor()), (10, 200));
}

#[test]
fn a_requested_device_replaces_a_node_at_the_same_path() {
    let (d, _src) = spec_dir();
    let inj = resolve(&d, &["vendor.com/device=zero"]).unwrap();
    let mut s = base_spec();
    let mut old = LinuxDevice::default();
    old.set_path("/dev/zero".into()).set_major(9);
    s.linux_mut().as_mut().unwrap().set_devices(Some(vec![old]));
    inj.apply(&mut s);
    let devs = s.linux().as_ref().unwrap().devices().clone().unwrap();
    assert_eq!(devs.len(), 1);
    assert_eq!(devs[0].major(), 1);
}
