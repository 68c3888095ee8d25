//! Seccomp and AppArmor: RuntimeDefault filters the init process and exec'd processes alike
//! (`Seccomp: 2`) and denies what containerd's default denies; nil and Unconfined mean no
//! filter; a Localhost profile file is loaded; AppArmor localhost profiles are refused on a
//! host without AppArmor while RuntimeDefault/Unconfined are accepted.

use crius_tests::containers::World;
use crius_tests::pods::PodCleanup;
use crius_tests::security::*;
use k8s_cri::v1::security_profile::ProfileType;
use k8s_cri::v1::*;

fn profile(t: ProfileType, r: &str) -> Option<SecurityProfile> {
    Some(SecurityProfile {
        profile_type: t as i32,
        localhost_ref: r.into(),
    })
}

async fn running(w: &mut World, name: &str, sc: LinuxContainerSecurityContext) -> String {
    let id = w.create(sleeper(w, name, sc)).await.expect("create");
    w.start(&id).await.expect("start");
    id
}

#[tokio::test]
async fn runtime_default_filters_init_and_exec() {
    let mut w = World::new().await.unwrap();
    let _clean = PodCleanup::new(&w.d);
    let id = running(
        &mut w,
        "rd",
        LinuxContainerSecurityContext {
            seccomp: profile(ProfileType::RuntimeDefault, ""),
            ..Default::default()
        },
    )
    .await;
    let status = exec_ok(&mut w, &id, &["cat", "/proc/self/status"]).await;
    assert_eq!(
        status_field(&status, "Seccomp"),
        "2",
        "exec'd process is filtered"
    );
    let init = exec_ok(&mut w, &id, &["cat", "/proc/1/status"]).await;
    assert_eq!(status_field(&init, "Seccomp"), "2", "init is filtered");
    // unshare needs CAP_SYS_ADMIN under the default profile: denied (EPERM) without it.
    let (code, _, err) = exec(&mut w, &id, &["unshare", "-U", "true"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("Operation not permitted"), "{err}");
    // Ordinary work is allowed.
    exec_ok(
        &mut w,
        &id,
        &["sh", "-c", "echo x > /tmp/f && chmod 600 /tmp/f && cat /tmp/f"],
    )
    .await;

    for (name, sc) in [
        ("nil", LinuxContainerSecurityContext::default()),
        (
            "unconfined",
            LinuxContainerSecurityContext {
                seccomp: profile(ProfileType::Unconfined, ""),
                ..Default::default()
            },
        ),
    ] {
        let id = running(&mut w, name, sc).await;
        let status = exec_ok(&mut w, &id, &["cat", "/proc/self/status"]).await;
        assert_eq!(status_field(&status, "Seccomp"), "0", "{name}");
    }
    w.teardown().await.unwrap();
}

#[tokio::test]
async fn localhost_profile_from_a_file() {
    let mut w = World::new().await.unwrap();
    let _clean = PodCleanup::new(&w.d);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("no-chmod.json");
    std::fs::write(
        &file,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["chmod","fchmodat","fchmodat2"],"action":"SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let id = running(
        &mut w,
        "local",
        LinuxContainerSecurityContext {
            seccomp: profile(ProfileType::Localhost, &file.to_string_lossy()),
            ..Default::default()
        },
    )
    .await;
    let (code, _, err) = exec(&mut w, &id, &["chmod", "600", "/tmp"]).await;
    assert_ne!(code, 0, "chmod is blocked by the profile");
    assert!(err.contains("Operation not permitted"), "{err}");

    let missing = LinuxContainerSecurityContext {
        seccomp: profile(ProfileType::Localhost, "/no/such/profile.json"),
        ..Default::default()
    };
    let err = w.create(sleeper(&w, "missing", missing)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    w.stop(&id, 0).await.unwrap();
    w.remove(&id).await.unwrap();
    assert_no_containers_left(&mut w).await;
    w.teardown().await.unwrap();
}

/// crius loads no AppArmor profile of its own, so RuntimeDefault and Unconfined run on any host.
/// A Localhost profile needs AppArmor: without it the request is refused up front
/// (FailedPrecondition); with it, a profile the kernel never loaded cannot confine the process,
/// so the container never runs.
#[tokio::test]
async fn apparmor_profiles_match_what_the_host_has() {
    let host_has_apparmor =
        std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").is_ok_and(|v| v.trim() == "Y");
    let mut w = World::new().await.unwrap();
    let _clean = PodCleanup::new(&w.d);
    for (name, t) in [
        ("aa-default", ProfileType::RuntimeDefault),
        ("aa-unconfined", ProfileType::Unconfined),
    ] {
        running(
            &mut w,
            name,
            LinuxContainerSecurityContext {
                apparmor: profile(t, ""),
                ..Default::default()
            },
        )
        .await;
    }
    let local = LinuxContainerSecurityContext {
        apparmor: profile(ProfileType::Localhost, "localhost/crius-test-never-loaded"),
        ..Default::default()
    };
    let created = w.create(sleeper(&w, "aa-local", local)).await;
    if host_has_apparmor {
        let ran = match created {
            Ok(id) => w.start(&id).await.is_ok(),
            Err(_) => false,
        };
        assert!(
            !ran,
            "a container ran under an AppArmor profile the kernel never loaded"
        );
    } else {
        let err = created.unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
        assert!(err.message().contains("AppArmor"), "{}", err.message());
    }
    w.teardown().await.unwrap();
}
