//! The syscalls the tracer records: their numbers on this arch, their family (`op`), and
//! which of their arguments hold paths and directory fds, filled into the programs'
//! `SYS_CFG` map from the kernel's own tracepoint formats.

use aya::Ebpf;
use aya::maps::Array as BpfArray;
use minify_trace_common::{SYS_NR_SLOTS, SysCfg, op};

use crate::TraceError;
use crate::error::aya_error;
use crate::tracefs::Format;

/// One traced syscall: its family and the record fields holding its arguments.
struct Syscall {
    name: &'static str,
    op: u32,
    path: Option<&'static str>,
    dfd: Option<&'static str>,
    path2: Option<&'static str>,
    dfd2: Option<&'static str>,
    fd: Option<&'static str>,
}

const fn sc(name: &'static str, op: u32, path: &'static str, dfd: Option<&'static str>) -> Syscall {
    Syscall {
        name,
        op,
        path: Some(path),
        dfd,
        path2: None,
        dfd2: None,
        fd: None,
    }
}

/// This arch's number for a syscall (the tracepoint records carry it, not the name).
/// Syscalls that only exist on x86_64 are compiled in there only.
fn syscall_nr(name: &str) -> Option<i64> {
    Some(match name {
        "openat" => libc::SYS_openat,
        "openat2" => libc::SYS_openat2,
        "newfstatat" => libc::SYS_newfstatat,
        "statx" => libc::SYS_statx,
        "faccessat" => libc::SYS_faccessat,
        "faccessat2" => libc::SYS_faccessat2,
        "readlinkat" => libc::SYS_readlinkat,
        "execve" => libc::SYS_execve,
        "execveat" => libc::SYS_execveat,
        "chdir" => libc::SYS_chdir,
        "getdents64" => libc::SYS_getdents64,
        "mkdirat" => libc::SYS_mkdirat,
        "mknodat" => libc::SYS_mknodat,
        "symlinkat" => libc::SYS_symlinkat,
        "linkat" => libc::SYS_linkat,
        "renameat" => libc::SYS_renameat,
        "renameat2" => libc::SYS_renameat2,
        "unlinkat" => libc::SYS_unlinkat,
        #[cfg(target_arch = "x86_64")]
        "open" => libc::SYS_open,
        #[cfg(target_arch = "x86_64")]
        "creat" => libc::SYS_creat,
        #[cfg(target_arch = "x86_64")]
        "newstat" => libc::SYS_stat,
        #[cfg(target_arch = "x86_64")]
        "newlstat" => libc::SYS_lstat,
        #[cfg(target_arch = "x86_64")]
        "access" => libc::SYS_access,
        #[cfg(target_arch = "x86_64")]
        "readlink" => libc::SYS_readlink,
        #[cfg(target_arch = "x86_64")]
        "mkdir" => libc::SYS_mkdir,
        #[cfg(target_arch = "x86_64")]
        "mknod" => libc::SYS_mknod,
        #[cfg(target_arch = "x86_64")]
        "symlink" => libc::SYS_symlink,
        #[cfg(target_arch = "x86_64")]
        "link" => libc::SYS_link,
        #[cfg(target_arch = "x86_64")]
        "rename" => libc::SYS_rename,
        #[cfg(target_arch = "x86_64")]
        "unlink" => libc::SYS_unlink,
        #[cfg(target_arch = "x86_64")]
        "rmdir" => libc::SYS_rmdir,
        _ => return None,
    })
}

