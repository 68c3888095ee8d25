//! The OCI `process`: command line, environment, working directory, user and groups,
//! capabilities, terminal, no-new-privileges and the OOM score.
//!
//! Invariants (CRI/Docker semantics): a CRI `command` replaces the image entrypoint and then
//! only CRI `args` follow; without `command`, the image entrypoint is kept and CRI `args`, when
//! given, replace the image `cmd`. CRI env wins over image env by key. A user named in the CRI
//! request or the image must exist in the image's `/etc/passwd`. `noNewPrivileges` is only ever
//! emitted as `true` (youki loads seccomp late, without NNP, when it is present as `false`).

use std::collections::HashSet;
use std::str::FromStr;

use cri_api::v1::{ContainerConfig, LinuxContainerSecurityContext, SupplementalGroupsPolicy};
use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities, Process, User};

use super::user::UserDb;
use super::{ImageProcess, SpecError};

/// Docker's and containerd's default PATH, used when neither the image nor the request sets one.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// containerd's default capability set for unprivileged containers.
pub const DEFAULT_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// Every capability this kernel generation knows (privileged containers and `ALL`), in bit order:
/// `ALL_CAPS[n]` is capability number `n`.
pub const ALL_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

pub fn command(cfg: &ContainerConfig, image: &ImageProcess) -> Result<Vec<String>, SpecError> {
    let args = if !cfg.command.is_empty() {
        cfg.command.iter().chain(&cfg.args).cloned().collect::<Vec<_>>()
    } else {
        let cmd = if cfg.args.is_empty() {
            &image.cmd
        } else {
            &cfg.args
        };
        image.entrypoint.iter().chain(cmd).cloned().collect()
    };
    if args.is_empty() || args[0].is_empty() {
        return Err(SpecError::Invalid(
            "no command: the request and the image set neither command nor entrypoint/cmd".into(),
        ));
    }
    Ok(args)
}

/// Image env, then `HOSTNAME` unless set, then CRI env (overriding by key), then a default PATH.
pub fn environment(cfg: &ContainerConfig, image: &ImageProcess, hostname: Option<&str>) -> Vec<String> {
    let mut env: Vec<String> = Vec::new();
    let mut set = |kv: String| {
        let key = kv.split('=').next().unwrap_or("").to_string();
        match env.iter_mut().find(|e| e.split('=').next() == Some(key.as_str())) {
            Some(slot) => *slot = kv,
            None => env.push(kv),
        }
    };
    if let Some(h) = hostname {
        set(format!("HOSTNAME={h}"));
    }
    for kv in &image.env {
        set(kv.clone());
    }
    for kv in &cfg.envs {
        if !kv.key.is_empty() {
            set(format!("{}={}", kv.key, kv.value));
        }
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(DEFAULT_PATH.to_string());
    }
    env
}

/// `HOME` from the image's `/etc/passwd` entry for `uid` ("/" without one), unless the image or
/// the request set a non-empty `HOME`. Done here, as runc and CRI-O do, so the shim never looks
/// a user up itself (it is linked statically and has no NSS).
fn set_home(env: &mut Vec<String>, db: &UserDb, uid: u32) {
    env.retain(|e| e != "HOME=");
    if env.iter().any(|e| e.starts_with("HOME=")) {
        return;
    }
    let home = db
        .user_by_uid(uid)
        .map(|u| u.home)
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "/".into());
    env.push(format!("HOME={home}"));
}

