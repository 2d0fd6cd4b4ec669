//! The closure computation itself: one [`Builder`] per run accumulates kept paths with the
//! highest-priority reason, then adds parents and applies excludes.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::rc::Rc;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use minify_elf::{DepKind, ElfClass, ElfInfo, Libc, Resolver, env_var};
use minify_model::trace::Special;
use minify_model::{
    AccessKind, EntryKind, ImagePath, Reason, ResolveError, Rootfs, Trace, resolve,
};
use minify_packages::PackageDb;

use crate::skeleton::{self, Found};
use crate::{Closure, ClosureError, ClosureOptions, DefaultSet, DefaultSetReport, Kept};

/// `PATH` when the image sets none (Docker's default).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The kernel follows at most this many nested `#!` interpreters (`BINPRM_MAX_RECURSION`).
const MAX_SCRIPT_DEPTH: usize = 4;
/// The kernel reads this much of a file to find the `#!` line (`BINPRM_BUF_SIZE`).
const SHEBANG_BYTES: u64 = 256;

pub(crate) struct Builder<'a> {
    fs: &'a dyn Rootfs,
    resolver: Resolver<'a>,
    entries: BTreeMap<ImagePath, Kept>,
    warnings: Vec<String>,
    /// Programs whose ELF closure / shebang has been handled (real paths).
    programs_done: HashSet<ImagePath>,
    /// The first ELF program seen (entrypoint preferred): the architecture default-set
    /// libraries are looked up for.
    main_elf: Option<(Rc<ElfInfo>, Libc)>,
    /// The image's working directory, where the entrypoint runs (absolute, as configured).
    workdir: ImagePath,
    /// The image's package model, read once when first needed.
    db: Option<PackageDb>,
}

/// Lookup kinds: a successful one means the workload needed the path to exist.
fn is_lookup(k: AccessKind) -> bool {
    !matches!(k, AccessKind::Create | AccessKind::RenameTo)
}

impl<'a> Builder<'a> {
    /// `workdir`: the image config's `WorkingDir` (empty or relative ones are taken from `/`,
    /// as Docker does).
    pub(crate) fn new(fs: &'a dyn Rootfs, workdir: &str) -> Self {
        Builder {
            fs,
            resolver: Resolver::new(fs, fs.env()),
            entries: BTreeMap::new(),
            warnings: Vec::new(),
            programs_done: HashSet::new(),
            main_elf: None,
            workdir: ImagePath::new(workdir),
            db: None,
        }
    }

