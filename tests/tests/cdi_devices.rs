//! CDI devices through the real daemon: specs (JSON and YAML) in the test's own `[cdi]
//! spec_dirs`, requested by `cdi_devices` and by a `cdi.k8s.io/*` annotation, observed from
//! inside the container (env, bind mount, device nodes and their cgroup access) and on the host
//! (a createRuntime hook ran with the container's state); an unknown device is InvalidArgument
//! naming it and leaves no container behind.

use std::path::Path;

use crius_tests::containers::World;
use crius_tests::pods::PodCleanup;
use crius_tests::security::{exec, exec_ok};
use k8s_cri::v1::*;

/// A device node outside libcontainer's default set (those are always rwm in the device cgroup),
/// so the CDI device's cgroup rule is what decides its access.
fn extra_device() -> &'static str {
    ["/dev/loop-control", "/dev/fuse", "/dev/net/tun"]
        .into_iter()
        .find(|d| Path::new(d).exists())
        .expect("a host with /dev/loop-control, /dev/fuse or /dev/net/tun")
}

/// The JSON spec: device `null` (node, env, read-only bind mount, hooks), device `zero` with a
/// read-only extra node, plus spec-wide env.
fn json_spec(src: &Path, hook_out: &Path) -> String {
    serde_json::json!({
        "cdiVersion": "0.6.0",
        "kind": "crius.test/dev",
        "annotations": {"origin": "cdi_devices test"},
        "devices": [
            {"name": "null", "containerEdits": {
                "env": ["CDI_DEVICE=null"],
                "deviceNodes": [{"path": "/dev/cdi-test-null", "hostPath": "/dev/null"}],
                "mounts": [{"hostPath": src, "containerPath": "/cdi-src", "options": ["ro", "bind"]}],
                "hooks": [{"hookName": "createRuntime", "path": "/bin/sh",
                           "args": ["sh", "-c", format!("cat > {}", hook_out.display())],
                           "env": ["PATH=/usr/bin:/bin"]},
                          {"hookName": "poststop", "path": "/bin/sh",
                           "args": ["sh", "-c", format!("cat > {}.poststop", hook_out.display())],
                           "env": ["PATH=/usr/bin:/bin"]},
                          {"hookName": "poststop", "path": "/bin/false"}]
            }},
            {"name": "zero", "containerEdits": {
                "deviceNodes": [{"path": "/dev/cdi-test-zero", "hostPath": "/dev/zero",
                                 "permissions": "rw"},
                                {"path": "/dev/cdi-test-ro", "hostPath": extra_device(),
                                 "permissions": "r"}]
            }}
        ],
        "containerEdits": {"env": ["CDI_VENDOR=crius-test"]}
    })
    .to_string()
}

const YAML_SPEC: &str = "cdiVersion: 0.5.0\nkind: crius.test/yaml\ndevices:\n- name: \"1\"\n  \
                         containerEdits:\n    env: [CDI_YAML=one]\n";

fn names(ids: &[&str]) -> Vec<CdiDevice> {
    ids.iter().map(|n| CdiDevice { name: n.to_string() }).collect()
}