/// The user: CRI `run_as_user`/`run_as_username` (+ `run_as_group`), else the image's `User`.
///
/// Groups as containerd computes them: the primary gid first, then (policy Merge, the
/// default) the groups the image's `/etc/group` lists the user in, then the request's
/// `supplemental_groups`; policy Strict leaves out the image's groups. The list always holds
/// the primary gid, so it is also the effective group list ContainerStatus reports.
pub fn user(
    sc: Option<&LinuxContainerSecurityContext>,
    image_user: &str,
    db: &UserDb,
) -> Result<User, SpecError> {
    let run_as_user = sc.and_then(|s| s.run_as_user.as_ref()).map(|v| v.value);
    let run_as_name = sc.map(|s| s.run_as_username.as_str()).filter(|s| !s.is_empty());
    let run_as_group = sc.and_then(|s| s.run_as_group.as_ref()).map(|v| v.value);
    if run_as_group.is_some() && run_as_user.is_none() && run_as_name.is_none() {
        // CRI: "run_as_group should only be specified when run_as_user or run_as_username is".
        return Err(SpecError::Invalid(
            "run_as_group is set without run_as_user or run_as_username".into(),
        ));
    }
    let policy = sc.map(|s| s.supplemental_groups_policy).unwrap_or_default();
    let merge = match SupplementalGroupsPolicy::try_from(policy) {
        Ok(SupplementalGroupsPolicy::Merge) => true,
        Ok(SupplementalGroupsPolicy::Strict) => false,
        Err(_) => {
            return Err(SpecError::Invalid(format!(
                "unknown supplemental groups policy {policy}"
            )));
        }
    };
    let (uid, name, mut gid) = if let Some(uid) = run_as_user {
        let uid = id32(uid, "run_as_user")?;
        let entry = db.user_by_uid(uid);
        (uid, entry.as_ref().map(|e| e.name.clone()), entry.map(|e| e.gid))
    } else if let Some(name) = run_as_name {
        let e = db
            .user_by_name(name)
            .ok_or_else(|| SpecError::Invalid(format!("user {name:?} is not in the image's /etc/passwd")))?;
        (e.uid, Some(e.name), Some(e.gid))
    } else {
        parse_image_user(image_user, db)?
    };
    if let Some(g) = run_as_group {
        gid = Some(id32(g, "run_as_group")?);
    }
    let gid = gid.unwrap_or(0);
    let mut groups: Vec<u32> = vec![gid];
    if let (true, Some(n)) = (merge, &name) {
        groups.extend(db.member_gids(n));
    }
    for g in sc.map(|s| s.supplemental_groups.as_slice()).unwrap_or_default() {
        groups.push(id32(*g, "supplemental_groups")?);
    }
    let mut seen = HashSet::new();
    groups.retain(|g| seen.insert(*g));
    let mut u = User::default();
    u.set_uid(uid).set_gid(gid).set_additional_gids(Some(groups));
    Ok(u)
}

/// Image `User`: `""`, `uid`, `name`, `uid:gid`, `name:group` (any mix).
fn parse_image_user(spec: &str, db: &UserDb) -> Result<(u32, Option<String>, Option<u32>), SpecError> {
    if spec.is_empty() {
        return Ok((0, db.user_by_uid(0).map(|e| e.name), Some(0)));
    }
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let (uid, name, mut gid) = match u.parse::<u32>() {
        Ok(uid) => {
            let e = db.user_by_uid(uid);
            (uid, e.as_ref().map(|e| e.name.clone()), e.map(|e| e.gid))
        }
        Err(_) => {
            let e = db.user_by_name(u).ok_or_else(|| {
                SpecError::Invalid(format!("image user {u:?} is not in the image's /etc/passwd"))
            })?;
            (e.uid, Some(e.name), Some(e.gid))
        }
    };
    if let Some(g) = g {
        gid = Some(match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => db.group_by_name(g).ok_or_else(|| {
                SpecError::Invalid(format!("image group {g:?} is not in the image's /etc/group"))
            })?,
        });
    }
    Ok((uid, name, gid))
}

fn id32(v: i64, what: &str) -> Result<u32, SpecError> {
    u32::try_from(v).map_err(|_| SpecError::Invalid(format!("{what} {v} is not a valid id")))
}

fn parse_cap(name: &str) -> Result<Capability, SpecError> {
    let n = name.trim().to_ascii_uppercase();
    let n = n.strip_prefix("CAP_").unwrap_or(&n);
    Capability::from_str(n).map_err(|_| SpecError::Invalid(format!("unknown capability {name:?}")))
}

/// The capabilities in the bounding set `available` (bit n = capability n, as in
/// `/proc/self/status`), in kernel order.
pub fn available_caps(available: u64) -> Capabilities {
    ALL_CAPS
        .iter()
        .enumerate()
        .filter(|(bit, _)| available & (1u64 << bit) != 0)
        .filter_map(|(_, name)| parse_cap(name).ok())
        .collect()
}