    pub(crate) fn run(
        mut self,
        trace: &Trace,
        entrypoint: &[String],
        opts: &ClosureOptions,
    ) -> Result<Closure, ClosureError> {
        // Validate user globs before doing any work, so a typo fails fast.
        let excludes = build_excludes(&opts.exclude)?;
        let include_globs: Vec<(String, Option<GlobSet>)> = opts
            .include
            .iter()
            .map(|p| Ok((p.clone(), include_glob(p)?)))
            .collect::<Result<_, ClosureError>>()?;

        self.note_loaded(trace);
        self.add_entrypoint(entrypoint);
        self.add_trace(trace);

        for bin in &opts.include_bin {
            let found = self.find_include_bin(bin)?;
            self.add_program(
                found.as_str(),
                Reason::Include,
                &format!("--include-bin {bin}"),
                0,
            );
        }
        for (pat, glob) in &include_globs {
            self.add_include(pat, glob.as_ref())?;
        }

        let mut reports = Vec::new();
        for set in DefaultSet::ALL {
            if !opts.default_sets.enabled(set) {
                continue;
            }
            let before: BTreeSet<ImagePath> = self.entries.keys().cloned().collect();
            let absent = if set == DefaultSet::Skeleton {
                self.add_skeleton(&opts.skeleton)
            } else {
                self.add_default_set(set);
                Vec::new()
            };
            let added: Vec<ImagePath> = self
                .entries
                .keys()
                .filter(|p| !before.contains(*p))
                .cloned()
                .collect();
            reports.push((set, added, absent));
        }

        let (packages, package_warnings) =
            self.add_packages(&opts.packages, opts.default_sets.locale)?;
        self.warnings.extend(package_warnings);

        self.add_parents();
        let removed = self.apply_excludes(excludes.as_ref(), &opts.exclude);
        let generated = self.add_package_db(excludes.as_ref());
        let (package_accounts, package_totals) = {
            let db = self.db.get_or_insert_with(|| PackageDb::read(self.fs));
            let entries = &self.entries;
            minify_packages::account(self.fs, db, &|p| entries.contains_key(p))
        };

        let default_sets = reports
            .into_iter()
            .map(|(set, added, absent)| {
                // What the set keeps for its own reason: a link it went through on the way
                // (`/etc/os-release` -> `../usr/lib/os-release`) is kept as a symlink.
                let paths: Vec<ImagePath> = added
                    .into_iter()
                    .filter(|p| {
                        self.entries
                            .get(p)
                            .is_some_and(|k| k.reason == Reason::DefaultSet)
                    })
                    .collect();
                let bytes = paths.iter().map(|p| self.file_size(p)).sum();
                DefaultSetReport {
                    set,
                    paths,
                    bytes,
                    absent,
                }
            })
            .collect();
        let mut required_bytes = 0;
        let mut kept_bytes = 0;
        for (p, k) in &self.entries {
            // A generated file (the pruned package database) is packed with its own bytes.
            let size = generated
                .get(p)
                .map_or_else(|| self.file_size(p), |g| g.len() as u64);
            kept_bytes += size;
            if matches!(k.reason, Reason::Traced | Reason::Elf | Reason::Interpreter) {
                required_bytes += size;
            }
        }
        // One warning per problem, however many programs ran into it (first-seen order).
        let mut seen = HashSet::new();
        self.warnings.retain(|w| seen.insert(w.clone()));
        Ok(Closure {
            entries: self.entries,
            warnings: self.warnings,
            default_sets,
            excluded: removed,
            required_bytes,
            kept_bytes,
            packages,
            generated,
            package_db: self.db.unwrap_or_default(),
            package_accounts,
            package_totals,
        })
    }

    /// The pruned package database (`minify_packages::prune`) of what is kept now, with the
    /// parents of its files; a file an `exclude` glob matches stays out. Returns the generated
    /// contents of the kept ones.
    fn add_package_db(&mut self, excludes: Option<&GlobSet>) -> BTreeMap<ImagePath, Vec<u8>> {
        let db = self.db.take().unwrap_or_else(|| PackageDb::read(self.fs));
        let pruned = {
            let entries = &self.entries;
            minify_packages::prune(self.fs, &db, &|p| entries.contains_key(p))
        };
        // The model's own problems (a status with CRLF, repeated packages, a paragraph
        // without a name) in both granularities; the package rule says the same (kept once).
        self.warnings
            .extend(db.warnings.iter().map(|w| format!("package model: {w}")));
        self.db = Some(db);
        self.warnings.extend(
            pruned
                .warnings
                .iter()
                .map(|w| format!("package database: {w}")),
        );
        let mut generated = BTreeMap::new();
        for (path, f) in pruned.files {
            if excludes.is_some_and(|x| x.is_match(path.as_str())) {
                continue;
            }
            self.keep(&path, Reason::PackageDb, &f.detail);
            if let Some(bytes) = f.content {
                generated.insert(path, bytes);
            }
        }
        self.add_parents();
        generated
    }

    /// The package rule (module `packages`): keep what it asks for.
    pub(crate) fn add_packages(
        &mut self,
        opts: &crate::PackageOptions,
        locale: bool,
    ) -> Result<(Vec<crate::PackageReport>, Vec<String>), ClosureError> {
        let db = self.db.take().unwrap_or_else(|| PackageDb::read(self.fs));
        let x = crate::packages::expand(self.fs, &db, &self.entries, opts, locale);
        self.db = Some(db);
        let x = x?;
        for (p, reason, detail) in &x.keep {
            self.keep(p, *reason, detail);
        }
        Ok((x.reports, x.warnings))
    }

