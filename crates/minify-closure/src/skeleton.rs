//! The `skeleton` default set: the directories every container needs whatever its probe did
//! (`/tmp`, `/var/tmp`, the user's and root's home, the `WORKDIR`, every `VOLUME`, and the
//! runtime's mount points), each as its directory entry alone.
//!
//! A probe that never makes a temporary file leaves no trace of `/tmp`, and without it
//! `tempfile.mkstemp()` fails for a non-root user (as root Python falls back to the current
//! directory, which hides the problem until the image runs as Kubernetes' `runAsNonRoot`
//! asks). distroless ships `/tmp` (1777) in its smallest image for this reason.
//!
//! Only what the source has is kept, with its own mode and owner: a directory the source
//! lacks is reported as absent, never made up, so the output behaves like the source and the
//! same inputs give the same image. Everything is looked up inside the image (a home that is
//! a symlink resolves within the image root, like any other path), and a hostile
//! `/etc/passwd` (huge, binary, a directory, a link loop) is a warning, never an error.

use minify_model::{ImagePath, ResolveError, Rootfs, resolve};

/// Directories kept whenever the source has them, with the detail the allowlist gives.
const FIXED: [(&str, &str); 6] = [
    ("/tmp", "skeleton: temporary directory"),
    ("/var/tmp", "skeleton: temporary directory"),
    ("/proc", "skeleton: mount point"),
    ("/sys", "skeleton: mount point"),
    ("/dev", "skeleton: mount point"),
    ("/run", "skeleton: mount point"),
];

/// Most of `/etc/passwd` read. Real ones are a few kB; a bigger one is read this far (the
/// lines after it are not looked at) so a hostile image cannot make the closure hold it all.
pub(crate) const MAX_PASSWD_BYTES: u64 = 1 << 20;

/// What the `skeleton` set reads from the image config. The pipeline fills it from the
/// source image's config (the output keeps that config, so that is the user and the
/// directories the minified image runs with); left empty, only the fixed directories and
/// root's home are looked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SkeletonInput {
    /// `config.User`: `name`, `uid`, `name:group` or `uid:gid`; empty means root.
    pub user: String,
    /// `config.WorkingDir` (empty: `/`).
    pub workdir: String,
    /// `config.Volumes` keys.
    pub volumes: Vec<String>,
}

/// One directory the set asks for: the path as configured and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Wanted {
    pub path: String,
    pub detail: String,
}

/// Every directory the set looks for, in a fixed order (the report's order for absent ones),
/// plus warnings about the user lookup.
pub(crate) fn wanted(fs: &dyn Rootfs, input: &SkeletonInput) -> (Vec<Wanted>, Vec<String>) {
    let mut warnings = Vec::new();
    let mut out: Vec<Wanted> = FIXED
        .iter()
        .map(|(p, d)| Wanted {
            path: (*p).to_owned(),
            detail: (*d).to_owned(),
        })
        .collect();
    let user = UserSpec::parse(&input.user);
    let passwd = Passwd::read(fs, &mut warnings);
    // Root's home, from the image's own passwd (uid 0); `/root` when it has no such line (or
    // no readable passwd), which is what every Linux distribution uses.
    let root_home = passwd
        .as_ref()
        .and_then(|p| p.entries.iter().find(|e| e.uid == 0))
        .map_or_else(|| "/root".to_owned(), |u| u.home.clone());
    out.push(Wanted {
        path: root_home.clone(),
        detail: "skeleton: home of root".to_owned(),
    });
    if let Some(user) = user {
        match passwd.as_ref().and_then(|p| p.lookup(&user)) {
            Some(found) if found.home != root_home => out.push(Wanted {
                path: found.home.clone(),
                detail: format!("skeleton: home of USER {}", input.user.trim()),
            }),
            Some(_) => {}
            // A uid with no passwd line runs with HOME=/ (Docker and runc do so): no home
            // to keep, and nothing wrong. A name that is not there does not run at all.
            None if user.uid.is_some() => {}
            None => warnings.push(format!(
                "skeleton: USER {} is not in the image's /etc/passwd; its home is not known",
                input.user.trim()
            )),
        }
    }
    let workdir = input.workdir.trim();
    if !workdir.is_empty() {
        out.push(Wanted {
            path: workdir.to_owned(),
            detail: "skeleton: WORKDIR".to_owned(),
        });
    }
    let mut volumes: Vec<&String> = input.volumes.iter().collect();
    volumes.sort();
    volumes.dedup();
    for v in volumes {
        out.push(Wanted {
            path: v.clone(),
            detail: "skeleton: VOLUME".to_owned(),
        });
    }
    // Homes and volumes are image data: a relative one means nothing to the runtime either.
    // `/` (a home of `/`, `WORKDIR /`) is always there and kept as every path's parent.
    out.retain(|w| {
        if ImagePath::new(&w.path).is_root() && w.path.starts_with('/') {
            false
        } else if w.path.starts_with('/') {
            true
        } else {
            warnings.push(format!(
                "{}: {:?} is not an absolute path; not kept",
                w.detail, w.path
            ));
            false
        }
    });
    (out, warnings)
}

