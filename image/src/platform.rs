//! The image platform (`os/architecture[/variant]`) a pull resolves an index to: the host's,
//! detected from the build target and the CPU, or one set in the configuration; and the ordered
//! list of platforms it can run, which picks an index entry.
//!
//! Invariants: platforms are compared only in their normalized form (OCI/Go names, lowercase;
//! `amd64/v1` is `amd64`, `arm64/v8` is `arm64`, a bare `arm` is `arm/v7`), so spelling
//! differences between an index and the configuration never change the choice. The acceptable
//! list starts with the platform itself and only ever falls back to variants the same CPU runs:
//! amd64 `vN` down to v1, arm `vN` down to v5. Nothing else (another OS, another architecture)
//! is ever acceptable.

use std::fmt;
use std::str::FromStr;

/// An OCI platform. Built by [`Platform::host`], [`Platform::new`] or parsed from
/// `os/arch[/variant]`; the fields are private so that it is always normalized (see the module
/// invariants) and `==` compares what the CPU runs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Platform {
    os: String,
    architecture: String,
    /// None when the architecture has no variant or it is the base one (amd64 v1, arm64 v8).
    variant: Option<String>,
}

/// Why a platform string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a platform: expected os/architecture[/variant], e.g. \"linux/arm64/v8\"")]
pub struct ParsePlatformError(String);

impl Platform {
    /// A normalized platform from its parts (aliases such as `x86_64` and `aarch64` accepted).
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        let (architecture, variant) = normalize_arch(architecture, variant);
        Platform {
            os: os.to_ascii_lowercase(),
            architecture,
            variant,
        }
    }

    /// The OS, lowercase (`linux`, `windows`).
    pub fn os(&self) -> &str {
        &self.os
    }

    /// The OCI (Go `GOARCH`) name: `amd64`, `arm64`, `arm`, `386`, `ppc64le`, ...
    pub fn architecture(&self) -> &str {
        &self.architecture
    }

    /// None for an architecture's base variant (amd64 v1, arm64 v8) and where there is none.
    pub fn variant(&self) -> Option<&str> {
        self.variant.as_deref()
    }

    /// The platform this process runs on: the OS and architecture it was built for, in OCI names;
    /// on amd64 the CPU's micro-architecture level, on arm the target's ISA version.
    pub fn host() -> Platform {
        Platform::new(std::env::consts::OS, host_arch(), host_variant().as_deref())
    }

    /// The platforms an image may be built for to run here, best first.
    pub fn acceptable(&self) -> Vec<Platform> {
        let with = |variant: Option<String>| Platform {
            variant,
            ..self.clone()
        };
        let level = |prefix: &str| {
            self.variant
                .as_deref()
                .and_then(|v| v.strip_prefix(prefix))
                .and_then(|n| n.parse::<u32>().ok())
        };
        match self.architecture.as_str() {
            // v4 runs v3, v2 and v1 code; v1 is written without a variant.
            "amd64" => {
                let top = level("v").unwrap_or(1);
                (1..=top)
                    .rev()
                    .map(|n| with((n > 1).then(|| format!("v{n}"))))
                    .collect()
            }
            // ARMv7 runs ARMv6 and ARMv5 code; older than v5 is not published for Linux.
            "arm" => match level("v") {
                Some(top) if top >= 5 => (5..=top).rev().map(|n| with(Some(format!("v{n}")))).collect(),
                _ => vec![self.clone()],
            },
            _ => vec![self.clone()],
        }
    }

    /// Where a platform described by an index entry stands in [`Platform::acceptable`]: 0 is the
    /// best match, None means it cannot run here.
    pub fn rank_in(
        acceptable: &[Platform],
        os: &str,
        architecture: &str,
        variant: Option<&str>,
    ) -> Option<usize> {
        let candidate = Platform::new(os, architecture, variant);
        acceptable.iter().position(|p| *p == candidate)
    }
}