    /// For [`crate::expand_allowlist`]: an allowlist's entry as it is.
    pub(crate) fn keep_entry(&mut self, path: &ImagePath, reason: Reason, detail: &str) {
        self.keep(path, reason, detail);
    }

    pub(crate) fn add_parents_pub(&mut self) {
        self.add_parents();
    }

    pub(crate) fn into_entries(self) -> BTreeMap<ImagePath, Kept> {
        self.entries
    }

    fn file_size(&self, p: &ImagePath) -> u64 {
        self.fs
            .entry(p)
            .filter(|e| matches!(e.kind, EntryKind::File))
            .map_or(0, |e| e.size)
    }

    /// Keep `path` (which exists in the image) with `reason` unless it already has a
    /// higher-priority one. A hard link also keeps the file it links to.
    fn keep(&mut self, path: &ImagePath, reason: Reason, detail: &str) {
        let Some(entry) = self.fs.entry(path) else {
            return;
        };
        let hardlink = match &entry.kind {
            EntryKind::Hardlink { target } => Some(target.clone()),
            _ => None,
        };
        let replace = match self.entries.get(path) {
            Some(old) => (reason, detail) < (old.reason, old.detail.as_str()),
            None => true,
        };
        if replace {
            self.entries.insert(
                path.clone(),
                Kept {
                    reason,
                    detail: detail.to_owned(),
                },
            );
        }
        if let Some(t) = hardlink
            && &t != path
            && !self.entries.contains_key(&t)
        {
            self.keep(&t, reason, &format!("hard link target of {path}"));
        }
    }

    fn keep_via(&mut self, via: &[ImagePath], to: &str) {
        for v in via {
            self.keep(v, Reason::Symlink, &format!("on the way to {to}"));
        }
    }

    /// Resolve `raw` in the image and keep the symlinks on the way and the final entry.
    /// A dangling symlink is kept as itself. Returns the final path when it exists.
    fn keep_resolved(
        &mut self,
        raw: &str,
        follow: bool,
        reason: Reason,
        detail: &str,
    ) -> Option<ImagePath> {
        match resolve(self.fs, raw, follow) {
            Ok(r) => {
                self.keep_via(&r.via, raw);
                self.keep(&r.path, reason, detail);
                Some(r.path)
            }
            Err(ResolveError::NotFound { .. }) if follow => {
                // A dangling link that was looked at (readlink, lstat): keep the link itself.
                let r = resolve(self.fs, raw, false).ok()?;
                self.keep_via(&r.via, raw);
                self.keep(&r.path, reason, detail);
                None
            }
            Err(ResolveError::NotFound { .. }) => None,
            Err(e) => {
                self.warnings.push(format!("{e}; not kept"));
                None
            }
        }
    }

    /// A path the workload looked up successfully but that is not in the image: it made it
    /// at run time (a lock file, a socket, a directory). The part of the way there that is
    /// in the image is as required as for any other lookup: the symlinks followed and the
    /// deepest directory reached. Postgres creates its lock file through `/var/run ->
    /// /run` into `/run/postgresql`, and without the link it cannot start.
    fn keep_way_to_missing(&mut self, raw: &str, follow: bool) {
        if let Err(ResolveError::NotFound { missing, via, .. }) = resolve(self.fs, raw, follow) {
            self.keep_via(&via, raw);
            if let Some(dir) = missing.parent().filter(|d| !d.is_root()) {
                self.keep(
                    &dir,
                    Reason::Traced,
                    &format!("on the way to {raw}, made at run time"),
                );
            }
        }
    }

