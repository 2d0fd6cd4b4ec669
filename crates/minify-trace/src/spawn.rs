//! Running a command inside a [`TraceCgroup`] so that it is traced from its first exec:
//! the child moves itself into the cgroup (writes `0` to `cgroup.procs`) right before `execve`,
//! after the tracer is attached, so nothing it does is missed and nothing else is caught.
//!
//! With a [`Sandbox`] the command runs chrooted in a directory (a debootstrapped or exported
//! image rootfs) with its own mount and pid namespaces, a fresh `/proc` and a minimal `/dev`,
//! so paths come out as the image sees them. This is a debugging and test harness, not a
//! security boundary: the command still runs as root.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::PathBuf;
use std::process::ExitStatus;

use nix::sched::CloneFlags;
use nix::sys::wait::waitpid;
use nix::unistd::ForkResult;

use crate::{TraceCgroup, TraceError};

/// `PATH` inside a sandbox (what Docker sets by default).
const SANDBOX_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Run the command chrooted in `root` with new mount and pid namespaces.
#[derive(Clone, Debug)]
pub struct Sandbox {
    pub root: PathBuf,
}

/// A command to run inside the trace cgroup.
#[derive(Clone, Debug)]
pub struct SpawnSpec {
    /// Program and arguments; the program is looked up in `PATH` (inside the sandbox, if any).
    pub argv: Vec<OsString>,
    pub sandbox: Option<Sandbox>,
    /// Send the command's stdout to our stderr (when our stdout carries machine output).
    pub stdout_to_stderr: bool,
}

/// Everything the child needs, prepared before `fork` (the child may not allocate: the
/// parent has other threads, e.g. the tracer's reader).
struct Prepared {
    argv: Vec<CString>,
    /// The environment to exec with: ours, with `PATH` set to the usual system one inside a
    /// sandbox (the host's `PATH` means nothing in an image).
    env: Vec<CString>,
    /// Where to look for the program, in order: `argv[0]` itself when it has a `/`, else each
    /// `PATH` directory joined with it (the search `execvp` does, done ahead of `fork` because
    /// `execvp` reads the *parent's* `PATH`, which means nothing inside an image).
    candidates: Vec<CString>,
    root: Option<CString>,
    procs_fd: i32,
    stdout_to_stderr: bool,
}

fn cstr(s: &[u8], what: &str) -> Result<CString, TraceError> {
    CString::new(s).map_err(|_| TraceError::Spawn {
        command: what.into(),
        detail: "contains a NUL byte".into(),
    })
}

