//! The attack surface left in a minified image: shells, package managers and GTFOBins-listed
//! helpers among the kept executables (each with why it is kept), set-id files,
//! world-writable directories without the sticky bit, and whether the image runs as root.
//!
//! An executable is matched by the real file a kept path resolves to and every name it has
//! in the output: `/bin/sh -> dash` makes `dash` a shell, and so does a `sh` link to
//! `busybox`. Only files with an execute bit count, so `bash-completion`'s `bash` data file
//! is not a shell.

use std::collections::{BTreeMap, BTreeSet};

use minify_model::{AllowlistEntry, EntryKind, ImagePath, Reason, Rootfs, resolve};
use serde::Serialize;

/// Shells: the POSIX and common interactive shells Debian, Alpine and Red Hat images ship
/// (Debian's `/etc/shells` plus busybox's `ash`/`hush`), by file name.
pub const SHELLS: &[&str] = &[
    "sh", "bash", "rbash", "dash", "ash", "hush", "zsh", "ksh", "ksh93", "mksh", "pdksh", "csh",
    "tcsh", "fish", "yash", "posh",
];

/// Package managers: system (dpkg/apt, apk, rpm/dnf/yum/microdnf, zypper, pacman) and the
/// language ones an image's build may leave behind (pip, npm and friends), by file name. A
/// trailing `*` matches any suffix (`pip3.11`).
pub const PACKAGE_MANAGERS: &[&str] = &[
    "apt",
    "apt-get",
    "aptitude",
    "dpkg",
    "dpkg-deb",
    "apk",
    "rpm",
    "dnf",
    "yum",
    "microdnf",
    "zypper",
    "pacman",
    "pip",
    "pip*",
    "easy_install*",
    "npm",
    "npx",
    "yarn",
    "pnpm",
    "gem",
    "bundle",
    "composer",
    "cargo",
    "conda",
];

/// A subset of the GTFOBins list (gtfobins.github.io, "Unix binaries that can be used to
/// bypass local security restrictions"): the helpers most often found in container images
/// that give a file read/write, a download, a reverse shell or code execution. Not the whole
/// list. Shells and package managers are reported in their own lists, not here. A trailing
/// `*` matches any suffix (`python3.11`).
pub const GTFOBINS: &[&str] = &[
    "curl",
    "wget",
    "nc",
    "ncat",
    "netcat",
    "socat",
    "telnet",
    "ftp",
    "tftp",
    "python*",
    "perl*",
    "ruby*",
    "php*",
    "node",
    "nodejs",
    "lua*",
    "tclsh*",
    "wish",
    "jrunscript",
    "jjs",
    "java",
    "find",
    "dd",
    "tar",
    "cpio",
    "zip",
    "unzip",
    "busybox",
    "awk",
    "gawk",
    "mawk",
    "nawk",
    "sed",
    "ed",
    "vi",
    "vim",
    "view",
    "rvim",
    "nano",
    "emacs",
    "less",
    "more",
    "man",
    "env",
    "xargs",
    "nice",
    "timeout",
    "stdbuf",
    "setarch",
    "taskset",
    "ionice",
    "flock",
    "watch",
    "script",
    "expect",
    "strace",
    "ltrace",
    "gdb",
    "openssl",
    "ssh",
    "scp",
    "sftp",
    "rsync",
    "git",
    "make",
    "gcc",
    "cc",
    "g++",
    "c++",
    "ld",
    "as",
    "docker",
    "kubectl",
    "crontab",
    "sudo",
    "su",
    "doas",
    "pkexec",
    "chroot",
    "unshare",
    "nsenter",
    "capsh",
    "mount",
    "tee",
    "cp",
    "mv",
    "install",
    "chmod",
    "chown",
    "base64",
    "xxd",
    "od",
    "hexdump",
    "tail",
    "head",
    "cat",
    "dmesg",
    "journalctl",
    "systemctl",
    "ip",
    "tcpdump",
    "sqlite3",
    "mysql",
    "psql",
    "redis-cli",
];

