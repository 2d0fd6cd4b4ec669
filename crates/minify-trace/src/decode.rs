//! Ring-buffer records -> [`minify_model::TraceEvent`]s: parse the wire format of
//! `minify-trace-common`, turn leaf-first path walks into absolute paths, and resolve
//! relative requested paths against their walked base directory. Each syscall comes whole in
//! one record (sent at its exit, with its result); a successful exec comes from the
//! scheduler's exec event.

use std::collections::{BTreeMap, HashMap};

use minify_model::trace::Special;
use minify_model::{AccessKind, ImagePath, Trace, TraceEvent};
use minify_trace_common::{
    COMM_LEN, EV_EXEC, EV_FORK, EV_PROC_EXIT, EV_SYSCALL, EXIT_FLAG_CREATED, EventHeader,
    HEADER_LEN, TAG_ARGV0, TAG_COMM, TAG_COMPONENT, TAG_DIR_DEF, TAG_DIR_REF, TAG_END_ERROR,
    TAG_END_ROOT, TAG_END_TRUNCATED, TAG_END_UNREACHABLE, TAG_USER_PATH, TAG_USER_PATH2,
    TAG_WALK_BASE, TAG_WALK_BASE2, TAG_WALK_EXE, TAG_WALK_FD, op,
};

use crate::{ProcessInfo, Recording};

/// A path walk from the kernel: components leaf first, and how it ended.
#[derive(Debug, Default, Clone)]
struct Walk {
    comps: Vec<String>,
    end: u8,
    /// `TAG_DIR_REF`: the walk ended at a directory sent before; this is its id.
    ref_id: Option<u64>,
    /// `TAG_DIR_DEF`: the components from this index on are the path of directory `id`.
    def: Option<(u64, usize)>,
}

/// `prefix` followed by `comps` taken root-first (they are stored leaf first).
fn join_rev(prefix: &str, comps: &[String]) -> String {
    let mut s = if prefix == "/" {
        String::new()
    } else {
        prefix.to_owned()
    };
    for c in comps.iter().rev() {
        s.push('/');
        s.push_str(c);
    }
    if s.is_empty() {
        s.push('/');
    }
    s
}

/// The pieces of one record's payload.
#[derive(Debug, Default)]
struct Pieces {
    user: Option<String>,
    user2: Option<String>,
    base: Option<Walk>,
    base2: Option<Walk>,
    fd: Option<Walk>,
    exe: Option<Walk>,
    argv0: Option<String>,
    /// `TAG_COMM` (scheduler events).
    comm: Option<String>,
}

fn parse_pieces(mut p: &[u8]) -> Pieces {
    let mut out = Pieces::default();
    // Which walk the current components belong to.
    let mut cur: Option<&mut Walk> = None;
    let take_id = |p: &mut &[u8]| -> Option<u64> {
        let (id, rest) = p.split_first_chunk::<8>()?;
        *p = rest;
        Some(u64::from_le_bytes(*id))
    };
    let take_str = |p: &mut &[u8]| -> String {
        let n = p.iter().position(|&b| b == 0).unwrap_or(p.len());
        let s = String::from_utf8_lossy(&p[..n]).into_owned();
        *p = p.get(n + 1..).unwrap_or_default();
        s
    };
    while let Some((&tag, rest)) = p.split_first() {
        p = rest;
        match tag {
            TAG_USER_PATH => out.user = Some(take_str(&mut p)),
            TAG_USER_PATH2 => out.user2 = Some(take_str(&mut p)),
            TAG_ARGV0 => out.argv0 = Some(take_str(&mut p)),
            TAG_COMM => {
                let Some((name, rest)) = p.split_first_chunk::<COMM_LEN>() else {
                    break;
                };
                p = rest;
                let n = name.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
                out.comm = Some(String::from_utf8_lossy(&name[..n]).into_owned());
            }
            TAG_COMPONENT => {
                let s = take_str(&mut p);
                if let Some(w) = cur.as_deref_mut() {
                    w.comps.push(s);
                }
            }
            TAG_WALK_BASE | TAG_WALK_BASE2 | TAG_WALK_FD | TAG_WALK_EXE => {
                let slot = match tag {
                    TAG_WALK_BASE => &mut out.base,
                    TAG_WALK_BASE2 => &mut out.base2,
                    TAG_WALK_FD => &mut out.fd,
                    _ => &mut out.exe,
                };
                cur = Some(slot.insert(Walk::default()));
            }
            TAG_END_ROOT | TAG_END_UNREACHABLE | TAG_END_TRUNCATED | TAG_END_ERROR => {
                if let Some(w) = cur.take() {
                    w.end = tag;
                }
            }
            TAG_DIR_DEF => {
                let Some(id) = take_id(&mut p) else { break };
                if let Some(w) = cur.as_deref_mut() {
                    w.def = Some((id, w.comps.len()));
                }
            }
            TAG_DIR_REF => {
                let Some(id) = take_id(&mut p) else { break };
                if let Some(w) = cur.take() {
                    w.end = tag;
                    w.ref_id = Some(id);
                }
            }
            // Unknown tag: the rest cannot be trusted.
            _ => break,
        }
    }
    out
}