impl SpawnSpec {
    /// A plain command (no sandbox).
    pub fn new<I, S>(argv: I) -> SpawnSpec
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        SpawnSpec {
            argv: argv.into_iter().map(Into::into).collect(),
            sandbox: None,
            stdout_to_stderr: false,
        }
    }

    /// Run it in `root` (see [`Sandbox`]).
    #[must_use]
    pub fn in_root(mut self, root: impl Into<PathBuf>) -> SpawnSpec {
        self.sandbox = Some(Sandbox { root: root.into() });
        self
    }

    fn display(&self) -> String {
        self.argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Start the command in `cgroup`, wait for it, and return its exit status. Blocks.
    pub fn run(&self, cgroup: &TraceCgroup) -> Result<ExitStatus, TraceError> {
        let command = self.display();
        let spawn_err = |detail: String| TraceError::Spawn {
            command: command.clone(),
            detail,
        };
        if self.argv.is_empty() {
            return Err(spawn_err("empty command".into()));
        }
        let argv = self
            .argv
            .iter()
            .map(|a| cstr(a.as_bytes(), &command))
            .collect::<Result<Vec<_>, _>>()?;
        let root = match &self.sandbox {
            None => None,
            Some(s) => {
                let meta =
                    fs_err::metadata(&s.root).map_err(|e| spawn_err(format!("--root: {e}")))?;
                if !meta.is_dir() {
                    return Err(spawn_err(format!(
                        "--root {} is not a directory",
                        s.root.display()
                    )));
                }
                let canon = fs_err::canonicalize(&s.root).map_err(|e| spawn_err(e.to_string()))?;
                Some(cstr(canon.as_os_str().as_bytes(), &command)?)
            }
        };
        let mut env = Vec::new();
        for (k, v) in std::env::vars_os() {
            if root.is_some() && k == "PATH" {
                continue;
            }
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            env.push(cstr(&kv, &command)?);
        }
        if root.is_some() {
            env.push(cstr(SANDBOX_PATH.as_bytes(), &command)?);
        }
        let prog = self.argv[0].as_bytes();
        let candidates = if prog.contains(&b'/') {
            vec![cstr(prog, &command)?]
        } else {
            let path = if root.is_some() {
                SANDBOX_PATH.trim_start_matches("PATH=").to_owned()
            } else {
                std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into())
            };
            path.split(':')
                .filter(|d| !d.is_empty())
                .map(|d| {
                    let mut full = d.as_bytes().to_vec();
                    full.push(b'/');
                    full.extend_from_slice(prog);
                    cstr(&full, &command)
                })
                .collect::<Result<Vec<_>, _>>()?
        };
        let procs = cgroup.path().join("cgroup.procs");
        let procs_file = fs_err::OpenOptions::new()
            .write(true)
            .open(&procs)
            .map_err(|e| TraceError::from_io(format!("opening {}", procs.display()), e))?;
        let prepared = Prepared {
            argv,
            env,
            candidates,
            root,
            procs_fd: std::os::fd::AsRawFd::as_raw_fd(&procs_file),
            stdout_to_stderr: self.stdout_to_stderr,
        };
        // SAFETY: the child only makes async-signal-safe calls on data prepared above, then
        // execs or `_exit`s.
        #[allow(unsafe_code)]
        let fork = unsafe { nix::unistd::fork() }.map_err(|e| spawn_err(format!("fork: {e}")))?;
        match fork {
            ForkResult::Child => child(&prepared),
            ForkResult::Parent { child } => {
                drop(procs_file);
                let status = loop {
                    match waitpid(child, None) {
                        Ok(s) => break s,
                        Err(nix::errno::Errno::EINTR) => {}
                        Err(e) => return Err(spawn_err(format!("waitpid: {e}"))),
                    }
                };
                Ok(match status {
                    nix::sys::wait::WaitStatus::Exited(_, code) => ExitStatus::from_raw(code << 8),
                    nix::sys::wait::WaitStatus::Signaled(_, sig, _) => {
                        ExitStatus::from_raw(sig as i32)
                    }
                    _ => ExitStatus::from_raw(1 << 8),
                })
            }
        }
    }
}

/// Write `minify: <parts>: <strerror(errno)>` to stderr and `_exit(code)`, without
/// allocating (we are between `fork` and `exec` of a multi-threaded parent).
fn die_parts(parts: &[&[u8]], code: i32) -> ! {
    // SAFETY: write(2), strerror on a valid errno and _exit(2) are async-signal-safe enough
    // here (strerror returns a static string for known errnos).
    #[allow(unsafe_code)]
    unsafe {
        let errno = *libc::__errno_location();
        libc::write(2, b"minify: ".as_ptr().cast(), 8);
        for p in parts {
            libc::write(2, p.as_ptr().cast(), p.len());
        }
        let e = libc::strerror(errno);
        libc::write(2, b": ".as_ptr().cast(), 2);
        libc::write(2, e.cast(), libc::strlen(e));
        libc::write(2, b"\n".as_ptr().cast(), 1);
        libc::_exit(code)
    }
}

fn die(msg: &[u8], code: i32) -> ! {
    die_parts(&[msg], code)
}

