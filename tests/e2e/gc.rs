//! `minify gc` end to end: a real `minify run` killed with SIGKILL leaves its container and
//! cgroups behind; `minify gc` removes them, and leaves a run in progress alone. Plus the
//! rules for what has no container: temporary images by their owner tag, and empty trace
//! cgroups by age and open handles.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use minify_fixtures::{TestContext, fixture, require_docker, require_ebpf, require_root};
use minify_runtime::{LABEL, OWNER_LABEL};

use crate::common::{minify, run};

/// Labelled containers as `(id, owner label)`.
fn labelled() -> Vec<(String, String)> {
    minify_fixtures::docker([
        "ps",
        "-a",
        "--no-trunc",
        "--filter",
        &format!("label={LABEL}=1"),
        "--format",
        &format!("{{{{.ID}}}} {{{{.Label \"{OWNER_LABEL}\"}}}}"),
    ])
    .unwrap()
    .lines()
    .filter_map(|l| l.split_once(' '))
    .map(|(id, owner)| (id.to_owned(), owner.to_owned()))
    .collect()
}

/// A traced container of a `minify run` in progress.
struct Traced {
    child: Child,
    id: String,
    name: String,
    owner: String,
    cgroup: String,
}

/// Start `minify run` on nginx with a probe that runs for minutes, and wait for its container.
fn start_run(image: &str, out: &str) -> Traced {
    let child = minify()
        .args(["run", image, "--probe-exec", "sleep 300", "--tag", out])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let prefix = format!("{}-", child.id());
    let deadline = Instant::now() + Duration::from_mins(2);
    let (id, owner) = loop {
        if let Some(found) = labelled().into_iter().find(|(_, o)| o.starts_with(&prefix)) {
            break found;
        }
        assert!(Instant::now() < deadline, "no container appeared");
        std::thread::sleep(Duration::from_millis(200));
    };
    let info = minify_fixtures::docker([
        "inspect",
        "--format",
        "{{.Name}} {{.HostConfig.CgroupParent}}",
        &id,
    ])
    .unwrap();
    let (name, cgroup) = info.split_once(' ').unwrap();
    assert!(
        minify_runtime::is_trace_cgroup_name(cgroup),
        "cgroup parent {cgroup}"
    );
    Traced {
        child,
        id,
        name: name.trim_start_matches('/').to_owned(),
        owner,
        cgroup: cgroup.to_owned(),
    }
}

/// Every directory of the cgroup `name` in the v2 tree and the v1 hierarchies.
fn cgroup_dirs(name: &str) -> Vec<PathBuf> {
    fs_err::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .map(|m| m.path().join(name))
        .chain([Path::new("/sys/fs/cgroup").join(name)])
        .filter(|d| d.is_dir())
        .collect()
}

fn container_running(id: &str) -> bool {
    minify_fixtures::docker(["inspect", "--format", "{{.State.Running}}", id])
        .is_ok_and(|s| s == "true")
}

fn gc(args: &[&str]) -> (String, String) {
    let o = run(minify().arg("gc").args(args));
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(0), "{stdout}{stderr}");
    eprintln!("{stdout}");
    (stdout, stderr)
}

