//! dpkg's database: `/var/lib/dpkg/status` and `info/<pkg>[:arch].list`, or the distroless
//! layout, `status.d/<pkg>` (one status paragraph each) with `status.d/<pkg>.md5sums`.

use std::collections::HashSet;

use minify_model::ImagePath;

use crate::{Collector, DbFiles, Kind, ListStats, MAX_FILES_PER_UNIT};

pub(crate) const STATUS: &str = "/var/lib/dpkg/status";
pub(crate) const STATUS_D: &str = "/var/lib/dpkg/status.d";
const INFO: &str = "/var/lib/dpkg/info";

/// One installed package's paragraph of a dpkg status file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusEntry {
    pub package: String,
    pub version: String,
    pub architecture: String,
    /// `Conffiles:` paths (absolute, as written).
    pub conffiles: Vec<String>,
}

/// The paragraphs of a deb822 file (a dpkg status): byte ranges, each from its first line to
/// the start of the next paragraph (its trailing blank lines included), so concatenating some
/// of them gives a valid file with each paragraph's bytes unchanged. A blank line is an empty
/// one or a lone `\r` (CRLF files). Ranges start and end at line starts, so they are char
/// boundaries of a `str`'s bytes too.
pub(crate) fn paragraphs(data: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut out: Vec<std::ops::Range<usize>> = Vec::new();
    let mut start: Option<usize> = None;
    let mut pos = 0;
    while pos < data.len() {
        let end = data[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(data.len(), |i| pos + i + 1);
        let line = &data[pos..end];
        let blank = matches!(line, b"\n" | b"\r\n" | b"\r");
        if !blank && start.is_none() {
            if let Some(last) = out.last_mut() {
                last.end = pos;
            }
            start = Some(pos);
        } else if blank && let Some(s) = start.take() {
            out.push(s..end);
        } else if blank && let Some(last) = out.last_mut() {
            last.end = end;
        }
        pos = end;
    }
    if let Some(s) = start {
        out.push(s..data.len());
    }
    out
}

/// The value of a paragraph's simple field `key` (first line only, trimmed), if present.
pub(crate) fn field<'t>(para: &'t str, key: &str) -> Option<&'t str> {
    para.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k == key).then(|| v.trim())
    })
}

/// Parse a dpkg status file: the paragraphs whose `Status:` says `installed` (or that have no
/// `Status:`, as in distroless' `status.d/`). Returns them and warnings: one per paragraph
/// without a `Package:` field, one per repeated package (the first paragraph is used), one
/// for CRLF line ends (read as LF). Never panics, whatever the input.
pub fn parse_status(text: &str) -> (Vec<StatusEntry>, Vec<String>) {
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    let mut seen: HashSet<(String, String)> = HashSet::new();
    if text.contains("\r\n") {
        warnings.push("CRLF line ends (read as LF)".to_owned());
    }
    for (n, range) in paragraphs(text.as_bytes()).into_iter().enumerate() {
        let para = &text[range];
        let mut e = StatusEntry::default();
        let mut installed = true;
        let mut in_conffiles = false;
        for line in para.lines() {
            if let Some(cont) = line.strip_prefix([' ', '\t']) {
                if in_conffiles
                    && let Some(p) = cont.split_whitespace().next()
                    && p.starts_with('/')
                {
                    e.conffiles.push(p.to_owned());
                }
                continue;
            }
            in_conffiles = false;
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match key {
                "Package" => value.clone_into(&mut e.package),
                "Version" => value.clone_into(&mut e.version),
                "Architecture" => value.clone_into(&mut e.architecture),
                "Status" => installed = value.split_whitespace().last() == Some("installed"),
                "Conffiles" => in_conffiles = true,
                _ => {}
            }
        }
        if e.package.is_empty() {
            warnings.push(format!("paragraph {} has no Package field", n + 1));
            continue;
        }
        if !installed {
            continue;
        }
        if !seen.insert((e.package.clone(), e.architecture.clone())) {
            warnings.push(format!(
                "paragraph {}: package {} ({}) appears again; the first paragraph is used",
                n + 1,
                e.package,
                e.architecture
            ));
            continue;
        }
        out.push(e);
    }
    (out, warnings)
}