    /// Tell the resolver which files the workload opened (the ELF ones among them were
    /// loaded): a `DT_NEEDED` that names one of them by its soname is satisfied by it, as in
    /// the loader.
    fn note_loaded(&mut self, trace: &Trace) {
        let mut opened = BTreeSet::new();
        for ev in &trace.events {
            if ev.ok
                && matches!(ev.kind, AccessKind::Open | AccessKind::OpenRequested)
                && ev.special.is_none()
                && Special::of(&ev.path).is_none()
                && let Ok(r) = resolve(self.fs, &ev.path, true)
            {
                opened.insert(r.path);
            }
        }
        self.resolver.set_loaded(&opened);
    }

    fn add_trace(&mut self, trace: &Trace) {
        // Per path: the lookup kinds that succeeded.
        let mut ok: BTreeMap<&str, BTreeSet<AccessKind>> = BTreeMap::new();
        let mut created_in: BTreeSet<&str> = BTreeSet::new();
        for ev in &trace.events {
            if ev.special.is_some() || Special::of(&ev.path).is_some() {
                continue;
            }
            if ev.ok && is_lookup(ev.kind) {
                ok.entry(ev.path.as_str()).or_default().insert(ev.kind);
            }
            // Creating `/var/lib/nginx/body` needs `/var/lib/nginx` to be there: the directory
            // a workload creates into is as required as one it opens (nginx exits at start
            // when it is missing). Directories the workload made itself are not in the image
            // and resolve to nothing.
            if ev.ok
                && matches!(ev.kind, AccessKind::Create | AccessKind::RenameTo)
                && let Some((dir, _)) = ev.path.rsplit_once('/')
                && !dir.is_empty()
            {
                created_in.insert(dir);
            }
        }
        for dir in created_in {
            if !ok.contains_key(dir) {
                self.keep_resolved(
                    dir,
                    true,
                    Reason::Traced,
                    "directory the workload created in",
                );
            }
        }
        for (path, kinds) in ok {
            if !path.starts_with('/') {
                self.warnings
                    .push(format!("trace path {path:?} is not absolute; ignored"));
                continue;
            }
            // Only readlink alone means the link itself, not what it points to.
            let follow = kinds.iter().any(|k| *k != AccessKind::Readlink);
            let detail = kinds.iter().map(|k| k.name()).collect::<Vec<_>>().join(",");
            let Some(real) = self.keep_resolved(path, follow, Reason::Traced, &detail) else {
                self.keep_way_to_missing(path, follow);
                continue;
            };
            if Special::of(real.as_str()).is_some() {
                continue;
            }
            let exec = kinds.contains(&AccessKind::Exec) || kinds.contains(&AccessKind::ExecBinary);
            let opened =
                kinds.contains(&AccessKind::Open) || kinds.contains(&AccessKind::OpenRequested);
            if exec {
                self.program_deps(&real, 0);
            } else if opened && self.resolver.is_elf_file(&real) {
                self.elf_deps(&real);
            } else if opened {
                self.script_deps(&real, 0);
            }
        }
    }

    fn add_entrypoint(&mut self, argv: &[String]) {
        let Some(first) = argv.first() else {
            self.warnings
                .push("the image has no entrypoint or cmd; only traced paths are kept".into());
            return;
        };
        let env = self.fs.env().to_vec();
        if !self.workdir.is_root() {
            // The runtime starts the workload in it; a symlink on the way must survive or
            // the runtime would create an empty directory in its place.
            let wd = self.workdir.to_string();
            self.keep_resolved(&wd, true, Reason::Traced, "image working directory");
        }
        let Some(found) = self.locate(first, &env) else {
            let wd = &self.workdir;
            self.warnings.push(if is_relative_path(first) {
                format!("entrypoint {first} is not in the image (looked up from the working directory {wd})")
            } else {
                format!("entrypoint {first} is not in the image (nor on its PATH)")
            });
            return;
        };
        self.add_program(&found, Reason::Traced, "image entrypoint", 0);
        // `sh -c "exec prog args"`: the program the shell runs is the workload too.
        let is_shell = first
            .rsplit('/')
            .next()
            .is_some_and(|n| matches!(n, "sh" | "bash" | "dash"));
        if is_shell
            && argv.get(1).is_some_and(|a| a == "-c")
            && let Some(script) = argv.get(2)
        {
            let mut words = script.split_whitespace();
            let mut w = words.next();
            if w == Some("exec") {
                w = words.next();
            }
            if let Some(w) =
                w.filter(|w| !w.contains(['$', '`', '(', ';', '|', '&', '<', '>', '=']))
                && let Some(p) = self.locate(w, &env)
            {
                self.add_program(&p, Reason::Traced, "run by the image entrypoint's shell", 0);
            }
        }
    }