/// OCI (Go `GOARCH`) names for the aliases found in the wild, and the base variants dropped.
fn normalize_arch(architecture: &str, variant: Option<&str>) -> (String, Option<String>) {
    let arch = architecture.to_ascii_lowercase();
    let variant = variant.filter(|v| !v.is_empty()).map(str::to_ascii_lowercase);
    match arch.as_str() {
        "x86_64" | "x86-64" | "amd64" => {
            let v = variant.filter(|v| v != "v1");
            ("amd64".into(), v)
        }
        "aarch64" | "arm64" => {
            let v = variant.filter(|v| !matches!(v.as_str(), "v8" | "8" | "v8.0"));
            ("arm64".into(), v)
        }
        "armhf" => ("arm".into(), Some("v7".into())),
        "armel" => ("arm".into(), Some("v6".into())),
        "arm" => {
            let v = match variant.as_deref() {
                None | Some("7") => "v7".to_string(),
                Some(n @ ("5" | "6" | "8")) => format!("v{n}"),
                Some(v) => v.to_string(),
            };
            ("arm".into(), Some(v))
        }
        "i386" | "i686" | "x86" => ("386".into(), variant),
        _ => (arch, variant),
    }
}

/// `std::env::consts::ARCH` (Rust's names) in OCI names.
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "mips64" if cfg!(target_endian = "little") => "mips64le",
        "mips" if cfg!(target_endian = "little") => "mipsle",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// The host CPU's variant: amd64's micro-architecture level (x86-64 psABI), arm's ISA version as
/// the binary was built for it. None elsewhere (arm64 is v8, which normalizes to none).
fn host_variant() -> Option<String> {
    #[cfg(target_arch = "x86_64")]
    {
        Some(format!("v{}", amd64_level()))
    }
    #[cfg(target_arch = "arm")]
    {
        let v = if cfg!(target_feature = "v8") {
            "v8"
        } else if cfg!(target_feature = "v7") {
            "v7"
        } else if cfg!(target_feature = "v6") {
            "v6"
        } else {
            "v5"
        };
        Some(v.to_string())
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "arm")))]
    {
        None
    }
}

/// The x86-64 psABI level (1..=4) whose feature set this CPU has in full.
#[cfg(target_arch = "x86_64")]
fn amd64_level() -> u32 {
    use std::arch::is_x86_feature_detected as has;
    let v2 = has!("cmpxchg16b")
        && has!("popcnt")
        && has!("sse3")
        && has!("ssse3")
        && has!("sse4.1")
        && has!("sse4.2");
    let v3 = v2
        && has!("avx")
        && has!("avx2")
        && has!("bmi1")
        && has!("bmi2")
        && has!("f16c")
        && has!("fma")
        && has!("lzcnt")
        && has!("movbe")
        && has!("xsave");
    let v4 =
        v3 && has!("avx512f") && has!("avx512bw") && has!("avx512cd") && has!("avx512dq") && has!("avx512vl");
    match (v2, v3, v4) {
        (_, _, true) => 4,
        (_, true, _) => 3,
        (true, ..) => 2,
        _ => 1,
    }
}

impl FromStr for Platform {
    type Err = ParsePlatformError;

    fn from_str(s: &str) -> Result<Platform, ParsePlatformError> {
        let bad = || ParsePlatformError(s.to_string());
        let part_ok = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        };
        let parts: Vec<&str> = s.split('/').collect();
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(|p| part_ok(p)) {
            return Err(bad());
        }
        Ok(Platform::new(parts[0], parts[1], parts.get(2).copied()))
    }
}

impl TryFrom<String> for Platform {
    type Error = ParsePlatformError;

    fn try_from(s: String) -> Result<Platform, ParsePlatformError> {
        s.parse()
    }
}

impl From<Platform> for String {
    fn from(p: Platform) -> String {
        p.to_string()
    }
}