/// One executable of a watched kind left in the output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SurfaceExecutable {
    /// The real file (every symlink resolved).
    pub path: String,
    /// Every kept path that leads to it (links and the file itself), sorted.
    pub names: Vec<String>,
    /// The list entries it matched (`sh`, `python*`).
    pub matched: Vec<String>,
    /// Why the real file is kept: the allowlist reason (`traced`, `include`, `package`, ...).
    pub reason: String,
    /// The allowlist detail (for `traced`, the accesses seen: `exec,open`).
    pub detail: String,
    /// The same in words, e.g. `executed by the workload or a probe (traced: exec,open)`.
    pub why: String,
}

/// A kept file with the setuid or setgid bit, or a world-writable directory without sticky.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SurfacePath {
    pub path: String,
    /// Permission bits in octal, e.g. `4755`.
    pub mode: String,
    pub reason: String,
    pub detail: String,
}

/// The user the image runs as.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SurfaceUser {
    /// The config's `User` as written (empty when unset).
    pub user: String,
    /// Whether that is root: unset, `0`, `root`, or a name the image's `/etc/passwd` gives
    /// uid 0 (any group part is ignored).
    pub root: bool,
}

/// Everything [`attack_surface`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AttackSurface {
    pub shells: Vec<SurfaceExecutable>,
    pub package_managers: Vec<SurfaceExecutable>,
    /// GTFOBins-listed helpers that are not shells or package managers.
    pub gtfobins: Vec<SurfaceExecutable>,
    /// Kept regular files with the setuid or setgid bit.
    pub setuid: Vec<SurfacePath>,
    /// Kept directories writable by everyone and without the sticky bit.
    pub world_writable: Vec<SurfacePath>,
    pub user: SurfaceUser,
}

impl AttackSurface {
    /// One line for the run summary, e.g. `no shell, no package manager, 1 GTFOBins helper
    /// (python3.11: executed by the workload or a probe), 0 setuid, 0 world-writable, user
    /// root`.
    pub fn summary(&self) -> String {
        fn list(items: &[SurfaceExecutable], one: &str, many: &str, none: &str) -> String {
            if items.is_empty() {
                return none.to_owned();
            }
            let shown: Vec<String> = items
                .iter()
                .take(3)
                .map(|i| format!("{}: {}", short_name(i), i.why))
                .collect();
            let more = if items.len() > 3 {
                format!(", +{} more", items.len() - 3)
            } else {
                String::new()
            };
            format!(
                "{} {} ({}{more})",
                items.len(),
                if items.len() == 1 { one } else { many },
                shown.join("; ")
            )
        }
        format!(
            "{}, {}, {}, {} setuid/setgid, {} world-writable dir{}, user {}",
            list(&self.shells, "shell", "shells", "no shell"),
            list(
                &self.package_managers,
                "package manager",
                "package managers",
                "no package manager"
            ),
            list(
                &self.gtfobins,
                "GTFOBins helper",
                "GTFOBins helpers",
                "no GTFOBins helper"
            ),
            self.setuid.len(),
            self.world_writable.len(),
            if self.world_writable.len() == 1 {
                ""
            } else {
                "s"
            },
            match (self.user.root, self.user.user.is_empty()) {
                (true, true) => "root (none set)".to_owned(),
                (true, false) => format!("{} (root)", self.user.user),
                (false, _) => format!("{} (not root)", self.user.user),
            }
        )
    }
}

/// The names a summary shows for an executable: its file name and the link names
/// (`dash (sh)`).
fn short_name(i: &SurfaceExecutable) -> String {
    let own = base(&i.path);
    let links: BTreeSet<&str> = i
        .names
        .iter()
        .map(|n| base(n))
        .filter(|n| *n != own)
        .collect();
    if links.is_empty() {
        own.to_owned()
    } else {
        format!(
            "{own} ({})",
            links.into_iter().collect::<Vec<_>>().join(", ")
        )
    }
}

fn base(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// Whether `name` matches a list entry (exact, or a prefix for an entry ending in `*`).
fn matches(list: &[&str], name: &str) -> Vec<String> {
    list.iter()
        .filter(|pat| match pat.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => **pat == name,
        })
        .map(|p| (*p).to_owned())
        .collect()
}