    /// Where the runtime finds the program `prog` that the entrypoint names: a relative path
    /// with a `/` from the working directory (as the string `resolve` then follows, so `..`
    /// after a symlink goes where the kernel would), anything else as [`which`] does.
    fn locate(&self, prog: &str, env: &[String]) -> Option<String> {
        if !is_relative_path(prog) {
            return which(self.fs, prog, env).map(|p| p.to_string());
        }
        let raw = format!("{}/{prog}", self.workdir.as_str().trim_end_matches('/'));
        resolve(self.fs, &raw, true).ok().map(|_| raw)
    }

    /// Keep a program with the symlinks to it, its ELF closure and `#!` interpreter.
    fn add_program(&mut self, raw: &str, reason: Reason, detail: &str, depth: usize) {
        if let Some(real) = self.keep_resolved(raw, true, reason, detail) {
            self.program_deps(&real, depth);
        }
    }

    fn program_deps(&mut self, real: &ImagePath, depth: usize) {
        if self.resolver.is_elf_file(real) {
            self.elf_deps(real);
        } else {
            self.script_deps(real, depth);
        }
    }

    fn elf_deps(&mut self, real: &ImagePath) {
        if !self.programs_done.insert(real.clone()) {
            return;
        }
        match self.resolver.closure_of(real.as_str()) {
            Ok(deps) => {
                if self.main_elf.is_none()
                    && let Ok((_, info)) = self.resolver.info(real.as_str())
                    && info.interpreter.is_some()
                    && let Some(libc) = deps.libc
                {
                    self.main_elf = Some((info, libc));
                }
                for (p, d) in deps.kept {
                    let reason = match d.kind {
                        DepKind::Program => continue,
                        DepKind::Symlink => Reason::Symlink,
                        DepKind::Interpreter | DepKind::Library | DepKind::LoaderFile => {
                            Reason::Elf
                        }
                    };
                    self.keep(&p, reason, &d.detail);
                }
                self.warnings.extend(deps.warnings);
            }
            Err(e) => self
                .warnings
                .push(format!("{e}; its libraries are not followed")),
        }
    }

    /// If `real` is an executable `#!` script, keep its interpreter (and `env`'s target).
    fn script_deps(&mut self, real: &ImagePath, depth: usize) {
        let Some(entry) = self.fs.entry(real) else {
            return;
        };
        if !entry.is_file() || entry.mode & 0o111 == 0 {
            return;
        }
        if depth >= MAX_SCRIPT_DEPTH {
            self.warnings.push(format!(
                "{real}: more than {MAX_SCRIPT_DEPTH} nested #! interpreters; not followed further"
            ));
            return;
        }
        if !self.programs_done.insert(real.clone()) {
            return;
        }
        let Ok(head) = self.fs.read(real, Some(SHEBANG_BYTES)) else {
            return;
        };
        let Some(rest) = head.strip_prefix(b"#!") else {
            return;
        };
        let line_end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        let line = String::from_utf8_lossy(&rest[..line_end]);
        let line = line.trim();
        let (interp, arg) = match line.find([' ', '\t']) {
            Some(i) => (&line[..i], line[i..].trim()),
            None => (line, ""),
        };
        if interp.is_empty() {
            return;
        }
        let detail = format!("#! interpreter of {real}");
        let Some(ireal) = self.keep_resolved(interp, true, Reason::Interpreter, &detail) else {
            self.warnings.push(format!(
                "{real}: #! interpreter {interp} is not in the image"
            ));
            return;
        };
        self.program_deps(&ireal, depth + 1);
        if interp.rsplit('/').next() == Some("env") {
            // `#!/usr/bin/env [-S] [-i] [VAR=x] NAME ...`: NAME is looked up on the image PATH.
            let name = arg
                .split_whitespace()
                .find(|w| !w.starts_with('-') && !w.contains('='));
            if let Some(name) = name {
                let env = self.fs.env().to_vec();
                match which(self.fs, name, &env) {
                    Some(p) => {
                        let d = format!("#! interpreter of {real} (through env)");
                        self.add_program(p.as_str(), Reason::Interpreter, &d, depth + 1);
                    }
                    None => self.warnings.push(format!(
                        "{real}: #!{line}: {name} is not on the image's PATH"
                    )),
                }
            }
        }
    }

