//! The README's flag families end to end, each checked on the image it made by something
//! other than minify (`docker run`, `docker image inspect`, `docker save`, `docker events`,
//! the OCI files themselves): `--include`/`--exclude`/`--include-bin`, `--with-set`/
//! `--no-default-set`, a shell-syntax `--probe-exec`, `--env`/`--entrypoint`/`--cmd`,
//! `--force`, `--no-verify`, `-o oci:` with `--compression`, `trace` output, exit 3
//! without Docker, and `--include-package`/`--exclude-package`. Several flags share one run
//! where they do not interfere: each run costs a trace and a verify.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use minify_fixtures::{TestContext, docker, fixture, require_ebpf, require_root};
use minify_model::{Allowlist, Reason};

use crate::common::{container_events, minify, now_secs, run};
use crate::run::{has_working_shell, serial_if_run};

/// One entry of an image's flattened file system, from `docker save`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    File(u64),
    Other,
}

/// The image's file system as the engine stores it: `docker save`, its layers applied in
/// order with their whiteouts (`.wh.NAME`, `.wh..wh..opq`). Paths are absolute. Hard links
/// count as files of their target's size.
pub(crate) fn saved_files(ctx: &TestContext, image: &str) -> BTreeMap<String, Entry> {
    let tar_path = ctx
        .temp_dir()
        .join(format!("{}.tar", ctx.unique_name("saved")));
    docker([
        "save".as_ref(),
        "-o".as_ref(),
        tar_path.as_os_str(),
        image.as_ref(),
    ])
    .unwrap();
    let mut members: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut outer = tar::Archive::new(fs_err::File::open(&tar_path).unwrap());
    for e in outer.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        e.read_to_end(&mut bytes).unwrap();
        members.insert(name, bytes);
    }
    fs_err::remove_file(&tar_path).unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&members["manifest.json"]).unwrap();
    let mut fs: BTreeMap<String, Entry> = BTreeMap::new();
    for layer in manifest[0]["Layers"].as_array().unwrap() {
        let bytes = &members[layer.as_str().unwrap()];
        let mut inner = tar::Archive::new(&bytes[..]);
        for e in inner.entries().unwrap() {
            let e = e.unwrap();
            let raw = e.path().unwrap().to_string_lossy().into_owned();
            let path = format!("/{}", raw.trim_start_matches("./").trim_end_matches('/'));
            let (dir, base) = path.rsplit_once('/').unwrap();
            let remove_under = |fs: &mut BTreeMap<String, Entry>, p: &str| {
                let prefix = format!("{p}/");
                fs.retain(|k, _| !k.starts_with(&prefix));
            };
            if base == ".wh..wh..opq" {
                remove_under(&mut fs, dir);
                continue;
            }
            if let Some(gone) = base.strip_prefix(".wh.") {
                let gone = format!("{dir}/{gone}");
                fs.remove(&gone);
                remove_under(&mut fs, &gone);
                continue;
            }
            let entry = match e.header().entry_type() {
                tar::EntryType::Regular => Entry::File(e.header().size().unwrap()),
                tar::EntryType::Link => {
                    let target = e.link_name().unwrap().unwrap();
                    let target = format!("/{}", target.to_string_lossy().trim_start_matches("./"));
                    fs.get(&target).cloned().unwrap_or(Entry::File(0))
                }
                _ => Entry::Other,
            };
            fs.insert(path, entry);
        }
    }
    fs.remove("/");
    fs
}

fn report(path: &Path) -> serde_json::Value {
    serde_json::from_str(&fs_err::read_to_string(path).unwrap()).unwrap()
}

fn allowlist(path: &Path) -> Allowlist {
    Allowlist::from_json("allowlist", &fs_err::read_to_string(path).unwrap()).unwrap()
}

/// `docker run --rm --entrypoint ENTRYPOINT IMAGE ARGS...`: stdout, or the error.
fn docker_run(image: &str, entrypoint: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut all = vec!["run", "--rm", "--entrypoint", entrypoint, image];
    all.extend_from_slice(args);
    docker(all)
}