pub(crate) fn read(c: &mut Collector<'_>) {
    let status = ImagePath::new(STATUS);
    if c.fs.entry(&status).is_some()
        && let Some(text) = c.read_text(&status)
    {
        let (entries, warnings) = parse_status(&text);
        for w in warnings {
            c.warn(format!("{STATUS}: {w}"));
        }
        for e in entries {
            let list = info_file(c, &e, "list");
            let md5sums = info_file(c, &e, "md5sums");
            let db = DbFiles::Dpkg {
                list: list.clone(),
                md5sums,
            };
            add_package(c, e, list.as_ref(), false, db);
        }
    }
    // distroless: no status file, one paragraph per file, file lists in md5sums.
    let dir = ImagePath::new(STATUS_D);
    if c.fs.entry(&dir).is_some_and(minify_model::Entry::is_dir) {
        for child in c.fs.children(&dir) {
            let name = child.as_str().rsplit('/').next().unwrap_or_default();
            if name.contains('.') {
                continue; // `<pkg>.md5sums` and friends
            }
            let Some(text) = c.read_text(&child) else {
                continue;
            };
            let (entries, warnings) = parse_status(&text);
            for w in warnings {
                c.warn(format!("{child}: {w}"));
            }
            for e in entries {
                let md5 = ImagePath::new(&format!("{child}.md5sums"));
                let list = c.fs.entry(&md5).is_some().then_some(md5);
                let db = DbFiles::StatusD {
                    stanza: child.clone(),
                    md5sums: list.clone(),
                };
                add_package(c, e, list.as_ref(), true, db);
            }
        }
    }
}

/// `info/<pkg>:<arch>.<ext>`, else `info/<pkg>.<ext>`.
fn info_file(c: &Collector<'_>, e: &StatusEntry, ext: &str) -> Option<ImagePath> {
    if e.package.contains('/') || e.architecture.contains('/') {
        return None; // not a name dpkg allows; never a path elsewhere
    }
    let qualified = ImagePath::new(&format!("{INFO}/{}:{}.{ext}", e.package, e.architecture));
    let plain = ImagePath::new(&format!("{INFO}/{}.{ext}", e.package));
    [qualified, plain]
        .into_iter()
        .find(|p| c.fs.entry(p).is_some())
}

fn add_package(
    c: &mut Collector<'_>,
    e: StatusEntry,
    list: Option<&ImagePath>,
    md5sums: bool,
    db: DbFiles,
) {
    let root = ImagePath::root();
    let mut stats = ListStats::default();
    let mut files = Vec::new();
    let source = list.map_or_else(|| STATUS.to_owned(), ToString::to_string);
    if let Some(list) = list
        && let Some(text) = c.read_text(list)
    {
        let mut n = 0usize;
        for line in text.lines() {
            // md5sums: `<hash>  <path without leading slash>`.
            let raw = if md5sums {
                match line.split_once("  ") {
                    Some((_, p)) => p,
                    None => continue,
                }
            } else {
                line
            };
            let raw = raw.trim_end_matches('\r');
            if raw.is_empty() || raw == "/." {
                continue;
            }
            n += 1;
            if n > MAX_FILES_PER_UNIT {
                c.warn(format!(
                    "{list}: more than {MAX_FILES_PER_UNIT} paths, the rest not read"
                ));
                break;
            }
            if let Some(p) = c.locate(&root, raw, &mut stats) {
                files.push(p);
            }
        }
    }
    for cf in &e.conffiles {
        // Conffiles removed by the admin are still listed (`obsolete`): not a problem.
        let mut quiet = ListStats::default();
        if let Some(p) = c.locate(&root, cf, &mut quiet) {
            files.push(p);
        }
    }
    let arch = e.architecture.clone();
    if let Some(id) = c.add(Kind::Deb, e.package, e.version, files, &source, &stats) {
        c.db.packages[id].arch = arch;
        c.db.packages[id].db_files = db;
    }
}
