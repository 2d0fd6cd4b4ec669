//! `minify gc`: find what killed minify runs left behind, and remove it.
//!
//! A `minify` killed with SIGKILL runs no cleanup. What it can leave:
//! - containers labelled [`LABEL`]`=1`, their owner in [`OWNER_LABEL`];
//! - temporary images: `minify-verify/<random>:<owner>` (the copy of a file output that
//!   verification runs), and those other crates make, which they recognise themselves
//!   ([`LeftoverNames::image`]);
//! - the tracer's and the probes' cgroups, found by minify-host
//!   ([`minify_host::cgroup::trace_cgroups`]) in the v2 tree and every v1 hierarchy;
//! - other crates' temporary directories in `$TMPDIR`, which they recognise themselves
//!   ([`LeftoverNames::temp_dir`]).
//!
//! This module knows only the names this crate gives; the caller hands it the
//! [`LeftoverNames`] of every other crate that makes things (`minify_image::LEFTOVERS`).
//!
//! Only what belongs to a process that is gone is removed, so a run in progress on the same
//! host is never touched. Containers, images and temporary directories say who made them
//! ([`Owner`]). Containers made before owners were recorded are removed only while no
//! `minify` process runs at all.
//! Cgroups carry no owner. One is a leftover when the container it was made for is one, or
//! when all of these hold: no process is in it, no container of a running minify uses it,
//! no process holds it open (a running `minify run` keeps a [`crate::CgroupPin`] on its cgroup), and
//! it is older than [`CGROUP_GRACE`] (other tools that make trace cgroups leave one empty for
//! a moment between `mkdir` and starting their workload).
//!
//! A temporary directory is taken for one of ours only when its name is exactly one
//! minify-image makes, it is a directory itself (never a symlink, which is not followed) and
//! it belongs to our user; it is removed without following any symlink inside it.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bollard::query_parameters::{
    InspectContainerOptions, ListContainersOptionsBuilder, ListImagesOptionsBuilder,
};

use minify_host::cgroup::{
    CgroupLayout, TraceCgroupDirs, is_trace_cgroup_name, pinned_trace_cgroups,
    remove_v1_controller_dirs, trace_cgroups,
};
use minify_host::owner::{
    LeftoverNames, Liveness, Maker, OWNER_LABEL, Owner, other_minify_processes,
};

use crate::container::remove_async;
use crate::docker::{docker_err, remove_image_async};
use crate::{LABEL, Runtime, RuntimeError};

/// The repository of temporary verification images (`minify-verify/<random>:<owner>`).
pub const VERIFY_REPO: &str = "minify-verify";

/// An empty trace cgroup younger than this is left alone: its run may still be starting.
pub const CGROUP_GRACE: Duration = Duration::from_mins(1);

/// Something a killed run left behind.
#[derive(Clone, Debug)]
pub enum Leftover {
    Container {
        id: String,
        name: String,
        /// Its `HostConfig.CgroupParent`.
        cgroup_parent: Option<String>,
        why: String,
    },
    Image {
        reference: String,
        why: String,
    },
    Cgroup {
        name: String,
        dirs: TraceCgroupDirs,
        why: String,
    },
    /// A temporary directory of minify-image, in `$TMPDIR`.
    TempDir {
        path: PathBuf,
        why: String,
    },
}

impl Leftover {
    /// Why it is a leftover.
    pub fn why(&self) -> &str {
        match self {
            Leftover::Container { why, .. }
            | Leftover::Image { why, .. }
            | Leftover::Cgroup { why, .. }
            | Leftover::TempDir { why, .. } => why,
        }
    }
}

impl std::fmt::Display for Leftover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Leftover::Container { id, name, .. } => {
                write!(f, "container {name} ({})", &id[..id.len().min(12)])
            }
            Leftover::Image { reference, .. } => write!(f, "image {reference}"),
            Leftover::Cgroup { name, dirs, .. } => {
                let n = dirs.all().count();
                write!(
                    f,
                    "cgroup {name} ({n} director{})",
                    if n == 1 { "y" } else { "ies" }
                )
            }
            Leftover::TempDir { path, .. } => write!(f, "temp dir {}", path.display()),
        }
    }
}

/// Something of minify's that stays, and why.
#[derive(Clone, Debug)]
pub struct Kept {
    /// `container minify-..`, `image ..`, `cgroup ..`, `temp dir ..`.
    pub what: String,
    pub why: String,
}