    /// An `--include-bin` program as found on the image's `PATH`, resolvable in the image.
    fn find_include_bin(&self, bin: &str) -> Result<ImagePath, ClosureError> {
        let Some(found) = which(self.fs, bin, self.fs.env()) else {
            return Err(ClosureError::IncludeBinNotFound {
                path: bin.to_owned(),
                reason: "not found on the image's PATH".into(),
            });
        };
        if let Err(e) = resolve(self.fs, found.as_str(), true) {
            return Err(ClosureError::IncludeBinNotFound {
                path: bin.to_owned(),
                reason: e.to_string(),
            });
        }
        Ok(found)
    }

    /// The errors [`Builder::run`] gives for the user's rules, in the same order, without
    /// a trace and without computing the kept set.
    pub(crate) fn check_rules(&self, opts: &ClosureOptions) -> Result<(), ClosureError> {
        build_excludes(&opts.exclude)?;
        let include_globs: Vec<(&String, Option<GlobSet>)> = opts
            .include
            .iter()
            .map(|p| Ok((p, include_glob(p)?)))
            .collect::<Result<_, ClosureError>>()?;
        for bin in &opts.include_bin {
            self.find_include_bin(bin)?;
        }
        for (pat, glob) in include_globs {
            if glob.is_none()
                && let Err(e) = resolve(self.fs, pat, true)
            {
                return Err(ClosureError::IncludeNotFound {
                    path: pat.clone(),
                    reason: e.to_string(),
                });
            }
        }
        crate::packages::check_included(self.fs, &opts.packages)
    }

    fn add_include(&mut self, pat: &str, glob: Option<&GlobSet>) -> Result<(), ClosureError> {
        let detail = format!("--include {pat}");
        let Some(glob) = glob else {
            return match resolve(self.fs, pat, true) {
                Ok(r) => {
                    self.keep_via(&r.via, pat);
                    self.keep_tree(&r.path, Reason::Include, &detail);
                    Ok(())
                }
                Err(e) => Err(ClosureError::IncludeNotFound {
                    path: pat.to_owned(),
                    reason: e.to_string(),
                }),
            };
        };
        let matches: Vec<ImagePath> = self
            .fs
            .paths()
            .into_iter()
            .filter(|p| glob.is_match(p.as_str()))
            .collect();
        if matches.is_empty() {
            self.warnings
                .push(format!("--include {pat} matched nothing in the image"));
        }
        for m in matches {
            self.keep_tree(&m, Reason::Include, &detail);
        }
        Ok(())
    }

    /// Keep `path` and, for a directory, everything below it. Symlinks met keep their target
    /// entry too (only the entry: a link to a directory does not pull the whole directory).
    fn keep_tree(&mut self, path: &ImagePath, reason: Reason, detail: &str) {
        let mut stack = vec![path.clone()];
        while let Some(p) = stack.pop() {
            let Some(entry) = self.fs.entry(&p) else {
                continue;
            };
            let is_link = entry.is_symlink();
            let is_dir = entry.is_dir();
            self.keep(&p, reason, detail);
            if is_link {
                self.keep_resolved(p.as_str(), true, reason, detail);
            } else if is_dir {
                stack.extend(self.fs.children(&p));
            }
        }
    }