/// The user part of `config.User` (before any `:group`), as runc reads it: a passwd line
/// matches by its name, or by its uid when the part is a number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct UserSpec {
    pub name: String,
    pub uid: Option<u64>,
}

impl UserSpec {
    /// `None` for root given as nothing at all (an empty `USER`, or `:group`).
    pub(crate) fn parse(user: &str) -> Option<UserSpec> {
        let name = user.trim().split(':').next().unwrap_or("").trim();
        if name.is_empty() {
            return None;
        }
        Some(UserSpec {
            name: name.to_owned(),
            uid: name.parse().ok(),
        })
    }
}

/// One `/etc/passwd` line's fields that matter here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PasswdEntry {
    pub name: String,
    pub uid: u64,
    pub home: String,
}

/// The image's `/etc/passwd`, as far as it parses.
#[derive(Clone, Debug, Default)]
pub(crate) struct Passwd {
    pub entries: Vec<PasswdEntry>,
}

impl Passwd {
    /// Read the image's `/etc/passwd` (symlinks followed inside the image). `None` when it
    /// is not there or is not a regular file; problems are pushed onto `warnings`.
    pub(crate) fn read(fs: &dyn Rootfs, warnings: &mut Vec<String>) -> Option<Passwd> {
        const PATH: &str = "/etc/passwd";
        let real = match resolve(fs, PATH, true) {
            Ok(r) => r.path,
            Err(ResolveError::NotFound { .. }) => return None,
            Err(e) => {
                warnings.push(format!("skeleton: {e}; user homes are not looked up"));
                return None;
            }
        };
        let entry = fs.entry(&real)?;
        if !entry.is_file() {
            warnings.push(format!(
                "skeleton: {PATH} ({real}) is not a regular file; user homes are not looked up"
            ));
            return None;
        }
        let size = entry.size;
        let bytes = match fs.read(&real, Some(MAX_PASSWD_BYTES)) {
            Ok(b) => b,
            Err(e) => {
                warnings.push(format!(
                    "skeleton: reading {PATH} ({real}): {e}; user homes are not looked up"
                ));
                return None;
            }
        };
        if size > MAX_PASSWD_BYTES {
            warnings.push(format!(
                "skeleton: {PATH} is {size} bytes; only its first {MAX_PASSWD_BYTES} are read"
            ));
        }
        if bytes.contains(&0) {
            warnings.push(format!(
                "skeleton: {PATH} is not text (it holds NUL bytes); only the lines that parse are read"
            ));
        }
        Some(Passwd::parse(&bytes, size > MAX_PASSWD_BYTES))
    }

    /// Parse `name:password:uid:gid:gecos:home:shell` lines; any other line is skipped.
    /// `truncated`: the last line may be cut short, so it is dropped.
    pub(crate) fn parse(bytes: &[u8], truncated: bool) -> Passwd {
        let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
        if truncated {
            lines.pop();
        }
        let entries = lines
            .into_iter()
            .filter_map(|line| {
                let line = std::str::from_utf8(line).ok()?;
                let f: Vec<&str> = line.trim_end_matches('\r').split(':').collect();
                if f.len() != 7 || f[0].is_empty() || f[0].contains('\0') {
                    return None;
                }
                Some(PasswdEntry {
                    name: f[0].to_owned(),
                    uid: f[2].parse().ok()?,
                    home: f[5].to_owned(),
                })
            })
            .collect();
        Passwd { entries }
    }

    /// The first entry whose name is the user's name or whose uid is the user's number (runc
    /// matches either, first line wins).
    pub(crate) fn lookup(&self, user: &UserSpec) -> Option<&PasswdEntry> {
        self.entries
            .iter()
            .find(|e| e.name == user.name || user.uid == Some(e.uid))
    }
}

/// Where one wanted directory is in the image.
pub(crate) enum Found {
    /// A directory (after the symlinks in `via`, all inside the image).
    Dir {
        path: ImagePath,
        via: Vec<ImagePath>,
    },
    /// Not in the image: reported, not made up.
    Absent,
    /// There, but not something to keep as a directory (a file, a link loop).
    Unusable(String),
}