/// The paths a syscall asked for.
struct Pending {
    op: u32,
    /// Absolute requested path(s); `None` when a relative path's base was unreachable.
    path: Option<String>,
    path2: Option<String>,
    /// For getdents: the directory.
    fd_path: Option<String>,
}

/// Turns records into a [`Recording`], in arrival order.
#[derive(Default)]
pub(crate) struct Decoder {
    events: Vec<TraceEvent>,
    /// Process (tgid) -> info, plus arrival order.
    procs: HashMap<u32, ProcessInfo>,
    order: Vec<u32>,
    /// child tid -> parent tgid, from forks.
    parents: HashMap<u32, u32>,
    /// Processes that have exec'd inside the cgroup a binary under their root, or descend
    /// from one that had. pid -> the `exec_id` from which its events count: that first exec
    /// (0 for a child forked by a started process).
    started: HashMap<u32, u32>,
    /// `exec_id` of the record being decoded.
    cur_exec_id: u32,
    /// Drop events of processes not yet `started` (see [`crate::TraceOptions::from_first_exec`]).
    gate: bool,
    before_exec: u64,
    /// Directories the kernel side has sent (`TAG_DIR_DEF`): id -> path (`None`: outside
    /// the task's root).
    dirs: HashMap<u64, Option<String>>,
    records: u64,
    unreachable: u64,
    malformed: u64,
}

/// Absolute form of a requested path: as is when absolute, else joined onto its base.
fn absolute(user: Option<&String>, base: Option<String>) -> Option<String> {
    let user = user?;
    if user.starts_with('/') {
        if is_clean(user) {
            return Some(user.clone());
        }
        return Some(ImagePath::new(user).as_str().to_owned());
    }
    let base = base?;
    // Fast path (the common case: `name` in a walked directory): nothing to normalise.
    if !user.is_empty()
        && is_clean(&base)
        && user
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
    {
        let mut s = base;
        if s != "/" {
            s.push('/');
        }
        s.push_str(user);
        return Some(s);
    }
    Some(ImagePath::new(&base).join(user).as_str().to_owned())
}