/// The reason in words.
fn why(reason: Reason, detail: &str) -> String {
    let words = match reason {
        Reason::Traced if detail.split(',').any(|k| k.starts_with("exec")) => {
            "executed by the workload or a probe"
        }
        Reason::Traced => "used by the workload or a probe",
        Reason::Include => "an --include/--include-bin rule",
        Reason::Elf => "a library of a kept program",
        Reason::Interpreter => "the interpreter of a kept script",
        Reason::DefaultSet => "a default set",
        Reason::Package => "the package rule (--granularity package)",
        Reason::PackageDb => "the pruned package database",
        Reason::Symlink => "a symlink on the way to a kept path",
        Reason::Parent => "a parent directory",
    };
    if detail.is_empty() {
        format!("{words} ({})", reason.name())
    } else {
        format!("{words} ({}: {detail})", reason.name())
    }
}

/// The attack surface of the output made of `kept` (allowlist entries: each one image entry
/// of `fs`) for an image whose config's user is `user`.
pub fn attack_surface(fs: &dyn Rootfs, kept: &[AllowlistEntry], user: &str) -> AttackSurface {
    let by_path: BTreeMap<&ImagePath, &AllowlistEntry> =
        kept.iter().map(|e| (&e.path, e)).collect();
    // Real kept executable -> every kept path leading to it.
    let mut names: BTreeMap<ImagePath, BTreeSet<String>> = BTreeMap::new();
    let mut out = AttackSurface::default();
    for e in kept {
        let Some(entry) = fs.entry(&e.path) else {
            continue;
        };
        match &entry.kind {
            EntryKind::Dir if entry.mode & 0o002 != 0 && entry.mode & 0o1000 == 0 => {
                out.world_writable.push(surface_path(e, entry.mode));
            }
            EntryKind::File | EntryKind::Hardlink { .. } if entry.mode & 0o6000 != 0 => {
                out.setuid.push(surface_path(e, entry.mode));
            }
            _ => {}
        }
        if !(entry.is_file() || entry.is_symlink()) {
            continue;
        }
        // Only a name whose whole way is in the output reaches anything there.
        let Ok(r) = resolve(fs, e.path.as_str(), true) else {
            continue;
        };
        if !by_path.contains_key(&r.path) || r.via.iter().any(|v| !by_path.contains_key(v)) {
            continue;
        }
        let real = match fs.entry(&r.path).map(|x| &x.kind) {
            // A hard link is the same file as its target; group them when both are kept.
            Some(EntryKind::Hardlink { target }) if by_path.contains_key(target) => target.clone(),
            Some(EntryKind::File | EntryKind::Hardlink { .. }) => r.path,
            _ => continue,
        };
        if fs.entry(&real).is_some_and(|x| x.mode & 0o111 != 0) {
            names
                .entry(real)
                .or_default()
                .insert(e.path.as_str().to_owned());
        }
    }
    for (real, paths) in names {
        let mut base_names: BTreeSet<&str> = paths.iter().map(|p| base(p)).collect();
        base_names.insert(base(real.as_str()));
        let hit = |list: &[&str]| -> Vec<String> {
            let mut m: BTreeSet<String> = BTreeSet::new();
            for n in &base_names {
                m.extend(matches(list, n));
            }
            m.into_iter().collect()
        };
        let (shell, pm, gtfo) = (hit(SHELLS), hit(PACKAGE_MANAGERS), hit(GTFOBINS));
        let Some(k) = by_path.get(&real) else {
            continue;
        };
        let item = |matched: Vec<String>| SurfaceExecutable {
            path: real.as_str().to_owned(),
            names: paths.iter().cloned().collect(),
            matched,
            reason: k.reason.name().to_owned(),
            detail: k.detail.clone(),
            why: why(k.reason, &k.detail),
        };
        if !shell.is_empty() {
            out.shells.push(item(shell));
        } else if !pm.is_empty() {
            out.package_managers.push(item(pm));
        } else if !gtfo.is_empty() {
            out.gtfobins.push(item(gtfo));
        }
    }
    out.user = SurfaceUser {
        user: user.to_owned(),
        root: is_root_user(fs, user),
    };
    out
}

