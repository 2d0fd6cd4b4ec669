//! Transitive shared-library resolution of one program, as the image's own dynamic loader
//! would do it, over a [`Rootfs`] (never the host).
//!
//! Search order follows glibc's `ld.so(8)`: `DT_RPATH` of the requester and of the objects
//! that loaded it (only when the requester has no `DT_RUNPATH`), `LD_LIBRARY_PATH`,
//! `DT_RUNPATH` of the requester, then the image's `/etc/ld.so.cache` (entries whose flags
//! match the requester's class and machine; the `ld.so.conf` directories instead when the
//! image has no usable cache) and the default directories (the default directories and cache
//! entries in them are skipped under `DF_1_NODEFLIB`). glibc 2.33+ looks in each directory's
//! `glibc-hwcaps/<name>/` subdirectories first; every variant found there is kept next to the
//! baseline library (see [`Resolver::closure_of`]). musl: `LD_LIBRARY_PATH`, RPATH/RUNPATH,
//! then `/etc/ld-musl-<arch>.path` or its built-in list. Candidates whose class or machine
//! differ from the requester's are skipped, as ld.so does, so 32-bit libraries never satisfy a
//! 64-bit program.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::rc::Rc;

use minify_model::{ImagePath, ResolveError, Rootfs, resolve};

use crate::cache::flags_match;
use crate::loader::{Libc, LoaderConfig, glibc_default_dirs, multiarch_triplet, platform};
use crate::parse::{ElfClass, ElfInfo, ParseError, is_elf};

/// Largest ELF file read (bigger ones are skipped with a warning).
pub const MAX_ELF_BYTES: u64 = 512 << 20;
/// Most `DT_NEEDED` entries followed per object.
pub const MAX_NEEDED: usize = 1024;
/// Deepest chain of `DT_NEEDED` followed from the program.
pub const MAX_DEPTH: usize = 64;
/// Most objects in one program's closure.
pub const MAX_OBJECTS: usize = 4096;
/// Most `glibc-hwcaps/<name>` subdirectories looked at per directory (glibc knows at most
/// four per architecture, e.g. `x86-64-v2` to `x86-64-v4`).
pub const MAX_HWCAPS_SUBDIRS: usize = 64;

/// Why one object could not be examined.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    /// The path does not resolve inside the image.
    #[error("{path}: {source}")]
    NotFound { path: String, source: ResolveError },
    /// The path resolves to something that is not a regular file.
    #[error("{path}: not a regular file")]
    NotAFile { path: ImagePath },
    /// The file is larger than [`MAX_ELF_BYTES`].
    #[error(
        "{path}: {size} bytes is larger than the {MAX_ELF_BYTES}-byte limit for ELF files, not examined"
    )]
    TooLarge { path: ImagePath, size: u64 },
    /// Reading the file from the image failed.
    #[error("{path}: cannot read from the image: {source}")]
    Read {
        path: ImagePath,
        source: std::io::Error,
    },
    /// The file is not a well-formed ELF object.
    #[error("{path}: {source}")]
    Parse { path: ImagePath, source: ParseError },
}

/// What a kept path is to the program.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DepKind {
    /// The program itself.
    Program,
    /// The `PT_INTERP` loader.
    Interpreter,
    /// A shared library (`DT_NEEDED`, `LD_PRELOAD`).
    Library,
    /// A symlink followed on the way to one of the above.
    Symlink,
    /// A file the loader reads (`/etc/ld.so.cache`, `/etc/ld.so.preload`).
    LoaderFile,
}

/// One kept path with a reviewable reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dep {
    pub kind: DepKind,
    /// Which object needs it, e.g. `libssl.so.3 needed by /usr/sbin/nginx`.
    pub detail: String,
}

/// The libraries, loader and symlinks one program needs, sorted by path.
#[derive(Clone, Debug, Default)]
pub struct DepClosure {
    /// The program's path with symlinks followed.
    pub program: Option<ImagePath>,
    /// Every path to keep (the program itself included), with why.
    pub kept: BTreeMap<ImagePath, Dep>,
    /// Libc flavour of the program's loader, when it has one we know.
    pub libc: Option<Libc>,
    /// Libraries that were not found, skipped objects and hit limits.
    pub warnings: Vec<String>,
}

