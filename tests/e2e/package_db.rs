//! The pruned package database and the package audit (issue 15), on real fixture images with
//! the real tracer. Every check reads the minified image from outside minify: its rootfs is
//! exported (`docker create` + `docker export`) and read by the host's own `dpkg-query`,
//! `dpkg -V` and `pip list`; what they must list is worked out here from the source image's
//! own `info/*.list` files and the exported files (not from minify's package model).
//!
//! The tests share `run.rs`'s lock: each keeps both cores busy.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Command;

use minify_fixtures::{TestContext, docker, fixture};

use crate::common::{minify, run};
use crate::run::serial_if_run;

/// The host's `dpkg-query`, `dpkg` and `pip` read the exported rootfs; without them the test
/// cannot check anything.
fn host_tool(name: &str) -> bool {
    Command::new(name)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `docker create` + `docker export` of `image` into a fresh directory under `ctx`.
fn export(ctx: &TestContext, image: &str, name: &str) -> PathBuf {
    let root = ctx.temp_dir().join(name);
    fs_err::create_dir_all(&root).unwrap();
    let cname = ctx.unique_name("export");
    ctx.track_container(&cname);
    // The minified image has no shell; create never runs anything.
    docker(["create", "--name", &cname, image, "/none"]).unwrap();
    let sh = format!(
        "docker export {cname} | tar -x -C {}",
        shell_quote(&root.display().to_string())
    );
    let st = Command::new("sh").args(["-c", &sh]).status().unwrap();
    assert!(st.success(), "{sh}");
    docker(["rm", "-f", &cname]).unwrap();
    root
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Resolve an image path inside the exported `root` the way the image sees it: links in
/// any component followed with `root` as `/` (absolute targets too), `..` stopping at the
/// root; the last component followed only when `follow_last`. `None` when it does not exist.
fn lookup(root: &Path, path: &str, follow_last: bool) -> Option<PathBuf> {
    let split = |s: &str| -> VecDeque<String> {
        s.split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .map(str::to_owned)
            .collect()
    };
    let mut todo = split(path);
    let mut cur: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(c) = todo.pop_front() {
        if c == ".." {
            cur.pop();
            continue;
        }
        let mut next = cur.clone();
        next.push(c);
        let host = root.join(next.join("/"));
        let meta = std::fs::symlink_metadata(&host).ok()?;
        if meta.file_type().is_symlink() && (!todo.is_empty() || follow_last) {
            links += 1;
            if links > 40 {
                return None;
            }
            let target = std::fs::read_link(&host).ok()?;
            let target = target.to_string_lossy();
            if target.starts_with('/') {
                cur.clear();
            }
            let mut new = split(&target);
            new.extend(todo.drain(..));
            todo = new;
        } else {
            cur = next;
        }
    }
    Some(root.join(cur.join("/")))
}

/// Whether the exported image holds `path` as a file of a package: it exists (as listed,
/// links on the way followed), and is neither a directory nor a link to one (every package
/// lists `/usr`, many `/lib`).
fn holds_file(root: &Path, path: &str) -> bool {
    let Some(host) = lookup(root, path, false) else {
        return false;
    };
    let Ok(meta) = std::fs::symlink_metadata(&host) else {
        return false;
    };
    if meta.is_dir() {
        return false;
    }
    !(meta.file_type().is_symlink()
        && lookup(root, path, true).is_some_and(|t| t.is_dir() && t.starts_with(root)))
}

/// The source image's dpkg file lists, by package name (`libc6:amd64.list` -> `libc6`), read
/// with the source's own shell.
fn source_lists(image: &str) -> BTreeMap<String, Vec<String>> {
    let out = docker([
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "sh",
        image,
        "-c",
        r#"cd /var/lib/dpkg/info && for f in *.list; do echo "== $f"; cat "$f"; done"#,
    ])
    .unwrap();
    let mut lists: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = None;
    for line in out.lines() {
        if let Some(f) = line.strip_prefix("== ") {
            let name = f.trim_end_matches(".list");
            let name = name.split(':').next().unwrap().to_owned();
            lists.entry(name.clone()).or_default();
            current = Some(name);
        } else if let Some(c) = &current {
            lists.get_mut(c).unwrap().push(line.to_owned());
        }
    }
    lists
}

/// `dpkg-query --admindir=<root>/var/lib/dpkg -W`: the package names it lists.
fn dpkg_query(root: &Path) -> BTreeSet<String> {
    let o = Command::new("dpkg-query")
        .arg(format!(
            "--admindir={}",
            root.join("var/lib/dpkg").display()
        ))
        .args(["-W", "-f", "${Package}\\n"])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "dpkg-query: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// dpkg-query on the exported output lists exactly the source's packages with a file in it.
fn assert_dpkg_lists_exactly_the_kept_packages(
    source: &str,
    root: &Path,
    must: &[&str],
    never: &[&str],
) -> BTreeSet<String> {
    let listed = dpkg_query(root);
    let expected: BTreeSet<String> = source_lists(source)
        .into_iter()
        .filter(|(_, paths)| paths.iter().any(|p| holds_file(root, p)))
        .map(|(name, _)| name)
        .collect();
    assert_eq!(listed, expected, "dpkg-query against the files present");
    for m in must {
        assert!(listed.contains(*m), "{m} not listed: {listed:?}");
    }
    for n in never {
        assert!(!listed.contains(*n), "{n} listed: {listed:?}");
    }
    listed
}

fn minify_run(ctx: &TestContext, image: &str, name: &str) -> (String, serde_json::Value, PathBuf) {
    let out = ctx.unique_image_ref(name);
    let report = ctx.temp_dir().join(format!("{name}.report.json"));
    let al = ctx.temp_dir().join(format!("{name}.allowlist.json"));
    let o = run(minify()
        .args(["run", image, "--probe-http", "/", "--tag", &out])
        .arg("--report")
        .arg(&report)
        .arg("--allowlist-out")
        .arg(&al));
    assert_eq!(o.status.code(), Some(0));
    let r: serde_json::Value =
        serde_json::from_str(&fs_err::read_to_string(&report).unwrap()).unwrap();
    (out, r, al)
}

/// The files Docker manages in every container: `docker export` has them empty.
const DOCKER_MANAGED: [&str; 3] = ["etc/hostname", "etc/hosts", "etc/resolv.conf"];

/// Bytes of regular files of `image`, read from outside minify: a whole `docker export` of a
/// container of it (hardlinks once), with the image's own sizes of the files Docker manages
/// in containers, from the image's layers in `docker save` (the topmost layer holding each).
fn image_bytes(ctx: &TestContext, image: &str) -> u64 {
    let cname = ctx.unique_name("bytes");
    ctx.track_container(&cname);
    docker(["create", "--name", &cname, image]).unwrap();
    let mut bytes = 0;
    let mut child = Command::new("docker")
        .args(["export", &cname])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut ar = tar::Archive::new(child.stdout.take().unwrap());
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        let path = e.path().unwrap().display().to_string();
        if e.header().entry_type() == tar::EntryType::Regular
            && !DOCKER_MANAGED.contains(&path.trim_start_matches("./"))
        {
            bytes += e.header().size().unwrap();
        }
    }
    assert!(child.wait().unwrap().success());
    docker(["rm", "-f", &cname]).unwrap();

    // docker save: each layer tar's sizes of the managed files, then the layer order.
    let mut child = Command::new("docker")
        .args(["save", image])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut ar = tar::Archive::new(child.stdout.take().unwrap());
    let mut in_layer: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        if name == "manifest.json" {
            let m: serde_json::Value = serde_json::from_reader(&mut e).unwrap();
            order = m[0]["Layers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l.as_str().unwrap().to_owned())
                .collect();
            continue;
        }
        if e.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let mut sizes = BTreeMap::new();
        let mut inner = tar::Archive::new(&mut e);
        let Ok(entries) = inner.entries() else {
            continue;
        };
        for f in entries {
            let Ok(f) = f else { break };
            let path = f.path().unwrap().display().to_string();
            let path = path.trim_start_matches("./");
            if DOCKER_MANAGED.contains(&path) {
                sizes.insert(path.to_owned(), f.header().size().unwrap());
            }
        }
        in_layer.insert(name, sizes);
    }
    assert!(child.wait().unwrap().success());
    for f in DOCKER_MANAGED {
        bytes += order
            .iter()
            .rev()
            .find_map(|l| in_layer.get(l).and_then(|s| s.get(f)))
            .copied()
            .unwrap_or(0);
    }
    bytes
}

/// nginx: dpkg-query on the exported output lists exactly the packages with a file there
/// (nginx, libc6 and the libraries nginx loads; not apt, bash, dpkg, perl-base); `dpkg -V`
/// finds nothing missing (and does once a kept file is removed by hand); the distribution's
/// identity files are the source's; the report's bytes add up to the source's, measured from
/// `docker export`; `minify diff` gives the report's table; `minify build` from the allowlist
/// gives the same image id.
#[test]
fn nginx_package_db_is_pruned_and_audited() {
    let Some(_serial) = serial_if_run() else {
        return;
    };
    if !host_tool("dpkg-query") {
        minify_fixtures::skip("the host has no dpkg-query");
        return;
    }
    let image = fixture("nginx").unwrap();
    let ctx = TestContext::new().unwrap();
    let (out, r, al) = minify_run(&ctx, &image, "pkgdb-nginx");
    let root = export(&ctx, &out, "root");

    let listed = assert_dpkg_lists_exactly_the_kept_packages(
        &image,
        &root,
        &[
            "nginx",
            "libc6",
            "libssl3",
            "libpcre2-8-0",
            "zlib1g",
            "libcrypt1",
        ],
        &[
            "apt",
            "bash",
            "dpkg",
            "perl-base",
            "coreutils",
            "nginx-light",
        ],
    );
    // nginx-light is in the source but is Debian 12's transitional package: its files are
    // docs only, none of which the output holds.
    let lists = source_lists(&image);
    assert!(
        lists["nginx-light"]
            .iter()
            .all(|p| p == "/." || p.starts_with("/usr")),
        "{:?}",
        lists["nginx-light"]
    );

    // dpkg -V (md5sums and lists cut to what is there): nothing missing or changed...
    let verify = |root: &Path| {
        let o = Command::new("dpkg")
            .arg(format!("--root={}", root.display()))
            .arg("-V")
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    assert_eq!(verify(&root), "", "dpkg -V on {}", root.display());
    // ... and it does say so when a kept file is gone (the check can fail).
    fs_err::remove_file(root.join("usr/sbin/nginx")).unwrap();
    let said = verify(&root);
    assert!(
        said.contains("missing") && said.contains("/usr/sbin/nginx"),
        "{said}"
    );

    // The distribution's identity, as in the source.
    for f in [
        "/etc/os-release",
        "/usr/lib/os-release",
        "/etc/debian_version",
    ] {
        let source = docker(["run", "--rm", "--entrypoint", "cat", &image, f]).unwrap();
        let here = fs_err::read_to_string(lookup(&root, f, true).unwrap()).unwrap();
        assert_eq!(here.trim_end(), source.trim_end(), "{f}");
    }

    // The report: one entry per installed package of the source, the kept ones exactly those
    // dpkg-query lists, and the bytes adding up to the source's.
    let installed = docker([
        "run",
        "--rm",
        "--entrypoint",
        "dpkg-query",
        &image,
        "-W",
        "-f",
        "${db:Status-Status} ${Package}\\n",
    ])
    .unwrap();
    let installed: BTreeSet<&str> = installed
        .lines()
        .filter_map(|l| l.strip_prefix("installed "))
        .collect();
    let pkgs = r["packages"].as_array().unwrap();
    let debs: Vec<&serde_json::Value> = pkgs.iter().filter(|p| p["kind"] == "deb").collect();
    assert_eq!(debs.len(), installed.len());
    let kept: BTreeSet<String> = debs
        .iter()
        .filter(|p| p["state"] != "absent")
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kept, listed);
    let libc = debs.iter().find(|p| p["name"] == "libc6").unwrap();
    assert_eq!(libc["state"], "partial", "{libc:#}");
    assert!(libc["removed_files"].as_u64().unwrap() > 100, "{libc:#}");
    let t = &r["package_totals"];
    let num = |v: &serde_json::Value| v.as_u64().unwrap();
    assert_eq!(
        num(&t["kept_bytes"]) + num(&t["removed_bytes"]),
        num(&t["source_bytes"])
    );
    assert_eq!(num(&t["source_bytes"]), image_bytes(&ctx, &image));
    assert_eq!(
        num(&t["owned_kept_bytes"]) + num(&t["unowned_kept_bytes"]),
        num(&t["kept_bytes"])
    );
    // Every package's bytes once (no file of this image is listed by two packages).
    let sum = |k: &str| debs.iter().map(|p| num(&p[k])).sum::<u64>();
    assert_eq!(sum("kept_bytes"), num(&t["owned_kept_bytes"]));
    assert_eq!(sum("removed_bytes"), num(&t["owned_removed_bytes"]));
    // Largest removals first.
    let removed: Vec<u64> = pkgs.iter().map(|p| num(&p["removed_bytes"])).collect();
    assert!(removed.windows(2).all(|w| w[0] >= w[1]), "{removed:?}");

    // minify diff: the same table for the two images.
    let o = run(minify().args(["diff", &image, &out, "--json"]));
    assert_eq!(o.status.code(), Some(0));
    let d: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(d["packages"], r["packages"]);
    assert_eq!(d["totals"], r["package_totals"]);
    let o = run(minify().args(["diff", &image, &out]));
    assert_eq!(o.status.code(), Some(0));
    let text = String::from_utf8_lossy(&o.stdout);
    let first = pkgs[0]["name"].as_str().unwrap();
    let row = text.lines().nth(3).unwrap();
    assert!(row.contains(first), "{text}");
    assert!(text.contains("removed  "), "{text}");

    // minify build from the allowlist: the same image, generated database included.
    let built = ctx.unique_image_ref("pkgdb-nginx-built");
    let o = run(minify()
        .args(["build", &image, "--tag", &built, "--allowlist"])
        .arg(&al));
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        r["output_id"].as_str().unwrap()
    );
}

/// flask (Flask from the package index in a venv): `pip list --path` on the exported
/// site-packages lists Flask and its dependencies and not pip (which the app never imports,
/// so its files and dist-info are gone); dpkg-query lists exactly the Debian packages with a
/// file there (Python's), not apt, bash, dpkg or perl-base.
#[test]
fn flask_keeps_the_dist_info_of_its_distributions() {
    let Some(_serial) = serial_if_run() else {
        return;
    };
    if !host_tool("dpkg-query") || !host_tool("pip") {
        minify_fixtures::skip("the host has no dpkg-query or pip");
        return;
    }
    let image = fixture("flask").unwrap();
    let ctx = TestContext::new().unwrap();
    let (out, r, _) = minify_run(&ctx, &image, "pkgdb-flask");
    let root = export(&ctx, &out, "root");
    let site = root.join("app/venv/lib/python3.11/site-packages");
    let o = Command::new("pip")
        .args(["list", "--format", "json", "--path"])
        .arg(&site)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: BTreeSet<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_ascii_lowercase())
        .collect();
    for d in [
        "flask",
        "werkzeug",
        "jinja2",
        "markupsafe",
        "itsdangerous",
        "click",
        "blinker",
    ] {
        assert!(names.contains(d), "{d} not listed: {names:?}");
    }
    // pip is in the source's venv, and neither its code nor its metadata is in the output.
    let source_pip = "/app/venv/lib/python3.11/site-packages/pip";
    assert!(
        docker([
            "run",
            "--rm",
            "--entrypoint",
            "test",
            &image,
            "-d",
            source_pip
        ])
        .is_ok()
    );
    assert!(!site.join("pip").exists());
    assert!(!names.contains("pip"), "{names:?}");
    let py = r["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == "python" && p["name"] == "pip")
        .expect("pip in the report");
    assert_eq!(py["state"], "absent", "{py:#}");

    assert_dpkg_lists_exactly_the_kept_packages(
        &image,
        &root,
        &["libc6", "python3.11-minimal", "libpython3.11-minimal"],
        &["apt", "bash", "dpkg", "perl-base", "coreutils"],
    );
}
