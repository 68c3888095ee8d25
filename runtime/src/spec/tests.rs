//! Unit tests of the whole spec builder on plain data.

use cri_api::v1::{
    Capability as CriCaps, ContainerConfig, ContainerMetadata, Int64Value, KeyValue, LinuxContainerConfig,
    LinuxContainerResources, LinuxContainerSecurityContext, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, PodSandboxConfig,
};
use oci_spec::runtime::Capability;

use super::*;

fn image() -> ImageProcess {
    ImageProcess {
        user: "www-data".into(),
        env: vec!["PATH=/usr/bin:/bin".into(), "A=image".into(), "B=image".into()],
        entrypoint: vec!["/entry".into()],
        cmd: vec!["--serve".into()],
        working_dir: "/srv".into(),
    }
}

fn users() -> UserDb {
    UserDb {
        passwd: "root:x:0:0::/root:/bin/sh\nwww-data:x:33:33::/var/www:/bin/false\n".into(),
        group: "root:x:0:\nwww-data:x:33:\nweb:x:70:www-data\n".into(),
    }
}

fn host() -> HostFacts {
    HostFacts {
        hugetlb: false,
        swap_accounting: false,
        cgroup_v2: false,
        oom_score_adj_floor: 0,
        // CAP_SYS_RESOURCE (24) missing, as on hosts where the runtime itself runs confined.
        capabilities: ((1u64 << 41) - 1) & !(1 << 24),
        apparmor: false,
        cgroup_v1_hierarchies: vec![
            "/sys/fs/cgroup/memory".into(),
            "/sys/fs/cgroup/cpu,cpuacct".into(),
        ],
    }
}

fn pod_ns() -> PodNamespaces {
    PodNamespaces {
        network: Namespace::Join("/run/crius/ns/p/net".into()),
        ipc: Namespace::Join("/run/crius/ns/p/ipc".into()),
        uts: Namespace::Join("/run/crius/ns/p/uts".into()),
        pid: Namespace::New,
        user: None,
    }
}

fn sandbox() -> PodSandboxConfig {
    PodSandboxConfig {
        hostname: "web-0".into(),
        ..Default::default()
    }
}

fn ctr(sc: Option<LinuxContainerSecurityContext>) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "app".into(),
            attempt: 0,
        }),
        envs: vec![KeyValue {
            key: "B".into(),
            value: "cri".into(),
        }],
        linux: Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                memory_limit_in_bytes: 32 << 20,
                oom_score_adj: -997,
                ..Default::default()
            }),
            security_context: sc,
        }),
        ..Default::default()
    }
}

fn build_with(cfg: &ContainerConfig, sb: &PodSandboxConfig) -> Result<Spec, SpecError> {
    build_on(cfg, sb, &host())
}

fn build_on(cfg: &ContainerConfig, sb: &PodSandboxConfig, host: &HostFacts) -> Result<Spec, SpecError> {
    let files = PodFiles {
        hostname: Some("/run/crius/pods/p/hostname".into()),
        hosts: Some("/run/crius/pods/p/hosts".into()),
        resolv_conf: Some("/run/crius/pods/p/resolv.conf".into()),
        shm: None,
    };
    build(&SpecInput {
        id: "c1",
        sandbox_id: "p1",
        config: cfg,
        sandbox: sb,
        image_name: "docker.io/library/web:1",
        image: &image(),
        rootfs: Path::new("/run/crius/containers/c1/rootfs"),
        users: &users(),
        pod_files: &files,
        namespaces: &pod_ns(),
        target_pid: None,
        cgroups_path: "/crius/p1/c1",
        cgroup_fs_path: "/crius/p1/c1",
        host,
        privileged_host_devices: true,
    })
}

fn v2_host() -> HostFacts {
    HostFacts {
        cgroup_v2: true,
        cgroup_v1_hierarchies: vec![],
        ..host()
    }
}