    fn add_default_set(&mut self, set: DefaultSet) {
        let detail = set.name();
        for t in set.trees() {
            if let Ok(r) = resolve(self.fs, t, true) {
                self.keep_via(&r.via, t);
                self.keep_tree(&r.path, Reason::DefaultSet, detail);
            } else if let Ok(r) = resolve(self.fs, t, false) {
                // A dangling link (e.g. /etc/resolv.conf -> a runtime-made file): keep it.
                self.keep_via(&r.via, t);
                self.keep(&r.path, Reason::DefaultSet, detail);
            }
        }
        let names = set.libraries();
        if names.is_empty() {
            return;
        }
        let (like, libc) = match &self.main_elf {
            Some((info, flavour)) => ((**info).clone(), *flavour),
            None => (host_like(), Libc::Glibc),
        };
        if libc != Libc::Glibc {
            return; // NSS modules are a glibc feature
        }
        for lib in names {
            let Some((real, via)) = self.resolver.find_library(lib, &like, libc) else {
                continue;
            };
            self.keep_via(&via, lib);
            self.keep(&real, Reason::DefaultSet, detail);
            if let Ok(deps) = self.resolver.closure_of(real.as_str()) {
                for (p, d) in deps.kept {
                    let reason = if d.kind == DepKind::Symlink {
                        Reason::Symlink
                    } else {
                        Reason::DefaultSet
                    };
                    self.keep(&p, reason, detail);
                }
                self.warnings.extend(deps.warnings);
            }
        }
    }

    /// The `skeleton` set: each directory it looks for, as its entry alone (with the links
    /// on the way, inside the image). Returns the ones the source lacks, which are not made
    /// up: the output then behaves as the source does.
    fn add_skeleton(&mut self, input: &skeleton::SkeletonInput) -> Vec<String> {
        let (wanted, warnings) = skeleton::wanted(self.fs, input);
        self.warnings.extend(warnings);
        let mut absent = Vec::new();
        for w in wanted {
            match skeleton::find(self.fs, &w.path) {
                Found::Dir { path, via } => {
                    self.keep_via(&via, &w.path);
                    self.keep(&path, Reason::DefaultSet, &w.detail);
                }
                Found::Absent => {
                    if !absent.contains(&w.path) {
                        absent.push(w.path);
                    }
                }
                Found::Unusable(why) => {
                    self.warnings.push(format!("{}: {why}; not kept", w.detail));
                }
            }
        }
        if absent.iter().any(|p| p == "/tmp") {
            // Programs that make temporary files fail in the source as in the output; said
            // because a probe rarely shows it.
            self.warnings.push(
                "skeleton: the source image has no /tmp, so neither has the output (temporary files fail in both)"
                    .to_owned(),
            );
        }
        absent
    }

    /// Directories above a kept path that are not kept themselves.
    fn missing_parents(&self) -> BTreeSet<ImagePath> {
        let mut parents = BTreeSet::new();
        for p in self.entries.keys() {
            for a in p.ancestors() {
                if !self.entries.contains_key(&a) {
                    parents.insert(a);
                }
            }
        }
        parents
    }

    fn add_parents(&mut self) {
        for a in self.missing_parents() {
            self.keep(&a, Reason::Parent, "");
        }
    }

