//! Where the dynamic loader of an image looks for libraries: libc flavour, architecture
//! directories, `LD_LIBRARY_PATH`, `/etc/ld.so.cache`, `/etc/ld.so.conf` (with `include`
//! globs) and musl's `/etc/ld-musl-<arch>.path`, all read from the image through [`Rootfs`],
//! never the host.

use std::collections::BTreeSet;

use minify_model::{ImagePath, Rootfs, resolve};

use crate::cache::{LD_SO_CACHE, LdCache, MAX_CACHE_BYTES};
use crate::parse::{ElfClass, ElfInfo};

/// `e_machine` values we know directory layouts for.
pub const EM_386: u16 = 3;
pub const EM_ARM: u16 = 40;
pub const EM_X86_64: u16 = 62;
pub const EM_AARCH64: u16 = 183;
pub const EM_PPC64: u16 = 21;
pub const EM_S390: u16 = 22;
pub const EM_RISCV: u16 = 243;

/// Deepest `include` nesting followed in `ld.so.conf` (ldconfig has no limit but loops are
/// possible in a hostile image).
const MAX_CONF_DEPTH: usize = 8;
/// Most directories taken from configuration files.
const MAX_CONF_DIRS: usize = 1024;
/// Largest configuration file read.
const MAX_CONF_BYTES: u64 = 1 << 20;

/// The C library whose loader runs an object, judged from its `PT_INTERP`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Libc {
    /// GNU libc (`ld-linux*.so.*`, `ld64.so.*`, `ld.so.1`): `ld.so.cache`, `ld.so.conf`.
    Glibc,
    /// musl (`ld-musl-<arch>.so.1`): `/etc/ld-musl-<arch>.path`.
    Musl,
}

impl Libc {
    /// Judge the libc from an interpreter path; `None` for an unknown loader.
    pub fn from_interpreter(interp: &str) -> Option<Libc> {
        let name = interp.rsplit('/').next().unwrap_or(interp);
        if name.starts_with("ld-musl-") {
            Some(Libc::Musl)
        } else if name.starts_with("ld-linux")
            || name.starts_with("ld64.so")
            || name.starts_with("ld.so")
        {
            Some(Libc::Glibc)
        } else {
            None
        }
    }
}

/// Debian/Ubuntu multiarch triplet for a class and machine (`x86_64-linux-gnu`).
pub fn multiarch_triplet(
    class: ElfClass,
    machine: u16,
    little_endian: bool,
) -> Option<&'static str> {
    Some(match (machine, class) {
        (EM_X86_64, ElfClass::Elf64) => "x86_64-linux-gnu",
        (EM_X86_64, ElfClass::Elf32) => "x86_64-linux-gnux32",
        (EM_386, _) => "i386-linux-gnu",
        (EM_AARCH64, _) => "aarch64-linux-gnu",
        (EM_ARM, _) => "arm-linux-gnueabihf",
        (EM_RISCV, ElfClass::Elf64) => "riscv64-linux-gnu",
        (EM_PPC64, _) if little_endian => "powerpc64le-linux-gnu",
        (EM_PPC64, _) => "powerpc64-linux-gnu",
        (EM_S390, _) => "s390x-linux-gnu",
        _ => return None,
    })
}

/// What `$PLATFORM` expands to for an object of this machine.
pub fn platform(class: ElfClass, machine: u16) -> &'static str {
    match (machine, class) {
        (EM_X86_64, _) => "x86_64",
        (EM_386, _) => "i686",
        (EM_AARCH64, _) => "aarch64",
        (EM_ARM, _) => "v7l",
        (EM_RISCV, _) => "riscv64",
        (EM_PPC64, _) => "power8",
        (EM_S390, _) => "z900",
        _ => "unknown",
    }
}

/// musl's architecture name in `ld-musl-<arch>.so.1` / `.path`.
pub(crate) fn musl_arch(class: ElfClass, machine: u16) -> &'static str {
    match (machine, class) {
        (EM_X86_64, ElfClass::Elf64) => "x86_64",
        (EM_X86_64, ElfClass::Elf32) => "x32",
        (EM_386, _) => "i386",
        (EM_AARCH64, _) => "aarch64",
        (EM_ARM, _) => "armhf",
        (EM_RISCV, _) => "riscv64",
        (EM_PPC64, _) => "powerpc64le",
        (EM_S390, _) => "s390x",
        _ => "unknown",
    }
}