/// Every syscall we trace. Field names are the kernel's (`SYSCALL_DEFINE` argument names, as
/// they appear in tracefs `format` files). Syscalls missing on this arch are skipped: arm64 has
/// no `open`, `creat`, `stat`, `access`, `readlink`, `mkdir`, `rename`... only the `*at` forms.
const SYSCALLS: &[Syscall] = &[
    sc("openat", op::OPEN, "filename", Some("dfd")),
    sc("openat2", op::OPEN, "filename", Some("dfd")),
    sc("open", op::OPEN, "filename", None),
    sc("creat", op::OPEN, "pathname", None),
    sc("newfstatat", op::STAT, "filename", Some("dfd")),
    sc("statx", op::STAT, "filename", Some("dfd")),
    sc("newstat", op::STAT, "filename", None),
    sc("newlstat", op::STAT, "filename", None),
    sc("faccessat", op::ACCESS, "filename", Some("dfd")),
    sc("faccessat2", op::ACCESS, "filename", Some("dfd")),
    sc("access", op::ACCESS, "filename", None),
    sc("readlinkat", op::READLINK, "pathname", Some("dfd")),
    sc("readlink", op::READLINK, "path", None),
    sc("execve", op::EXEC, "filename", None),
    sc("execveat", op::EXEC, "filename", Some("fd")),
    sc("chdir", op::CHDIR, "filename", None),
    Syscall {
        name: "getdents64",
        op: op::GETDENTS,
        path: None,
        dfd: None,
        path2: None,
        dfd2: None,
        fd: Some("fd"),
    },
    sc("mkdir", op::CREATE, "pathname", None),
    sc("mkdirat", op::CREATE, "pathname", Some("dfd")),
    sc("mknod", op::CREATE, "filename", None),
    sc("mknodat", op::CREATE, "filename", Some("dfd")),
    sc("symlink", op::CREATE, "newname", None),
    sc("symlinkat", op::CREATE, "newname", Some("newdfd")),
    sc("link", op::CREATE, "newname", None),
    sc("linkat", op::CREATE, "newname", Some("newdfd")),
    Syscall {
        name: "rename",
        op: op::RENAME,
        path: Some("oldname"),
        dfd: None,
        path2: Some("newname"),
        dfd2: None,
        fd: None,
    },
    Syscall {
        name: "renameat",
        op: op::RENAME,
        path: Some("oldname"),
        dfd: Some("olddfd"),
        path2: Some("newname"),
        dfd2: Some("newdfd"),
        fd: None,
    },
    Syscall {
        name: "renameat2",
        op: op::RENAME,
        path: Some("oldname"),
        dfd: Some("olddfd"),
        path2: Some("newname"),
        dfd2: Some("newdfd"),
        fd: None,
    },
    sc("unlink", op::DELETE, "pathname", None),
    sc("unlinkat", op::DELETE, "pathname", Some("dfd")),
    sc("rmdir", op::DELETE, "pathname", None),
];

/// The `SysCfg` of one syscall, or `None` when this kernel lacks it. Which argument is which
/// comes from the syscall's entry tracepoint format in tracefs (`SYSCALL_DEFINE` names), so a
/// missing syscall is skipped, not guessed.
fn syscall_cfg(s: &Syscall) -> Result<Option<SysCfg>, TraceError> {
    if syscall_nr(s.name).is_none() {
        return Ok(None);
    }
    let Some(enter) = Format::read("syscalls", &format!("sys_enter_{}", s.name))? else {
        return Ok(None);
    };
    cfg_from_format(s, &enter).map(Some)
}

/// The `SysCfg` of `s`, its argument slots found in `enter`, the format of its
/// `sys_enter_*` tracepoint.
fn cfg_from_format(s: &Syscall, enter: &Format) -> Result<SysCfg, TraceError> {
    // Arguments follow `__syscall_nr`, one 8-byte slot each.
    let first = (enter.field("__syscall_nr")? + 4).next_multiple_of(8);
    let arg = |name: Option<&str>| -> Result<u32, TraceError> {
        let Some(name) = name else { return Ok(0) };
        let off = enter.field(name)?;
        match off.checked_sub(first).map(|d| (d / 8, d % 8)) {
            Some((i, 0)) if i < 6 => Ok(i + 1),
            _ => Err(TraceError::Format {
                path: enter.path.clone(),
                detail: format!("field {name:?} at offset {off} is not a syscall argument slot"),
            }),
        }
    };
    let cfg = SysCfg {
        op: s.op,
        pad0: 0,
        dfd_arg: arg(s.dfd)?,
        path_arg: arg(s.path)?,
        dfd2_arg: arg(s.dfd2)?,
        path2_arg: arg(s.path2)?,
        fd_arg: arg(s.fd)?,
        pad: 0,
    };
    if !cfg.has_args() {
        return Err(TraceError::Format {
            path: enter.path.clone(),
            detail: format!("syscall {} has no path or fd argument to record", s.name),
        });
    }
    Ok(cfg)
}

