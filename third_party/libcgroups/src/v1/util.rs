use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use pathrs::flags::OpenFlags;
use pathrs::procfs::{ProcfsBase, ProcfsHandle};
use procfs::ProcError;
use procfs::process::MountInfo;

use super::ControllerType;
use super::controller_type::CONTROLLERS;

#[derive(thiserror::Error, Debug)]
pub enum V1MountPointError {
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
    #[error("failed to get mountinfo: {0}")]
    MountInfo(ProcError),
    #[error("could not find mountpoint for {subsystem}")]
    NotFound { subsystem: ControllerType },
    #[error(transparent)]
    Pathrs(#[from] pathrs::error::Error),
}

/// List all cgroup v1 subsystem mount points on the system. This can include unsupported
/// subsystems, comounted controllers and named hierarchies.
pub fn list_subsystem_mount_points() -> Result<Vec<PathBuf>, V1MountPointError> {
    let table = cgroup_mount_points()?;
    match table.unreadable {
        Some(e) => Err(e.error()),
        None => Ok(table.points),
    }
}

/// How long one read of the mount table answers for: the cgroup hierarchies' mount points of a
/// node do not change while a container is built, but the table is as long as the node has
/// mounts (every container's rootfs, every pod's namespaces), and a build asks for each of the
/// twelve controllers in turn (crius patch: previously every lookup read the whole table, and
/// the lookup of a controller the node does not mount read all of it).
const MOUNT_POINTS_FRESH: Duration = Duration::from_secs(1);

/// The `cgroup` mounts of the mount table, in table order, up to the first line that did not
/// parse (whose error `unreadable` keeps, so that lookups fail exactly where a scan of the
/// table would have).
#[derive(Clone)]
struct CgroupMounts {
    points: Vec<PathBuf>,
    unreadable: Option<Unreadable>,
}

#[derive(Clone)]
struct Unreadable(String);

impl Unreadable {
    fn error(&self) -> V1MountPointError {
        V1MountPointError::Io(std::io::Error::other(self.0.clone()))
    }
}

/// The mount points given to [`assume_mount_points`].
static ASSUMED: OnceLock<Vec<PathBuf>> = OnceLock::new();

/// Makes every later lookup in this process (and in processes cloned from it) answer from
/// `points` — every `cgroup` mount point of the mount table, in table order — instead of reading
/// the table (crius patch: its daemon reads them once and hands them to each shim). The first
/// call wins.
pub fn assume_mount_points(points: Vec<PathBuf>) {
    let _ = ASSUMED.set(points);
}

/// The cgroup mounts given to [`assume_mount_points`], else as read at most
/// [`MOUNT_POINTS_FRESH`] ago (by this process, or by the one it was cloned from).
fn cgroup_mount_points() -> Result<CgroupMounts, V1MountPointError> {
    if let Some(points) = ASSUMED.get() {
        return Ok(CgroupMounts {
            points: points.clone(),
            unreadable: None,
        });
    }
    static CACHE: Mutex<Option<(Instant, CgroupMounts)>> = Mutex::new(None);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((read_at, table)) = cache.as_ref() {
        if read_at.elapsed() < MOUNT_POINTS_FRESH {
            return Ok(table.clone());
        }
    }
    let table = read_cgroup_mount_points()?;
    *cache = Some((Instant::now(), table.clone()));
    Ok(table)
}

fn read_cgroup_mount_points() -> Result<CgroupMounts, V1MountPointError> {
    let reader = BufReader::new(ProcfsHandle::new()?.open(
        ProcfsBase::ProcSelf,
        "mountinfo",
        OpenFlags::O_RDONLY | OpenFlags::O_CLOEXEC,
    )?);
    let mut table = CgroupMounts {
        points: Vec::new(),
        unreadable: None,
    };
    for line in reader.lines() {
        let parsed = line
            .map_err(V1MountPointError::Io)
            .and_then(|line| MountInfo::from_line(&line).map_err(V1MountPointError::MountInfo));
        match parsed {
            Ok(m) if m.fs_type == "cgroup" => table.points.push(m.mount_point),
            Ok(_) => {}
            Err(e) => {
                table.unreadable = Some(Unreadable(e.to_string()));
                break;
            }
        }
    }
    Ok(table)
}

/// List the mount points of all currently supported cgroup subsystems.
pub fn list_supported_mount_points() -> Result<HashMap<ControllerType, PathBuf>, V1MountPointError>
{
    let mut mount_paths = HashMap::with_capacity(CONTROLLERS.len());

    for controller in CONTROLLERS {
        if let Ok(mount_point) = get_subsystem_mount_point(controller) {
            mount_paths.insert(controller.to_owned(), mount_point);
        }
    }

    Ok(mount_paths)
}

pub fn get_subsystem_mount_point(subsystem: &ControllerType) -> Result<PathBuf, V1MountPointError> {
    let subsystem_name = subsystem.to_string();
    let table = cgroup_mount_points()?;
    let found = table.points.into_iter().find(|mount_point| {
        // Some systems mount net_prio and net_cls in the same directory
        // other systems mount them in their own directories. This
        // should handle both cases.
        match subsystem_name.as_str() {
            "net_cls" => ["net_cls,net_prio", "net_prio,net_cls", "net_cls"]
                .iter()
                .any(|s| mount_point.ends_with(s)),
            "net_prio" => ["net_cls,net_prio", "net_prio,net_cls", "net_prio"]
                .iter()
                .any(|s| mount_point.ends_with(s)),
            "cpu" => ["cpu,cpuacct", "cpu"]
                .iter()
                .any(|s| mount_point.ends_with(s)),
            "cpuacct" => ["cpu,cpuacct", "cpuacct"]
                .iter()
                .any(|s| mount_point.ends_with(s)),
            _ => mount_point.ends_with(&subsystem_name),
        }
    });
    match (found, table.unreadable) {
        (Some(mount_point), _) => Ok(mount_point),
        (None, Some(e)) => Err(e.error()),
        (None, None) => Err(V1MountPointError::NotFound {
            subsystem: *subsystem,
        }),
    }
}