impl DepClosure {
    fn keep(&mut self, path: ImagePath, kind: DepKind, detail: String) {
        match self.kept.get(&path) {
            Some(old) if old.kind <= kind => {}
            _ => {
                self.kept.insert(path, Dep { kind, detail });
            }
        }
    }
    fn keep_via(&mut self, via: &[ImagePath], detail: &str) {
        for v in via {
            self.keep(v.clone(), DepKind::Symlink, detail.to_owned());
        }
    }
}

/// Resolves libraries over one image, caching parsed objects across programs.
pub struct Resolver<'a> {
    fs: &'a dyn Rootfs,
    config: LoaderConfig,
    parsed: HashMap<ImagePath, Result<Rc<ElfInfo>, String>>,
    /// `DT_SONAME` -> a library the workload is known to have loaded (see
    /// [`Resolver::set_loaded`]).
    loaded: HashMap<String, ImagePath>,
}

/// One loaded object on the work queue.
struct Loaded {
    /// As loaded (may contain symlinks): `$ORIGIN` of a library is its directory.
    origin: String,
    info: Rc<ElfInfo>,
    /// `DT_RPATH` lists (already expanded) of this object and its loaders, innermost first;
    /// glibc searches them all when the requester has no `DT_RUNPATH`.
    rpaths: Rc<Vec<Vec<String>>>,
    depth: usize,
    name: String,
}

impl<'a> Resolver<'a> {
    /// A resolver for `fs`, reading `LD_LIBRARY_PATH`/`LD_PRELOAD` from `env` (normally
    /// `fs.env()`) and `/etc/ld.so.conf` from the image.
    pub fn new(fs: &'a dyn Rootfs, env: &[String]) -> Self {
        Resolver {
            fs,
            config: LoaderConfig::load(fs, env),
            parsed: HashMap::new(),
            loaded: HashMap::new(),
        }
    }

