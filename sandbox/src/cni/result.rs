//! Reading pod addresses out of a CNI ADD result (spec 0.1.0 to 1.0.0).
//!
//! Invariant: the first address returned is the pod IP: the first `ips[]` entry whose `interface`
//! index names the pod's interface (`eth0`) inside a sandbox; when no entry names an interface,
//! every entry counts. Addresses are returned without their prefix length.

use serde_json::Value;

/// Pod addresses from an ADD result, pod IP first, duplicates removed.
pub fn pod_ips(result: &Value, ifname: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut push = |addr: &str| {
        let ip = addr.split('/').next().unwrap_or(addr).to_string();
        if !ip.is_empty() && !out.contains(&ip) {
            out.push(ip);
        }
    };
    if let Some(ips) = result.get("ips").and_then(Value::as_array) {
        let interfaces = result.get("interfaces").and_then(Value::as_array);
        let names_pod_if = |ip: &Value| {
            let idx = ip.get("interface").and_then(Value::as_u64)?;
            let iface = interfaces?.get(idx as usize)?;
            let name_ok = iface.get("name").and_then(Value::as_str) == Some(ifname);
            let in_sandbox = iface
                .get("sandbox")
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty());
            Some(name_ok && in_sandbox)
        };
        let on_pod_if: Vec<&Value> = ips.iter().filter(|ip| names_pod_if(ip) == Some(true)).collect();
        let chosen: Vec<&Value> = if on_pod_if.is_empty() {
            ips.iter().filter(|ip| ip.get("interface").is_none()).collect()
        } else {
            on_pod_if
        };
        for ip in chosen {
            if let Some(a) = ip.get("address").and_then(Value::as_str) {
                push(a);
            }
        }
        return out;
    }
    // Spec 0.1.0/0.2.0: `ip4` and `ip6` objects.
    for key in ["ip4", "ip6"] {
        if let Some(a) = result.get(key).and_then(|v| v.get("ip")).and_then(Value::as_str) {
            push(a);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn picks_addresses_on_the_pod_interface() {
        let r = json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "crius0", "mac": "aa"},
                {"name": "veth1", "mac": "bb"},
                {"name": "eth0", "mac": "cc", "sandbox": "/run/crius/ns/x/net"}
            ],
            "ips": [
                {"address": "10.85.0.9/16", "gateway": "10.85.0.1", "interface": 2},
                {"address": "10.99.0.1/24", "interface": 0},
                {"address": "fd00::9/64", "interface": 2}
            ]
        });
        assert_eq!(pod_ips(&r, "eth0"), vec!["10.85.0.9", "fd00::9"]);
    }

    #[test]
    fn without_interface_indexes_every_address_counts() {
        let r = json!({"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "10.1.2.3/24"}]});
        assert_eq!(pod_ips(&r, "eth0"), vec!["10.1.2.3"]);
        let old = json!({"cniVersion": "0.2.0", "ip4": {"ip": "10.0.0.5/8"}, "ip6": {"ip": "fd::5/64"}});
        assert_eq!(pod_ips(&old, "eth0"), vec!["10.0.0.5", "fd::5"]);
        assert!(pod_ips(&json!({}), "eth0").is_empty());
    }
}