/// `--fail-on-shell` as a CI gate: a probe that runs `sh -c` keeps sh, so the run stops
/// after the closure with exit 1 and writes nothing but its report, which names the shell.
/// (That such a probe really leaves a working sh in the output is checked on the image
/// itself by `selection_flags_shell_probe_env_and_force_on_nginx`.)
#[test]
fn fail_on_shell_stops_before_writing() {
    let Some(_serial) = serial_if_run() else {
        return;
    };
    let nginx = fixture("nginx").unwrap();
    let ctx = TestContext::new().unwrap();
    let out_file = ctx.temp_dir().join("out.tar");
    let out_tag = ctx.unique_image_ref("fail-on-shell");
    let report_path = ctx.temp_dir().join("report.json");
    let al_path = ctx.temp_dir().join("allowlist.json");
    for out in [
        format!("oci-archive:{}", out_file.display()),
        out_tag.clone(),
    ] {
        let o = run(minify()
            .args(["run", &nginx, "--tag", &out, "--fail-on-shell"])
            .args(["--probe-exec", "sh -c 'test -s /etc/nginx/nginx.conf'"])
            .arg("--report")
            .arg(&report_path)
            .arg("--allowlist-out")
            .arg(&al_path));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(
            err.contains("--fail-on-shell: the output would keep a shell: "),
            "{err}"
        );
        assert_eq!(
            err.lines().filter(|l| l.contains("error:")).count(),
            1,
            "{err}"
        );
        let r = report(&report_path);
        assert_eq!(r["status"], "policy_failed", "{r:#}");
        assert_eq!(r["exit_code"], 1, "{r:#}");
        assert_eq!(r["phase"], "closure", "{r:#}");
        assert_eq!(r["output_written"], false, "{r:#}");
        let shells = r["attack_surface"]["shells"].as_array().unwrap();
        assert!(
            shells.iter().any(|s| s["names"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n.as_str().unwrap().ends_with("/sh"))),
            "{r:#}"
        );
        // Nothing written: no output file, no daemon image, no allowlist.
        assert!(!out_file.exists(), "{} written", out_file.display());
        assert!(
            !minify_fixtures::image_exists(&out_tag),
            "{out_tag} written"
        );
        assert!(!al_path.exists(), "allowlist written");
    }
}