#[tokio::test]
async fn cdi_devices_bring_env_mounts_nodes_and_hooks() {
    let dir = tempfile::tempdir().unwrap();
    let (specs, src) = (dir.path().join("cdi"), dir.path().join("src"));
    std::fs::create_dir_all(&specs).unwrap();
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("hello"), "from the host").unwrap();
    let hook_out = dir.path().join("hook-state");
    std::fs::write(specs.join("test.json"), json_spec(&src, &hook_out)).unwrap();
    std::fs::write(specs.join("test.yaml"), YAML_SPEC).unwrap();
    // A broken file beside them must not hide their devices.
    std::fs::write(specs.join("broken.json"), "{\"cdiVersion\": ").unwrap();

    let config = format!("[cdi]\nspec_dirs = [\"/nonexistent/cdi\", {specs:?}]\n");
    let mut w = World::with_config(&config).await.unwrap();
    let _clean = PodCleanup::new(&w.d);

    // By the CRI field.
    let mut c = w.config("by-field", &["sleep", "1000"]);
    c.cdi_devices = names(&["crius.test/dev=null"]);
    let a = w.create(c).await.unwrap();
    w.start(&a).await.unwrap();
    let out = exec_ok(
        &mut w,
        &a,
        &[
            "sh",
            "-c",
            "echo $CDI_DEVICE $CDI_VENDOR; cat /cdi-src/hello; echo; \
             test -c /dev/cdi-test-null && stat -c %t:%T /dev/cdi-test-null; \
             echo written > /dev/cdi-test-null && echo ok",
        ],
    )
    .await;
    assert_eq!(out, "null crius-test\nfrom the host\n1:3\nok\n");
    let (code, _, err) = exec(&mut w, &a, &["touch", "/cdi-src/new"]).await;
    assert_ne!(code, 0, "the mount is read-only: {err}");
    assert!(
        !Path::new("/dev/cdi-test-null").exists(),
        "nothing was made on the host"
    );
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&hook_out).expect("createRuntime hook ran")).unwrap();
    assert_eq!(
        state["id"],
        a.as_str(),
        "the hook got the container's state: {state}"
    );

    // Removal runs the poststop hooks; one that fails does not keep the container.
    w.stop(&a, 0).await.unwrap();
    w.remove(&a).await.unwrap();
    // The hooks run in the shim's shutdown, part of the teardown that follows the answer.
    w.wait_torn_down(&a).await.unwrap();
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(hook_out.with_extension("poststop")).expect("poststop hook ran"),
    )
    .unwrap();
    assert_eq!(state["id"], a.as_str(), "{state}");
    assert!(w.status(&a).await.is_err(), "removed despite the failing hook");
    let youki = w.d.state.join("youki").join(&a);
    assert!(!youki.exists(), "libcontainer state left: {}", youki.display());

    // By annotation, two kinds at once, one of them from the YAML file.
    let mut c = w.config("by-annotation", &["sleep", "1000"]);
    c.annotations.insert(
        "cdi.k8s.io/test".into(),
        "crius.test/dev=zero, crius.test/yaml=1".into(),
    );
    let b = w.create(c).await.unwrap();
    w.start(&b).await.unwrap();
    let out = exec_ok(
        &mut w,
        &b,
        &[
            "sh",
            "-c",
            "echo $CDI_VENDOR $CDI_YAML; head -c 3 /dev/cdi-test-zero | wc -c; \
             test -e /dev/cdi-test-null || echo no-null; test -e /cdi-src || echo no-mount",
        ],
    )
    .await;
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["crius-test", "one", "3", "no-null", "no-mount"]
    );
    exec_ok(&mut w, &b, &["sh", "-c", ": < /dev/cdi-test-ro"]).await;
    let (code, _, err) = exec(&mut w, &b, &["sh", "-c", ": > /dev/cdi-test-ro"]).await;
    assert_ne!(code, 0, "the device cgroup allows only reading");
    assert!(err.contains("Operation not permitted"), "{err}");
    w.teardown().await.unwrap();
}

#[tokio::test]
async fn unknown_cdi_device_is_invalid_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("test.yaml"), YAML_SPEC).unwrap();
    let config = format!("[cdi]\nspec_dirs = [{:?}]\n", dir.path());
    let mut w = World::with_config(&config).await.unwrap();
    let _clean = PodCleanup::new(&w.d);
    let before = w.d.containers().await.len();
    let containers_dir = w.d.state.join("containers");
    let dirs = || std::fs::read_dir(&containers_dir).map(|d| d.count()).unwrap_or(0);
    let dirs_before = dirs();

    let mut c = w.config("unknown", &["sleep", "1000"]);
    c.cdi_devices = names(&["crius.test/yaml=1", "crius.test/yaml=2"]);
    let e = w.create(c).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("crius.test/yaml=2"), "{}", e.message());

    let mut c = w.config("unqualified", &["sleep", "1000"]);
    c.annotations.insert("cdi.k8s.io/x".into(), "gpu0".into());
    let e = w.create(c).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("gpu0"), "{}", e.message());

    assert_eq!(w.d.containers().await.len(), before);
    assert_eq!(
        dirs(),
        dirs_before,
        "no bundle left in {}",
        containers_dir.display()
    );
    // The name is free again: the known device alone creates the container.
    let mut c = w.config("unknown", &["sleep", "1000"]);
    c.cdi_devices = names(&["crius.test/yaml=1"]);
    let id = w.create(c).await.unwrap();
    w.start(&id).await.unwrap();
    assert_eq!(
        exec_ok(&mut w, &id, &["sh", "-c", "echo $CDI_YAML"]).await,
        "one\n"
    );
    w.teardown().await.unwrap();
}