    /// Libraries the workload is known to have loaded (ELF files its trace shows opened).
    /// glibc's loader satisfies a `DT_NEEDED` name from an object already in the process
    /// whose `DT_SONAME` matches, before any search: the JVM's launcher `dlopen`s
    /// `lib/server/libjvm.so` by path, and `libjava.so`'s `DT_NEEDED` `libjvm.so`, which no
    /// search path reaches, is that one. A name the search does not find but one of these
    /// carries as its soname is resolved to it, instead of being reported missing.
    pub fn set_loaded<'p>(&mut self, paths: impl IntoIterator<Item = &'p ImagePath>) {
        for p in paths {
            // Only ELF files are parsed (a workload opens many big files that are not).
            if !self.is_elf_file(p) {
                continue;
            }
            if let Ok(info) = self.parse_at(p)
                && let Some(so) = &info.soname
            {
                self.loaded.entry(so.clone()).or_insert_with(|| p.clone());
            }
        }
    }

    /// The image's loader configuration.
    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// Parse the ELF object at `path` (symlinks followed), with the file size limit.
    pub fn info(&mut self, path: &str) -> Result<(ImagePath, Rc<ElfInfo>), ElfError> {
        let r = resolve(self.fs, path, true).map_err(|source| ElfError::NotFound {
            path: path.to_owned(),
            source,
        })?;
        let info = self.parse_at(&r.path)?;
        Ok((r.path, info))
    }

    fn parse_at(&mut self, real: &ImagePath) -> Result<Rc<ElfInfo>, ElfError> {
        let entry = self.fs.entry(real);
        if !entry.is_some_and(minify_model::Entry::is_file) {
            return Err(ElfError::NotAFile { path: real.clone() });
        }
        let size = entry.map_or(0, |e| e.size);
        if size > MAX_ELF_BYTES {
            return Err(ElfError::TooLarge {
                path: real.clone(),
                size,
            });
        }
        if let Some(cached) = self.parsed.get(real) {
            return cached.clone().map_err(|msg| ElfError::Parse {
                path: real.clone(),
                source: ParseError::Malformed {
                    what: "ELF file",
                    reason: msg,
                },
            });
        }
        let bytes = self
            .fs
            .read(real, Some(MAX_ELF_BYTES))
            .map_err(|source| ElfError::Read {
                path: real.clone(),
                source,
            })?;
        match ElfInfo::parse(&bytes) {
            Ok(info) => {
                let info = Rc::new(info);
                self.parsed.insert(real.clone(), Ok(info.clone()));
                Ok(info)
            }
            Err(source) => {
                self.parsed.insert(real.clone(), Err(source.to_string()));
                Err(ElfError::Parse {
                    path: real.clone(),
                    source,
                })
            }
        }
    }

    /// Whether the regular file at `real` starts with the ELF magic (reads 4 bytes).
    pub fn is_elf_file(&self, real: &ImagePath) -> bool {
        self.fs
            .entry(real)
            .is_some_and(minify_model::Entry::is_file)
            && self.fs.read(real, Some(4)).is_ok_and(|b| is_elf(&b))
    }

    /// The whole closure of the program at `path`: the program (and the symlinks to it), its
    /// interpreter, every library it needs transitively, and the loader's own files. Only the
    /// program itself can fail; problems below it are warnings.
    pub fn closure_of(&mut self, path: &str) -> Result<DepClosure, ElfError> {
        let r = resolve(self.fs, path, true).map_err(|source| ElfError::NotFound {
            path: path.to_owned(),
            source,
        })?;
        let info = self.parse_at(&r.path)?;
        let mut out = DepClosure {
            program: Some(r.path.clone()),
            ..DepClosure::default()
        };
        out.keep_via(&r.via, &format!("link to {}", r.path));
        out.keep(r.path.clone(), DepKind::Program, String::new());

        // The loader: it decides the libc flavour and hence the search rules.
        let mut libc = None;
        if let Some(interp) = info.interpreter.clone() {
            libc = Libc::from_interpreter(&interp);
            let detail = format!("interpreter of {}", r.path);
            match resolve(self.fs, &interp, true) {
                Ok(ir) => {
                    out.keep_via(&ir.via, &detail);
                    match self.parse_at(&ir.path) {
                        Ok(_) => out.keep(ir.path.clone(), DepKind::Interpreter, detail),
                        Err(e) => {
                            out.warnings
                                .push(format!("{e} (interpreter of {})", r.path));
                            if self
                                .fs
                                .entry(&ir.path)
                                .is_some_and(minify_model::Entry::is_file)
                            {
                                out.keep(ir.path.clone(), DepKind::Interpreter, detail);
                            }
                        }
                    }
                }
                Err(e) => out.warnings.push(format!(
                    "interpreter {interp} of {} is missing: {e}",
                    r.path
                )),
            }
        }
        if !info.dynamic || info.interpreter.is_none() && info.needed.is_empty() {
            out.libc = libc;
            return Ok(out);
        }
        // An object with DT_NEEDED but no PT_INTERP is a library or a static-pie; treat it
        // as glibc unless told otherwise (the far more common loader).
        let libc_eff = libc.unwrap_or(Libc::Glibc);
        out.libc = libc;
        if libc_eff == Libc::Glibc {
            // Problems with ld.so.conf, ld.so.preload or the cache change where glibc's
            // loader looks, so every glibc program's closure reports them.
            out.warnings.extend(self.config.warnings.iter().cloned());
        }

        let origin_main = r
            .path
            .parent()
            .map_or_else(|| "/".to_owned(), |p| p.to_string());
        let main_rpath = expand_all(&info.rpath, &origin_main, &info, self.fs);
        let mut queue = VecDeque::new();
        let mut by_name: HashMap<String, ImagePath> = HashMap::new();
        let mut done: BTreeSet<ImagePath> = BTreeSet::new();
        done.insert(r.path.clone());
        queue.push_back(Loaded {
            origin: origin_main,
            info: info.clone(),
            rpaths: Rc::new(if info.runpath.is_empty() {
                vec![main_rpath]
            } else {
                vec![]
            }),
            depth: 0,
            name: r.path.to_string(),
        });

        // LD_PRELOAD and /etc/ld.so.preload come first, searched like DT_NEEDED of the program.
        let mut preload = self.config.preload.clone();
        if libc_eff == Libc::Glibc
            && let Ok(p) = resolve(self.fs, "/etc/ld.so.preload", true)
        {
            out.keep_via(&p.via, "loader file");
            out.keep(
                p.path,
                DepKind::LoaderFile,
                "read by the glibc loader".into(),
            );
        }
        preload.dedup();

        let mut objects = 1usize;
        let mut limit_warned = false;
        while let Some(obj) = queue.pop_front() {
            let mut names: Vec<String> = if obj.depth == 0 {
                std::mem::take(&mut preload)
            } else {
                Vec::new()
            };
            if obj.info.needed.len() > MAX_NEEDED {
                out.warnings.push(format!(
                    "{} has {} DT_NEEDED entries; only the first {MAX_NEEDED} were followed",
                    obj.name,
                    obj.info.needed.len()
                ));
            }
            names.extend(obj.info.needed.iter().take(MAX_NEEDED).cloned());
            if obj.depth >= MAX_DEPTH && !names.is_empty() {
                out.warnings.push(format!(
                    "{}: library chain deeper than {MAX_DEPTH}, its {} needs not followed",
                    obj.name,
                    names.len()
                ));
                continue;
            }
            for name in names {
                if by_name.contains_key(&name) {
                    // ld.so reuses an already loaded object of that name or soname.
                    continue;
                }
                let detail = format!("{name} needed by {}", obj.name);
                let found = match self.find(&name, &obj, libc_eff, &mut out.warnings) {
                    Some(found) => Some(found),
                    None => self.already_loaded(&name),
                };
                let Some(mut found) = found else {
                    out.warnings.push(format!(
                        "{name} needed by {} not found in the image",
                        obj.name
                    ));
                    continue;
                };
                by_name.insert(name.clone(), found.real.clone());
                if let Some(so) = &found.info.soname {
                    by_name
                        .entry(so.clone())
                        .or_insert_with(|| found.real.clone());
                }
                // The glibc-hwcaps variants are kept and followed like the library itself:
                // which one ld.so maps depends on the CPU the minified image will run on,
                // and that must work on every CPU the original image worked on.
                let variants = std::mem::take(&mut found.variants);
                let variant_detail = format!("{detail} (glibc-hwcaps variant)");
                let all = std::iter::once((found, detail))
                    .chain(variants.into_iter().map(|v| (v, variant_detail.clone())));
                for (found, detail) in all {
                    out.keep_via(&found.via, &detail);
                    out.keep(found.real.clone(), DepKind::Library, detail);
                    if !done.insert(found.real.clone()) {
                        continue;
                    }
                    objects += 1;
                    if objects > MAX_OBJECTS {
                        if !limit_warned {
                            out.warnings.push(format!(
                                "{}: more than {MAX_OBJECTS} libraries, the rest not followed",
                                r.path
                            ));
                            limit_warned = true;
                        }
                        continue;
                    }
                    // glibc: $ORIGIN of a library is the directory of the path it was opened
                    // at, as a string (no symlinks resolved; the kernel resolves `..` later).
                    let origin = match found.as_loaded.rfind('/') {
                        Some(0) | None => "/".to_owned(),
                        Some(i) => found.as_loaded[..i].to_owned(),
                    };
                    // The RPATH chain: this object's own DT_RPATH (ignored when it has a
                    // DT_RUNPATH), then its loaders' all the way up to the program.
                    let mut chain = Vec::with_capacity(obj.rpaths.len() + 1);
                    if found.info.runpath.is_empty() && !found.info.rpath.is_empty() {
                        chain.push(expand_all(&found.info.rpath, &origin, &found.info, self.fs));
                    }
                    chain.extend(obj.rpaths.iter().cloned());
                    let rpaths = Rc::new(chain);
                    queue.push_back(Loaded {
                        origin,
                        info: found.info.clone(),
                        rpaths,
                        depth: obj.depth + 1,
                        name: found.real.to_string(),
                    });
                }
            }
        }

        if libc_eff == Libc::Musl {
            let file = format!(
                "/etc/ld-musl-{}.path",
                crate::loader::musl_arch(info.class, info.machine)
            );
            if let Ok(c) = resolve(self.fs, &file, true) {
                out.keep_via(&c.via, "loader file");
                out.keep(
                    c.path,
                    DepKind::LoaderFile,
                    "read by the musl loader".into(),
                );
            }
        }
        if libc_eff == Libc::Glibc
            && let Ok(c) = resolve(self.fs, "/etc/ld.so.cache", true)
            && self
                .fs
                .entry(&c.path)
                .is_some_and(minify_model::Entry::is_file)
        {
            out.keep_via(&c.via, "loader file");
            out.keep(
                c.path,
                DepKind::LoaderFile,
                "read by the glibc loader".into(),
            );
        }
        Ok(out)
    }

    /// Find a library by name as the loader would for a program like `like` (same class and
    /// machine) with no RPATH/RUNPATH: `LD_LIBRARY_PATH`, `ld.so.cache` (or `ld.so.conf`),
    /// default directories. Returns the real path and the symlinks followed to it; its
    /// `glibc-hwcaps` variants are not returned.
    pub fn find_library(
        &mut self,
        name: &str,
        like: &ElfInfo,
        libc: Libc,
    ) -> Option<(ImagePath, Vec<ImagePath>)> {
        let mut plain = like.clone();
        plain.rpath.clear();
        plain.runpath.clear();
        plain.nodeflib = false;
        let obj = Loaded {
            origin: "/".to_owned(),
            info: Rc::new(plain),
            rpaths: Rc::new(Vec::new()),
            depth: 0,
            name: String::new(),
        };
        let mut ignored = Vec::new();
        self.find(name, &obj, libc, &mut ignored)
            .map(|f| (f.real, f.via))
    }

    /// The library the workload loaded whose soname is `name` (see [`Resolver::set_loaded`]).
    fn already_loaded(&mut self, name: &str) -> Option<Found> {
        let real = self.loaded.get(name)?.clone();
        let info = self.parse_at(&real).ok()?;
        Some(Found {
            as_loaded: real.to_string(),
            real,
            via: Vec::new(),
            info,
            variants: Vec::new(),
        })
    }

    /// Search one library name for `obj`, with the loader's rules. The result carries the
    /// `glibc-hwcaps` variants met on the way in [`Found::variants`].
    fn find(
        &mut self,
        name: &str,
        obj: &Loaded,
        libc: Libc,
        warnings: &mut Vec<String>,
    ) -> Option<Found> {
        let expanded = expand(name, &obj.origin, &obj.info, self.fs);
        if expanded.contains('/') {
            // A name with a slash is a path (relative ones are from the cwd, `/` here).
            return self.try_candidate(&expanded, &obj.info, warnings);
        }
        let ldlp: Vec<String> = self
            .config
            .ld_library_path
            .iter()
            .map(|d| expand(d, &obj.origin, &obj.info, self.fs))
            .collect();
        let runpath = expand_all(&obj.info.runpath, &obj.origin, &obj.info, self.fs);
        let mut search = Search::default();
        match libc {
            Libc::Glibc => {
                let mut dirs: Vec<String> = Vec::new();
                if obj.info.runpath.is_empty() {
                    dirs.extend(obj.rpaths.iter().flatten().cloned());
                }
                dirs.extend(ldlp);
                dirs.extend(runpath);
                if let Some(f) =
                    self.search_dirs(dirs, name, &obj.info, true, &mut search, warnings)
                {
                    return Some(f);
                }
                let found = if self.config.cache.is_some() {
                    self.search_cache(name, &obj.info, &mut search, warnings)
                } else {
                    // No usable cache: the ld.so.conf directories it would have been built
                    // from stand in for it (also under DF_1_NODEFLIB, as cache entries do).
                    let conf = self.config.ld_so_conf_dirs.clone();
                    self.search_dirs(conf, name, &obj.info, true, &mut search, warnings)
                };
                if found.is_some() {
                    return found;
                }
                if !obj.info.nodeflib {
                    let dirs = glibc_default_dirs(&obj.info);
                    if let Some(f) =
                        self.search_dirs(dirs, name, &obj.info, true, &mut search, warnings)
                    {
                        return Some(f);
                    }
                }
            }
            Libc::Musl => {
                let mut dirs: Vec<String> = Vec::new();
                dirs.extend(ldlp);
                dirs.extend(obj.rpaths.iter().flatten().cloned());
                dirs.extend(runpath);
                dirs.extend(self.config.system_dirs(self.fs, libc, &obj.info));
                if let Some(f) =
                    self.search_dirs(dirs, name, &obj.info, false, &mut search, warnings)
                {
                    return Some(f);
                }
            }
        }
        // Only glibc-hwcaps variants exist: ld.so maps one on a CPU that has the feature and
        // fails elsewhere, as the original image does.
        let mut variants = search.variants.into_iter();
        let mut first = variants.next()?;
        first.variants = variants.collect();
        Some(first)
    }

    /// Look for `name` in `dirs` in order (each once), the `glibc-hwcaps` subdirectories of
    /// each first when `hwcaps`. Returns the first baseline library with the variants seen.
    fn search_dirs(
        &mut self,
        dirs: Vec<String>,
        name: &str,
        want: &ElfInfo,
        hwcaps: bool,
        search: &mut Search,
        warnings: &mut Vec<String>,
    ) -> Option<Found> {
        for d in dirs {
            if d.is_empty() || !search.tried.insert(d.clone()) {
                continue;
            }
            let d = d.trim_end_matches('/');
            if hwcaps {
                self.hwcaps_variants(d, name, want, search, warnings);
            }
            let cand = format!("{d}/{name}");
            if let Some(mut f) = self.try_candidate(&cand, want, warnings) {
                f.variants = std::mem::take(&mut search.variants);
                f.variants.retain(|v| v.real != f.real);
                return Some(f);
            }
        }
        None
    }

    /// glibc 2.33+ first tries `DIR/glibc-hwcaps/<name>/LIB` for the subdirectories the CPU
    /// supports (`x86-64-v3`, `power10`, `z15`, ...), then `DIR/LIB`. Which one it maps
    /// depends on the machine the image runs on, not the one it was traced on, so a
    /// minified image must hold every variant that exists *and* the baseline library: keeping
    /// only the one the trace saw would break the image on an older CPU, keeping only the
    /// baseline would silently change which code runs on a newer one. This collects the
    /// variants of `dir` into `search`.
    fn hwcaps_variants(
        &mut self,
        dir: &str,
        name: &str,
        want: &ElfInfo,
        search: &mut Search,
        warnings: &mut Vec<String>,
    ) {
        let base = format!("{dir}/glibc-hwcaps");
        let Ok(r) = resolve(self.fs, &base, true) else {
            return;
        };
        let subdirs = self.fs.children(&r.path);
        if subdirs.len() > MAX_HWCAPS_SUBDIRS {
            warnings.push(format!(
                "{base}: {} entries, only the first {MAX_HWCAPS_SUBDIRS} searched",
                subdirs.len()
            ));
        }
        for sub in subdirs.iter().take(MAX_HWCAPS_SUBDIRS) {
            let Some(sub) = sub.file_name() else {
                continue;
            };
            let cand = format!("{base}/{sub}/{name}");
            if let Some(f) = self.try_candidate(&cand, want, warnings) {
                search.add_variant(f);
            }
        }
    }

    /// The `/etc/ld.so.cache` step: the first entry for `name` whose flags fit the
    /// requester and whose file is in the image with the right class and machine. Entries
    /// for `glibc-hwcaps` subdirectories are variants (kept, see [`Self::hwcaps_variants`]).
    /// Under `DF_1_NODEFLIB` entries in the default directories are skipped, as ld.so does.
    /// Nothing when the image has no usable cache.
    fn search_cache(
        &mut self,
        name: &str,
        want: &ElfInfo,
        search: &mut Search,
        warnings: &mut Vec<String>,
    ) -> Option<Found> {
        let entries = self.config.cache.as_ref()?.lookup(name);
        let default_dirs = if want.nodeflib {
            glibc_default_dirs(want)
        } else {
            Vec::new()
        };
        for e in entries {
            if !flags_match(e.flags, want)
                || default_dirs.iter().any(|d| {
                    e.path
                        .strip_prefix(d.as_str())
                        .is_some_and(|r| r.starts_with('/'))
                })
            {
                continue;
            }
            // The path comes from the image's cache: it is resolved inside the image root
            // like any other (an absolute link or `..` cannot leave it).
            let Some(mut f) = self.try_candidate(&e.path, want, warnings) else {
                continue;
            };
            if e.is_hwcaps_variant() {
                search.add_variant(f);
                continue;
            }
            if let Some(dir) = e.path.rsplit_once('/').map(|(d, _)| d) {
                self.hwcaps_variants(dir, name, want, search, warnings);
            }
            f.variants = std::mem::take(&mut search.variants);
            f.variants.retain(|v| v.real != f.real);
            return Some(f);
        }
        None
    }

    fn try_candidate(
        &mut self,
        cand: &str,
        want: &ElfInfo,
        warnings: &mut Vec<String>,
    ) -> Option<Found> {
        let r = resolve(self.fs, cand, true).ok()?;
        let entry = self.fs.entry(&r.path)?;
        if !entry.is_file() {
            return None;
        }
        // Check class and machine from the header alone before reading the whole file.
        let head = self.fs.read(&r.path, Some(64)).ok()?;
        if !is_elf(&head) {
            return None;
        }
        let class = match head.get(4) {
            Some(1) => ElfClass::Elf32,
            Some(2) => ElfClass::Elf64,
            _ => return None,
        };
        let le = head.get(5) == Some(&1);
        let machine = head.get(18..20).map(|m| {
            if le {
                u16::from_le_bytes([m[0], m[1]])
            } else {
                u16::from_be_bytes([m[0], m[1]])
            }
        })?;
        if class != want.class || machine != want.machine || le != want.little_endian {
            return None;
        }
        match self.parse_at(&r.path) {
            Ok(info) => Some(Found {
                as_loaded: cand.to_owned(),
                real: r.path,
                via: r.via,
                info,
                variants: Vec::new(),
            }),
            Err(e) => {
                warnings.push(format!("{e}; skipped as a candidate for {cand}"));
                None
            }
        }
    }
}

