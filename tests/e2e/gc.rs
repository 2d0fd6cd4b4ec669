//! `minify gc` end to end: a real `minify run` killed with SIGKILL leaves its container,
//! cgroups and temporary directories behind (but not its host-side probe, which dies with
//! it); `minify gc` removes them, and leaves a run in progress alone. Plus the rules for what
//! has no container: temporary images by their owner tag, empty trace cgroups by age and open
//! handles, temporary directories in `$TMPDIR` by the owner in their name.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use minify_fixtures::{TestContext, fixture, require_docker, require_ebpf, require_root};
use minify_runtime::{LABEL, OWNER_LABEL, Owner};

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
/// (An odd sleep length: other tests look for their sleeps host-wide.)
fn start_run(image: &str, out: &str) -> Traced {
    let child = minify()
        .args(["run", image, "--probe-exec", "sleep 3307", "--tag", out])
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
    gc_with(&mut minify(), args)
}

/// `minify gc ARGS` run from `cmd` (e.g. with `TMPDIR` set): stdout, stderr; asserts exit 0.
fn gc_with(cmd: &mut Command, args: &[&str]) -> (String, String) {
    let o = run(cmd.arg("gc").args(args));
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

/// Processes whose command line matches the regex `pattern` (`pgrep -af`), one per line.
fn processes(pattern: &str) -> String {
    let o = Command::new("pgrep")
        .args(["-af", pattern])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

/// Names of the entries of `dir` that contain `part`.
fn entries_with(dir: &Path, part: &str) -> Vec<String> {
    let mut v: Vec<String> = fs_err::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(part))
        .collect();
    v.sort();
    v
}

#[test]
fn a_killed_run_takes_its_host_probe_along_and_gc_removes_the_rest() {
    if !(require_root() && require_docker() && require_ebpf()) {
        return;
    }
    let _serial = crate::run::SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let image = fixture("nginx").unwrap();
    let ctx = TestContext::new().unwrap();
    // The run's temporary directories go here, not among everyone's in /tmp.
    let tmpdir = ctx.temp_dir().join("tmpdir");
    fs_err::create_dir(&tmpdir).unwrap();
    // `; true` keeps sh from exec'ing the sleep: it is the probe's grandchild, which no
    // parent-death signal on the probe's own process would reach. The `setsid` one leaves
    // the probe's process group and session (a daemon): only the probe's cgroup holds it.
    // Odd lengths: nobody else's sleep matches.
    let probe = "setsid sleep 4129 >/dev/null 2>&1 & sleep 4127; true";
    let mut child = minify()
        .env("TMPDIR", &tmpdir)
        .args([
            "run",
            &image,
            "--probe-cmd",
            probe,
            "--tag",
            &ctx.unique_image_ref("gc-probe"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_mins(2);
    while processes("^sleep 4127$").is_empty() || processes("^sleep 4129$").is_empty() {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("minify run ended ({st}) before its probe ran");
        }
        assert!(Instant::now() < deadline, "the probe never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    let prefix = format!("{}-", child.id());
    let (id, owner) = labelled()
        .into_iter()
        .find(|(_, o)| o.starts_with(&prefix))
        .expect("the run's container");
    ctx.track_container(&id);
    let name = minify_fixtures::docker(["inspect", "--format", "{{.Name}}", &id]).unwrap();
    let name = name.trim_start_matches('/');

    child.kill().unwrap(); // SIGKILL: no cleanup runs in minify.
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = processes("sleep 412[79]");
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the probe outlived its minify:\n{left}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The rest stays until gc: the container and the temporary directories (the export of
    // the image, its index), named after the killed run.
    assert!(container_running(&id));
    let dirs = entries_with(&tmpdir, &format!(".{owner}."));
    assert!(!dirs.is_empty(), "no temporary directory of the run");
    // A run in progress here owns this one (this test process stands in for it).
    let live = format!("minify-view.{}.live0", Owner::current().unwrap());
    fs_err::create_dir(tmpdir.join(&live)).unwrap();

    let mut in_tmpdir = minify();
    in_tmpdir.env("TMPDIR", &tmpdir);
    let (plan, _) = gc_with(&mut in_tmpdir, &["--dry-run"]);
    assert!(
        plan.contains(&format!("would remove container {name}")),
        "{plan}"
    );
    for d in &dirs {
        assert!(
            plan.contains(&format!(
                "would remove temp dir {}",
                tmpdir.join(d).display()
            )),
            "{plan}"
        );
    }
    assert_eq!(entries_with(&tmpdir, &format!(".{owner}.")), dirs);

    let mut in_tmpdir = minify();
    in_tmpdir.env("TMPDIR", &tmpdir);
    let (removed, summary) = gc_with(&mut in_tmpdir, &[]);
    assert!(
        removed.contains(&format!("removed container {name}")),
        "{removed}"
    );
    assert!(
        summary.contains(&format!("{} temp dir", dirs.len())),
        "{summary}"
    );
    assert!(!labelled().iter().any(|(i, _)| i == &id));
    assert_eq!(
        entries_with(&tmpdir, "minify-"),
        [live],
        "gc left the run's temporary directories or removed the live one"
    );
}

#[test]
fn gc_removes_temp_dirs_of_gone_owners_only() {
    if !require_docker() {
        return;
    }
    let ctx = TestContext::new().unwrap();
    let tmpdir = ctx.temp_dir().join("tmpdir");
    fs_err::create_dir(&tmpdir).unwrap();
    let me = Owner::current().unwrap();
    // A process that has exited: its pid is free (not in /proc).
    let mut exited = Command::new("true").spawn().unwrap();
    exited.wait().unwrap();
    let gone = Owner {
        pid: exited.id(),
        ..me.clone()
    };
    let dead = tmpdir.join(format!("minify-image.{gone}.Ab12cd"));
    let live = tmpdir.join(format!("minify-view.{me}.Ef34gh"));
    let older = tmpdir.join("minify-view-Ij56kl"); // no owner: an older minify made it
    let file = tmpdir.join(format!("minify-pack.{gone}.file00"));
    let link = tmpdir.join(format!("minify-pack.{gone}.link00"));
    let victim = ctx.temp_dir().join("victim");
    for d in [&dead, &live, &older, &victim] {
        fs_err::create_dir(d).unwrap();
    }
    fs_err::write(&file, "").unwrap();
    fs_err::write(victim.join("keep"), "precious").unwrap();
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    fs_err::create_dir(dead.join("layers")).unwrap();
    fs_err::write(dead.join("layers/export.tar"), "x").unwrap();
    std::os::unix::fs::symlink(&victim, dead.join("layers/out")).unwrap();

    let mut in_tmpdir = minify();
    in_tmpdir.env("TMPDIR", &tmpdir).arg("-v");
    let (removed, stderr) = gc_with(&mut in_tmpdir, &[]);
    assert!(
        removed.contains(&format!(
            "removed temp dir {}: its minify (pid {}) is gone",
            dead.display(),
            gone.pid
        )),
        "{removed}"
    );
    assert!(
        stderr.contains(&format!("keeping temp dir {}", live.display())),
        "{stderr}"
    );
    assert!(!dead.exists());
    assert!(live.is_dir() && older.is_dir() && file.is_file());
    assert!(link.symlink_metadata().unwrap().file_type().is_symlink());
    assert_eq!(
        fs_err::read_to_string(victim.join("keep")).unwrap(),
        "precious"
    );
}