fn surface_path(e: &AllowlistEntry, mode: u32) -> SurfacePath {
    SurfacePath {
        path: e.path.as_str().to_owned(),
        mode: format!("{:o}", mode & 0o7777),
        reason: e.reason.name().to_owned(),
        detail: e.detail.clone(),
    }
}

/// Whether the config user `user` (`NAME`, `UID`, `NAME:GROUP`) is root.
fn is_root_user(fs: &dyn Rootfs, user: &str) -> bool {
    let name = user.split(':').next().unwrap_or("");
    if name.is_empty() || name == "root" {
        return true;
    }
    if let Ok(uid) = name.parse::<u64>() {
        return uid == 0;
    }
    // A name: its uid in the image's own passwd (inside the image root only).
    let Ok(r) = resolve(fs, "/etc/passwd", true) else {
        return false;
    };
    let Ok(text) = fs.read(&r.path, Some(1 << 20)) else {
        return false;
    };
    String::from_utf8_lossy(&text).lines().any(|l| {
        let mut f = l.split(':');
        f.next() == Some(name) && f.nth(1) == Some("0")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use minify_model::rootfs::memfs::MemFs;

    fn exe(fs: &mut MemFs, p: &str, mode: u32) {
        fs.file(p, b"\x7fELF");
        fs.entries.get_mut(&ImagePath::new(p)).unwrap().mode = mode;
    }

    fn entry(p: &str, reason: Reason, detail: &str) -> AllowlistEntry {
        AllowlistEntry {
            path: ImagePath::new(p),
            reason,
            detail: detail.to_owned(),
        }
    }

    /// A merged-/usr Debian-like image: `/bin -> usr/bin`, `sh -> dash`.
    fn image() -> MemFs {
        let mut fs = MemFs::default();
        fs.dir("/usr")
            .dir("/usr/bin")
            .dir("/usr/share")
            .dir("/tmp")
            .dir("/data")
            .dir("/etc");
        fs.symlink("/bin", "usr/bin");
        fs.symlink("/usr/bin/sh", "dash");
        exe(&mut fs, "/usr/bin/dash", 0o755);
        exe(&mut fs, "/usr/bin/python3.11", 0o755);
        fs.symlink("/usr/bin/python3", "python3.11");
        exe(&mut fs, "/usr/bin/apt-get", 0o755);
        exe(&mut fs, "/usr/bin/passwd", 0o4755);
        exe(&mut fs, "/usr/bin/nginx", 0o755);
        fs.file("/usr/share/bash", b"not a program");
        fs.file(
            "/etc/passwd",
            b"root:x:0:0::/root:/bin/sh\ntoor:x:0:0::/:/bin/sh\napp:x:1000:1000::/:/bin/false\n",
        );
        fs.entries.get_mut(&ImagePath::new("/tmp")).unwrap().mode = 0o1777;
        fs.entries.get_mut(&ImagePath::new("/data")).unwrap().mode = 0o777;
        fs
    }

    #[test]
    fn a_shell_through_its_links_with_why() {
        let fs = image();
        let kept = vec![
            entry("/bin", Reason::Symlink, "on the way to /bin/sh"),
            entry("/usr/bin/sh", Reason::Symlink, "on the way to /bin/sh"),
            entry("/usr/bin/dash", Reason::Traced, "exec,open"),
            entry("/usr/bin/nginx", Reason::Traced, "exec"),
        ];
        let s = attack_surface(&fs, &kept, "");
        assert_eq!(s.shells.len(), 1, "{s:?}");
        let sh = &s.shells[0];
        assert_eq!(sh.path, "/usr/bin/dash");
        assert_eq!(sh.names, ["/usr/bin/dash", "/usr/bin/sh"]);
        assert_eq!(sh.matched, ["dash", "sh"]);
        assert_eq!(sh.reason, "traced");
        assert!(sh.why.starts_with("executed by the workload"), "{}", sh.why);
        assert!(
            s.package_managers.is_empty() && s.gtfobins.is_empty(),
            "{s:?}"
        );
        assert!(s.user.root);
        let line = s.summary();
        assert!(
            line.starts_with("1 shell (dash (sh): executed by"),
            "{line}"
        );
        assert!(
            line.contains("no package manager, no GTFOBins helper"),
            "{line}"
        );
    }

    #[test]
    fn a_name_counts_only_when_its_way_is_kept() {
        let fs = image();
        // `sh` is not kept, so dash is only `dash`: still a shell, by its own name; python3
        // the link is not kept but python3.11 is a GTFOBins name by itself.
        let kept = vec![
            entry(
                "/usr/bin/python3.11",
                Reason::Package,
                "python3.11 3.11.2 (deb)",
            ),
            entry("/usr/bin/apt-get", Reason::Include, ""),
            entry("/usr/share/bash", Reason::DefaultSet, "x"),
        ];
        let s = attack_surface(&fs, &kept, "app");
        assert!(
            s.shells.is_empty(),
            "a non-executable `bash` is no shell: {s:?}"
        );
        assert_eq!(s.gtfobins.len(), 1);
        assert_eq!(s.gtfobins[0].matched, ["python*"]);
        assert!(
            s.gtfobins[0].why.starts_with("the package rule"),
            "{:?}",
            s.gtfobins[0]
        );
        assert_eq!(s.package_managers[0].path, "/usr/bin/apt-get");
        assert_eq!(s.package_managers[0].reason, "include");
        assert!(!s.user.root);
        assert!(
            s.summary().ends_with("user app (not root)"),
            "{}",
            s.summary()
        );
    }

    #[test]
    fn busybox_applet_link_is_a_shell() {
        let mut fs = MemFs::default();
        fs.dir("/bin");
        exe(&mut fs, "/bin/busybox", 0o755);
        fs.symlink("/bin/sh", "busybox");
        fs.symlink("/bin/wget", "/bin/busybox");
        let kept = vec![
            entry("/bin", Reason::Parent, ""),
            entry("/bin/busybox", Reason::Traced, "exec"),
            entry("/bin/sh", Reason::Traced, "exec"),
            entry("/bin/wget", Reason::Include, ""),
        ];
        let s = attack_surface(&fs, &kept, "0");
        assert_eq!(s.shells.len(), 1, "{s:?}");
        assert_eq!(s.shells[0].names, ["/bin/busybox", "/bin/sh", "/bin/wget"]);
        assert!(
            s.gtfobins.is_empty(),
            "listed once, as the shell it is: {s:?}"
        );
        assert!(s.user.root);
    }

    #[test]
    fn setuid_world_writable_and_user() {
        let fs = image();
        let kept = vec![
            entry("/tmp", Reason::DefaultSet, "skeleton"),
            entry("/data", Reason::Traced, "open"),
            entry("/usr/bin/passwd", Reason::Include, ""),
        ];
        let s = attack_surface(&fs, &kept, "toor:app");
        assert_eq!(s.setuid.len(), 1);
        assert_eq!(
            (s.setuid[0].path.as_str(), s.setuid[0].mode.as_str()),
            ("/usr/bin/passwd", "4755")
        );
        // /tmp has the sticky bit.
        assert_eq!(s.world_writable.len(), 1, "{s:?}");
        assert_eq!(s.world_writable[0].path, "/data");
        assert!(s.user.root, "toor has uid 0 in the image's passwd");
        assert!(is_root_user(&fs, "root:app"));
        assert!(!is_root_user(&fs, "1000"));
        assert!(!is_root_user(&fs, "nobody-here"));
        let j = serde_json::to_value(&s).unwrap();
        for k in [
            "shells",
            "package_managers",
            "gtfobins",
            "setuid",
            "world_writable",
            "user",
        ] {
            assert!(j.get(k).is_some(), "{k} in {j}");
        }
    }

    #[test]
    fn nothing_kept_nothing_found() {
        let fs = image();
        let s = attack_surface(&fs, &[entry("/usr/bin/nginx", Reason::Traced, "exec")], "");
        assert_eq!(
            s.summary(),
            "no shell, no package manager, no GTFOBins helper, 0 setuid/setgid, 0 world-writable dirs, user root (none set)"
        );
    }
}