/// nginx with every path-selection flag at once, into a daemon tag that already exists:
/// refused without `--force`, replaced with it. Each flag's effect is checked in the image
/// itself (by `docker run`ning it), the report's numbers against `docker image inspect` and
/// `docker save`.
#[test]
fn selection_flags_shell_probe_env_and_force_on_nginx() {
    let Some(_serial) = serial_if_run() else {
        return;
    };
    let nginx = fixture("nginx").unwrap();
    let static_image = fixture("static").unwrap();
    let ctx = TestContext::new().unwrap();
    let out = ctx.unique_image_ref("features");
    docker(["tag", &static_image, &out]).unwrap();
    let static_id = docker(["image", "inspect", "--format", "{{.Id}}", &static_image]).unwrap();
    let report_path = ctx.temp_dir().join("report.json");
    let al_path = ctx.temp_dir().join("allowlist.json");
    let shell_probe = "test -s /etc/nginx/nginx.conf && printenv MINIFY_E2E_ENV";
    let args = |force: bool| {
        let mut c = minify();
        c.args(["run", &nginx, "--tag", &out, "--probe-http", "/"])
            .args(["--probe-exec", shell_probe])
            .args(["--env", "MINIFY_E2E_ENV=from-the-run"])
            .args(["--include", "/etc/debian_version"])
            .args(["--include", "/usr/share/doc/coreutils/*"])
            .args(["--include-bin", "id"])
            .args(["--with-set", "zoneinfo"])
            .args(["--exclude", "/usr/share/zoneinfo/Antarctica/*"])
            .args(["--no-default-set", "nss"])
            .arg("--report")
            .arg(&report_path)
            .arg("--allowlist-out")
            .arg(&al_path);
        if force {
            c.arg("--force");
        }
        c
    };

    // Without --force an existing tag is refused before anything runs, and left alone.
    let o = run(&mut args(false));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("already exists (use --force"), "{err}");
    assert_eq!(
        docker(["image", "inspect", "--format", "{{.Id}}", &out]).unwrap(),
        static_id
    );

    let start = Instant::now();
    let o = run(&mut args(true));
    let wall_ms = start.elapsed().as_millis() as u64;
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let r = report(&report_path);
    let al = allowlist(&al_path);
    let kept = |p: &str| al.paths.iter().find(|e| e.path.as_str() == p);

    // --force replaced the tag: it is the minified nginx now, and it serves the page.
    let out_id = docker(["image", "inspect", "--format", "{{.Id}}", &out]).unwrap();
    assert_ne!(out_id, static_id);
    assert_eq!(r["output_id"], out_id.as_str(), "{r:#}");
    minify_fixtures::check_fixture("nginx", &out).unwrap();

    // The shell-syntax probe ran through the image's sh: kept, and said so.
    assert_eq!(
        r["shell_probes"],
        serde_json::json!([format!("--probe-exec {shell_probe:?}")]),
        "{r:#}"
    );
    assert!(
        err.contains(&format!(
            "note: --probe-exec {shell_probe:?} ran through the image's /bin/sh, so sh is kept"
        )),
        "{err}"
    );
    assert!(has_working_shell(&out), "sh was not kept");
    // The attack surface names that shell (the one /bin/sh leads to in the output), as
    // executed, and the summary says so.
    let shells = r["attack_surface"]["shells"].as_array().unwrap();
    assert_eq!(shells.len(), 1, "{r:#}");
    let names: Vec<&str> = shells[0]["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert!(names.iter().any(|n| n.ends_with("/sh")), "{names:?}");
    assert!(kept(shells[0]["path"].as_str().unwrap()).is_some(), "{r:#}");
    assert_eq!(shells[0]["reason"], "traced", "{r:#}");
    assert!(
        shells[0]["why"]
            .as_str()
            .unwrap()
            .starts_with("executed by the workload or a probe"),
        "{r:#}"
    );
    assert!(err.contains("attack surface: 1 shell ("), "{err}");
    // It printed the --env value: the probe passed only because the variable was set in
    // the run (printenv exits 1 on an unset one) ...
    for p in r["probes"].as_array().unwrap() {
        assert_eq!(p["original"]["passed"], true, "{p:#}");
        assert_eq!(p["minified"]["passed"], true, "{p:#}");
    }
    assert!(
        r["probes"][1]["original"]["output"]
            .as_str()
            .unwrap()
            .contains("from-the-run"),
        "{r:#}"
    );
    // ... and only in the run: the image's config is the source's.
    let env = |i: &str| docker(["image", "inspect", "--format", "{{json .Config.Env}}", i]);
    assert_eq!(env(&out).unwrap(), env(&nginx).unwrap());
    assert!(
        err.contains("overrides applied to the traced and verify runs only"),
        "{err}"
    );

    // Inside the image, with its own sh (builtins only): the includes are there, the
    // included program runs, the optional set is in but not its excluded part, and the
    // left-out default set's files are gone.
    assert_eq!(kept("/etc/debian_version").unwrap().reason, Reason::Include);
    let script = "read v < /etc/debian_version && echo \"debian $v\"; \
         test -f /usr/share/doc/coreutils/copyright && echo doc; \
         test -f /usr/share/zoneinfo/Europe/Berlin && echo berlin; \
         test -e /usr/share/zoneinfo/Antarctica/Troll || echo no-troll; \
         test -e /etc/gai.conf || echo no-gai; \
         test -e /etc/host.conf || echo no-host-conf";
    let said = docker_run(&out, "/bin/sh", &["-c", script]).unwrap();
    let source_version = docker_run(&nginx, "cat", &["/etc/debian_version"]).unwrap();
    assert_eq!(
        said,
        format!("debian {source_version}\ndoc\nberlin\nno-troll\nno-gai\nno-host-conf"),
        "inside {out}"
    );
    // The left-out files were in the source, so their absence is the flag's doing.
    assert!(docker_run(&nginx, "test", &["-e", "/etc/gai.conf"]).is_ok());
    assert!(docker_run(&nginx, "test", &["-e", "/etc/host.conf"]).is_ok());
    assert_eq!(docker_run(&out, "id", &["-u"]).unwrap(), "0");
    assert!(kept("/usr/bin/id").is_some());
    assert!(
        !al.paths.iter().any(|e| e
            .path
            .as_str()
            .starts_with("/usr/share/zoneinfo/Antarctica/")),
        "excluded zoneinfo kept"
    );
    let sets: Vec<&str> = r["default_sets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["set"].as_str().unwrap())
        .collect();
    assert!(
        sets.contains(&"zoneinfo") && !sets.contains(&"nss"),
        "{sets:?}"
    );

    check_report_values(&ctx, &r, &al, &nginx, &out, wall_ms);
}

/// The report's numbers against sources other than minify: sizes from `docker image
/// inspect`, file counts and bytes from `docker save` of both images, entries from the
/// allowlist file.
fn check_report_values(
    ctx: &TestContext,
    r: &serde_json::Value,
    al: &Allowlist,
    source: &str,
    out: &str,
    wall_ms: u64,
) {
    let size = |i| minify_fixtures::image_size(i).unwrap();
    assert_eq!(r["size_before"], size(source), "{r:#}");
    assert_eq!(r["size_after"], size(out), "{r:#}");
    let factor = r["factor"].as_f64().unwrap();
    let expected = size(source) as f64 / size(out) as f64;
    assert!(
        (factor - expected).abs() < 1e-9,
        "factor {factor} vs {expected}"
    );

    let files = |fs: &BTreeMap<String, Entry>| {
        fs.values()
            .filter_map(|e| match e {
                Entry::File(n) => Some(*n),
                Entry::Other => None,
            })
            .collect::<Vec<u64>>()
    };
    let before = saved_files(ctx, source);
    let after = saved_files(ctx, out);
    assert_eq!(r["files_before"], files(&before).len(), "{r:#}");
    assert_eq!(r["files_after"], files(&after).len(), "{r:#}");
    assert_eq!(r["kept_bytes"], files(&after).iter().sum::<u64>(), "{r:#}");
    assert_eq!(r["allowlist_entries"], al.paths.len(), "{r:#}");
    // Every allowlist path is in the image, and nothing else.
    let listed: std::collections::BTreeSet<&str> = al
        .paths
        .iter()
        .map(|e| e.path.as_str())
        .filter(|p| *p != "/")
        .collect();
    let stored: std::collections::BTreeSet<&str> = after.keys().map(String::as_str).collect();
    assert!(
        listed == stored,
        "only in the allowlist: {:?}; only in the image: {:?}",
        listed.difference(&stored).collect::<Vec<_>>(),
        stored.difference(&listed).collect::<Vec<_>>()
    );
    // required_bytes: what the trace and ELF closure need, within what is kept.
    let required = r["required_bytes"].as_u64().unwrap();
    assert!(required > 0 && required <= r["kept_bytes"].as_u64().unwrap());

    // The largest files, by the image's own sizes, biggest first.
    let largest = r["largest_files"].as_array().unwrap();
    assert!(!largest.is_empty(), "{r:#}");
    let mut sizes = files(&after);
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    for (i, f) in largest.iter().enumerate() {
        let path = f["path"].as_str().unwrap();
        assert_eq!(
            after.get(path),
            Some(&Entry::File(f["bytes"].as_u64().unwrap())),
            "{path}"
        );
        assert_eq!(f["bytes"], sizes[i], "largest_files[{i}]");
    }

    // Default sets: their paths are kept for that reason, their bytes are those files'.
    for set in r["default_sets"].as_array().unwrap() {
        let mut bytes = 0;
        for p in set["paths"].as_array().unwrap() {
            let p = p.as_str().unwrap();
            let e = al.paths.iter().find(|e| e.path.as_str() == p).unwrap();
            assert_eq!(e.reason, Reason::DefaultSet, "{p}");
            if let Some(Entry::File(n)) = after.get(p) {
                bytes += n;
            }
        }
        assert_eq!(set["bytes"], bytes, "{set:#}");
    }

    // Timings: the pipeline's phases, in order, together no longer than the run itself.
    let phases: Vec<&str> = r["timings_ms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[0].as_str().unwrap())
        .collect();
    assert_eq!(phases.first(), Some(&"open"), "{phases:?}");
    assert_eq!(phases.last(), Some(&"verify"), "{phases:?}");
    for phase in ["trace", "closure", "pack", "write"] {
        assert!(phases.contains(&phase), "{phase} missing: {phases:?}");
    }
    let total: u64 = r["timings_ms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_u64().unwrap())
        .sum();
    assert!(
        total <= wall_ms,
        "phases {total} ms > the run's {wall_ms} ms"
    );
    assert_eq!(r["events_lost_total"], 0, "{r:#}");
    assert!(r["events"].as_u64().unwrap() > 0, "{r:#}");
    assert!(r["verify_failures"].as_array().unwrap().is_empty(), "{r:#}");
}

/// `--entrypoint`/`--cmd`/`--env` replace what runs, for the traced run only, and
/// `--no-verify` runs nothing on the output (Docker's own event log says no container of it
/// started).
#[test]
fn overrides_and_no_verify_on_base() {
    let Some(_serial) = serial_if_run() else {
        return;
    };
    let base = fixture("base").unwrap();
    let ctx = TestContext::new().unwrap();
    let out = ctx.unique_image_ref("no-verify");
    let report_path = ctx.temp_dir().join("report.json");
    let al_path = ctx.temp_dir().join("allowlist.json");
    let since = now_secs() - 1;
    let o = run(minify()
        .args(["run", &base, "--tag", &out, "--no-verify"])
        .args(["--entrypoint", "printenv", "--cmd", "MINIFY_E2E_ENV"])
        .args(["--env", "MINIFY_E2E_ENV=set-by-the-run"])
        .arg("--report")
        .arg(&report_path)
        .arg("--allowlist-out")
        .arg(&al_path));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let r = report(&report_path);
    // printenv ran (it is kept, traced) and exited 0: the variable was set.
    assert_eq!(r["main_process"]["code"], 0, "{r:#}");
    let al = allowlist(&al_path);
    let printenv = al
        .paths
        .iter()
        .find(|e| e.path.as_str() == "/usr/bin/printenv")
        .expect("printenv kept");
    assert_eq!(printenv.reason, Reason::Traced);

    // Not verified: said, reported, and no container of the output ever started.
    assert!(err.contains("verify: skipped"), "{err}");
    assert_eq!(r["verify"], "skipped", "{r:#}");
    assert!(r["verified_image"].is_null(), "{r:#}");
    assert!(r.get("main_process_minified").is_none(), "{r:#}");
    let until = now_secs() + 1;
    let started = container_events(
        since,
        until,
        &["event=start", &format!("image={out}")],
        "{{.Actor.ID}}",
    );
    assert!(started.is_empty(), "containers of {out} started: {started}");

    // The output keeps the base's own config; the overrides were for the run.
    let config = |i: &str| {
        docker([
            "image",
            "inspect",
            "--format",
            "{{json .Config.Entrypoint}} {{json .Config.Cmd}} {{json .Config.Env}}",
            i,
        ])
        .unwrap()
    };
    assert_eq!(config(&out), config(&base));
    // And it does what the traced run did, when run the same way by hand.
    let said = docker([
        "run",
        "--rm",
        "-e",
        "MINIFY_E2E_ENV=by-hand",
        "--entrypoint",
        "printenv",
        &out,
        "MINIFY_E2E_ENV",
    ])
    .unwrap();
    assert_eq!(said, "by-hand");
}

/// `minify trace`'s default output (one line per path: state, kinds, path) and `--events`
/// (one line per event, in order), for a command whose accesses are known by construction.
#[test]
fn trace_text_and_events_output() {
    if !require_root() || !require_ebpf() {
        return;
    }
    let ctx = TestContext::new().unwrap();
    let there = ctx.temp_dir().join("there");
    fs_err::write(&there, "x").unwrap();
    let missing = ctx.temp_dir().join("missing");
    let script = format!(
        "cat {} >/dev/null; cat {} 2>/dev/null; true",
        there.display(),
        missing.display()
    );
    let o = run(minify().args(["trace", "--", "sh", "-c", &script]));
    assert_eq!(o.status.code(), Some(0));
    let text = String::from_utf8_lossy(&o.stdout);
    let line = |path: &Path| {
        text.lines()
            .find(|l| l.split_whitespace().last() == Some(&*path.to_string_lossy()))
            .unwrap_or_else(|| panic!("{} not listed: {text}", path.display()))
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let l = line(&there);
    assert_eq!(l[0], "ok", "{l:?}");
    assert!(l[1].split(',').any(|k| k == "open"), "{l:?}");
    assert!(text.lines().any(|l| l.ends_with("/usr/bin/cat")), "{text}");
    let l = line(&missing);
    assert_eq!(l[0], "failed", "{l:?}");
    // One line per path.
    let listed: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    let mut unique = listed.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), listed.len(), "{text}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("command exited with 0"), "{err}");

    let o = run(minify().args(["trace", "--events", "--", "sh", "-c", &script]));
    assert_eq!(o.status.code(), Some(0));
    let text = String::from_utf8_lossy(&o.stdout);
    // pid comm kind ok|failed path
    let find = |path: &Path, ok: &str| {
        text.lines()
            .position(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.len() >= 5
                    && w[2].starts_with("open")
                    && w[3] == ok
                    && w[4] == path.to_string_lossy()
            })
            .unwrap_or_else(|| panic!("no open {ok} of {} in: {text}", path.display()))
    };
    let (a, b) = (find(&there, "ok"), find(&missing, "failed"));
    assert!(a < b, "events out of order: {text}");
    let pid = |i: usize| {
        text.lines()
            .nth(i)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
    };
    let comm = |i: usize| {
        text.lines()
            .nth(i)
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
    };
    // Two `cat` processes, one per file.
    assert_ne!(pid(a), pid(b), "{text}");
    assert_eq!((comm(a), comm(b)), ("cat", "cat"), "{text}");
}

/// With no Docker engine to talk to, every command that needs one exits 3 (environment),
/// with one line that says what is missing, and `doctor` says how to fix it.
#[test]
fn no_docker_is_exit_3() {
    // As root, as CI runs: a non-root `run` may stop at the missing eBPF rights first.
    if !require_root() {
        return;
    }
    let dead = TestContext::new().unwrap();
    let sock = dead.temp_dir().join("no-docker.sock");
    let host = format!("unix://{}", sock.display());
    for args in [
        &["run", "minify-fixture/nginx:1", "--probe-http", "/"][..],
        &["gc"][..],
        &["inspect", "minify-fixture/nginx:1"][..],
    ] {
        let o = run(minify().args(args).env("DOCKER_HOST", &host));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(3), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("minify: error: ") && err.to_lowercase().contains("docker"),
            "{args:?}: {err}"
        );
    }
    let o = run(minify().arg("doctor").env("DOCKER_HOST", &host));
    assert_eq!(o.status.code(), Some(3));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.lines()
            .any(|l| l.starts_with("FAIL") && l.contains("docker")),
        "{out}"
    );
    assert!(out.contains("set DOCKER_HOST"), "{out}");
    // A command that needs no engine is not affected.
    let o = Command::new(env!("CARGO_BIN_EXE_minify"))
        .arg("--version")
        .env("DOCKER_HOST", &host)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
}