/// Look `raw` up inside the image, symlinks followed within its root.
pub(crate) fn find(fs: &dyn Rootfs, raw: &str) -> Found {
    match resolve(fs, raw, true) {
        Ok(r) => match fs.entry(&r.path) {
            Some(e) if e.is_dir() => Found::Dir {
                path: r.path,
                via: r.via,
            },
            Some(_) => Found::Unusable(format!("{raw} ({}) is not a directory", r.path)),
            None => Found::Absent,
        },
        Err(ResolveError::NotFound { .. }) => Found::Absent,
        Err(e) => Found::Unusable(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use minify_model::rootfs::memfs::MemFs;

    fn passwd(text: &str) -> Passwd {
        Passwd::parse(text.as_bytes(), false)
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
        # a comment line\n\
        broken line without fields\n\
        app:x:1234:1234::/home/app:/bin/sh\n\
        1000:x:2000:2000::/home/numeric-name:/bin/sh\n\
        nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";

    fn spec(name: &str, uid: Option<u64>) -> UserSpec {
        UserSpec {
            name: name.into(),
            uid,
        }
    }

    #[test]
    fn user_forms() {
        assert_eq!(UserSpec::parse(""), None);
        assert_eq!(UserSpec::parse("  "), None);
        assert_eq!(UserSpec::parse(":app"), None);
        assert_eq!(UserSpec::parse("app"), Some(spec("app", None)));
        assert_eq!(UserSpec::parse("app:staff"), Some(spec("app", None)));
        assert_eq!(UserSpec::parse("1234"), Some(spec("1234", Some(1234))));
        assert_eq!(UserSpec::parse("1234:1234"), Some(spec("1234", Some(1234))));
        // Too big for a uid: only a name.
        assert_eq!(
            UserSpec::parse("99999999999999999999999"),
            Some(spec("99999999999999999999999", None))
        );

        let p = passwd(PASSWD);
        let home = |u: &str| {
            UserSpec::parse(u)
                .and_then(|s| p.lookup(&s).map(|e| e.home.clone()))
                .unwrap_or_default()
        };
        assert_eq!(home("app"), "/home/app");
        assert_eq!(home("app:staff"), "/home/app");
        assert_eq!(home("1234"), "/home/app");
        assert_eq!(home("1234:50"), "/home/app");
        assert_eq!(home("0"), "/root");
        assert_eq!(home("root:root"), "/root");
        assert_eq!(home("65534"), "/nonexistent");
        // runc matches a name or a uid, first line wins: user "1000" has uid 2000.
        assert_eq!(home("1000"), "/home/numeric-name");
        assert_eq!(home("4242"), "");
        assert_eq!(home("ghost"), "");
    }

    #[test]
    fn hostile_passwd_lines_are_skipped() {
        let p = Passwd::parse(
            b"\xff\xfe:x:0:0::/evil:/bin/sh\n\
              a:x:notanumber:0::/a:/bin/sh\n\
              b:x:1:1::/b\n\
              c:x:2:2::/c:/bin/sh:extra\n\
              \0\0\0\0\n\
              :x:3:3::/empty-name:/bin/sh\n\
              ok:x:5:5::/home/ok:/bin/sh\r\n\
              cut:x:6:6::/home/cu",
            true,
        );
        assert_eq!(
            p.entries,
            vec![PasswdEntry {
                name: "ok".into(),
                uid: 5,
                home: "/home/ok".into()
            }]
        );
    }

    #[test]
    fn passwd_that_is_not_a_file_or_too_big_is_a_warning() {
        let mut w = Vec::new();
        let mut fs = MemFs::default();
        assert!(Passwd::read(&fs, &mut w).is_none() && w.is_empty(), "{w:?}");

        fs.dir("/etc").dir("/etc/passwd");
        assert!(Passwd::read(&fs, &mut w).is_none());
        assert!(w[0].contains("not a regular file"), "{w:?}");

        let mut fs = MemFs::default();
        fs.dir("/etc").symlink("/etc/passwd", "/etc/passwd");
        let mut w = Vec::new();
        assert!(Passwd::read(&fs, &mut w).is_none());
        assert!(w[0].contains("too many levels"), "{w:?}");

        // Huge: read only so far, the cut line dropped, the rest still found.
        let mut big = b"app:x:7:7::/home/app:/bin/sh\n".to_vec();
        while big.len() as u64 <= MAX_PASSWD_BYTES {
            big.extend_from_slice(b"filler:x:9:9::/home/filler:/bin/sh\n");
        }
        big.extend_from_slice(b"late:x:8:8::/home/late:/bin/sh\n");
        let mut fs = MemFs::default();
        fs.dir("/etc").file("/etc/passwd", &big);
        let mut w = Vec::new();
        let p = Passwd::read(&fs, &mut w).unwrap();
        assert!(w[0].contains("only its first 1048576"), "{w:?}");
        assert!(p.lookup(&UserSpec::parse("app").unwrap()).is_some());
        assert!(p.lookup(&UserSpec::parse("late").unwrap()).is_none());

        // Binary: said, and the lines that parse still count.
        let mut fs = MemFs::default();
        fs.dir("/etc")
            .file("/etc/passwd", b"\0\x01\x02\nroot:x:0:0::/r00t:/bin/sh\n");
        let mut w = Vec::new();
        let p = Passwd::read(&fs, &mut w).unwrap();
        assert!(w[0].contains("not text"), "{w:?}");
        assert_eq!(
            p.lookup(&UserSpec::parse("0").unwrap()).unwrap().home,
            "/r00t"
        );
    }
}