    fn apply_excludes(&mut self, set: Option<&GlobSet>, pats: &[String]) -> Vec<ImagePath> {
        let Some(set) = set else { return Vec::new() };
        let mut hits = vec![0usize; pats.len()];
        let mut removed = Vec::new();
        for p in self.entries.keys() {
            let m = set.matches(p.as_str());
            if !m.is_empty() {
                for i in m {
                    hits[i / 2] += 1;
                }
                removed.push(p.clone());
            }
        }
        for p in &removed {
            self.entries.remove(p);
        }
        // Directories above a path that stays are never removed.
        let restore = self.missing_parents();
        for a in &restore {
            self.keep(a, Reason::Parent, "");
        }
        removed.retain(|p| !restore.contains(p));
        for (pat, n) in pats.iter().zip(hits) {
            if n == 0 {
                self.warnings
                    .push(format!("--exclude {pat} matched no kept path"));
            }
        }
        removed
    }
}

fn host_like() -> ElfInfo {
    ElfInfo::bare(
        if cfg!(target_pointer_width = "64") {
            ElfClass::Elf64
        } else {
            ElfClass::Elf32
        },
        cfg!(target_endian = "little"),
        if cfg!(target_arch = "aarch64") {
            minify_elf::loader::EM_AARCH64
        } else {
            minify_elf::loader::EM_X86_64
        },
    )
}

fn has_glob_meta(p: &str) -> bool {
    p.contains(['*', '?', '[', '{'])
}

fn absolute(p: &str) -> String {
    if p.starts_with('/') {
        p.to_owned()
    } else {
        format!("/{p}")
    }
}

fn glob(rule: &'static str, pat: &str) -> Result<globset::Glob, ClosureError> {
    GlobBuilder::new(pat)
        .literal_separator(true)
        .build()
        .map_err(|e| ClosureError::InvalidGlob {
            rule,
            pattern: pat.to_owned(),
            reason: e.kind().to_string(),
        })
}

fn include_glob(pat: &str) -> Result<Option<GlobSet>, ClosureError> {
    if !has_glob_meta(pat) {
        return Ok(None);
    }
    let g = glob("--include", &absolute(pat.trim_end_matches('/')))?;
    let mut b = GlobSetBuilder::new();
    b.add(g);
    b.build().map(Some).map_err(|e| ClosureError::InvalidGlob {
        rule: "--include",
        pattern: pat.to_owned(),
        reason: e.to_string(),
    })
}

/// Each exclude pattern P compiles to two globs, P and P/** (a directory takes its contents
/// with it), so glob index `i / 2` is the pattern.
fn build_excludes(pats: &[String]) -> Result<Option<GlobSet>, ClosureError> {
    if pats.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for p in pats {
        // A relative pattern matches at any depth (`*.pyc` is every .pyc), like gitignore.
        let p = if p.starts_with('/') {
            p.clone()
        } else {
            format!("**/{p}")
        };
        let base = absolute(p.trim_end_matches('/'));
        let base = if base.is_empty() {
            "/".to_owned()
        } else {
            base
        };
        b.add(glob("--exclude", &base)?);
        b.add(glob(
            "--exclude",
            &format!("{}/**", base.trim_end_matches('/')),
        )?);
    }
    b.build().map(Some).map_err(|e| ClosureError::InvalidGlob {
        rule: "--exclude",
        pattern: pats.join(" "),
        reason: e.to_string(),
    })
}

/// A program path the kernel takes from the working directory: it has a `/` (so it is not
/// looked up on `PATH`) but does not start with one.
fn is_relative_path(prog: &str) -> bool {
    prog.contains('/') && !prog.starts_with('/')
}

pub(crate) fn which(fs: &dyn Rootfs, name: &str, env: &[String]) -> Option<ImagePath> {
    if name.is_empty() {
        return None;
    }
    if name.contains('/') {
        let p = ImagePath::new(name);
        return resolve(fs, p.as_str(), true).ok().map(|_| p);
    }
    let path = env_var(env, "PATH").unwrap_or(DEFAULT_PATH);
    for dir in path.split(':').filter(|d| d.starts_with('/')) {
        let cand = ImagePath::new(dir).join(name);
        if let Ok(r) = resolve(fs, cand.as_str(), true)
            && let Some(e) = fs.entry(&r.path)
            && e.is_file()
            && e.mode & 0o111 != 0
        {
            return Some(cand);
        }
    }
    None
}