/// `--workdir` is where the traced command runs (a relative path resolves there), and
/// `--trace-out` writes the raw trace, which shows that lookup and the exec.
#[test]
fn workdir_and_trace_out_on_base() {
    let Some(_serial) = serial_if_run() else {
        return;
    };
    let base = fixture("base").unwrap();
    let ctx = TestContext::new().unwrap();
    let out = ctx.unique_image_ref("workdir");
    let trace_path = ctx.temp_dir().join("trace.json");
    let report_path = ctx.temp_dir().join("report.json");
    // `test -f UTC` exits 0 only in /usr/share/zoneinfo.
    let o = run(minify()
        .args([
            "run",
            &base,
            "--tag",
            &out,
            "--workdir",
            "/usr/share/zoneinfo",
        ])
        .args(["--entrypoint", "test", "--cmd", "-f UTC"])
        .arg("--trace-out")
        .arg(&trace_path)
        .arg("--report")
        .arg(&report_path));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let r = report(&report_path);
    assert_eq!(r["main_process"]["code"], 0, "{r:#}");
    assert_eq!(r["main_process_minified"]["code"], 0, "{r:#}");
    let trace: serde_json::Value =
        serde_json::from_slice(&fs_err::read(&trace_path).unwrap()).unwrap();
    let events = trace["events"].as_array().unwrap();
    assert_eq!(events.len() as u64, r["events"].as_u64().unwrap());
    let seen = |kind: &str, path: &str| {
        events
            .iter()
            .any(|e| e["kind"] == kind && e["path"] == path && e["ok"] == true)
    };
    assert!(seen("exec", "/usr/bin/test"), "{trace:#}");
    assert!(
        events
            .iter()
            .any(|e| e["path"] == "/usr/share/zoneinfo/UTC" && e["ok"] == true),
        "the relative UTC was not looked up in the workdir: {trace:#}"
    );
    // Run by hand in the same directory, the output finds it too; elsewhere it does not.
    let ok = Command::new("docker")
        .args([
            "run",
            "--rm",
            "-w",
            "/usr/share/zoneinfo",
            "--entrypoint",
            "test",
        ])
        .args([out.as_str(), "-f", "UTC"])
        .status()
        .unwrap();
    assert!(ok.success());
    let elsewhere = Command::new("docker")
        .args(["run", "--rm", "-w", "/", "--entrypoint", "test"])
        .args([out.as_str(), "-f", "UTC"])
        .status()
        .unwrap();
    assert_eq!(elsewhere.code(), Some(1));
}

