//! CNI client tests against fake plugin scripts that record their environment and stdin.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::{Value, json};

use super::*;

/// A fake plugin: logs `name command id netns ifname args`, saves stdin, prints a result on ADD
/// whose address is `addr` (or fails with a CNI error object when `addr` is "FAIL").
fn fake_plugin(dir: &Path, name: &str, addr: &str) {
    let body = if addr == "FAIL" {
        r#"echo '{"cniVersion":"1.0.0","code":11,"msg":"no more addresses","details":"range full"}'; exit 1"#
            .to_string()
    } else {
        format!(
            r#"if [ "$CNI_COMMAND" = ADD ]; then printf '{{"cniVersion":"1.0.0","interfaces":[{{"name":"eth0","sandbox":"%s"}}],"ips":[{{"address":"{addr}/24","interface":0}}]}}' "$CNI_NETNS"; fi"#
        )
    };
    let script = format!(
        "#!/bin/sh\nd=$(dirname \"$0\"); n=$(basename \"$0\")\nin=$(cat)\n\
         echo \"$n $CNI_COMMAND $CNI_CONTAINERID [$CNI_NETNS] $CNI_IFNAME $CNI_ARGS\" >> \"$d/calls.log\"\n\
         printf '%s' \"$in\" > \"$d/$n.$CNI_COMMAND.json\"\n{body}\n"
    );
    let path = dir.join(name);
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn stdin_of(dir: &Path, plugin: &str, cmd: &str) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join(format!("{plugin}.{cmd}.json"))).unwrap()).unwrap()
}

fn calls(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("calls.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn network(dir: &Path, plugins: &str) -> NetworkConfig {
    let f = dir.join("net.conflist");
    std::fs::write(
        &f,
        format!(r#"{{"cniVersion":"1.0.0","name":"testnet","plugins":[{plugins}]}}"#),
    )
    .unwrap();
    load_file(&f).unwrap()
}

fn attachment(netns: &Path) -> Attachment {
    let mut caps = Map::new();
    caps.insert(
        "portMappings".into(),
        json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""}]),
    );
    caps.insert("cgroupPath".into(), json!("/crius/abc"));
    Attachment {
        container_id: "abc".into(),
        netns: netns.into(),
        ifname: POD_IFNAME.into(),
        args: vec![
            ("IgnoreUnknown".into(), "1".into()),
            ("K8S_POD_NAMESPACE".into(), "ns".into()),
            ("K8S_POD_NAME".into(), "pod".into()),
        ],
        capability_args: caps,
    }
}

#[test]
fn add_chains_results_and_offers_only_declared_capabilities() {
    let bin = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    fake_plugin(bin.path(), "first", "10.0.0.7");
    fake_plugin(bin.path(), "second", "10.0.0.8");
    let net = network(
        bin.path(),
        r#"{"type":"first","x":1},{"type":"second","capabilities":{"portMappings":true,"bandwidth":true}}"#,
    );
    let cni = Cni {
        bin_dirs: vec![Path::new("/nonexistent").into(), bin.path().into()],
        cache_dir: cache.path().into(),
    };
    let att = attachment(Path::new("/run/x/net"));
    let result = cni.add(&net, &att).unwrap();
    assert_eq!(pod_ips(&result, POD_IFNAME), vec!["10.0.0.8"]);

    assert_eq!(
        calls(bin.path()),
        vec![
            "first ADD abc [/run/x/net] eth0 IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=pod",
            "second ADD abc [/run/x/net] eth0 IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=pod",
        ]
    );
    let first = stdin_of(bin.path(), "first", "ADD");
    assert_eq!(first["name"], "testnet");
    assert_eq!(first["cniVersion"], "1.0.0");
    assert_eq!(first["x"], 1);
    assert!(first.get("prevResult").is_none());
    assert!(
        first.get("runtimeConfig").is_none(),
        "first declares no capabilities"
    );
    let second = stdin_of(bin.path(), "second", "ADD");
    assert_eq!(second["prevResult"]["ips"][0]["address"], "10.0.0.7/24");
    assert_eq!(
        second["runtimeConfig"],
        json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""}]})
    );

    let entry: Value =
        serde_json::from_slice(&std::fs::read(cache.path().join("results/testnet-abc-eth0")).unwrap())
            .unwrap();
    assert_eq!(entry["kind"], "cniCacheV1");
    assert_eq!(entry["containerId"], "abc");
    assert_eq!(entry["ifName"], "eth0");
    assert_eq!(entry["networkName"], "testnet");
    assert_eq!(entry["netns"], "/run/x/net");
    assert_eq!(entry["cniArgs"][1], json!(["K8S_POD_NAMESPACE", "ns"]));
    assert_eq!(entry["result"], result);
    use base64::Engine;
    let config = base64::engine::general_purpose::STANDARD
        .decode(entry["config"].as_str().unwrap())
        .unwrap();
    assert_eq!(config, net.bytes);
}

