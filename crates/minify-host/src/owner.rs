//! Which process owns a resource minify made, whether that process still runs, and how the
//! owner is written on what it makes.
//!
//! A `minify` killed with SIGKILL cannot clean up, so everything it makes carries its
//! [`Owner`]: a label on containers ([`OWNER_LABEL`]) and the tag of temporary images
//! (minify-runtime), and the name of temporary directories ([`temp_dir_prefix`],
//! minify-image). `minify gc` removes only what belongs to a process that is gone. A pid
//! alone is not enough (pids are reused), so the owner is the pid together with its start
//! time (clock ticks since boot, field 22 of `/proc/PID/stat`), the pid namespace it is
//! counted in and the boot it happened in.

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::str::FromStr;

/// The process that made a resource: `PID-START-PIDNS-BOOT` as text, e.g.
/// `4242-991234-4026531836-5f093ce4f1f64a40a3793fe99c3a0404`. Every part is digits or
/// lowercase hex, so the text is also a valid image tag and file name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    /// Start time in clock ticks after boot (`/proc/PID/stat` field 22).
    pub start: u64,
    /// Inode of the pid namespace the pid is counted in (`/proc/self/ns/pid`).
    pub pid_ns: u64,
    /// `/proc/sys/kernel/random/boot_id` without its dashes.
    pub boot: String,
}

/// The label holding a container's [`Owner`] (value: [`Owner`]'s text form).
pub const OWNER_LABEL: &str = "org.minify.owner";

/// Whether an owner still runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// The very process (same pid, same start time) still runs.
    Alive,
    /// It is gone; the text says how we know.
    Gone(String),
    /// This process cannot tell (another pid namespace): treat as alive.
    Unknown(String),
}

impl Owner {
    /// This process.
    pub fn current() -> std::io::Result<Owner> {
        Self::of(Path::new("/proc"), std::process::id())
    }

    /// The process `pid` as seen in the proc filesystem at `proc`.
    fn of(proc: &Path, pid: u32) -> std::io::Result<Owner> {
        let text = fs_err::read_to_string(proc.join(pid.to_string()).join("stat"))?;
        let start = start_ticks(&text).ok_or_else(|| {
            std::io::Error::other(format!("cannot read the start time of pid {pid}: {text:?}"))
        })?;
        Ok(Owner {
            pid,
            start,
            pid_ns: fs_err::metadata(proc.join("self/ns/pid"))?.ino(),
            boot: boot_id(proc)?,
        })
    }

    /// Whether this owner still runs, judged from this process.
    pub fn liveness(&self) -> Liveness {
        self.liveness_in(Path::new("/proc"))
    }

    fn liveness_in(&self, proc: &Path) -> Liveness {
        match boot_id(proc) {
            Ok(b) if b != self.boot => {
                // minify needs the daemon on its own kernel (the container's cgroup parent
                // is a directory of that kernel), so another boot id is an earlier boot.
                return Liveness::Gone(format!(
                    "it was made before the last reboot (boot {})",
                    self.boot
                ));
            }
            Ok(_) => {}
            Err(e) => return Liveness::Unknown(format!("cannot read the boot id: {e}")),
        }
        match fs_err::metadata(proc.join("self/ns/pid")) {
            Ok(m) if m.ino() != self.pid_ns => {
                return Liveness::Unknown(format!(
                    "its minify (pid {}) runs in another pid namespace",
                    self.pid
                ));
            }
            Ok(_) => {}
            Err(e) => return Liveness::Unknown(format!("cannot read our pid namespace: {e}")),
        }
        let stat = match fs_err::read_to_string(proc.join(self.pid.to_string()).join("stat")) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Liveness::Gone(format!("its minify (pid {}) is gone", self.pid));
            }
            Err(e) => return Liveness::Unknown(format!("cannot read pid {}: {e}", self.pid)),
        };
        if start_ticks(&stat) == Some(self.start) {
            Liveness::Alive
        } else {
            Liveness::Gone(format!(
                "its minify (pid {}) is gone (the pid now belongs to another process)",
                self.pid
            ))
        }
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}-{}-{}-{}",
            self.pid, self.start, self.pid_ns, self.boot
        )
    }
}

/// The text is not `PID-START-PIDNS-BOOT`.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a minify owner (PID-START-PIDNS-BOOT)")]
pub struct BadOwner(String);

impl FromStr for Owner {
    type Err = BadOwner;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadOwner(s.to_owned());
        let mut parts = s.splitn(4, '-');
        let mut next = || parts.next().ok_or_else(bad);
        let (pid, start, pid_ns, boot) = (next()?, next()?, next()?, next()?);
        if boot.is_empty() || !boot.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        Ok(Owner {
            pid: pid.parse().map_err(|_| bad())?,
            start: start.parse().map_err(|_| bad())?,
            pid_ns: pid_ns.parse().map_err(|_| bad())?,
            boot: boot.to_ascii_lowercase(),
        })
    }
}

/// Who made a resource, as far as its name says: the full [`Owner`], or only a pid (older
/// naming schemes, such as minify-image's temporary load tags).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Maker {
    Owner(Owner),
    Pid(u32),
}