/// Default set (or all, when privileged) plus CRI adds, minus CRI drops; `ALL` works in both.
/// "All" is every capability the runtime itself holds (`available`): the kernel refuses to
/// grant more. The default set is cut to `available` too; an explicit add of a capability
/// outside it is refused ([`SpecError::Unsupported`]).
pub fn capabilities(
    sc: Option<&LinuxContainerSecurityContext>,
    available: u64,
) -> Result<LinuxCapabilities, SpecError> {
    let all = available_caps(available);
    let privileged = sc.is_some_and(|s| s.privileged);
    let mut caps: Capabilities = if privileged {
        all.clone()
    } else {
        let defaults: Capabilities = DEFAULT_CAPS
            .iter()
            .map(|c| parse_cap(c))
            .collect::<Result<_, _>>()?;
        defaults.intersection(&all).copied().collect()
    };
    if let Some(c) = sc.and_then(|s| s.capabilities.as_ref()) {
        let is_all = |v: &[String]| v.iter().any(|x| x.eq_ignore_ascii_case("ALL"));
        if is_all(&c.add_capabilities) {
            caps = all.clone();
        }
        for a in c
            .add_capabilities
            .iter()
            .filter(|a| !a.eq_ignore_ascii_case("ALL"))
        {
            let cap = parse_cap(a)?;
            if !all.contains(&cap) {
                return Err(SpecError::Unsupported(format!(
                    "capability {a:?} is not in the runtime's own bounding set, so no container can hold it"
                )));
            }
            caps.insert(cap);
        }
        if is_all(&c.drop_capabilities) {
            caps.clear();
        }
        for d in c
            .drop_capabilities
            .iter()
            .filter(|d| !d.eq_ignore_ascii_case("ALL"))
        {
            caps.remove(&parse_cap(d)?);
        }
    }
    let mut lc = LinuxCapabilities::default();
    lc.set_bounding(Some(caps.clone()))
        .set_effective(Some(caps.clone()))
        .set_permitted(Some(caps))
        .set_inheritable(None)
        .set_ambient(None);
    Ok(lc)
}

/// cgroup v2 has no device controller file: device access is limited by an eBPF program, which
/// this build of libcontainer does not install. Without it, CAP_MKNOD (in the default set) would
/// let a container make and open any host device node, so on v2 an unprivileged container holds
/// it only when the request adds it by name.
pub fn drop_default_mknod(proc: &mut Process, sc: Option<&LinuxContainerSecurityContext>) {
    let asked = sc.and_then(|s| s.capabilities.as_ref()).is_some_and(|c| {
        c.add_capabilities
            .iter()
            .any(|a| a.trim_start_matches("CAP_").eq_ignore_ascii_case("MKNOD"))
    });
    if asked {
        return;
    }
    let Some(mut caps) = proc.capabilities().clone() else {
        return;
    };
    let without = |set: Option<Capabilities>| {
        set.map(|mut s| {
            s.remove(&oci_spec::runtime::Capability::Mknod);
            s
        })
    };
    let (bounding, effective, permitted) = (
        without(caps.bounding().clone()),
        without(caps.effective().clone()),
        without(caps.permitted().clone()),
    );
    caps.set_bounding(bounding)
        .set_effective(effective)
        .set_permitted(permitted);
    proc.set_capabilities(Some(caps));
}

pub fn process(
    cfg: &ContainerConfig,
    image: &ImageProcess,
    db: &UserDb,
    hostname: Option<&str>,
    available_caps: u64,
) -> Result<Process, SpecError> {
    let sc = cfg.linux.as_ref().and_then(|l| l.security_context.as_ref());
    let cwd = [cfg.working_dir.as_str(), image.working_dir.as_str()]
        .into_iter()
        .find(|d| !d.is_empty())
        .unwrap_or("/");
    if !cwd.starts_with('/') {
        return Err(SpecError::Invalid(format!(
            "working directory {cwd:?} is not absolute"
        )));
    }
    let user = user(sc, &image.user, db)?;
    let mut env = environment(cfg, image, hostname);
    set_home(&mut env, db, user.uid());
    let mut p = Process::default();
    p.set_terminal(Some(cfg.tty))
        .set_args(Some(command(cfg, image)?))
        .set_env(Some(env))
        .set_cwd(cwd.into())
        .set_user(user)
        .set_capabilities(Some(capabilities(sc, available_caps)?))
        .set_rlimits(None)
        .set_no_new_privileges(sc.filter(|s| s.no_new_privs).map(|_| true))
        .set_oom_score_adj(
            cfg.linux
                .as_ref()
                .and_then(|l| l.resources.as_ref())
                .map(|r| r.oom_score_adj)
                .filter(|v| *v != 0)
                .map(|v| v.clamp(-1000, 1000) as i32),
        );
    Ok(p)
}