/// What `minify gc` would remove (in this order: containers, images, cgroups, temporary
/// directories) and keep.
#[derive(Clone, Debug, Default)]
pub struct GcPlan {
    pub remove: Vec<Leftover>,
    pub kept: Vec<Kept>,
}

/// Keep or remove, with the reason.
enum Verdict {
    Keep(String),
    Remove(String),
}

/// Judge a resource by its recorded owner. `others` lists the running minify processes, for
/// resources made before owners were recorded.
fn judge(owner: Option<&str>, others: &[(u32, String)]) -> Verdict {
    match owner.map(str::parse::<Owner>) {
        Some(Ok(o)) => judge_maker(&Maker::Owner(o)),
        _ => match others.first() {
            Some((pid, exe)) => Verdict::Keep(format!(
                "it records no owner (an older minify made it) and minify pid {pid} ({exe}) is running"
            )),
            None => Verdict::Remove(
                "it records no owner (an older minify made it) and no minify is running".into(),
            ),
        },
    }
}

/// Judge a resource by its maker: removed only when that process is known to be gone.
fn judge_maker(maker: &Maker) -> Verdict {
    match maker.liveness() {
        Liveness::Alive => Verdict::Keep(match maker {
            Maker::Owner(o) => format!("its minify (pid {}) is running", o.pid),
            Maker::Pid(pid) => format!("its minify (pid {pid}) is running"),
        }),
        Liveness::Unknown(why) => Verdict::Keep(why),
        Liveness::Gone(why) => Verdict::Remove(why),
    }
}

impl Runtime {
    /// Look for leftovers (nothing is changed): this crate's, the cgroups', and those that
    /// `makers` recognise as theirs (one [`LeftoverNames`] for each crate that makes
    /// temporary images or directories). Temporary directories are looked for in `$TMPDIR`
    /// (`/tmp` without it), where they are made.
    pub async fn gc_plan(&self, makers: &[LeftoverNames]) -> Result<GcPlan, RuntimeError> {
        let mut plan = GcPlan::default();
        let others = other_minify_processes();

        // Containers.
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&HashMap::from([("label", vec![format!("{LABEL}=1")])]))
            .build();
        let list = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(docker_err("listing minify containers"))?;
        // Cgroup parent -> the container using it (dead: being removed; live: why kept).
        let mut dead_parents: BTreeMap<String, String> = BTreeMap::new();
        let mut live_parents: BTreeMap<String, String> = BTreeMap::new();
        for c in list {
            let Some(id) = c.id else { continue };
            let name = c
                .names
                .and_then(|n| n.into_iter().next())
                .map_or_else(|| id.clone(), |n| n.trim_start_matches('/').to_owned());
            let labels = c.labels.unwrap_or_default();
            let cgroup_parent = match self
                .docker
                .inspect_container(&id, None::<InspectContainerOptions>)
                .await
            {
                Ok(ins) => ins
                    .host_config
                    .and_then(|h| h.cgroup_parent)
                    .filter(|p| !p.is_empty()),
                // Removed meanwhile (its run just finished): nothing to do.
                Err(e) if crate::docker::is_not_found(&e) => continue,
                Err(e) => return Err(docker_err(format!("inspecting container {name}"))(e)),
            };
            match judge(labels.get(OWNER_LABEL).map(String::as_str), &others) {
                Verdict::Keep(why) => {
                    if let Some(p) = &cgroup_parent {
                        live_parents.insert(p.clone(), format!("container {name} uses it; {why}"));
                    }
                    plan.kept.push(Kept {
                        what: format!("container {name}"),
                        why,
                    });
                }
                Verdict::Remove(why) => {
                    if let Some(p) = &cgroup_parent {
                        dead_parents.insert(p.clone(), name.clone());
                    }
                    plan.remove.push(Leftover::Container {
                        id,
                        name,
                        cgroup_parent,
                        why,
                    });
                }
            }
        }

        // Temporary images.
        let images = self
            .docker
            .list_images(Some(ListImagesOptionsBuilder::default().all(false).build()))
            .await
            .map_err(docker_err("listing images"))?;
        let mut tags: Vec<String> = images.into_iter().flat_map(|i| i.repo_tags).collect();
        tags.sort();
        for reference in tags {
            let Some((repo, tag)) = reference.rsplit_once(':') else {
                continue;
            };
            let verdict = if repo
                .strip_prefix(VERIFY_REPO)
                .is_some_and(|r| r.starts_with('/'))
            {
                if tag.parse::<Owner>().is_err() {
                    continue;
                }
                judge(Some(tag), &others)
            } else if let Some(maker) = makers.iter().find_map(|m| (m.image)(&reference)) {
                judge_maker(&maker)
            } else {
                continue;
            };
            match verdict {
                Verdict::Keep(why) => plan.kept.push(Kept {
                    what: format!("image {reference}"),
                    why,
                }),
                Verdict::Remove(why) => plan.remove.push(Leftover::Image { reference, why }),
            }
        }