struct Found {
    /// The path as the loader opened it (before symlinks), for `$ORIGIN`.
    as_loaded: String,
    real: ImagePath,
    via: Vec<ImagePath>,
    info: Rc<ElfInfo>,
    /// `glibc-hwcaps` variants of the library the loader may map instead on another CPU.
    variants: Vec<Found>,
}

/// State of one library search: directories already tried, variants met so far.
#[derive(Default)]
struct Search {
    tried: std::collections::HashSet<String>,
    variants: Vec<Found>,
}

impl Search {
    fn add_variant(&mut self, f: Found) {
        if !self.variants.iter().any(|v| v.real == f.real) {
            self.variants.push(f);
        }
    }
}

/// The closure of one program with a fresh resolver (see [`Resolver::closure_of`]).
pub fn resolve_deps(fs: &dyn Rootfs, path: &str, env: &[String]) -> Result<DepClosure, ElfError> {
    Resolver::new(fs, env).closure_of(path)
}

fn expand_all(list: &[String], origin: &str, info: &ElfInfo, fs: &dyn Rootfs) -> Vec<String> {
    list.iter().map(|d| expand(d, origin, info, fs)).collect()
}

/// Expand the loader's dynamic string tokens: `$ORIGIN`, `$LIB`, `$PLATFORM`, also in the
/// `${NAME}` form. Unknown tokens are left as they are (the path then does not resolve).
pub fn expand(s: &str, origin: &str, info: &ElfInfo, fs: &dyn Rootfs) -> String {
    if !s.contains('$') {
        return s.to_owned();
    }
    let lib = lib_token(info, fs);
    let plat = platform(info.class, info.machine);
    let mut out = String::with_capacity(s.len() + origin.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (tok, len) = if let Some(b) = after.strip_prefix('{') {
            match b.find('}') {
                Some(j) => (&b[..j], j + 2),
                None => ("", 0),
            }
        } else {
            let n = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..n], n)
        };
        let val = match tok {
            "ORIGIN" => Some(origin),
            "LIB" => Some(lib.as_str()),
            "PLATFORM" => Some(plat),
            _ => None,
        };
        match val {
            Some(v) if len > 0 => {
                out.push_str(v);
                rest = &after[len..];
            }
            _ => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// `$LIB`: Debian-style multiarch images use `lib/<triplet>`, others `lib64`/`lib`.
fn lib_token(info: &ElfInfo, fs: &dyn Rootfs) -> String {
    if let Some(t) = multiarch_triplet(info.class, info.machine, info.little_endian) {
        let dir = format!("/usr/lib/{t}");
        if resolve(fs, &dir, true).is_ok() {
            return format!("lib/{t}");
        }
    }
    match info.class {
        ElfClass::Elf64 => "lib64".to_owned(),
        ElfClass::Elf32 => "lib".to_owned(),
    }
}
