//! The CDI spec file format (CDI `SPEC.md`, versions 0.1.0 to 1.1.0) and its validation: the
//! serde types, the name rules of kinds and devices, and the minimum version a spec's fields
//! require.
//!
//! Invariants: unknown fields are errors (as the reference loader); a [`Spec`] returned by
//! [`parse`] has a known `cdiVersion` that is at least what its fields need, a valid `kind`, at
//! least one device, unique valid device names, and edits whose env entries are `NAME=value`,
//! whose paths are absolute, whose hook names are OCI hook kinds and whose permissions are
//! `r`/`w`/`m` or `none`.

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;

/// Spec versions, newest first; the index orders them.
const VERSIONS: &[&str] = &[
    "1.1.0", "1.0.0", "0.8.0", "0.7.0", "0.6.0", "0.5.0", "0.4.0", "0.3.0", "0.2.0", "0.1.0",
];

/// The hook kinds of the OCI runtime spec that a CDI hook may name.
pub const HOOK_NAMES: &[&str] = &[
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    #[serde(rename = "cdiVersion")]
    pub version: String,
    pub kind: String,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub devices: Vec<Device>,
    #[serde(default, rename = "containerEdits")]
    pub edits: Edits,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    pub name: String,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, rename = "containerEdits")]
    pub edits: Edits,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Edits {
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub device_nodes: Vec<DeviceNode>,
    #[serde(default)]
    pub mounts: Vec<Mount>,
    #[serde(default)]
    pub hooks: Vec<Hook>,
    #[serde(default)]
    pub intel_rdt: Option<serde_json::Value>,
    #[serde(default, rename = "additionalGids")]
    pub additional_gids: Vec<u32>,
    #[serde(default)]
    pub net_devices: Vec<NetDevice>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeviceNode {
    pub path: String,
    #[serde(default)]
    pub host_path: String,
    /// `b`, `c`, `u` (unbuffered char) or `p` (fifo); empty: from the host node.
    #[serde(default, rename = "type")]
    pub typ: String,
    #[serde(default)]
    pub major: i64,
    #[serde(default)]
    pub minor: i64,
    #[serde(default)]
    pub file_mode: Option<u32>,
    /// Device-cgroup access; empty means `rwm`, `none` means no access rule at all.
    #[serde(default)]
    pub permissions: String,
    #[serde(default)]
    pub uid: Option<u32>,
    #[serde(default)]
    pub gid: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Mount {
    pub host_path: String,
    pub container_path: String,
    #[serde(default, rename = "type")]
    pub typ: String,
    #[serde(default)]
    pub options: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Hook {
    pub hook_name: String,
    pub path: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub timeout: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NetDevice {
    pub host_interface_name: String,
    pub name: String,
}

impl Edits {
    pub fn is_empty(&self) -> bool {
        self.env.is_empty()
            && self.device_nodes.is_empty()
            && self.mounts.is_empty()
            && self.hooks.is_empty()
            && self.intel_rdt.is_none()
            && self.additional_gids.is_empty()
            && self.net_devices.is_empty()
    }
}

/// Parses and validates one spec file's bytes: YAML unless `json` (YAML is a superset of JSON,
/// but serde_json's errors are clearer for the JSON files most vendors write).
pub fn parse(bytes: &[u8], json: bool) -> Result<Spec, String> {
    let spec: Spec = if json {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())?
    } else {
        serde_norway::from_slice(bytes).map_err(|e| e.to_string())?
    };
    spec.validate()?;
    Ok(spec)
}

impl Spec {
    /// The kind split into vendor and class (validated by [`parse`]).
    pub fn vendor_class(&self) -> (&str, &str) {
        self.kind.split_once('/').unwrap_or(("", ""))
    }

    fn validate(&self) -> Result<(), String> {
        let version = self.version.strip_prefix('v').unwrap_or(&self.version);
        let have = VERSIONS
            .iter()
            .position(|v| *v == version)
            .ok_or_else(|| format!("unknown cdiVersion {:?}", self.version))?;
        let need = self.minimum_version();
        if VERSIONS.iter().position(|v| *v == need) < Some(have) {
            return Err(format!(
                "cdiVersion {:?} is older than {need}, which its fields need",
                self.version
            ));
        }
        let (vendor, class) = self
            .kind
            .split_once('/')
            .ok_or_else(|| format!("kind {:?} is not vendor/class", self.kind))?;
        vendor_or_class("vendor", vendor).and_then(|()| vendor_or_class("class", class))?;
        if self.devices.is_empty() {
            return Err("no devices".into());
        }
        self.edits
            .validate()
            .map_err(|e| format!("containerEdits: {e}"))?;
        let mut seen = HashSet::new();
        for d in &self.devices {
            device_name(&d.name)?;
            if !seen.insert(d.name.as_str()) {
                return Err(format!("device {:?} is defined twice", d.name));
            }
            if d.edits.is_empty() {
                return Err(format!("device {:?} has no containerEdits", d.name));
            }
            d.edits
                .validate()
                .map_err(|e| format!("device {:?}: {e}", d.name))?;
        }
        Ok(())
    }

    /// The oldest version that has every field this spec uses (the reference's table).
    fn minimum_version(&self) -> &'static str {
        let all = || std::iter::once(&self.edits).chain(self.devices.iter().map(|d| &d.edits));
        let rdt_v110 = |e: &Edits| {
            e.intel_rdt
                .as_ref()
                .is_some_and(|r| r.get("schemata").is_some() || r.get("enableMonitoring").is_some())
        };
        if all().any(|e| rdt_v110(e) || !e.net_devices.is_empty()) {
            "1.1.0"
        } else if all().any(|e| e.intel_rdt.is_some() || !e.additional_gids.is_empty()) {
            "0.7.0"
        } else if !self.annotations.is_empty()
            || self.devices.iter().any(|d| !d.annotations.is_empty())
            || self.vendor_class().1.contains('.')
        {
            "0.6.0"
        } else if self
            .devices
            .iter()
            .any(|d| d.name.starts_with(|c: char| c.is_ascii_digit()))
            || all().any(|e| e.device_nodes.iter().any(|n| !n.host_path.is_empty()))
        {
            "0.5.0"
        } else if all().any(|e| e.mounts.iter().any(|m| !m.typ.is_empty())) {
            "0.4.0"
        } else {
            "0.3.0"
        }
    }
}

impl Edits {
    fn validate(&self) -> Result<(), String> {
        env(&self.env)?;
        for n in &self.device_nodes {
            absolute("device path", &n.path)?;
            if !n.host_path.is_empty() {
                absolute("device hostPath", &n.host_path)?;
            }
            if !matches!(n.typ.as_str(), "" | "b" | "c" | "u" | "p") {
                return Err(format!("device {:?}: invalid type {:?}", n.path, n.typ));
            }
            let p = n.permissions.as_str();
            if p != "none" && !p.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
                return Err(format!("device {:?}: invalid permissions {p:?}", n.path));
            }
        }
        for m in &self.mounts {
            absolute("mount hostPath", &m.host_path)?;
            absolute("mount containerPath", &m.container_path)?;
        }
        for h in &self.hooks {
            if !HOOK_NAMES.contains(&h.hook_name.as_str()) {
                return Err(format!("invalid hook name {:?}", h.hook_name));
            }
            absolute("hook path", &h.path)?;
            env(&h.env).map_err(|e| format!("hook {:?}: {e}", h.hook_name))?;
            if h.timeout.is_some_and(|t| t <= 0) {
                return Err(format!("hook {:?}: timeout must be positive", h.hook_name));
            }
        }
        let (mut hosts, mut names) = (HashSet::new(), HashSet::new());
        for n in &self.net_devices {
            if n.host_interface_name.is_empty() || n.name.is_empty() {
                return Err("net device with an empty name".into());
            }
            if !hosts.insert(&n.host_interface_name) || !names.insert(&n.name) {
                return Err(format!("net device {:?} listed twice", n.host_interface_name));
            }
        }
        Ok(())
    }
}

fn env(vars: &[String]) -> Result<(), String> {
    match vars.iter().find(|v| v.find('=').is_none_or(|i| i == 0)) {
        Some(v) => Err(format!("invalid environment variable {v:?}")),
        None => Ok(()),
    }
}

fn absolute(what: &str, p: &str) -> Result<(), String> {
    if p.starts_with('/') && !p.split('/').any(|c| c == "..") {
        Ok(())
    } else {
        Err(format!("{what} {p:?} must be absolute without `..`"))
    }
}

/// A vendor or class: a letter first, a letter or digit last, `-`, `_`, `.` between.
pub fn vendor_or_class(what: &str, s: &str) -> Result<(), String> {
    let ok = s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!("invalid {what} {s:?}"))
    }
}