        // Trace cgroups.
        let layout = CgroupLayout::detect();
        let found = trace_cgroups(&layout);
        let pinned = pinned_trace_cgroups(&layout);
        plan_cgroups(
            found,
            &dead_parents,
            &live_parents,
            &pinned,
            SystemTime::now(),
            &mut plan,
        );

        // Temporary directories.
        plan_temp_dirs(&std::env::temp_dir(), makers, &mut plan);
        Ok(plan)
    }

    /// Remove one leftover of [`Runtime::gc_plan`]. A container goes with its v1 cgroup
    /// directories (as [`crate::Container::remove`] does); an image reference is untagged
    /// (the image itself goes when nothing else names it); a cgroup is removed only if it is
    /// empty; a temporary directory is removed with everything in it, following no symlink.
    pub async fn gc_remove(&self, item: &Leftover) -> Result<(), RuntimeError> {
        match item {
            Leftover::Container {
                id,
                name,
                cgroup_parent,
                ..
            } => {
                remove_async(&self.docker, id, name).await?;
                // A trace cgroup's directories are an item of their own.
                if let Some(p) = cgroup_parent
                    && !is_trace_cgroup_name(p)
                {
                    let p = p.clone();
                    tokio::task::spawn_blocking(move || remove_v1_controller_dirs(&p))
                        .await
                        .map_err(|e| RuntimeError::Cleanup(e.to_string()))??;
                }
                Ok(())
            }
            Leftover::Image { reference, .. } => remove_image_async(&self.docker, reference).await,
            Leftover::Cgroup { dirs, .. } => {
                let dirs = dirs.clone();
                tokio::task::spawn_blocking(move || dirs.remove())
                    .await
                    .map_err(|e| RuntimeError::Cleanup(e.to_string()))??;
                Ok(())
            }
            Leftover::TempDir { path, .. } => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || remove_temp_dir(&path))
                    .await
                    .map_err(|e| RuntimeError::Cleanup(e.to_string()))?
                    .map_err(|e| RuntimeError::Cleanup(e.to_string()))
            }
        }
    }
}

/// Decide on each trace cgroup found (see the module docs).
fn plan_cgroups(
    found: BTreeMap<String, TraceCgroupDirs>,
    dead_parents: &BTreeMap<String, String>,
    live_parents: &BTreeMap<String, String>,
    pinned: &BTreeMap<String, u32>,
    now: SystemTime,
    plan: &mut GcPlan,
) {
    for (name, dirs) in found {
        let keep = |plan: &mut GcPlan, why: String| {
            plan.kept.push(Kept {
                what: format!("cgroup {name}"),
                why,
            });
        };
        if let Some(why) = live_parents.get(&name) {
            keep(plan, why.clone());
        } else if let Some(pid) = pinned.get(&name) {
            keep(plan, format!("process {pid} holds it open (a minify run)"));
        } else if let Some(container) = dead_parents.get(&name) {
            let why = format!("it was made for the leftover container {container}");
            plan.remove.push(Leftover::Cgroup { name, dirs, why });
        } else if dirs.is_populated() {
            keep(plan, "processes run in it".into());
        } else {
            let age = dirs
                .modified()
                .and_then(|m| now.duration_since(m).ok())
                .unwrap_or_default();
            if age < CGROUP_GRACE {
                keep(
                    plan,
                    format!(
                        "empty, but made or changed {} s ago: its run may still be starting",
                        age.as_secs()
                    ),
                );
            } else {
                let why = format!(
                    "empty for at least {} s, and no container or running minify uses it",
                    age.as_secs()
                );
                plan.remove.push(Leftover::Cgroup { name, dirs, why });
            }
        }
    }
}