#[test]
fn gc_removes_a_killed_run_and_spares_a_running_one() {
    if !(require_root() && require_docker() && require_ebpf()) {
        return;
    }
    let _serial = crate::run::SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let image = fixture("nginx").unwrap();
    let ctx = TestContext::new().unwrap();
    let before: Vec<String> = labelled().into_iter().map(|(id, _)| id).collect();

    let mut killed = start_run(&image, &ctx.unique_image_ref("gc-killed"));
    killed.child.kill().unwrap(); // SIGKILL: no cleanup runs.
    killed.child.wait().unwrap();
    ctx.track_container(&killed.id);
    let mut live = start_run(&image, &ctx.unique_image_ref("gc-live"));
    ctx.track_container(&live.id);
    assert!(
        container_running(&killed.id),
        "the killed run's container is gone already"
    );
    assert!(!cgroup_dirs(&killed.cgroup).is_empty());

    // Temporary verify images, by the owner in their tag: one of each run.
    let dead_copy = format!(
        "minify-verify/gctest{}:{}",
        std::process::id(),
        killed.owner
    );
    let live_copy = format!("minify-verify/gctest{}:{}", std::process::id(), live.owner);
    for copy in [&dead_copy, &live_copy] {
        minify_fixtures::docker(["tag", &image, copy]).unwrap();
        ctx.track_image(copy);
    }

    let (plan, _) = gc(&["--dry-run"]);
    assert!(
        plan.contains(&format!("would remove container {}", killed.name)),
        "{plan}"
    );
    assert!(
        plan.contains(&format!("would remove cgroup {}", killed.cgroup)),
        "{plan}"
    );
    assert!(
        plan.contains(&format!("would remove image {dead_copy}")),
        "{plan}"
    );
    assert!(
        !plan.contains(&live.name) && !plan.contains(&live.cgroup),
        "{plan}"
    );
    assert!(!plan.contains(&live_copy), "{plan}");
    assert!(container_running(&killed.id), "--dry-run removed something");
    assert!(minify_fixtures::image_exists(&dead_copy));

    let (removed, summary) = gc(&[]);
    assert!(
        removed.contains(&format!("removed container {}", killed.name)),
        "{removed}"
    );
    assert!(
        removed.contains(&format!("removed cgroup {}", killed.cgroup)),
        "{removed}"
    );
    assert!(
        removed.contains(&format!("removed image {dead_copy}")),
        "{removed}"
    );
    assert!(summary.starts_with("minify gc: removed "), "{summary}");
    assert!(!minify_fixtures::image_exists(&dead_copy));
    assert!(
        minify_fixtures::image_exists(&image),
        "untagging the copy removed the image it named"
    );
    assert!(!labelled().iter().any(|(id, _)| id == &killed.id));
    assert_eq!(cgroup_dirs(&killed.cgroup), Vec::<PathBuf>::new());

    // The run in progress is untouched: container, cgroup, copy.
    assert!(!removed.contains(&live.name) && !removed.contains(&live.cgroup));
    assert!(container_running(&live.id));
    assert!(!cgroup_dirs(&live.cgroup).is_empty());
    assert!(minify_fixtures::image_exists(&live_copy));
    assert!(
        live.child.try_wait().unwrap().is_none(),
        "the live run ended"
    );

    // It still finishes cleanly when interrupted.
    let st = Command::new("kill")
        .args(["-INT", &live.child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(live.child.wait().unwrap().code(), Some(130));
    assert_eq!(cgroup_dirs(&live.cgroup), Vec::<PathBuf>::new());
    // Nothing labelled is left but what other processes on this host run right now.
    let ours: Vec<(String, String)> = labelled()
        .into_iter()
        .filter(|(id, owner)| {
            !before.contains(id) && (owner == &killed.owner || owner == &live.owner)
        })
        .collect();
    assert!(ours.is_empty(), "labelled containers left: {ours:?}");
    let (plan, _) = gc(&["--dry-run"]);
    assert!(!plan.contains("would remove container"), "{plan}");
}

/// A `minify-<12 hex>` cgroup made here in the v2 tree and in one v1 hierarchy, removed on
/// drop if gc left it.
struct FakeCgroup {
    name: String,
    dirs: Vec<PathBuf>,
}

impl FakeCgroup {
    fn new(age: Duration) -> FakeCgroup {
        static N: AtomicU64 = AtomicU64::new(0);
        let layout = minify_runtime::CgroupLayout::detect();
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        let unique =
            nanos ^ (u64::from(std::process::id()) << 24) ^ N.fetch_add(1, Ordering::Relaxed);
        let name = format!("minify-{:012x}", unique & 0xffff_ffff_ffff);
        let dirs: Vec<PathBuf> = layout
            .v2
            .iter()
            .chain(layout.v1.first())
            .map(|root| root.join(&name))
            .collect();
        for d in &dirs {
            fs_err::create_dir(d).unwrap();
            fs_err::File::open(d)
                .unwrap()
                .file()
                .set_times(std::fs::FileTimes::new().set_modified(SystemTime::now() - age))
                .unwrap();
        }
        FakeCgroup { name, dirs }
    }

    fn exists(&self) -> bool {
        self.dirs.iter().any(|d| d.exists())
    }
}

impl Drop for FakeCgroup {
    fn drop(&mut self) {
        for d in &self.dirs {
            let _ = std::fs::remove_dir(d);
        }
    }
}

#[test]
fn gc_removes_only_old_unused_empty_trace_cgroups() {
    if !(require_root() && require_docker()) {
        return;
    }
    let _serial = crate::run::SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let old = FakeCgroup::new(Duration::from_hours(2));
    let fresh = FakeCgroup::new(Duration::ZERO);
    let pinned = FakeCgroup::new(Duration::from_hours(2));
    // Held open, as a running `minify run` holds its cgroup. gc runs as another process.
    let _pin = minify_runtime::CgroupPin::open(&pinned.dirs[0]).unwrap();
    let (removed, _) = gc(&[]);
    assert!(
        removed.contains(&format!("removed cgroup {} (", old.name)),
        "{removed}"
    );
    assert!(!old.exists());
    assert!(!removed.contains(&fresh.name), "{removed}");
    assert!(fresh.exists());
    assert!(!removed.contains(&pinned.name), "{removed}");
    assert!(pinned.exists());
}