/// A device name: a letter or digit first and last, `-`, `_`, `.`, `:` between.
pub fn device_name(s: &str) -> Result<(), String> {
    let ok = s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if ok {
        Ok(())
    } else {
        Err(format!("invalid device name {s:?}"))
    }
}

/// Splits a fully-qualified device name `vendor.com/class=name` into its kind and name.
pub fn qualified(name: &str) -> Result<(&str, &str), String> {
    let (kind, dev) = name
        .split_once('=')
        .ok_or_else(|| format!("CDI device {name:?} is not of the form vendor.com/class=name"))?;
    let (vendor, class) = kind
        .split_once('/')
        .ok_or_else(|| format!("CDI device {name:?} is not of the form vendor.com/class=name"))?;
    vendor_or_class("vendor", vendor)
        .and_then(|()| vendor_or_class("class", class))
        .and_then(|()| device_name(dev))
        .map_err(|e| format!("CDI device {name:?}: {e}"))?;
    Ok((kind, dev))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spec's own JSON definition, filled in.
    const FULL: &str = r#"{
      "cdiVersion": "0.7.0",
      "kind": "vendor.com/device",
      "annotations": {"key": "value"},
      "devices": [{
        "name": "myDevice",
        "annotations": {"key": "value"},
        "containerEdits": {
          "deviceNodes": [{"path": "/dev/card1", "hostPath": "/dev/card1", "type": "c",
                           "major": 25, "minor": 25, "fileMode": 384, "permissions": "rw",
                           "uid": 1000, "gid": 1000}]
        }
      }],
      "containerEdits": {
        "env": ["FOO=VALID_SPEC", "BAR=BARVALUE1"],
        "mounts": [{"hostPath": "/bin/vendorBin", "containerPath": "/bin/vendorBin",
                    "type": "bind", "options": ["ro"]}],
        "hooks": [{"hookName": "createContainer", "path": "/bin/vendor-hook",
                   "args": ["vendor-hook", "-x"], "env": ["A=B"], "timeout": 5}],
        "additionalGids": [5, 0]
      }
    }"#;

    #[test]
    fn parses_the_spec_definition_in_json_and_yaml() {
        let s = parse(FULL.as_bytes(), true).unwrap();
        assert_eq!(s.vendor_class(), ("vendor.com", "device"));
        assert_eq!(s.devices[0].edits.device_nodes[0].file_mode, Some(384));
        assert_eq!(s.edits.hooks[0].timeout, Some(5));
        assert_eq!(s.edits.additional_gids, [5, 0]);
        let yaml = "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n- name: \"0\"\n  containerEdits:\n    \
                    deviceNodes:\n    - path: /dev/nvidia0\n      hostPath: /dev/nvidia0\ncontainerEdits:\n  \
                    env: [NVIDIA_VISIBLE_DEVICES=void]\n";
        let s = parse(yaml.as_bytes(), false).unwrap();
        assert_eq!(s.devices[0].name, "0");
        assert_eq!(s.edits.env, ["NVIDIA_VISIBLE_DEVICES=void"]);
    }

    #[test]
    fn version_must_cover_the_fields_used() {
        let older = FULL.replace("0.7.0", "0.6.0");
        assert!(parse(older.as_bytes(), true).unwrap_err().contains("0.7.0"));
        assert!(parse(FULL.replace("0.7.0", "1.1.0").as_bytes(), true).is_ok());
        assert!(parse(FULL.replace("0.7.0", "v0.8.0").as_bytes(), true).is_ok());
        assert!(
            parse(FULL.replace("0.7.0", "9.9.9").as_bytes(), true)
                .unwrap_err()
                .contains("unknown")
        );
        // A mount type needs 0.4.0, a hostPath 0.5.0, a digit-first name 0.5.0.
        let m = r#"{"cdiVersion":"0.3.0","kind":"a.b/c","devices":[{"name":"d","containerEdits":
                   {"mounts":[{"hostPath":"/x","containerPath":"/y","type":"bind"}]}}]}"#;
        assert!(parse(m.as_bytes(), true).unwrap_err().contains("0.4.0"));
        let n = r#"{"cdiVersion":"0.4.0","kind":"a.b/c","devices":[{"name":"0","containerEdits":
                   {"env":["A=1"]}}]}"#;
        assert!(parse(n.as_bytes(), true).unwrap_err().contains("0.5.0"));
        let net = r#"{"cdiVersion":"0.8.0","kind":"a.b/c","devices":[{"name":"d","containerEdits":
                   {"netDevices":[{"hostInterfaceName":"eth1","name":"net1"}]}}]}"#;
        assert!(parse(net.as_bytes(), true).unwrap_err().contains("1.1.0"));
    }

    #[test]
    fn rejects_what_the_spec_forbids() {
        let cases = [
            (
                "unknown field",
                FULL.replace("\"annotations\": {\"key\"", "\"bogus\": {\"key\""),
            ),
            ("bad kind", FULL.replace("vendor.com/device", "vendor.com")),
            ("bad hook", FULL.replace("createContainer", "preStart")),
            ("relative hook", FULL.replace("/bin/vendor-hook", "vendor-hook")),
            ("bad env", FULL.replace("FOO=VALID_SPEC", "=x")),
            ("bad perms", FULL.replace("\"rw\"", "\"rx\"")),
            ("bad type", FULL.replace("\"type\": \"c\"", "\"type\": \"x\"")),
            ("zero timeout", FULL.replace("\"timeout\": 5", "\"timeout\": 0")),
            ("bad name", FULL.replace("myDevice", "-dev")),
        ];
        for (what, text) in cases {
            assert!(parse(text.as_bytes(), true).is_err(), "{what} accepted");
        }
        let empty = r#"{"cdiVersion":"0.3.0","kind":"a.b/c","devices":[{"name":"d","containerEdits":{}}]}"#;
        assert!(
            parse(empty.as_bytes(), true)
                .unwrap_err()
                .contains("no containerEdits")
        );
        let none = r#"{"cdiVersion":"0.3.0","kind":"a.b/c","devices":[]}"#;
        assert!(parse(none.as_bytes(), true).is_err());
    }

    #[test]
    fn qualified_names_follow_the_parser_rules() {
        assert_eq!(
            qualified("vendor.com/class=dev1").unwrap(),
            ("vendor.com/class", "dev1")
        );
        assert_eq!(qualified("nvidia.com/gpu=0").unwrap().1, "0");
        assert_eq!(qualified("a.b/c=GPU-1:2").unwrap().1, "GPU-1:2");
        for bad in [
            "dev1",
            "vendor.com=dev",
            "/dev/null",
            "1v.com/c=d",
            "v.com/c=",
            "v.com/c=d/e",
        ] {
            assert!(qualified(bad).is_err(), "{bad}");
        }
    }
}