/// Image-wide loader configuration, read once per image.
#[derive(Clone, Debug, Default)]
pub struct LoaderConfig {
    /// `LD_LIBRARY_PATH` from the image config's `Env` (`:`/`;` separated, empties dropped).
    pub ld_library_path: Vec<String>,
    /// `LD_PRELOAD` from the image env plus `/etc/ld.so.preload` (glibc loads these into
    /// every dynamically linked program).
    pub preload: Vec<String>,
    /// Directories from `/etc/ld.so.conf` and its includes, in order. ld.so never reads
    /// them itself (ldconfig builds the cache from them), so they are searched only when the
    /// image has no usable [`cache`](Self::cache), as the best guess of what it would hold.
    pub ld_so_conf_dirs: Vec<String>,
    /// The image's `/etc/ld.so.cache`, when it has one that parses. A corrupt one is left
    /// out with a warning (ld.so ignores it too).
    pub cache: Option<LdCache>,
    /// Configuration files that exist in the image and were read (`/etc/ld.so.conf`,
    /// `/etc/ld.so.conf.d/*.conf`).
    pub conf_files: Vec<ImagePath>,
    /// Problems met while reading the configuration (unreadable file, include loop, ...).
    pub warnings: Vec<String>,
}

impl LoaderConfig {
    /// Read the configuration from the image; `env` is the image config's `Env`.
    pub fn load(fs: &dyn Rootfs, env: &[String]) -> LoaderConfig {
        let mut cfg = LoaderConfig::default();
        if let Some(v) = env_var(env, "LD_LIBRARY_PATH") {
            cfg.ld_library_path = v
                .split([':', ';'])
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
        }
        if let Some(v) = env_var(env, "LD_PRELOAD") {
            cfg.preload.extend(
                v.split([':', ' '])
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            );
        }
        if let Some(text) = read_text(fs, "/etc/ld.so.preload", &mut cfg) {
            cfg.preload.extend(
                text.lines()
                    .map(|l| l.split('#').next().unwrap_or(""))
                    .flat_map(|l| l.split([' ', '\t', ':']))
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            );
        }
        let mut seen = BTreeSet::new();
        cfg.read_conf(fs, "/etc/ld.so.conf", 0, &mut seen);
        cfg.cache = load_cache(fs, &mut cfg.warnings);
        cfg
    }

    fn read_conf(
        &mut self,
        fs: &dyn Rootfs,
        file: &str,
        depth: usize,
        seen: &mut BTreeSet<ImagePath>,
    ) {
        if depth > MAX_CONF_DEPTH {
            self.warnings.push(format!(
                "{file}: ld.so.conf includes nested deeper than {MAX_CONF_DEPTH}, not followed"
            ));
            return;
        }
        let Ok(r) = resolve(fs, file, true) else {
            return;
        };
        if !seen.insert(r.path.clone()) {
            return; // included twice (or a loop): ldconfig would read it again, to no effect
        }
        let Some(text) = read_text(fs, file, self) else {
            return;
        };
        self.conf_files.push(ImagePath::new(file));
        let base = ImagePath::new(file)
            .parent()
            .unwrap_or_else(ImagePath::root);
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line
                .strip_prefix("include")
                .filter(|r| r.starts_with([' ', '\t']))
            {
                for pat in rest.split_whitespace() {
                    let pat = base.join(pat);
                    match glob_rootfs(fs, pat.as_str()) {
                        Ok(files) => {
                            for f in files {
                                self.read_conf(fs, f.as_str(), depth + 1, seen);
                            }
                        }
                        Err(e) => self.warnings.push(format!("{file}: include {pat}: {e}")),
                    }
                }
                continue;
            }
            if line.starts_with("hwcap") {
                continue;
            }
            for dir in line.split([' ', '\t', ':', ',']).filter(|d| !d.is_empty()) {
                // libc5-era `dir=TYPE` suffixes.
                let dir = dir.split('=').next().unwrap_or(dir);
                if self.ld_so_conf_dirs.len() >= MAX_CONF_DIRS {
                    self.warnings.push(format!(
                        "{file}: more than {MAX_CONF_DIRS} library directories, the rest ignored"
                    ));
                    return;
                }
                if !self.ld_so_conf_dirs.iter().any(|d| d == dir) {
                    self.ld_so_conf_dirs.push(dir.to_owned());
                }
            }
        }
    }

    /// The directories searched after RPATH/LD_LIBRARY_PATH/RUNPATH for an object of this
    /// class and machine, loaded by `libc`'s loader. Existence is not checked. For glibc
    /// with a [`cache`](Self::cache) these are only the default directories, searched after
    /// the cache; without one the `ld.so.conf` directories come first.
    pub fn system_dirs(&self, fs: &dyn Rootfs, libc: Libc, info: &ElfInfo) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        match libc {
            Libc::Glibc => {
                if self.cache.is_none() {
                    out.extend(self.ld_so_conf_dirs.iter().cloned());
                }
                out.extend(glibc_default_dirs(info));
            }
            Libc::Musl => {
                let arch = musl_arch(info.class, info.machine);
                let file = format!("/etc/ld-musl-{arch}.path");
                let mut warnings = Vec::new();
                let text = read_text_into(fs, &file, &mut warnings);
                match text {
                    Some(t) => out.extend(
                        t.split(['\n', ':'])
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned),
                    ),
                    None => out.extend(["/lib", "/usr/local/lib", "/usr/lib"].map(str::to_owned)),
                }
            }
        }
        let mut seen = BTreeSet::new();
        out.retain(|d| seen.insert(d.clone()));
        out
    }
}