/// `os/arch[/variant]`; arm64 is shown as `arm64/v8`, its usual spelling.
impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        match (&self.variant, self.architecture.as_str()) {
            (Some(v), _) => write!(f, "/{v}"),
            (None, "arm64") => write!(f, "/v8"),
            (None, _) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        s.parse().unwrap()
    }

    fn names(list: &[Platform]) -> Vec<String> {
        list.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn parsing_normalizes_and_refuses_malformed_strings() {
        assert_eq!(p("linux/x86_64"), p("linux/amd64/v1"));
        assert_eq!(p("Linux/aarch64"), p("linux/arm64/v8"));
        assert_eq!(p("linux/arm64"), p("linux/arm64/v8"));
        assert_eq!(p("linux/arm"), p("linux/arm/v7"));
        assert_eq!(p("linux/armhf"), p("linux/arm/7"));
        assert_eq!(p("linux/arm64").to_string(), "linux/arm64/v8");
        assert_eq!(p("linux/amd64/v1").to_string(), "linux/amd64");
        for bad in [
            "",
            "linux",
            "linux/",
            "/amd64",
            "linux/amd64/v2/x",
            "linux/amd 64",
            "linux//v8",
        ] {
            let e = bad.parse::<Platform>().unwrap_err().to_string();
            assert!(e.contains("os/architecture"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn amd64_levels_fall_back_to_lower_levels() {
        assert_eq!(names(&p("linux/amd64").acceptable()), ["linux/amd64"]);
        assert_eq!(
            names(&p("linux/amd64/v2").acceptable()),
            ["linux/amd64/v2", "linux/amd64"]
        );
        assert_eq!(
            names(&p("linux/amd64/v4").acceptable()),
            [
                "linux/amd64/v4",
                "linux/amd64/v3",
                "linux/amd64/v2",
                "linux/amd64"
            ]
        );
    }

    #[test]
    fn arm_versions_fall_back_to_v5_and_arm64_stands_alone() {
        assert_eq!(
            names(&p("linux/arm/v7").acceptable()),
            ["linux/arm/v7", "linux/arm/v6", "linux/arm/v5"]
        );
        assert_eq!(names(&p("linux/arm/v5").acceptable()), ["linux/arm/v5"]);
        assert_eq!(names(&p("linux/arm64/v8").acceptable()), ["linux/arm64/v8"]);
        assert_eq!(names(&p("linux/riscv64").acceptable()), ["linux/riscv64"]);
    }

    #[test]
    fn ranks_compare_normalized_forms_and_refuse_other_systems() {
        let arm64 = p("linux/arm64/v8").acceptable();
        assert_eq!(Platform::rank_in(&arm64, "linux", "arm64", None), Some(0));
        assert_eq!(Platform::rank_in(&arm64, "linux", "arm64", Some("v8")), Some(0));
        assert_eq!(Platform::rank_in(&arm64, "linux", "arm", Some("v7")), None);
        assert_eq!(Platform::rank_in(&arm64, "windows", "arm64", None), None);
        let v3 = p("linux/amd64/v3").acceptable();
        assert_eq!(Platform::rank_in(&v3, "linux", "amd64", Some("v1")), Some(2));
        assert_eq!(Platform::rank_in(&v3, "linux", "amd64", None), Some(2));
        assert_eq!(Platform::rank_in(&v3, "linux", "amd64", Some("v4")), None);
    }

    #[test]
    fn host_platform_is_the_build_target_in_oci_names() {
        let host = Platform::host();
        assert_eq!(host.os(), std::env::consts::OS);
        assert_eq!(host.to_string().parse::<Platform>().unwrap(), host);
        #[cfg(target_arch = "x86_64")]
        {
            assert_eq!(host.architecture(), "amd64");
            // Every x86-64 CPU runs baseline amd64 images; it is always the last resort.
            assert_eq!(host.acceptable().last().unwrap().to_string(), "linux/amd64");
        }
        #[cfg(target_arch = "aarch64")]
        assert_eq!(host.to_string(), "linux/arm64/v8");
    }
}
