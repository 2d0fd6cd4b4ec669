//! Python distributions: `NAME-VERSION.dist-info/RECORD` (paths relative to the directory
//! holding the `.dist-info`) and `NAME-VERSION[-pyX.Y].egg-info/installed-files.txt` (paths
//! relative to the `.egg-info`), in every `site-packages` or `dist-packages` directory.

use minify_model::ImagePath;

use crate::{Collector, Kind, ListStats, MAX_FILES_PER_UNIT};

/// The paths of a wheel's `RECORD` (CSV: `path,hash,size`; a path with a comma is quoted).
/// Never panics, whatever the input.
pub fn parse_record(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        let path = if let Some(rest) = line.strip_prefix('"') {
            // "a,""b"".py",hash,size: doubled quotes inside.
            let mut s = String::new();
            let mut chars = rest.chars().peekable();
            let mut closed = false;
            while let Some(ch) = chars.next() {
                if ch == '"' {
                    if chars.peek() == Some(&'"') {
                        chars.next();
                        s.push('"');
                    } else {
                        closed = true;
                        break;
                    }
                } else {
                    s.push(ch);
                }
            }
            if !closed {
                continue;
            }
            s
        } else {
            line.split(',').next().unwrap_or_default().to_owned()
        };
        if !path.is_empty() {
            out.push(path);
        }
    }
    out
}

/// The paths of an egg's `installed-files.txt`, one a line.
pub fn parse_installed_files(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `numpy-1.26.4` -> (`numpy`, `1.26.4`); `Flask-2.2.2-py3.11` -> (`Flask`, `2.2.2`).
fn name_version(stem: &str) -> (String, String) {
    let mut parts = stem.splitn(3, '-');
    let name = parts.next().unwrap_or_default().to_owned();
    let version = parts.next().unwrap_or_default().to_owned();
    (name, version)
}

pub(crate) fn read(c: &mut Collector<'_>, paths: &[ImagePath]) {
    for dir in paths {
        let name = dir.as_str().rsplit('/').next().unwrap_or_default();
        let (stem, list, egg) = if let Some(s) = name.strip_suffix(".dist-info") {
            (s, "RECORD", false)
        } else if let Some(s) = name.strip_suffix(".egg-info") {
            (s, "installed-files.txt", true)
        } else {
            continue;
        };
        let Some(parent) = dir.parent() else {
            continue;
        };
        let pname = parent.as_str().rsplit('/').next().unwrap_or_default();
        if pname != "site-packages" && pname != "dist-packages" {
            continue;
        }
        if !c.fs.entry(dir).is_some_and(minify_model::Entry::is_dir) {
            continue; // a file `X.egg-info` (distutils) has no file list
        }
        let list_path = dir.join(list);
        if c.fs.entry(&list_path).is_none() {
            continue; // Debian's egg-info directories have none: dpkg owns those files
        }
        let Some(text) = c.read_text(&list_path) else {
            continue;
        };
        let listed = if egg {
            parse_installed_files(&text)
        } else {
            parse_record(&text)
        };
        let base = if egg { dir.clone() } else { parent.clone() };
        let mut stats = ListStats::default();
        let mut files = Vec::new();
        if listed.len() > MAX_FILES_PER_UNIT {
            c.warn(format!(
                "{list_path}: more than {MAX_FILES_PER_UNIT} paths, the rest not read"
            ));
        }
        for raw in listed.iter().take(MAX_FILES_PER_UNIT) {
            if raw.starts_with('/') {
                stats.dotdot += 1; // absolute: not from this environment; skip it
                continue;
            }
            if let Some(p) = c.locate(&base, raw, &mut stats) {
                files.push(p);
            }
        }
        // The metadata directory itself belongs to the unit whatever the list says.
        for p in crate::below(paths, dir) {
            if c.fs.entry(p).is_some_and(|e| !e.is_dir()) {
                files.push(p.clone());
            }
        }
        let (name, version) = name_version(stem);
        if let Some(id) = c.add(
            Kind::Python,
            name,
            version,
            files,
            list_path.as_str(),
            &stats,
        ) {
            c.db.packages[id].site = Some(parent);
            c.db.packages[id].db_files = crate::DbFiles::Python {
                meta_dir: dir.clone(),
            };
        }
    }
}