/// Read and parse the image's `/etc/ld.so.cache` (symlinks followed inside the image).
/// Absent: `None` quietly; unreadable, too large or corrupt: `None` and a warning.
fn load_cache(fs: &dyn Rootfs, warnings: &mut Vec<String>) -> Option<LdCache> {
    let r = resolve(fs, LD_SO_CACHE, true).ok()?;
    let entry = fs.entry(&r.path)?;
    if !entry.is_file() {
        return None;
    }
    let ignored = "ignored, the ld.so.conf directories are searched instead";
    if entry.size > MAX_CACHE_BYTES {
        warnings.push(format!(
            "{LD_SO_CACHE}: {} bytes is larger than the {MAX_CACHE_BYTES}-byte limit; {ignored}",
            entry.size
        ));
        return None;
    }
    let bytes = match fs.read(&r.path, Some(MAX_CACHE_BYTES)) {
        Ok(b) => b,
        Err(e) => {
            warnings.push(format!("{LD_SO_CACHE}: cannot read: {e}; {ignored}"));
            return None;
        }
    };
    match LdCache::parse(bytes) {
        Ok(c) => Some(c),
        Err(e) => {
            warnings.push(format!("{LD_SO_CACHE}: {e}; {ignored}"));
            None
        }
    }
}

/// glibc's built-in directories for Debian-style (multiarch) and other distributions.
pub(crate) fn glibc_default_dirs(info: &ElfInfo) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(t) = multiarch_triplet(info.class, info.machine, info.little_endian) {
        out.push(format!("/lib/{t}"));
        out.push(format!("/usr/lib/{t}"));
    }
    match info.class {
        ElfClass::Elf64 => out.extend(["/lib64", "/usr/lib64"].map(str::to_owned)),
        ElfClass::Elf32 => out.extend(["/lib32", "/usr/lib32"].map(str::to_owned)),
    }
    out.extend(["/lib", "/usr/lib"].map(str::to_owned));
    out
}

/// `KEY`'s value in a `KEY=value` list (the last definition wins, as in Docker).
pub fn env_var<'e>(env: &'e [String], key: &str) -> Option<&'e str> {
    env.iter()
        .rev()
        .find_map(|kv| kv.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

fn read_text(fs: &dyn Rootfs, file: &str, cfg: &mut LoaderConfig) -> Option<String> {
    read_text_into(fs, file, &mut cfg.warnings)
}

/// A small text file of the image, following symlinks inside the image; `None` when absent.
pub fn read_text_into(fs: &dyn Rootfs, file: &str, warnings: &mut Vec<String>) -> Option<String> {
    let r = resolve(fs, file, true).ok()?;
    if !fs.entry(&r.path).is_some_and(minify_model::Entry::is_file) {
        return None;
    }
    match fs.read(&r.path, Some(MAX_CONF_BYTES)) {
        Ok(b) => Some(String::from_utf8_lossy(&b).into_owned()),
        Err(e) => {
            warnings.push(format!("{file}: cannot read: {e}"));
            None
        }
    }
}

/// Errors of [`glob_rootfs`].
#[derive(Debug, thiserror::Error)]
pub enum GlobError {
    /// The pattern is not a valid glob.
    #[error("invalid glob {pattern:?}: {reason}")]
    Invalid { pattern: String, reason: String },
}

/// Expand a shell-style glob (`*`, `?`, `[...]` within one component, no `**`) against the
/// image, component by component, following directory symlinks inside the image. Results are
/// the paths as spelled by the pattern, sorted.
pub fn glob_rootfs(fs: &dyn Rootfs, pattern: &str) -> Result<Vec<ImagePath>, GlobError> {
    let mut cur = vec![ImagePath::root()];
    let comps: Vec<String> = ImagePath::new(pattern)
        .components()
        .map(str::to_owned)
        .collect();
    for comp in &comps {
        let mut next = Vec::new();
        if comp.contains(['*', '?', '[']) {
            let m = globset::GlobBuilder::new(comp)
                .literal_separator(true)
                .build()
                .map_err(|e| GlobError::Invalid {
                    pattern: pattern.to_owned(),
                    reason: e.kind().to_string(),
                })?
                .compile_matcher();
            for c in &cur {
                let Ok(r) = resolve(fs, c.as_str(), true) else {
                    continue;
                };
                for child in fs.children(&r.path) {
                    let Some(name) = child.file_name() else {
                        continue;
                    };
                    // Like the shell: a leading dot is only matched explicitly.
                    if name.starts_with('.') && !comp.starts_with('.') {
                        continue;
                    }
                    if m.is_match(name) {
                        next.push(c.join(name));
                    }
                }
            }
        } else {
            for c in &cur {
                next.push(c.join(comp));
            }
        }
        cur = next;
        if cur.is_empty() {
            break;
        }
    }
    cur.retain(|p| resolve(fs, p.as_str(), false).is_ok());
    cur.sort();
    cur.dedup();
    Ok(cur)
}