/// Fill the programs' `SYS_CFG` map: which syscalls exist here, and which of their
/// arguments to send.
pub(crate) fn fill_table(ebpf: &mut Ebpf) -> Result<(), TraceError> {
    let mut cfg_map: BpfArray<_, SysCfg> =
        BpfArray::try_from(ebpf.map_mut("SYS_CFG").expect("SYS_CFG is in the object"))
            .map_err(|e| aya_error("opening map", "SYS_CFG", &e))?;
    for s in SYSCALLS {
        let Some(cfg) = syscall_cfg(s)? else {
            tracing::debug!("syscall {} does not exist here; skipped", s.name);
            continue;
        };
        let nr = syscall_nr(s.name).unwrap_or_default() as u32;
        if nr >= SYS_NR_SLOTS {
            return Err(TraceError::Load {
                program: "SYS_CFG".into(),
                detail: format!(
                    "syscall {} has number {nr}, beyond the {SYS_NR_SLOTS} slots",
                    s.name
                ),
                verifier_log: String::new(),
            });
        }
        cfg_map
            .set(nr, cfg, 0)
            .map_err(|e| aya_error("filling map", "SYS_CFG", &e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::fmt::Write as _;
    use std::path::Path;

    use super::*;

    /// A `sys_enter_*` format as tracefs prints it: `__syscall_nr` at 8, then one 8-byte
    /// slot per argument from 16.
    fn format(name: &str, args: &[&str]) -> Format {
        let mut text = format!(
            "name: sys_enter_{name}\nID: 1\nformat:\n\
             \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
             \tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n"
        );
        for (i, a) in args.iter().enumerate() {
            let _ = writeln!(
                text,
                "\tfield:long {a};\toffset:{};\tsize:8;\tsigned:0;",
                16 + 8 * i
            );
        }
        Format::parse(Path::new(name), &text).unwrap()
    }

    fn entry(name: &str) -> &'static Syscall {
        SYSCALLS.iter().find(|s| s.name == name).unwrap()
    }

    #[test]
    fn table_names_are_unique_and_numbered_within_the_slots() {
        let mut seen = BTreeSet::new();
        let mut numbers = BTreeSet::new();
        for s in SYSCALLS {
            assert!(seen.insert(s.name), "{} listed twice", s.name);
            assert!(
                s.path.is_some() || s.fd.is_some(),
                "{} records neither a path nor an fd",
                s.name
            );
            assert_eq!(
                s.dfd2.is_some(),
                s.path2.is_some() && s.dfd.is_some(),
                "{}",
                s.name
            );
            if let Some(nr) = syscall_nr(s.name) {
                assert!(
                    (0..i64::from(SYS_NR_SLOTS)).contains(&nr),
                    "{} is {nr}",
                    s.name
                );
                assert!(numbers.insert(nr), "{} shares number {nr}", s.name);
            }
        }
        // The `*at` forms exist everywhere; the old ones only where the arch has them.
        assert_eq!(syscall_nr("openat"), Some(libc::SYS_openat));
        assert_eq!(syscall_nr("renameat2"), Some(libc::SYS_renameat2));
        assert_eq!(syscall_nr("no_such_syscall"), None);
        #[cfg(target_arch = "x86_64")]
        assert_eq!(syscall_nr("newstat"), Some(libc::SYS_stat));
        #[cfg(not(target_arch = "x86_64"))]
        assert_eq!(syscall_nr("open"), None);
    }

    #[test]
    fn argument_slots_come_from_the_format() {
        let cfg = cfg_from_format(
            entry("openat"),
            &format("openat", &["dfd", "filename", "flags", "mode"]),
        )
        .unwrap();
        assert_eq!((cfg.op, cfg.dfd_arg, cfg.path_arg), (op::OPEN, 1, 2));
        assert_eq!((cfg.dfd2_arg, cfg.path2_arg, cfg.fd_arg), (0, 0, 0));

        let cfg = cfg_from_format(
            entry("renameat2"),
            &format(
                "renameat2",
                &["olddfd", "oldname", "newdfd", "newname", "flags"],
            ),
        )
        .unwrap();
        assert_eq!(
            (
                cfg.op,
                cfg.dfd_arg,
                cfg.path_arg,
                cfg.dfd2_arg,
                cfg.path2_arg
            ),
            (op::RENAME, 1, 2, 3, 4)
        );

        let cfg = cfg_from_format(
            entry("getdents64"),
            &format("getdents64", &["fd", "dirent", "count"]),
        )
        .unwrap();
        assert_eq!((cfg.op, cfg.fd_arg, cfg.path_arg), (op::GETDENTS, 1, 0));
    }

    #[test]
    fn a_format_that_does_not_match_is_refused() {
        // The field the table names is missing.
        let e = cfg_from_format(entry("openat"), &format("openat", &["dfd", "name"]));
        assert!(e.unwrap_err().to_string().contains("\"filename\""));
        // A field that is not on an argument slot (between two slots).
        let text = "ID: 1\nformat:\n\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n\
                    \tfield:const char * filename;\toffset:20;\tsize:8;\tsigned:0;\n";
        let f = Format::parse(Path::new("chdir"), text).unwrap();
        let e = cfg_from_format(entry("chdir"), &f).unwrap_err().to_string();
        assert!(
            e.contains("offset 20 is not a syscall argument slot"),
            "{e}"
        );
        // Beyond the sixth argument.
        let args = ["a", "b", "c", "d", "e", "f", "filename"];
        let e = cfg_from_format(entry("chdir"), &format("chdir", &args)).unwrap_err();
        assert!(e.to_string().contains("offset 64"), "{e}");
    }

    /// Every syscall of the table that has a number here has a usable entry in this
    /// kernel's tracefs (where it is mounted: the e2e tests need it anyway).
    #[test]
    fn this_kernel_has_every_numbered_syscall() {
        if !crate::tracefs::is_mounted() {
            minify_fixtures::skip(&format!(
                "tracefs not mounted at {}",
                crate::tracefs::TRACEFS
            ));
            return;
        }
        for s in SYSCALLS {
            if syscall_nr(s.name).is_some() {
                let cfg = syscall_cfg(s).unwrap();
                assert!(cfg.is_some_and(|c| c.op == s.op), "{}", s.name);
            }
        }
    }
}