/// Whether an absolute path is already in `ImagePath` normal form: no empty, `.` or `..`
/// component and no trailing slash (except `/` itself).
fn is_clean(p: &str) -> bool {
    if p == "/" {
        return true;
    }
    p.starts_with('/')
        && !p.ends_with('/')
        && p[1..]
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

impl Decoder {
    /// The absolute path a walk describes (when it reached the task's root, directly or
    /// through a directory sent before), remembering the directory it defines.
    fn resolve(&mut self, w: Option<&Walk>) -> Option<String> {
        let w = w?;
        let path = match (w.end, w.ref_id) {
            (TAG_END_ROOT, _) => Some(join_rev("/", &w.comps)),
            (TAG_DIR_REF, Some(id)) => match self.dirs.get(&id) {
                Some(Some(dir)) => Some(join_rev(dir, &w.comps)),
                Some(None) => None,
                None => {
                    // Defined by an event we never got (cannot happen: the kernel side only
                    // caches delivered definitions), so count it rather than guess.
                    self.malformed += 1;
                    None
                }
            },
            _ => None,
        };
        if let Some((id, from)) = w.def {
            let dir = match w.end {
                TAG_END_ROOT => Some(join_rev("/", w.comps.get(from..).unwrap_or_default())),
                _ => None,
            };
            self.dirs.insert(id, dir);
        }
        path
    }

    /// Whether a walk ended outside the task's root (directly, or through a directory sent
    /// before as outside), as opposed to resolving or being cut short.
    fn outside_root(&self, w: Option<&Walk>) -> bool {
        w.is_some_and(|w| match (w.end, w.ref_id) {
            (TAG_END_UNREACHABLE, _) => true,
            (TAG_DIR_REF, Some(id)) => matches!(self.dirs.get(&id), Some(None)),
            _ => false,
        })
    }

    fn comm(&self, pid: u32) -> String {
        self.procs
            .get(&pid)
            .map(|p| p.comm.clone())
            .unwrap_or_default()
    }

    pub(crate) fn new(from_first_exec: bool) -> Decoder {
        Decoder {
            gate: from_first_exec,
            ..Decoder::default()
        }
    }

    /// Events decoded so far.
    pub(crate) fn event_count(&self) -> usize {
        self.events.len()
    }

    /// The events decoded after the first `n`.
    pub(crate) fn events_since(&self, n: usize) -> &[TraceEvent] {
        self.events.get(n..).unwrap_or_default()
    }

    /// Whether events of `pid` at `exec_id` belong to the workload (see `started`).
    fn is_started(&self, pid: u32, exec_id: u32) -> bool {
        self.started.get(&pid).is_some_and(|&from| exec_id >= from)
    }

    /// Feed a sequence of frames (one ring-buffer record, or what was left in a batch):
    /// each a `u32` record length, 4 zero bytes, the record, padding to 8 bytes.
    pub(crate) fn feed_frames(&mut self, mut frames: &[u8]) {
        while let Some((len, _)) = frames.split_first_chunk::<4>() {
            let len = u32::from_le_bytes(*len) as usize;
            let start = minify_trace_common::FRAME_HEADER;
            let Some(rec) = frames.get(start..start + len) else {
                self.malformed += 1;
                break;
            };
            self.feed(rec);
            frames = frames
                .get(minify_trace_common::frame_len(len)..)
                .unwrap_or_default();
        }
    }

    /// Feed one record.
    pub(crate) fn feed(&mut self, rec: &[u8]) {
        self.records += 1;
        if rec.len() < HEADER_LEN {
            self.malformed += 1;
            return;
        }
        // SAFETY: `EventHeader` is plain old data; the read is unaligned-safe.
        #[allow(unsafe_code)]
        let h: EventHeader = unsafe { std::ptr::read_unaligned(rec.as_ptr().cast()) };
        self.cur_exec_id = h.exec_id;
        let end = (HEADER_LEN + h.payload_len as usize).min(rec.len());
        let pieces = parse_pieces(&rec[HEADER_LEN..end]);
        // Only scheduler events carry `comm`; syscalls take their process's.
        let comm = pieces.comm.clone().unwrap_or_default();
        self.see_process(h.pid, &comm);
        let comm = if comm.is_empty() {
            self.comm(h.pid)
        } else {
            comm
        };
        match u32::from(h.kind) {
            EV_SYSCALL => self.syscall(&h, &pieces, &comm),
            EV_EXEC => self.exec(&h, &pieces, &comm),
            EV_FORK => {
                let child = h.ret as u32;
                self.parents.insert(child, h.pid);
                if self.is_started(h.pid, h.exec_id) {
                    self.started.insert(child, 0);
                }
            }
            EV_PROC_EXIT => {
                if h.tid == h.pid
                    && let Some(p) = self.procs.get_mut(&h.pid)
                {
                    p.exit_code = Some((h.ret as i32) >> 8);
                }
            }
            _ => self.malformed += 1,
        }
    }

    fn see_process(&mut self, pid: u32, comm: &str) {
        if pid == 0 {
            return;
        }
        let p = self.procs.entry(pid).or_insert_with(|| {
            self.order.push(pid);
            ProcessInfo {
                pid,
                ppid: None,
                comm: String::new(),
                execs: Vec::new(),
                exit_code: None,
            }
        });
        if !comm.is_empty() && p.comm != comm {
            comm.clone_into(&mut p.comm);
        }
    }

    /// The requested paths of a syscall record.
    fn requested(&mut self, op: u32, pc: &Pieces) -> Pending {
        let base = self.resolve(pc.base.as_ref());
        let base2 = self.resolve(pc.base2.as_ref());
        let fd_path = self.resolve(pc.fd.as_ref());
        let mut path = absolute(pc.user.as_ref(), base);
        if op == op::CHDIR && path.is_none() && pc.base.is_none() {
            // A successful chdir to a relative path: the cwd it was relative to is gone, the
            // walk is of where it led (the new cwd, symlinks resolved).
            path.clone_from(&fd_path);
        }
        let path2 = absolute(pc.user2.as_ref(), base2);
        if (pc.user.is_some() && path.is_none())
            || (pc.user2.is_some() && path2.is_none())
            || (pc.fd.is_some() && fd_path.is_none())
        {
            self.unreachable += 1;
        }
        Pending {
            op,
            path,
            path2,
            fd_path,
        }
    }

    /// A whole syscall in one record (sent at its exit).
    fn syscall(&mut self, h: &EventHeader, pc: &Pieces, comm: &str) {
        let p = self.requested(u32::from(h.op), pc);
        // For opens the fd walk is the opened file; for getdents, the listed directory.
        let opened = if u32::from(h.op) == op::OPEN {
            p.fd_path.clone()
        } else {
            None
        };
        self.complete(h.pid, comm, &p, h.ret, h.flags, opened);
    }

    fn push(
        &mut self,
        pid: u32,
        comm: &str,
        kind: AccessKind,
        path: String,
        ok: bool,
        detail: String,
    ) {
        if self.gate && !self.is_started(pid, self.cur_exec_id) {
            self.before_exec += 1;
            return;
        }
        // Cheap pre-check: `Special::of` allocates, and nearly no path is special.
        let special =
            if path.starts_with("/proc") || path.starts_with("/sys") || path.starts_with("/dev") {
                Special::of(&path)
            } else {
                None
            };
        self.events.push(TraceEvent {
            pid,
            comm: comm.to_owned(),
            kind,
            special,
            path,
            ok,
            detail,
        });
    }

    fn complete(
        &mut self,
        pid: u32,
        comm: &str,
        p: &Pending,
        ret: i64,
        flags: u32,
        opened: Option<String>,
    ) {
        let exists = p.op == op::CREATE && ret == -i64::from(libc::EEXIST);
        let ok = ret >= 0 || exists;
        let simple = |k| (k, p.path.clone());
        let first = match p.op {
            op::OPEN => {
                if let Some(real) = opened {
                    if flags & EXIT_FLAG_CREATED != 0 {
                        self.push(
                            pid,
                            comm,
                            AccessKind::Create,
                            real.clone(),
                            true,
                            String::new(),
                        );
                    }
                    self.push(pid, comm, AccessKind::Open, real, ok, String::new());
                }
                simple(AccessKind::OpenRequested)
            }
            op::STAT => simple(AccessKind::Stat),
            op::ACCESS => simple(AccessKind::Access),
            op::READLINK => simple(AccessKind::Readlink),
            op::EXEC => simple(AccessKind::Exec),
            op::CHDIR => simple(AccessKind::Chdir),
            // The last getdents64 of a listing returns 0; the listing was already recorded.
            op::GETDENTS if ret == 0 => return,
            op::GETDENTS => (AccessKind::ListDir, p.fd_path.clone()),
            // mkdir/mknod/symlink/link failing with EEXIST is a lookup that found the path:
            // nginx `mkdir`s its temp dirs at every start and only works if they are there
            // already (it cannot create /var/lib/nginx/body in a read-only layer of the
            // minified image otherwise), so the closure must see them as existing, not created.
            op::CREATE if exists => simple(AccessKind::Stat),
            op::CREATE => simple(AccessKind::Create),
            op::RENAME => {
                if let Some(to) = p.path2.clone() {
                    self.push(pid, comm, AccessKind::RenameTo, to, ok, String::new());
                }
                simple(AccessKind::RenameFrom)
            }
            op::DELETE => simple(AccessKind::Delete),
            _ => {
                self.malformed += 1;
                return;
            }
        };
        if let (kind, Some(path)) = first {
            self.push(pid, comm, kind, path, ok, String::new());
        }
    }

    fn exec(&mut self, h: &EventHeader, pc: &Pieces, comm: &str) {
        // Resolve both walks before anything else: a walk may define a directory the other
        // refers to.
        let exe = self.resolve(pc.exe.as_ref());
        let base = self.resolve(pc.base.as_ref());
        // The workload starts at an exec of a binary inside the task's root. runc 1.1
        // re-executes itself from a copy (a memfd or a detached bind mount, as
        // `/proc/self/fd/N`) when `runc init` starts, racing with its own cgroup join: when
        // the join wins, that exec happens inside the cgroup, on the host side, and what
        // follows (the host's loader and libc, `/var/lib/docker/...`) is still set-up.
        // Only a binary known to be outside the root holds the start back: a walk too deep to
        // send (truncated) may still be the workload.
        if exe.is_some() || !self.outside_root(pc.exe.as_ref()) {
            self.started.entry(h.pid).or_insert(h.exec_id);
        }
        match exe {
            Some(exe) => {
                if let Some(p) = self.procs.get_mut(&h.pid) {
                    p.execs.push(exe.clone());
                }
                let argv0 = pc.argv0.clone().unwrap_or_default();
                self.push(h.pid, comm, AccessKind::ExecBinary, exe, true, argv0);
            }
            None => self.unreachable += 1,
        }
        // The path as the caller asked for it (the binary, or a symlink to it). `execveat`
        // on a descriptor gives `/dev/fd/N[/name]`, which names no file of the image: the
        // exe walk above is what it ran.
        if let Some(requested) = absolute(pc.user.as_ref(), base)
            && !requested.starts_with("/dev/fd/")
        {
            self.push(
                h.pid,
                comm,
                AccessKind::Exec,
                requested,
                true,
                String::new(),
            );
        }
    }

    /// Finish: attach the loss counters and the process tree.
    pub(crate) fn finish(mut self, lost_by_op: &BTreeMap<u32, u64>) -> Recording {
        let mut lost: BTreeMap<AccessKind, u64> = BTreeMap::new();
        for (&o, &n) in lost_by_op {
            if n == 0 {
                continue;
            }
            for k in kinds_of_op(o) {
                *lost.entry(*k).or_default() += n;
            }
        }
        let mut processes = Vec::new();
        for pid in &self.order {
            if let Some(mut p) = self.procs.remove(pid) {
                p.ppid = self.parents.get(pid).copied();
                processes.push(p);
            }
        }
        if self.before_exec > 0 {
            tracing::debug!(
                "{} events before the first exec dropped (runtime set-up)",
                self.before_exec
            );
        }
        if self.malformed > 0 {
            tracing::warn!("{} malformed trace records ignored", self.malformed);
        }
        Recording {
            trace: Trace {
                events: self.events,
                lost,
            },
            processes,
            records: self.records,
            unreachable: self.unreachable,
        }
    }
}

/// The access kinds an op's events carry (for attributing losses).
pub(crate) fn kinds_of_op(o: u32) -> &'static [AccessKind] {
    match o {
        op::OPEN => &[AccessKind::Open, AccessKind::OpenRequested],
        op::STAT => &[AccessKind::Stat],
        op::ACCESS => &[AccessKind::Access],
        op::READLINK => &[AccessKind::Readlink],
        op::EXEC => &[AccessKind::Exec],
        op::CHDIR => &[AccessKind::Chdir],
        op::GETDENTS => &[AccessKind::ListDir],
        op::CREATE => &[AccessKind::Create],
        op::RENAME => &[AccessKind::RenameFrom, AccessKind::RenameTo],
        op::DELETE => &[AccessKind::Delete],
        op::SCHED => &[AccessKind::ExecBinary],
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as the programs write it; scheduler events get the comm `test` first in
    /// their payload.
    fn record(kind: u32, o: u32, tid: u32, ret: i64, flags: u32, payload: &[u8]) -> Vec<u8> {
        let mut full = Vec::new();
        if kind != EV_SYSCALL {
            full.push(TAG_COMM);
            full.extend_from_slice(b"test\0\0\0\0\0\0\0\0\0\0\0\0");
        }
        full.extend_from_slice(payload);
        let payload = full.as_slice();
        let h = EventHeader {
            kind: kind as u16,
            op: o as u16,
            flags,
            pid: tid,
            tid,
            ret,
            payload_len: payload.len() as u32,
            exec_id: 1,
        };
        // SAFETY: plain old data, viewed as bytes.
        #[allow(unsafe_code)]
        let bytes = unsafe { std::slice::from_raw_parts((&raw const h).cast::<u8>(), HEADER_LEN) };
        let mut v = bytes.to_vec();
        v.extend_from_slice(payload);
        v
    }

    /// Each event of a recording as (kind, path, ok).
    fn kind_path_ok(r: &Recording) -> Vec<(AccessKind, &str, bool)> {
        r.trace
            .events
            .iter()
            .map(|e| (e.kind, e.path.as_str(), e.ok))
            .collect()
    }

    /// One whole-syscall record: the requested paths and then what the exit adds.
    /// A successful stat of an absolute path by `tid`.
    fn stat_ok(tid: u32, path: &str) -> Vec<u8> {
        sys(op::STAT, tid, 0, 0, &user(TAG_USER_PATH, path), &[])
    }

    /// The paths of a recording's events, in order.
    fn paths(r: &Recording) -> Vec<&str> {
        r.trace.events.iter().map(|e| e.path.as_str()).collect()
    }

    fn sys(o: u32, tid: u32, ret: i64, flags: u32, requested: &[u8], exit: &[u8]) -> Vec<u8> {
        let mut payload = requested.to_vec();
        payload.extend_from_slice(exit);
        // Syscall records carry no comm; the process's comes from scheduler events.
        record(EV_SYSCALL, o, tid, ret, flags, &payload)
    }

    fn walk(tag: u8, leaf_first: &[&str], end: u8) -> Vec<u8> {
        let mut v = vec![tag];
        for c in leaf_first {
            v.push(TAG_COMPONENT);
            v.extend_from_slice(c.as_bytes());
            v.push(0);
        }
        v.push(end);
        v
    }

    fn user(tag: u8, s: &str) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        v
    }

    #[test]
    fn relative_open_is_resolved() {
        let mut d = Decoder::default();
        let mut enter = user(TAG_USER_PATH, "../lib/libc.so.6");
        enter.extend(walk(TAG_WALK_BASE, &["bin", "usr"], TAG_END_ROOT));
        d.feed(&record(
            EV_EXEC,
            0,
            7,
            7,
            0,
            &walk(TAG_WALK_EXE, &["sh"], TAG_END_ROOT),
        ));
        let exit = walk(
            TAG_WALK_FD,
            &["libc.so.6", "x86_64-linux-gnu", "lib", "usr"],
            TAG_END_ROOT,
        );
        d.feed(&sys(op::OPEN, 7, 3, 0, &enter, &exit));
        let r = d.finish(&BTreeMap::new());
        let got = kind_path_ok(&r);
        assert_eq!(
            got,
            [
                (AccessKind::ExecBinary, "/sh", true),
                (
                    AccessKind::Open,
                    "/usr/lib/x86_64-linux-gnu/libc.so.6",
                    true
                ),
                (AccessKind::OpenRequested, "/usr/lib/libc.so.6", true),
            ]
        );
        assert_eq!(r.processes[0].comm, "test");
    }

    #[test]
    fn failed_stat_created_file_rename_and_special() {
        let mut d = Decoder::default();
        d.feed(&sys(op::STAT, 1, -2, 0, &user(TAG_USER_PATH, "/nope"), &[]));
        d.feed(&sys(
            op::OPEN,
            1,
            4,
            EXIT_FLAG_CREATED,
            &user(TAG_USER_PATH, "/tmp/new"),
            &walk(TAG_WALK_FD, &["new", "tmp"], TAG_END_ROOT),
        ));
        let mut ren = user(TAG_USER_PATH, "/tmp/a");
        ren.extend(user(TAG_USER_PATH2, "/tmp/b"));
        d.feed(&sys(op::RENAME, 1, 0, 0, &ren, &[]));
        d.feed(&sys(
            op::OPEN,
            1,
            5,
            0,
            &user(TAG_USER_PATH, "/proc/self/maps"),
            &walk(TAG_WALK_FD, &["maps", "1", "proc"], TAG_END_ROOT),
        ));
        let mut lost = BTreeMap::new();
        lost.insert(op::OPEN, 2);
        let r = d.finish(&lost);
        let ev = &r.trace.events;
        assert_eq!(
            (ev[0].kind, ev[0].path.as_str(), ev[0].ok),
            (AccessKind::Stat, "/nope", false)
        );
        assert!(
            ev.iter()
                .any(|e| e.kind == AccessKind::Create && e.path == "/tmp/new")
        );
        assert!(
            ev.iter()
                .any(|e| e.kind == AccessKind::RenameFrom && e.path == "/tmp/a")
        );
        assert!(
            ev.iter()
                .any(|e| e.kind == AccessKind::RenameTo && e.path == "/tmp/b")
        );
        let maps = ev.iter().find(|e| e.path == "/proc/1/maps").unwrap();
        assert_eq!(maps.special, Some(Special::Proc));
        assert_eq!(r.trace.lost[&AccessKind::Open], 2);
        assert_eq!(r.trace.lost_total(), 4);
    }

    #[test]
    fn mkdir_of_an_existing_path_is_a_successful_lookup() {
        let mut d = Decoder::default();
        d.feed(&sys(
            op::CREATE,
            1,
            -i64::from(libc::EEXIST),
            0,
            &user(TAG_USER_PATH, "/var/lib/nginx/body"),
            &[],
        ));
        d.feed(&sys(
            op::CREATE,
            1,
            -i64::from(libc::ENOENT),
            0,
            &user(TAG_USER_PATH, "/nope/x"),
            &[],
        ));
        let r = d.finish(&BTreeMap::new());
        let got = kind_path_ok(&r);
        assert_eq!(
            got,
            [
                (AccessKind::Stat, "/var/lib/nginx/body", true),
                (AccessKind::Create, "/nope/x", false),
            ]
        );
    }

    fn with_id(mut v: Vec<u8>, tag: u8, id: u64) -> Vec<u8> {
        v.push(tag);
        v.extend_from_slice(&id.to_le_bytes());
        v
    }

    #[test]
    fn cached_directories_are_defined_then_referenced() {
        let mut d = Decoder::default();
        // Open of /usr/lib/python3/x.py: the parent directory is defined as id 7.
        let mut exit = vec![TAG_WALK_FD, TAG_COMPONENT];
        exit.extend_from_slice(b"x.py\0");
        exit = with_id(exit, TAG_DIR_DEF, 7);
        for c in ["python3", "lib", "usr"] {
            exit.push(TAG_COMPONENT);
            exit.extend_from_slice(c.as_bytes());
            exit.push(0);
        }
        exit.push(TAG_END_ROOT);
        d.feed(&sys(
            op::OPEN,
            1,
            3,
            0,
            &user(TAG_USER_PATH, "/usr/lib/python3/x.py"),
            &exit,
        ));
        // A relative stat in that directory: its base is just a reference.
        let mut enter = user(TAG_USER_PATH, "y.py");
        enter.push(TAG_WALK_BASE);
        enter = with_id(enter, TAG_DIR_REF, 7);
        d.feed(&sys(op::STAT, 1, 0, 0, &enter, &[]));
        // An open of a file in a subdirectory of it: leaf, subdir, then the reference.
        let mut exit2 = walk(TAG_WALK_FD, &["z.py", "sub"], 0);
        exit2.pop();
        exit2 = with_id(exit2, TAG_DIR_REF, 7);
        d.feed(&sys(
            op::OPEN,
            1,
            4,
            0,
            &user(TAG_USER_PATH, "sub/z.py"),
            &exit2,
        ));
        let r = d.finish(&BTreeMap::new());
        let got: Vec<(AccessKind, &str)> = kind_path_ok(&r)
            .into_iter()
            .map(|(k, p, _)| (k, p))
            .collect();
        assert!(
            got.contains(&(AccessKind::Open, "/usr/lib/python3/x.py")),
            "{got:?}"
        );
        assert!(
            got.contains(&(AccessKind::Stat, "/usr/lib/python3/y.py")),
            "{got:?}"
        );
        assert!(
            got.contains(&(AccessKind::Open, "/usr/lib/python3/sub/z.py")),
            "{got:?}"
        );
    }

    #[test]
    fn fast_path_matches_image_path() {
        for (user, base) in [
            ("/usr/lib/x", None),
            ("/usr//lib/./x/", None),
            ("/a/../b", None),
            ("x.py", Some("/usr/lib")),
            ("x.py", Some("/")),
            ("../x", Some("/usr/lib")),
            ("./x", Some("/usr")),
            ("", Some("/usr")),
            ("a//b", Some("/usr")),
        ] {
            let got = absolute(Some(&user.to_owned()), base.map(str::to_owned)).unwrap();
            let want = ImagePath::new(base.unwrap_or("/")).join(user);
            assert_eq!(got, want.as_str(), "{user:?} in {base:?}");
        }
    }

    #[test]
    fn whole_syscall_records() {
        let mut d = Decoder::default();
        let mut rec = user(TAG_USER_PATH, "libc.so.6");
        rec.extend(walk(TAG_WALK_BASE, &["lib"], TAG_END_ROOT));
        rec.extend(walk(
            TAG_WALK_FD,
            &["libc.so.6", "lib", "usr"],
            TAG_END_ROOT,
        ));
        d.feed(&record(EV_SYSCALL, op::OPEN, 2, 3, 0, &rec));
        d.feed(&record(
            EV_SYSCALL,
            op::STAT,
            2,
            -2,
            0,
            &user(TAG_USER_PATH, "/etc/nope"),
        ));
        d.feed(&record(
            EV_SYSCALL,
            op::GETDENTS,
            2,
            64,
            0,
            &walk(TAG_WALK_FD, &["etc"], TAG_END_ROOT),
        ));
        let r = d.finish(&BTreeMap::new());
        let got = kind_path_ok(&r);
        assert_eq!(
            got,
            [
                (AccessKind::Open, "/usr/lib/libc.so.6", true),
                (AccessKind::OpenRequested, "/lib/libc.so.6", true),
                (AccessKind::Stat, "/etc/nope", false),
                (AccessKind::ListDir, "/etc", true),
            ]
        );
    }

    #[test]
    fn unreachable_and_garbage_are_dropped() {
        let mut d = Decoder::default();
        let mut enter = user(TAG_USER_PATH, "x");
        enter.extend(walk(TAG_WALK_BASE, &["outside"], TAG_END_UNREACHABLE));
        d.feed(&sys(op::STAT, 3, 0, 0, &enter, &[]));
        d.feed(&[1, 2, 3]);
        d.feed(&sys(op::STAT, 3, 0, 0, &[0xff, b'a', b'b'], &[]));
        let r = d.finish(&BTreeMap::new());
        assert!(r.trace.events.is_empty(), "{:?}", r.trace.events);
        assert_eq!(r.unreachable, 1);
    }

    #[test]
    fn runtime_setup_before_first_exec_is_dropped() {
        let mut d = Decoder::new(true);
        // runc init, before pivot_root: host paths.
        d.feed(&stat_ok(5, "/var/lib/docker/x/merged/proc"));
        // runc re-executing its own copy (no path from the root reaches it), then the
        // host's loader: still set-up.
        let mut clone = walk(TAG_WALK_EXE, &["runc"], TAG_END_UNREACHABLE);
        clone.extend(user(TAG_USER_PATH, "/proc/self/fd/3"));
        d.feed(&with_exec_id(record(EV_EXEC, 0, 5, 5, 0, &clone), 2));
        d.feed(&with_exec_id(
            sys(
                op::ACCESS,
                5,
                -2,
                0,
                &user(TAG_USER_PATH, "/etc/ld.so.preload"),
                &[],
            ),
            2,
        ));
        let mut ex = walk(TAG_WALK_EXE, &["cat", "bin", "usr"], TAG_END_ROOT);
        ex.extend(user(TAG_USER_PATH, "/bin/cat"));
        d.feed(&with_exec_id(record(EV_EXEC, 0, 5, 5, 0, &ex), 3));
        d.feed(&with_exec_id(record(EV_FORK, 0, 5, 6, 0, &[]), 3));
        d.feed(&stat_ok(6, "/etc/hosts"));
        let r = d.finish(&BTreeMap::new());
        assert_eq!(paths(&r), ["/usr/bin/cat", "/bin/cat", "/etc/hosts"]);
        assert_eq!(
            r.processes.iter().find(|p| p.pid == 6).unwrap().ppid,
            Some(5)
        );
    }

    #[test]
    fn exec_of_a_path_too_deep_to_send_still_starts_the_workload() {
        let mut d = Decoder::new(true);
        let ex = walk(TAG_WALK_EXE, &["app", "deep"], TAG_END_TRUNCATED);
        d.feed(&record(EV_EXEC, 0, 5, 5, 0, &ex));
        d.feed(&stat_ok(5, "/etc/hosts"));
        let r = d.finish(&BTreeMap::new());
        assert_eq!(paths(&r), ["/etc/hosts"]);
    }

    #[test]
    fn exec_records_binary_and_argv0() {
        let mut d = Decoder::default();
        let mut ex = walk(TAG_WALK_EXE, &["ls", "bin", "usr"], TAG_END_ROOT);
        ex.extend(user(TAG_ARGV0, "ls"));
        ex.extend(user(TAG_USER_PATH, "/bin/ls"));
        d.feed(&record(EV_EXEC, 0, 9, 9, 0, &ex));
        d.feed(&record(EV_PROC_EXIT, 0, 9, 256, 0, &[]));
        let r = d.finish(&BTreeMap::new());
        let ev = &r.trace.events;
        assert_eq!(
            (ev[0].kind, ev[0].path.as_str(), ev[0].detail.as_str()),
            (AccessKind::ExecBinary, "/usr/bin/ls", "ls")
        );
        assert_eq!(
            (ev[1].kind, ev[1].path.as_str(), ev[1].ok),
            (AccessKind::Exec, "/bin/ls", true)
        );
        assert_eq!(r.processes[0].exit_code, Some(1));
        assert_eq!(r.processes[0].execs, ["/usr/bin/ls"]);
    }

    #[test]
    fn exec_paths_relative_via_fd_and_failed() {
        let mut d = Decoder::default();
        // `./run.sh` from /app: the requested path comes with the cwd's walk.
        let mut ex = walk(TAG_WALK_EXE, &["dash", "bin", "usr"], TAG_END_ROOT);
        ex.extend(user(TAG_USER_PATH, "./run.sh"));
        ex.extend(walk(TAG_WALK_BASE, &["app"], TAG_END_ROOT));
        d.feed(&record(EV_EXEC, 0, 4, 4, 0, &ex));
        // fexecve: `/dev/fd/3` names no image file; only the binary is recorded.
        let mut ex = walk(TAG_WALK_EXE, &["true", "bin", "usr"], TAG_END_ROOT);
        ex.extend(user(TAG_USER_PATH, "/dev/fd/3"));
        d.feed(&record(EV_EXEC, 0, 4, 4, 0, &ex));
        // A failed exec comes as a syscall, its path still in memory.
        d.feed(&sys(
            op::EXEC,
            4,
            -i64::from(libc::ENOENT),
            0,
            &user(TAG_USER_PATH, "/usr/local/bin/x"),
            &[],
        ));
        let r = d.finish(&BTreeMap::new());
        let got = kind_path_ok(&r);
        assert_eq!(
            got,
            [
                (AccessKind::ExecBinary, "/usr/bin/dash", true),
                (AccessKind::Exec, "/app/run.sh", true),
                (AccessKind::ExecBinary, "/usr/bin/true", true),
                (AccessKind::Exec, "/usr/local/bin/x", false),
            ]
        );
        assert_eq!(r.unreachable, 0);
    }

    #[test]
    fn chdir_success_and_failure() {
        let mut d = Decoder::default();
        d.feed(&record(
            EV_EXEC,
            0,
            2,
            2,
            0,
            &walk(TAG_WALK_EXE, &["sh"], TAG_END_ROOT),
        ));
        // Relative and successful: the cwd it was relative to is gone; the new cwd's walk
        // (symlinks resolved) is what it led to.
        d.feed(&sys(
            op::CHDIR,
            2,
            0,
            0,
            &user(TAG_USER_PATH, "lib"),
            &walk(TAG_WALK_FD, &["lib", "usr"], TAG_END_ROOT),
        ));
        // Absolute and successful: the path as given (it may go through a symlink).
        d.feed(&sys(
            op::CHDIR,
            2,
            0,
            0,
            &user(TAG_USER_PATH, "/var/run"),
            &walk(TAG_WALK_FD, &["run"], TAG_END_ROOT),
        ));
        // Failed: resolved against the unchanged cwd.
        let mut req = user(TAG_USER_PATH, "nope");
        req.extend(walk(TAG_WALK_BASE, &["run"], TAG_END_ROOT));
        d.feed(&sys(op::CHDIR, 2, -i64::from(libc::ENOENT), 0, &req, &[]));
        let r = d.finish(&BTreeMap::new());
        let got = kind_path_ok(&r);
        assert_eq!(
            got[1..],
            [
                (AccessKind::Chdir, "/usr/lib", true),
                (AccessKind::Chdir, "/var/run", true),
                (AccessKind::Chdir, "/run/nope", false),
            ]
        );
        assert_eq!(r.unreachable, 0);
        // The comm of the exec event is carried to syscall records, which have none.
        assert!(r.trace.events.iter().all(|e| e.comm == "test"));
    }

    /// Frames as the programs send them: `u32` length, 4 zero bytes, record, padding.
    fn frames(records: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for r in records {
            out.extend_from_slice(&(r.len() as u32).to_le_bytes());
            out.extend_from_slice(&[0; 4]);
            out.extend_from_slice(r);
            out.resize(out.len().next_multiple_of(8), 0);
        }
        out
    }

    fn with_exec_id(mut rec: Vec<u8>, exec_id: u32) -> Vec<u8> {
        let at = std::mem::offset_of!(EventHeader, exec_id);
        rec[at..at + 4].copy_from_slice(&exec_id.to_le_bytes());
        rec
    }

    #[test]
    fn batches_of_frames_and_late_events_from_before_an_exec() {
        let mut d = Decoder::new(true);
        // runc init (pid 5, exec id 3) execs the workload (exec id 4 afterwards); the
        // batch with its last set-up stat was sent from another CPU and arrives after the
        // exec: it is still set-up, not workload.
        let mut ex = walk(TAG_WALK_EXE, &["cat", "bin", "usr"], TAG_END_ROOT);
        ex.extend(user(TAG_USER_PATH, "/bin/cat"));
        let exec = with_exec_id(record(EV_EXEC, 0, 5, 5, 0, &ex), 4);
        let late = with_exec_id(stat_ok(5, "/proc/self/fd"), 3);
        let after = with_exec_id(
            sys(op::STAT, 5, 0, 0, &user(TAG_USER_PATH, "/etc/hosts"), &[]),
            4,
        );
        d.feed_frames(&frames(&[exec]));
        d.feed_frames(&frames(&[late, after]));
        // A truncated frame is counted, not trusted.
        let mut bad = frames(&[sys(op::STAT, 5, 0, 0, &user(TAG_USER_PATH, "/x"), &[])]);
        bad.truncate(bad.len() - 12);
        d.feed_frames(&bad);
        let r = d.finish(&BTreeMap::new());
        assert_eq!(paths(&r), ["/usr/bin/cat", "/bin/cat", "/etc/hosts"]);
    }
}