/// `--include-package` keeps a package whole that nothing used (tzdata: every zone file), and
/// `--exclude-package` keeps a used package from being made whole (libc6: `libm.so.6`, in the
/// package and the source, stays out; `libc.so.6`, used, stays in), while another used
/// package is made whole (coreutils' `libstdbuf.so`, which `cat` never loads) with its `bin/`
/// left out. Checked in the image the engine stores (`docker save`).
#[test]
fn include_and_exclude_package_on_base() {
    let Some(_serial) = serial_if_run() else {
        return;
    };
    let base = fixture("base").unwrap();
    let ctx = TestContext::new().unwrap();
    let out = ctx.unique_image_ref("packages");
    let o = run(minify()
        .args(["run", &base, "--tag", &out])
        .args(["--entrypoint", "cat", "--cmd", "/etc/debian_version"])
        .args(["--granularity", "package"])
        .args(["--include-package", "tzdata", "--exclude-package", "libc6"]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");

    let list = |package: &str| {
        docker_run(
            &base,
            "cat",
            &[&format!("/var/lib/dpkg/info/{package}.list")],
        )
        .unwrap()
    };
    let source = saved_files(&ctx, &base);
    let output = saved_files(&ctx, &out);
    let tzdata = list("tzdata");
    let zones: Vec<&str> = tzdata
        .lines()
        .filter(|p| p.starts_with("/usr/share/zoneinfo/"))
        .map(|p| p.trim_end_matches('/'))
        .collect();
    assert!(zones.len() > 1000, "{} tzdata zone entries", zones.len());
    let missing: Vec<&&str> = zones.iter().filter(|p| !output.contains_key(**p)).collect();
    assert!(
        missing.is_empty(),
        "tzdata not whole: {} of {} missing, first {:?}",
        missing.len(),
        zones.len(),
        &missing[..missing.len().min(5)]
    );

    // libc6 lists it before usrmerge; it lives under /usr through the /lib link.
    assert!(
        list("libc6:amd64")
            .lines()
            .any(|p| p == "/lib/x86_64-linux-gnu/libm.so.6")
    );
    let libm = "/usr/lib/x86_64-linux-gnu/libm.so.6";
    assert!(source.contains_key(libm));
    assert!(!output.contains_key(libm), "excluded libc6 made whole");
    assert!(output.contains_key("/usr/lib/x86_64-linux-gnu/libc.so.6"));

    assert!(output.contains_key("/usr/libexec/coreutils/libstdbuf.so"));
    assert!(source.contains_key("/usr/bin/ls"));
    assert!(!output.contains_key("/usr/bin/ls"), "coreutils' bin/ kept");

    let said = docker_run(&out, "cat", &["/etc/debian_version"]).unwrap();
    assert_eq!(
        said,
        docker_run(&base, "cat", &["/etc/debian_version"]).unwrap()
    );
}