/// In the forked child.
#[allow(unsafe_code)]
fn child(p: &Prepared) -> ! {
    // SAFETY: resetting dispositions the parent may have changed (it ignores SIGINT while
    // the command runs, and an ignored signal stays ignored across exec).
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_DFL);
        libc::signal(libc::SIGQUIT, libc::SIG_DFL);
        if p.stdout_to_stderr {
            libc::dup2(2, 1);
        }
    }
    if let Some(root) = &p.root {
        if nix::sched::unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID).is_err() {
            die(b"unshare(mount, pid namespaces)", 126);
        }
        // A new pid namespace applies to children: fork once more; this process waits and
        // passes the exit status on.
        // SAFETY: as in `run`.
        match unsafe { nix::unistd::fork() } {
            Err(_) => die(b"fork", 126),
            Ok(ForkResult::Parent { child }) => {
                let code = loop {
                    match waitpid(child, None) {
                        Ok(nix::sys::wait::WaitStatus::Exited(_, c)) => break c,
                        Ok(nix::sys::wait::WaitStatus::Signaled(_, s, _)) => break 128 + s as i32,
                        Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                        Err(_) => break 126,
                    }
                };
                // SAFETY: async-signal-safe.
                unsafe { libc::_exit(code) }
            }
            Ok(ForkResult::Child) => enter_root(root),
        }
    }
    // SAFETY: write(2) on an fd we own; "0" moves the calling process.
    if unsafe { libc::write(p.procs_fd, b"0".as_ptr().cast(), 1) } != 1 {
        die(b"moving into the trace cgroup", 126);
    }
    let mut ptrs: [*const libc::c_char; 256] = [std::ptr::null(); 256];
    for (slot, a) in ptrs.iter_mut().zip(p.argv.iter().take(255)) {
        *slot = a.as_ptr();
    }
    let mut envp: [*const libc::c_char; 1024] = [std::ptr::null(); 1024];
    for (slot, a) in envp.iter_mut().zip(p.env.iter().take(1023)) {
        *slot = a.as_ptr();
    }
    // Like execvp: try each candidate; a missing one moves on, and the most telling error
    // (EACCES over ENOENT) is what gets reported.
    let mut eacces = false;
    for c in &p.candidates {
        // SAFETY: NUL-terminated argv and envp of valid C strings.
        unsafe { libc::execve(c.as_ptr(), ptrs.as_ptr(), envp.as_ptr()) };
        // SAFETY: reading errno.
        let errno = unsafe { *libc::__errno_location() };
        if errno == libc::EACCES {
            eacces = true;
        } else if errno != libc::ENOENT && errno != libc::ENOTDIR {
            die(b"exec failed", 126);
        }
    }
    if eacces {
        // SAFETY: setting errno for the message.
        unsafe { *libc::__errno_location() = libc::EACCES };
        die(b"exec failed", 126);
    }
    // SAFETY: setting errno for the message.
    unsafe { *libc::__errno_location() = libc::ENOENT };
    die_parts(&[b"command not found: ", p.argv[0].as_bytes()], 127)
}

/// Private mounts, chroot, fresh `/proc` and a minimal `/dev` (after the chroot, so no path
/// from the image can lead a mount onto the host).
#[allow(unsafe_code)]
fn enter_root(root: &CString) {
    use nix::mount::{MsFlags, mount};
    if mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .is_err()
    {
        die(b"making mounts private", 126);
    }
    // SAFETY: chroot/chdir with valid C strings.
    unsafe {
        if libc::chroot(root.as_ptr()) != 0 {
            die(b"chroot", 126);
        }
        if libc::chdir(c"/".as_ptr()) != 0 {
            die(b"chdir /", 126);
        }
    }
    let is_dir = |p: &std::ffi::CStr| {
        // SAFETY: lstat into a zeroed stat buffer; a symlink is not followed.
        unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            libc::lstat(p.as_ptr(), &raw mut st) == 0
                && (st.st_mode & libc::S_IFMT) == libc::S_IFDIR
        }
    };
    if is_dir(c"/proc") {
        let _ = mount(
            Some("proc"),
            "/proc",
            Some("proc"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        );
    }
    if is_dir(c"/dev")
        && mount(
            Some("tmpfs"),
            "/dev",
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("mode=755,size=64k"),
        )
        .is_ok()
    {
        for (name, minor) in [
            (c"/dev/null", 3),
            (c"/dev/zero", 5),
            (c"/dev/full", 7),
            (c"/dev/random", 8),
            (c"/dev/urandom", 9),
        ] {
            // SAFETY: mknod/chmod on paths inside our private tmpfs.
            unsafe {
                libc::mknod(
                    name.as_ptr(),
                    libc::S_IFCHR | 0o666,
                    libc::makedev(1, minor),
                );
                libc::chmod(name.as_ptr(), 0o666);
            }
        }
        // SAFETY: symlink with valid C strings.
        unsafe {
            libc::symlink(c"/proc/self/fd".as_ptr(), c"/dev/fd".as_ptr());
            libc::symlink(c"/proc/self/fd/0".as_ptr(), c"/dev/stdin".as_ptr());
            libc::symlink(c"/proc/self/fd/1".as_ptr(), c"/dev/stdout".as_ptr());
            libc::symlink(c"/proc/self/fd/2".as_ptr(), c"/dev/stderr".as_ptr());
        }
    }
}