/// Decide on each temporary directory in `tmp` that one of `makers` recognises (see the
/// module docs).
fn plan_temp_dirs(tmp: &Path, makers: &[LeftoverNames], plan: &mut GcPlan) {
    let entries = match fs_err::read_dir(tmp) {
        Ok(rd) => rd,
        Err(e) => {
            tracing::debug!("not looking for temporary directories: {e}");
            return;
        }
    };
    let uid = nix::unistd::geteuid().as_raw();
    let mut found: Vec<(PathBuf, Owner)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let name = name.to_str()?;
            let owner = makers.iter().find_map(|m| (m.temp_dir)(name))?;
            // `DirEntry::metadata` does not follow a symlink: a symlink is not a directory.
            let meta = e.metadata().ok()?;
            (meta.is_dir() && meta.uid() == uid).then(|| (e.path(), owner))
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    for (path, owner) in found {
        match judge_maker(&Maker::Owner(owner)) {
            Verdict::Keep(why) => plan.kept.push(Kept {
                what: format!("temp dir {}", path.display()),
                why,
            }),
            Verdict::Remove(why) => plan.remove.push(Leftover::TempDir { path, why }),
        }
    }
}

/// Remove a temporary directory and everything in it, following no symlink: one in its place
/// is left alone (were it swapped in after that check, `remove_dir_all` would unlink it, not
/// enter it), and those inside it are unlinked, never entered.
fn remove_temp_dir(path: &Path) -> std::io::Result<()> {
    if !fs_err::symlink_metadata(path)?.is_dir() {
        return Err(std::io::Error::other(format!(
            "{} is no longer a directory; left alone",
            path.display()
        )));
    }
    fs_err::remove_dir_all(path)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A temp dir removed on drop (no tempfile dependency for the few tests that need one).
    pub(crate) struct TempDir(PathBuf);
    impl TempDir {
        pub(crate) fn new(what: &str) -> TempDir {
            let p = std::env::temp_dir().join(format!(
                "minify-runtime-{what}-{}-{}",
                std::process::id(),
                minify_host::random_hex(8)
            ));
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
        pub(crate) fn path(&self) -> &Path {
            &self.0
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn set_mtime(dir: &Path, t: SystemTime) {
        std::fs::File::open(dir)
            .unwrap()
            .set_times(std::fs::FileTimes::new().set_modified(t))
            .unwrap();
    }

    #[test]
    fn cgroup_verdicts() {
        let tmp = TempDir::new("gc-plan");
        let layout = CgroupLayout {
            v2: Some(tmp.path().join("unified")),
            v1: vec![],
            ..CgroupLayout::default()
        };
        let now = SystemTime::now();
        let old = now - Duration::from_hours(2);
        // name -> (populated, old)
        let cases = [
            ("minify-000000000001", false, true),  // orphan: removed
            ("minify-000000000002", false, false), // too new
            ("minify-000000000003", true, true),   // has processes
            ("minify-000000000004", false, true),  // a running run's container uses it
            ("minify-000000000005", false, true),  // pinned
            ("minify-000000000006", true, false),  // a leftover container's: removed
        ];
        for (name, populated, is_old) in cases {
            let d = tmp.path().join("unified").join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(
                d.join("cgroup.events"),
                format!("populated {}\nfrozen 0\n", u8::from(populated)),
            )
            .unwrap();
            set_mtime(&d, if is_old { old } else { now });
        }
        let dead = BTreeMap::from([("minify-000000000006".to_owned(), "minify-c6".to_owned())]);
        let live = BTreeMap::from([(
            "minify-000000000004".to_owned(),
            "container minify-c4 uses it".to_owned(),
        )]);
        let pinned = BTreeMap::from([("minify-000000000005".to_owned(), 4242)]);
        let mut plan = GcPlan::default();
        plan_cgroups(
            trace_cgroups(&layout),
            &dead,
            &live,
            &pinned,
            now,
            &mut plan,
        );
        let removed: Vec<String> = plan.remove.iter().map(ToString::to_string).collect();
        assert_eq!(
            removed,
            [
                "cgroup minify-000000000001 (1 directory)",
                "cgroup minify-000000000006 (1 directory)"
            ]
        );
        assert!(plan.remove[1].why().contains("minify-c6"));
        let kept: Vec<(&str, &str)> = plan
            .kept
            .iter()
            .map(|k| (k.what.as_str(), k.why.as_str()))
            .collect();
        assert_eq!(kept.len(), 4, "{kept:?}");
        assert!(kept[0].1.contains("s ago"), "{kept:?}");
        assert!(kept[1].1.contains("processes run"), "{kept:?}");
        assert!(kept[2].1.contains("minify-c4"), "{kept:?}");
        assert!(kept[3].1.contains("4242"), "{kept:?}");
    }

    #[test]
    fn judging_owners() {
        let me = Owner::current().unwrap().to_string();
        assert!(matches!(judge(Some(&me), &[]), Verdict::Keep(w) if w.contains("is running")));
        let mut gone = Owner::current().unwrap();
        gone.start += 1;
        assert!(matches!(
            judge(Some(&gone.to_string()), &[]),
            Verdict::Remove(_)
        ));
        let others = [(7, "/usr/bin/minify".to_owned())];
        assert!(matches!(judge(None, &others), Verdict::Keep(w) if w.contains("pid 7")));
        assert!(matches!(judge(Some("garbage"), &[]), Verdict::Remove(_)));
    }

    #[test]
    fn temp_dirs_of_gone_owners_only() {
        let tmp = TempDir::new("gc-tmp");
        let me = Owner::current().unwrap();
        let gone = Owner {
            start: me.start + 1,
            ..me.clone()
        };
        let elsewhere = Owner {
            pid_ns: me.pid_ns + 1,
            ..me.clone()
        };
        let dir = |name: String| {
            let d = tmp.path().join(name);
            fs_err::create_dir(&d).unwrap();
            d
        };
        let live = dir(format!("minify-view.{me}.aZ3kQ9"));
        let dead = dir(format!("minify-pack.{gone}.Qx81ab"));
        let other_ns = dir(format!("minify-image.{elsewhere}.k2"));
        let _not_ours = dir(format!("minify-view-{gone}.abc"));
        let _older = dir("minify-view-aZ3kQ9".into());
        // A file and a symlink with one of our names are not directories of ours.
        fs_err::write(tmp.path().join(format!("minify-view.{gone}.file")), "").unwrap();
        let victim = TempDir::new("gc-victim");
        fs_err::write(victim.path().join("keep"), "precious").unwrap();
        std::os::unix::fs::symlink(
            victim.path(),
            tmp.path().join(format!("minify-view.{gone}.link")),
        )
        .unwrap();
        // Inside the dead one: a symlink out, which removal must not follow.
        fs_err::create_dir(dead.join("layers")).unwrap();
        fs_err::write(dead.join("layers/layer.tar"), "x").unwrap();
        std::os::unix::fs::symlink(victim.path(), dead.join("layers/out")).unwrap();
        // Another user's directory is not ours either (needs root to make one).
        let foreign = dir(format!("minify-view.{gone}.foreign"));
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
        }

        let mut plan = GcPlan::default();
        // What minify-image recognises (this crate cannot depend on it): its three kinds.
        let image_dirs = LeftoverNames {
            maker: "test",
            image: |_| None,
            temp_dir: |name| {
                minify_host::owner::temp_dir_owner_of_kind(name, &["view", "pack", "image"])
            },
        };
        plan_temp_dirs(tmp.path(), &[image_dirs], &mut plan);
        let removed: Vec<String> = plan.remove.iter().map(ToString::to_string).collect();
        let mut expected = vec![format!("temp dir {}", dead.display())];
        if !nix::unistd::geteuid().is_root() {
            expected.insert(0, format!("temp dir {}", foreign.display()));
        }
        assert_eq!(removed, expected);
        assert!(plan.remove.last().unwrap().why().contains("gone"));
        let kept: Vec<&str> = plan.kept.iter().map(|k| k.what.as_str()).collect();
        assert_eq!(
            kept,
            [
                format!("temp dir {}", other_ns.display()),
                format!("temp dir {}", live.display())
            ]
        );
        assert!(plan.kept[1].why.contains("is running"), "{:?}", plan.kept);

        for item in &plan.remove {
            let Leftover::TempDir { path, .. } = item else {
                panic!("{item}")
            };
            remove_temp_dir(path).unwrap();
        }
        assert!(!dead.exists());
        assert!(live.exists() && other_ns.exists());
        assert_eq!(
            fs_err::read_to_string(victim.path().join("keep")).unwrap(),
            "precious"
        );
        // A symlink is never removed as a directory of ours.
        let link = tmp.path().join(format!("minify-view.{gone}.link"));
        assert!(remove_temp_dir(&link).is_err());
        assert!(link.symlink_metadata().is_ok());
    }

    #[test]
    fn pins_are_seen() {
        let tmp = TempDir::new("gc-pin");
        let layout = CgroupLayout {
            v2: Some(tmp.path().to_owned()),
            v1: vec![],
            ..CgroupLayout::default()
        };
        let d = tmp.path().join("minify-00000000000a");
        std::fs::create_dir_all(&d).unwrap();
        // Our own pins do not count (gc never holds one); a child's do.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .current_dir(&d)
            .spawn()
            .unwrap();
        let pins = pinned_trace_cgroups(&layout);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(pins.get("minify-00000000000a"), Some(&child.id()));
    }
}