impl Maker {
    /// Whether the maker still runs. A bare pid that exists counts as alive: a reused pid
    /// keeps the resource, which is the safe mistake.
    pub fn liveness(&self) -> Liveness {
        match self {
            Maker::Owner(o) => o.liveness(),
            Maker::Pid(pid) if Path::new("/proc").join(pid.to_string()).exists() => {
                Liveness::Unknown(format!(
                    "process {pid}, which may be its minify, is running"
                ))
            }
            Maker::Pid(pid) => Liveness::Gone(format!("its minify (pid {pid}) is gone")),
        }
    }
}

/// Other running processes whose program is named `minify*` (this process excluded), as
/// `(pid, program path)`. For resources made before owners were recorded: while any of these
/// runs, one of them may be the maker.
pub fn other_minify_processes() -> Vec<(u32, String)> {
    let me = std::process::id();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out: Vec<(u32, String)> = rd
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            if pid == me {
                return None;
            }
            let exe = std::fs::read_link(e.path().join("exe")).ok()?;
            let name = exe.file_name()?.to_string_lossy().into_owned();
            name.starts_with("minify")
                .then(|| (pid, exe.display().to_string()))
        })
        .collect();
    out.sort();
    out
}

/// How one crate names what it makes that a killed run can leave behind, so `minify gc`
/// (in minify-runtime) can recognise it without knowing that crate's naming. Each crate
/// that makes such things exports one (`minify_image::LEFTOVERS`); the binary hands them
/// to `Runtime::gc_plan`.
#[derive(Clone, Copy, Debug)]
pub struct LeftoverNames {
    /// The crate, for messages.
    pub maker: &'static str,
    /// Who made an image reference (`repo:tag`) the crate makes for a moment; `None` when
    /// the reference is not one of its.
    pub image: fn(&str) -> Option<Maker>,
    /// Who made a directory in `$TMPDIR` (by its file name) the crate makes; `None` when the
    /// name is not one of its.
    pub temp_dir: fn(&str) -> Option<Owner>,
}

/// What every temporary directory minify makes starts with: `minify-`.
const TEMP_DIR_START: &str = "minify-";

/// The name prefix of a temporary directory of `kind` (lowercase letters, e.g. `view`) made
/// by this process: `minify-KIND.OWNER.`, to which the maker (`tempfile::Builder::prefix`)
/// appends random letters and digits, e.g.
/// `minify-view.4242-991234-4026531836-5f093ce4f1f64a40a3793fe99c3a0404.aZ3kQ9`.
/// The owner is in the name itself, so there is no moment at which the directory exists
/// without it; [`temp_dir_owner`] reads it back for `minify gc`.
pub fn temp_dir_prefix(kind: &str) -> std::io::Result<String> {
    debug_assert!(is_kind(kind), "{kind:?}");
    Ok(format!("{TEMP_DIR_START}{kind}.{}.", Owner::current()?))
}

/// The owner of a temporary directory named by [`temp_dir_prefix`], or `None` when `name` is
/// not exactly such a name (`minify-KIND.OWNER.RANDOM`, RANDOM one or more ASCII letters or
/// digits). Nothing else is ever taken for one of ours.
pub fn temp_dir_owner(name: &str) -> Option<Owner> {
    let mut parts = name.strip_prefix(TEMP_DIR_START)?.split('.');
    let (kind, owner, random) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || !is_kind(kind)
        || random.is_empty()
        || !random.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return None;
    }
    let parsed: Owner = owner.parse().ok()?;
    // Only the text we write (no `+1`, leading zeros or uppercase hex).
    (parsed.to_string() == owner).then_some(parsed)
}

/// [`temp_dir_owner`], for a name whose kind is one of `kinds` only: what a crate that
/// makes temporary directories of those kinds recognises as its own.
pub fn temp_dir_owner_of_kind(name: &str, kinds: &[&str]) -> Option<Owner> {
    let kind = name.strip_prefix(TEMP_DIR_START)?.split('.').next()?;
    if kinds.contains(&kind) {
        temp_dir_owner(name)
    } else {
        None
    }
}

fn is_kind(kind: &str) -> bool {
    !kind.is_empty() && kind.bytes().all(|b| b.is_ascii_lowercase())
}