#[test]
fn cgroup_v2_gives_a_cgroup_namespace_and_no_default_mknod() {
    let has = |spec: &Spec, c: Capability| {
        let caps = spec.process().as_ref().unwrap().capabilities().clone().unwrap();
        caps.bounding().as_ref().unwrap().contains(&c) && caps.effective().as_ref().unwrap().contains(&c)
    };
    let ns = |spec: &Spec| {
        spec.linux()
            .as_ref()
            .unwrap()
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Cgroup && n.path().is_none())
    };
    let v1 = build_with(&ctr(None), &sandbox()).unwrap();
    assert!(
        has(&v1, Capability::Mknod) && !ns(&v1),
        "v1: the device cgroup guards mknod"
    );
    let v2 = build_on(&ctr(None), &sandbox(), &v2_host()).unwrap();
    assert!(
        !has(&v2, Capability::Mknod),
        "v2 without a device filter: no default CAP_MKNOD"
    );
    assert!(has(&v2, Capability::Chown) && ns(&v2));
    let asked = LinuxContainerSecurityContext {
        capabilities: Some(CriCaps {
            add_capabilities: vec!["MKNOD".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    let v2 = build_on(&ctr(Some(asked)), &sandbox(), &v2_host()).unwrap();
    assert!(has(&v2, Capability::Mknod), "added by name, it stays");
}

#[test]
fn home_is_kept_when_set_and_defaults_to_root_dir_for_unknown_users() {
    let mut c = ctr(None);
    c.envs.push(KeyValue {
        key: "HOME".into(),
        value: "/data".into(),
    });
    let spec = build_with(&c, &sandbox()).unwrap();
    let env = spec.process().as_ref().unwrap().env().clone().unwrap();
    assert_eq!(
        env.iter().filter(|e| e.starts_with("HOME=")).collect::<Vec<_>>(),
        ["HOME=/data"]
    );

    let c = ctr(Some(LinuxContainerSecurityContext {
        run_as_user: Some(Int64Value { value: 4242 }),
        ..Default::default()
    }));
    let spec = build_with(&c, &sandbox()).unwrap();
    let env = spec.process().as_ref().unwrap().env().clone().unwrap();
    assert!(env.contains(&"HOME=/".to_string()), "{env:?}");
}

#[test]
fn image_defaults_shape_the_process() {
    let spec = build_with(&ctr(None), &sandbox()).unwrap();
    let p = spec.process().as_ref().unwrap();
    assert_eq!(p.args().as_deref().unwrap(), ["/entry", "--serve"]);
    assert_eq!(p.cwd(), Path::new("/srv"));
    let env = p.env().as_ref().unwrap();
    assert!(env.contains(&"B=cri".to_string()) && env.contains(&"A=image".to_string()));
    assert!(env.contains(&"HOSTNAME=web-0".to_string()));
    assert!(
        env.contains(&"HOME=/var/www".to_string()),
        "HOME from the image's passwd"
    );
    assert_eq!(env.iter().filter(|e| e.starts_with("B=")).count(), 1);
    assert_eq!((p.user().uid(), p.user().gid()), (33, 33));
    assert_eq!(
        p.user().additional_gids().as_deref(),
        Some(&[33, 70][..]),
        "primary group, then groups from /etc/group"
    );
    assert_eq!(p.oom_score_adj(), Some(0), "clamped to the host's floor");
    assert_eq!(spec.hostname().as_deref(), Some("web-0"));
    let lx = spec.linux().as_ref().unwrap();
    assert_eq!(lx.cgroups_path().as_deref(), Some(Path::new("/crius/p1/c1")));
    assert!(lx.seccomp().is_none(), "no profile asked: unconfined");
    let json = serde_json::to_value(&spec).unwrap();
    assert!(
        json["process"].get("noNewPrivileges").is_none(),
        "{}",
        json["process"]
    );
    assert_eq!(json["root"]["path"], "/run/crius/containers/c1/rootfs");
    let dests: Vec<_> = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.destination().clone())
        .collect();
    for d in [
        "/proc",
        "/dev/shm",
        "/etc/hosts",
        "/etc/resolv.conf",
        "/etc/hostname",
    ] {
        assert!(dests.contains(&PathBuf::from(d)), "{d} mounted");
    }
    let caps = p.capabilities().as_ref().unwrap().bounding().as_ref().unwrap();
    assert!(caps.contains(&Capability::Chown) && !caps.contains(&Capability::SysAdmin));

    // cgroup v1: the container's own cgroup of each hierarchy, bound read-only.
    let ms = spec.mounts().as_ref().unwrap();
    let cg = ms
        .iter()
        .find(|m| m.destination() == Path::new("/sys/fs/cgroup"))
        .unwrap();
    assert_eq!(cg.typ().as_deref(), Some("tmpfs"));
    let mem = ms
        .iter()
        .find(|m| m.destination() == Path::new("/sys/fs/cgroup/memory"))
        .unwrap();
    assert_eq!(
        mem.source().as_deref(),
        Some(Path::new("/sys/fs/cgroup/memory/crius/p1/c1"))
    );
    assert!(mem.options().as_ref().unwrap().contains(&"ro".to_string()));
    assert!(
        ms.iter()
            .any(|m| m.destination() == Path::new("/sys/fs/cgroup/cpu,cpuacct"))
    );
}

#[test]
fn cri_command_and_args_replace_the_image_ones() {
    let mut c = ctr(None);
    c.args = vec!["-x".into()];
    let spec = build_with(&c, &sandbox()).unwrap();
    assert_eq!(
        spec.process().as_ref().unwrap().args().as_deref().unwrap(),
        ["/entry", "-x"]
    );
    c.command = vec!["/bin/sh".into(), "-c".into()];
    c.args = vec!["echo hi".into()];
    let spec = build_with(&c, &sandbox()).unwrap();
    assert_eq!(
        spec.process().as_ref().unwrap().args().as_deref().unwrap(),
        ["/bin/sh", "-c", "echo hi"]
    );
}

#[test]
fn run_as_user_overrides_the_image_and_group_needs_a_user() {
    let sc = LinuxContainerSecurityContext {
        run_as_user: Some(Int64Value { value: 1234 }),
        run_as_group: Some(Int64Value { value: 5678 }),
        supplemental_groups: vec![9, 9, 10],
        no_new_privs: true,
        ..Default::default()
    };
    let spec = build_with(&ctr(Some(sc)), &sandbox()).unwrap();
    let p = spec.process().as_ref().unwrap();
    assert_eq!((p.user().uid(), p.user().gid()), (1234, 5678));
    assert_eq!(p.user().additional_gids().as_deref(), Some(&[5678, 9, 10][..]));
    assert_eq!(p.no_new_privileges(), Some(true));

    let bad = LinuxContainerSecurityContext {
        run_as_group: Some(Int64Value { value: 5 }),
        ..Default::default()
    };
    assert!(matches!(
        build_with(&ctr(Some(bad)), &sandbox()),
        Err(SpecError::Invalid(_))
    ));
    let unknown = LinuxContainerSecurityContext {
        run_as_username: "nobody-here".into(),
        ..Default::default()
    };
    assert!(matches!(
        build_with(&ctr(Some(unknown)), &sandbox()),
        Err(SpecError::Invalid(_))
    ));
}

#[test]
fn capabilities_add_drop_and_privileged() {
    let sc = LinuxContainerSecurityContext {
        capabilities: Some(CriCaps {
            add_capabilities: vec!["SYS_ADMIN".into()],
            drop_capabilities: vec!["CAP_CHOWN".into()],
            add_ambient_capabilities: vec![],
        }),
        ..Default::default()
    };
    let spec = build_with(&ctr(Some(sc)), &sandbox()).unwrap();
    let caps = spec.process().as_ref().unwrap().capabilities().clone().unwrap();
    let b = caps.bounding().as_ref().unwrap();
    assert!(b.contains(&Capability::SysAdmin) && !b.contains(&Capability::Chown));

    let drop_all = LinuxContainerSecurityContext {
        capabilities: Some(CriCaps {
            drop_capabilities: vec!["ALL".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    let spec = build_with(&ctr(Some(drop_all)), &sandbox()).unwrap();
    let caps = spec.process().as_ref().unwrap().capabilities().clone().unwrap();
    assert!(caps.bounding().as_ref().unwrap().is_empty());

    let privileged = LinuxContainerSecurityContext {
        privileged: true,
        ..Default::default()
    };
    assert!(
        build_with(&ctr(Some(privileged.clone())), &sandbox()).is_err(),
        "needs a privileged pod"
    );
    let mut sb = sandbox();
    sb.linux = Some(LinuxPodSandboxConfig {
        security_context: Some(LinuxSandboxSecurityContext {
            privileged: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    let mut with_profile = privileged.clone();
    with_profile.seccomp = Some(cri_api::v1::SecurityProfile {
        profile_type: cri_api::v1::security_profile::ProfileType::RuntimeDefault as i32,
        localhost_ref: String::new(),
    });
    let spec = build_with(&ctr(Some(with_profile)), &sb).unwrap();
    let lx = spec.linux().as_ref().unwrap();
    assert!(lx.masked_paths().as_ref().unwrap().is_empty());
    assert!(lx.readonly_paths().as_ref().unwrap().is_empty());
    assert!(
        lx.seccomp().is_none(),
        "a privileged container ignores its seccomp profile"
    );
    assert!(lx.resources().as_ref().unwrap().devices().as_ref().unwrap()[0].allow());
    assert!(
        lx.devices()
            .as_ref()
            .unwrap()
            .iter()
            .any(|d| d.path() == Path::new("/dev/null")),
        "host devices"
    );
    let sys = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.destination() == Path::new("/sys"))
        .unwrap()
        .clone();
    assert!(sys.options().as_ref().unwrap().contains(&"rw".to_string()));
    let cg = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.destination() == Path::new("/sys/fs/cgroup"))
        .unwrap()
        .clone();
    assert_eq!(
        cg.typ().as_deref(),
        Some("cgroup"),
        "privileged: libcontainer's own, writable"
    );
    let caps = spec.process().as_ref().unwrap().capabilities().clone().unwrap();
    let b = caps.bounding().as_ref().unwrap();
    assert!(b.contains(&Capability::SysAdmin) && b.contains(&Capability::CheckpointRestore));
    assert!(
        !b.contains(&Capability::SysResource),
        "all = what the runtime holds (the test host lacks SYS_RESOURCE)"
    );

    let add_missing = LinuxContainerSecurityContext {
        capabilities: Some(CriCaps {
            add_capabilities: vec!["SYS_RESOURCE".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    assert!(matches!(
        build_with(&ctr(Some(add_missing)), &sandbox()),
        Err(SpecError::Unsupported(_))
    ));
}

#[test]
fn groups_policy_strict_leaves_out_the_image_groups() {
    let sc = |policy: cri_api::v1::SupplementalGroupsPolicy| LinuxContainerSecurityContext {
        run_as_username: "www-data".into(),
        supplemental_groups: vec![1234],
        supplemental_groups_policy: policy as i32,
        ..Default::default()
    };
    let gids = |spec: Spec| {
        spec.process()
            .clone()
            .unwrap()
            .user()
            .additional_gids()
            .clone()
            .unwrap()
    };
    let merge = build_with(
        &ctr(Some(sc(cri_api::v1::SupplementalGroupsPolicy::Merge))),
        &sandbox(),
    )
    .unwrap();
    assert_eq!(gids(merge), vec![33, 70, 1234]);
    let strict = build_with(
        &ctr(Some(sc(cri_api::v1::SupplementalGroupsPolicy::Strict))),
        &sandbox(),
    )
    .unwrap();
    assert_eq!(gids(strict), vec![33, 1234]);
}

#[test]
fn missing_command_is_invalid() {
    let mut c = ctr(None);
    c.linux = None;
    let files = PodFiles::default();
    let empty = ImageProcess::default();
    let r = build(&SpecInput {
        id: "c1",
        sandbox_id: "p1",
        config: &c,
        sandbox: &sandbox(),
        image_name: "x",
        image: &empty,
        rootfs: Path::new("/r"),
        users: &UserDb::default(),
        pod_files: &files,
        namespaces: &pod_ns(),
        target_pid: None,
        cgroups_path: "/crius/p1/c1",
        cgroup_fs_path: "/crius/p1/c1",
        host: &host(),
        privileged_host_devices: true,
    });
    assert!(matches!(r, Err(SpecError::Invalid(m)) if m.contains("no command")));
}

#[test]
fn pid_namespace_sharing_is_read_from_the_spec() {
    use oci_spec::runtime::{LinuxNamespaceBuilder, LinuxNamespaceType};
    let mut spec = build_with(&ctr(None), &sandbox()).unwrap();
    assert!(
        !shares_pid_namespace(&spec),
        "a pod without infra: a PID namespace of its own"
    );
    let set_pid = |spec: &mut Spec, path: Option<&str>| {
        let mut lx = spec.linux().clone().unwrap();
        let mut ns: Vec<_> = lx
            .namespaces()
            .clone()
            .unwrap()
            .into_iter()
            .filter(|n| n.typ() != LinuxNamespaceType::Pid)
            .collect();
        if let Some(p) = path {
            ns.push(
                LinuxNamespaceBuilder::default()
                    .typ(LinuxNamespaceType::Pid)
                    .path(p)
                    .build()
                    .unwrap(),
            );
        }
        lx.set_namespaces(Some(ns));
        spec.set_linux(Some(lx));
    };
    set_pid(&mut spec, Some("/proc/42/ns/pid"));
    assert!(shares_pid_namespace(&spec), "joins the pod's");
    set_pid(&mut spec, None);
    assert!(shares_pid_namespace(&spec), "the host's");
}

#[test]
fn privileged_without_host_devices_keeps_the_device_cgroup_closed() {
    let mut sb = sandbox();
    sb.linux = Some(LinuxPodSandboxConfig {
        security_context: Some(LinuxSandboxSecurityContext {
            privileged: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    let c = ctr(Some(LinuxContainerSecurityContext {
        privileged: true,
        ..Default::default()
    }));
    let files = PodFiles::default();
    let (host_facts, users) = (host(), users());
    let spec = |privileged_host_devices| {
        build(&SpecInput {
            id: "c1",
            sandbox_id: "p1",
            config: &c,
            sandbox: &sb,
            image_name: "x",
            image: &image(),
            rootfs: Path::new("/r"),
            users: &users,
            pod_files: &files,
            namespaces: &pod_ns(),
            target_pid: None,
            cgroups_path: "/crius/p1/c1",
            cgroup_fs_path: "/crius/p1/c1",
            host: &host_facts,
            privileged_host_devices,
        })
        .unwrap()
    };
    let allows_all = |s: &Spec| {
        let lx = s.linux().as_ref().unwrap();
        let rules = lx
            .resources()
            .as_ref()
            .unwrap()
            .devices()
            .clone()
            .unwrap_or_default();
        rules.first().is_some_and(|r| r.allow())
    };
    let with = spec(true);
    assert!(allows_all(&with));
    let without = spec(false);
    assert!(!allows_all(&without), "the handler withholds the host's devices");
    assert!(without.linux().as_ref().unwrap().devices().is_none());
    let caps = without
        .process()
        .as_ref()
        .unwrap()
        .capabilities()
        .clone()
        .unwrap();
    assert!(
        !caps.bounding().as_ref().unwrap().is_empty(),
        "still privileged otherwise"
    );
}