#[test]
fn del_runs_in_reverse_with_the_cached_result_and_no_vanished_netns() {
    let bin = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    fake_plugin(bin.path(), "first", "10.0.0.7");
    fake_plugin(bin.path(), "second", "10.0.0.8");
    let net = network(bin.path(), r#"{"type":"first"},{"type":"second"}"#);
    let cni = Cni {
        bin_dirs: vec![bin.path().into()],
        cache_dir: cache.path().into(),
    };
    let att = attachment(Path::new("/run/x/net"));
    let result = cni.add(&net, &att).unwrap();
    std::fs::remove_file(bin.path().join("calls.log")).unwrap();
    // No `cached` argument: the result comes from the cache entry written by ADD.
    cni.del(&net, &att, None).unwrap();
    let log = calls(bin.path());
    assert_eq!(log.len(), 2);
    assert!(log[0].starts_with("second DEL abc [] eth0"), "{log:?}");
    assert!(log[1].starts_with("first DEL abc [] eth0"), "{log:?}");
    assert_eq!(stdin_of(bin.path(), "first", "DEL")["prevResult"], result);
    assert!(!cache.path().join("results/testnet-abc-eth0").exists());
    // Idempotent: a second DEL without any cache still calls every plugin and succeeds.
    cni.del(&net, &att, None).unwrap();
    assert!(stdin_of(bin.path(), "first", "DEL").get("prevResult").is_none());
}

#[test]
fn plugin_failure_carries_the_plugins_message() {
    let bin = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    fake_plugin(bin.path(), "ok", "10.0.0.7");
    fake_plugin(bin.path(), "broken", "FAIL");
    let net = network(bin.path(), r#"{"type":"ok"},{"type":"broken"}"#);
    let cni = Cni {
        bin_dirs: vec![bin.path().into()],
        cache_dir: cache.path().into(),
    };
    let att = attachment(Path::new("/run/x/net"));
    let e = cni.add(&net, &att).unwrap_err().to_string();
    assert!(e.contains("\"broken\" ADD failed"), "{e}");
    assert!(
        e.contains("no more addresses: range full (CNI error code 11)"),
        "{e}"
    );
    assert!(!cache.path().join("results/testnet-abc-eth0").exists());
    let e = cni.del(&net, &att, None).unwrap_err().to_string();
    assert!(e.contains("no more addresses"), "{e}");
    assert_eq!(
        calls(bin.path())
            .iter()
            .filter(|c| c.starts_with("ok DEL"))
            .count(),
        1
    );
}

#[test]
fn missing_plugin_is_named() {
    let bin = tempfile::tempdir().unwrap();
    let net = network(bin.path(), r#"{"type":"nothere"}"#);
    let cni = Cni {
        bin_dirs: vec![bin.path().into()],
        cache_dir: bin.path().into(),
    };
    let e = cni.add(&net, &attachment(Path::new("/x"))).unwrap_err();
    assert!(
        matches!(e, CniError::PluginNotFound { ref plugin, .. } if plugin == "nothere"),
        "{e}"
    );
}

#[test]
fn portmap_without_mappings_is_not_run_and_passes_the_result_through() {
    let bin = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    fake_plugin(bin.path(), "first", "10.0.0.7");
    fake_plugin(bin.path(), "portmap", "10.0.0.9");
    let net = network(
        bin.path(),
        r#"{"type":"first"},{"type":"portmap","capabilities":{"portMappings":true}}"#,
    );
    let cni = Cni {
        bin_dirs: vec![bin.path().into()],
        cache_dir: cache.path().into(),
    };
    let mut att = attachment(Path::new("/run/x/net"));
    att.capability_args.remove("portMappings");
    let result = cni.add(&net, &att).unwrap();
    assert_eq!(
        pod_ips(&result, POD_IFNAME),
        vec!["10.0.0.7"],
        "first's result, unchanged"
    );
    cni.del(&net, &att, None).unwrap();
    let log = calls(bin.path());
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(log[0].starts_with("first ADD"), "{log:?}");
    assert!(log[1].starts_with("first DEL"), "{log:?}");

    // With a mapping it runs on both commands, with the mapping in its runtimeConfig.
    std::fs::remove_file(bin.path().join("calls.log")).unwrap();
    let att = attachment(Path::new("/run/x/net"));
    let result = cni.add(&net, &att).unwrap();
    assert_eq!(pod_ips(&result, POD_IFNAME), vec!["10.0.0.9"]);
    assert_eq!(
        stdin_of(bin.path(), "portmap", "ADD")["runtimeConfig"]["portMappings"][0]["hostPort"],
        8080
    );
    cni.del(&net, &att, None).unwrap();
    let log = calls(bin.path());
    assert_eq!(log.len(), 4, "{log:?}");
    assert!(
        log[1].starts_with("portmap ADD") && log[2].starts_with("portmap DEL"),
        "{log:?}"
    );
}

#[test]
fn portmap_with_mappings_in_the_list_or_first_in_it_still_runs() {
    let bin = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    fake_plugin(bin.path(), "first", "10.0.0.7");
    fake_plugin(bin.path(), "portmap", "10.0.0.9");
    let cni = Cni {
        bin_dirs: vec![bin.path().into()],
        cache_dir: cache.path().into(),
    };
    let mut att = attachment(Path::new("/run/x/net"));
    att.capability_args.remove("portMappings");
    // Mappings written into the list itself are the plugin's business.
    let fixed = network(
        bin.path(),
        r#"{"type":"first"},{"type":"portmap","runtimeConfig":{"portMappings":[{"hostPort":1,"containerPort":2,"protocol":"tcp"}]}}"#,
    );
    cni.add(&fixed, &att).unwrap();
    // A malformed runtimeConfig is the plugin's to reject.
    let malformed = network(
        bin.path(),
        r#"{"type":"first"},{"type":"portmap","runtimeConfig":{"portMappings":"all"}}"#,
    );
    cni.add(&malformed, &att).unwrap();
    // First in the list there is no prevResult to pass through: the plugin runs and decides.
    let alone = network(bin.path(), r#"{"type":"portmap"}"#);
    cni.add(&alone, &att).unwrap();
    let log = calls(bin.path());
    assert_eq!(log.len(), 5, "{log:?}");
    for i in [1, 3, 4] {
        assert!(log[i].starts_with("portmap ADD"), "{log:?}");
    }
}

#[test]
fn plugins_run_with_one_go_proc_unless_the_daemon_says_otherwise() {
    let bin = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let script = "#!/bin/sh\ncat > /dev/null\necho \"[$GOMAXPROCS]\" > \"$(dirname \"$0\")/gomaxprocs\"\n\
                  printf '{\"cniVersion\":\"1.0.0\",\"ips\":[{\"address\":\"10.0.0.3/24\"}]}'\n";
    let path = bin.path().join("gm");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let net = network(bin.path(), r#"{"type":"gm"}"#);
    let cni = Cni {
        bin_dirs: vec![bin.path().into()],
        cache_dir: cache.path().into(),
    };
    cni.add(&net, &attachment(Path::new("/run/x/net"))).unwrap();
    let expected = std::env::var("GOMAXPROCS").unwrap_or_else(|_| "1".into());
    assert_eq!(
        std::fs::read_to_string(bin.path().join("gomaxprocs"))
            .unwrap()
            .trim(),
        format!("[{expected}]")
    );
}

#[test]
fn a_plugin_flooding_its_output_is_refused_and_only_the_caps_are_held() {
    let bin = tempfile::tempdir().unwrap();
    // 8 MiB of result and of stderr: far over both caps; the plugin still runs to its end
    // (nothing blocks on a full pipe) and its exit status is seen.
    let script = "#!/bin/sh\ncat >/dev/null\nhead -c 8388608 /dev/zero | tr '\\0' x\n\
                  head -c 8388608 /dev/zero | tr '\\0' y >&2\nexit \"${EXIT:-0}\"\n";
    for (name, body) in [
        ("flood", script.to_string()),
        ("floodfail", script.replace("${EXIT:-0}", "${EXIT:-1}")),
    ] {
        let p = bin.path().join(name);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let inv = exec::Invocation {
        command: "ADD",
        container_id: "abc",
        netns: "/x",
        ifname: "eth0",
        args: "",
        bin_dirs: &[bin.path().into()],
    };
    let e = exec::run_plugin("flood", &inv, &json!({}))
        .unwrap_err()
        .to_string();
    assert!(e.contains("larger than 1048576 bytes"), "{e}");
    let e = exec::run_plugin("floodfail", &inv, &json!({}))
        .unwrap_err()
        .to_string();
    // The failure message is built from the kept stderr only.
    assert!(e.contains("yyyy"), "{}", &e[..e.len().min(200)]);
    assert!(e.len() <= (64 << 10) + 200, "message of {} bytes", e.len());
}