/// Field 22 of `/proc/PID/stat`. The command name (field 2) may hold spaces and parentheses,
/// so count from the last `)`.
fn start_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After `)` come fields 3 (state), 4, ...: field 22 is the 20th.
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn boot_id(proc: &Path) -> std::io::Result<String> {
    let text = fs_err::read_to_string(proc.join("sys/kernel/random/boot_id"))?;
    Ok(text.trim().replace('-', "").to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake `/proc` with one process `pid` started at `start`.
    fn fake_proc(pid: u32, start: u64) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        fs_err::create_dir_all(p.join("sys/kernel/random")).unwrap();
        fs_err::write(
            p.join("sys/kernel/random/boot_id"),
            "5f093ce4-f1f6-4a40-a379-3fe99c3a0404\n",
        )
        .unwrap();
        fs_err::create_dir_all(p.join("self/ns")).unwrap();
        fs_err::write(p.join("self/ns/pid"), "").unwrap();
        fs_err::create_dir_all(p.join(pid.to_string())).unwrap();
        let fields: Vec<String> = (3..=52)
            .map(|i| {
                if i == 22 {
                    start.to_string()
                } else {
                    i.to_string()
                }
            })
            .collect();
        fs_err::write(
            p.join(pid.to_string()).join("stat"),
            format!("{pid} (min ify) (x) {}\n", fields.join(" ")),
        )
        .unwrap();
        d
    }

    #[test]
    fn text_round_trip() {
        let o = Owner {
            pid: 4242,
            start: 991_234,
            pid_ns: 4_026_531_836,
            boot: "5f093ce4f1f64a40a3793fe99c3a0404".into(),
        };
        let s = o.to_string();
        assert_eq!(s, "4242-991234-4026531836-5f093ce4f1f64a40a3793fe99c3a0404");
        assert_eq!(s.parse::<Owner>().unwrap(), o);
        for bad in ["", "1-2-3", "x-2-3-ab", "1-2-3-", "1-2-3-zz", "1-2-3-ab-cd"] {
            assert!(bad.parse::<Owner>().is_err(), "{bad}");
        }
    }

    #[test]
    fn current_process_is_alive() {
        let me = Owner::current().unwrap();
        assert_eq!(me.pid, std::process::id());
        assert_eq!(me.liveness(), Liveness::Alive);
        let mut other = me.clone();
        other.start += 1;
        assert!(matches!(other.liveness(), Liveness::Gone(_)));
    }

    #[test]
    fn liveness_from_a_fake_proc() {
        let proc = fake_proc(77, 1234);
        let o = Owner::of(proc.path(), 77).unwrap();
        assert_eq!(o.start, 1234);
        assert_eq!(o.boot, "5f093ce4f1f64a40a3793fe99c3a0404");
        assert_eq!(o.liveness_in(proc.path()), Liveness::Alive);
        // Reused pid: same number, other start time.
        let reused = Owner {
            start: 99,
            ..o.clone()
        };
        assert!(
            matches!(reused.liveness_in(proc.path()), Liveness::Gone(m) if m.contains("another process"))
        );
        let gone = Owner {
            pid: 78,
            ..o.clone()
        };
        assert!(matches!(gone.liveness_in(proc.path()), Liveness::Gone(m) if m.contains("pid 78")));
        let rebooted = Owner {
            boot: "00".into(),
            ..o.clone()
        };
        assert!(
            matches!(rebooted.liveness_in(proc.path()), Liveness::Gone(m) if m.contains("reboot"))
        );
        let other_ns = Owner {
            pid_ns: o.pid_ns + 1,
            ..o
        };
        assert!(matches!(
            other_ns.liveness_in(proc.path()),
            Liveness::Unknown(_)
        ));
    }

    #[test]
    fn temp_dir_names_carry_the_owner() {
        let me = Owner::current().unwrap();
        let prefix = temp_dir_prefix("view").unwrap();
        assert_eq!(prefix, format!("minify-view.{me}."));
        assert_eq!(temp_dir_owner(&format!("{prefix}aZ3kQ9")), Some(me.clone()));
        // A real one, as minify-image makes them.
        let made = tempfile::Builder::new()
            .prefix(&temp_dir_prefix("pack").unwrap())
            .tempdir()
            .unwrap();
        let name = made.path().file_name().unwrap().to_str().unwrap();
        assert_eq!(temp_dir_owner(name), Some(me.clone()), "{name}");
        assert_eq!(
            temp_dir_owner_of_kind(name, &["view", "pack"]),
            Some(me.clone())
        );
        assert_eq!(temp_dir_owner_of_kind(name, &["view"]), None);

        let o = "4242-991234-4026531836-5f093ce4f1f64a40a3793fe99c3a0404";
        assert!(temp_dir_owner(&format!("minify-image.{o}.x1")).is_some());
        for not_ours in [
            String::new(),
            "minify-view".into(),
            format!("minify-view.{o}."),      // no random part
            format!("minify-view.{o}"),       // no random part, no dot
            format!("minify-view.{o}.ab.cd"), // one part too many
            format!("minify-view.{o}.a-b"),   // not what tempfile appends
            format!("minify-.{o}.abc"),       // no kind
            format!("minify-View.{o}.abc"),   // not lowercase
            format!("minify-view-{o}.abc"),   // the wrong separator
            format!("xminify-view.{o}.abc"),  // not at the start
            format!("minify-view.+{o}.abc"),
            format!("minify-view.0{o}.abc"),
            format!("minify-view.{}.abc", o.to_uppercase()),
            "minify-view.1-2-3.abc".into(), // not an owner
            "minify-view-aZ3kQ9".into(),    // what older minify versions made
            "minify-runtime-gc-plan-1-ab".into(),
            "minify-0123456789ab".into(), // a trace cgroup's name
        ] {
            assert_eq!(temp_dir_owner(&not_ours), None, "{not_ours}");
        }
    }
}
