//! minify-sbom: a CycloneDX 1.5 SBOM of a minified image, i.e. the packages that still own a
//! kept file, each with the files of it that were kept.
//!
//! Scanners (Trivy, Grype, Syft) trust an image's package database; after minification the
//! SBOM is what says which packages really are left. Each component carries a package URL
//! (`pkg:deb/debian/libc6@2.36-9?arch=amd64&distro=debian-12`, `pkg:pypi/flask@2.2.2`,
//! `pkg:npm/express@4.18.2`) and, as CycloneDX 1.5's `evidence.occurrences`, the paths of the
//! image where its kept files are: the spec's place for "where this component was found".
//!
//! The model and the JSON are `cyclonedx-bom`'s (the CycloneDX project's own Rust crate), so
//! the schema is not written here by hand. The document is deterministic: no timestamp, a
//! serial number derived from the source digest and the output id, components in a fixed
//! order; the same source, allowlist and output give the same bytes.

use std::collections::{BTreeSet, HashSet};
use std::fmt::Write as _;

use cyclonedx_bom::models::component::{
    Classification, ComponentEvidence, Occurrence, Occurrences, Pedigree,
};
use cyclonedx_bom::models::hash::{Hash, HashAlgorithm, HashValue, Hashes};
use cyclonedx_bom::models::property::{Properties, Property};
use cyclonedx_bom::models::tool::Tools;
use cyclonedx_bom::prelude::{Bom, Component, Components, Metadata, Purl, SpecVersion, UrnUuid};
use cyclonedx_bom::validation::Validate as _;
use minify_model::{ImagePath, Rootfs, resolve};
use minify_packages::{Account, Kind, Package, PackageDb, State, account};
use sha2::{Digest as _, Sha256};

/// The media type of the document, also the `artifactType` of its OCI referrer.
pub const MEDIA_TYPE: &str = "application/vnd.cyclonedx+json";

/// Most bytes of an os-release file read.
const MAX_OS_RELEASE: u64 = 64 << 10;

/// Why no SBOM could be made.
#[derive(Debug, thiserror::Error)]
pub enum SbomError {
    /// The model broke one of CycloneDX's rules (a bug here, or a value the spec refuses).
    #[error("the SBOM does not satisfy CycloneDX 1.5: {0}")]
    Invalid(String),
    /// A package URL could not be built from a package's name and version.
    #[error("package {name} {version}: no valid package URL: {reason}")]
    Purl {
        name: String,
        version: String,
        reason: String,
    },
    /// Serialising the document failed.
    #[error("writing the SBOM as JSON: {0}")]
    Json(String),
}

/// An image the SBOM names: as the user gave it, and its digest or id (`sha256:...`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageName {
    pub reference: String,
    pub digest: String,
}

/// The distribution an image says it is (`/etc/os-release`, else `/usr/lib/os-release`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OsRelease {
    /// `ID` (`debian`, `ubuntu`); the namespace of `pkg:deb` URLs.
    pub id: String,
    /// `VERSION_ID` (`12`, `22.04`); empty on Debian testing/sid, which have none.
    pub version_id: String,
}

impl OsRelease {
    /// Read it through the image's own links, inside its root. `None` when the image has
    /// neither file.
    pub fn read(fs: &dyn Rootfs) -> Option<OsRelease> {
        ["/etc/os-release", "/usr/lib/os-release"]
            .into_iter()
            .find_map(|p| {
                let r = resolve(fs, p, true).ok()?;
                if !fs.entry(&r.path)?.is_file() {
                    return None;
                }
                fs.read(&r.path, Some(MAX_OS_RELEASE)).ok()
            })
            .map(|data| OsRelease::parse(&String::from_utf8_lossy(&data)))
    }

    /// `KEY=value` lines, values optionally quoted (os-release(5)).
    pub fn parse(text: &str) -> OsRelease {
        let mut os = OsRelease::default();
        for line in text.lines() {
            let Some((key, value)) = line.trim().split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches(['"', '\'']).to_owned();
            match key.trim() {
                "ID" => os.id = value,
                "VERSION_ID" => os.version_id = value,
                _ => {}
            }
        }
        os
    }

    /// purl's `distro` qualifier: `debian-12`; `None` without a `VERSION_ID`.
    fn distro(&self) -> Option<String> {
        (!self.id.is_empty() && !self.version_id.is_empty())
            .then(|| format!("{}-{}", self.id, self.version_id))
    }
}

/// What an SBOM is made from.
pub struct SbomInput<'a> {
    /// The source image's rootfs (for the files' sizes).
    pub fs: &'a dyn Rootfs,
    /// The package model of the source image.
    pub db: &'a PackageDb,
    /// The paths the minified image holds (real paths, as packed).
    pub kept: &'a BTreeSet<ImagePath>,
    /// The source image's distribution, when it says.
    pub os: Option<OsRelease>,
    /// The source image and its digest.
    pub source: ImageName,
    /// The output as given, and the minified image's id.
    pub output: ImageName,
    /// minify's version.
    pub tool_version: &'a str,
}

/// One package of the minified image: a unit the output holds some of
/// ([`minify_packages::account`]'s `partial` or `whole`, the same rule the pruned package
/// database and the report follow: a kept link to a directory, like `/lib`, is no package's
/// evidence), with its kept files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeptPackage {
    pub account: Account,
    pub files: Vec<ImagePath>,
}

/// The packages with kept files, in the model's order, each with its kept owned files.
pub fn kept_packages(
    fs: &dyn Rootfs,
    db: &PackageDb,
    kept: &BTreeSet<ImagePath>,
) -> Vec<KeptPackage> {
    let (accounts, _) = account(fs, db, &|p| kept.contains(p));
    accounts
        .into_iter()
        .filter(|a| a.state != State::Absent)
        .map(|a| {
            let files = db.packages[a.id]
                .files
                .iter()
                .filter(|f| kept.contains(*f) && db.owners(f).contains(&a.id))
                .cloned()
                .collect();
            KeptPackage { account: a, files }
        })
        .collect()
}

/// The package URL of a unit: `pkg:deb/<os id>/NAME@VERSION?arch=ARCH&distro=<id>-<version>`,
/// `pkg:pypi/NAME@VERSION` (name normalised as the purl spec says), `pkg:npm/[%40scope/]NAME@VERSION`.
/// `None` for a JDK home, which no package registry names (its files are its dpkg
/// package's too, when it came from one).
pub fn purl(p: &Package, os: Option<&OsRelease>) -> Result<Option<String>, SbomError> {
    let bad = |reason: String| SbomError::Purl {
        name: p.name.clone(),
        version: p.version.clone(),
        reason,
    };
    let s = match p.kind {
        Kind::Deb => {
            let namespace = os
                .map(|o| o.id.as_str())
                .filter(|id| !id.is_empty())
                .unwrap_or("debian");
            let mut b = purl::GenericPurlBuilder::new("deb".to_owned(), p.name.as_str())
                .with_namespace(namespace);
            if !p.version.is_empty() {
                b = b.with_version(p.version.as_str());
            }
            if !p.arch.is_empty() {
                b = b
                    .with_qualifier("arch", p.arch.as_str())
                    .map_err(|e| bad(e.to_string()))?;
            }
            if let Some(d) = os.and_then(OsRelease::distro) {
                b = b
                    .with_qualifier("distro", d)
                    .map_err(|e| bad(e.to_string()))?;
            }
            b.build().map_err(|e| bad(e.to_string()))?.to_string()
        }
        Kind::Python | Kind::Npm => {
            let ty = if p.kind == Kind::Python {
                purl::PackageType::PyPI
            } else {
                purl::PackageType::Npm
            };
            let (namespace, name) = match p.name.split_once('/') {
                Some((scope, name)) if p.kind == Kind::Npm && scope.starts_with('@') => {
                    (Some(scope), name)
                }
                _ => (None, p.name.as_str()),
            };
            let mut b = purl::PurlBuilder::new(ty, name);
            if let Some(ns) = namespace {
                b = b.with_namespace(ns);
            }
            if !p.version.is_empty() {
                b = b.with_version(p.version.as_str());
            }
            b.build().map_err(|e| bad(e.to_string()))?.to_string()
        }
        Kind::Jdk => return Ok(None),
    };
    Ok(Some(s))
}

/// The serial number: a UUID (version 8, "custom") made from the source digest and the
/// output id, so the same inputs give the same document.
fn serial(source: &ImageName, output: &ImageName) -> Result<UrnUuid, SbomError> {
    let mut h = Sha256::new();
    h.update(b"minify-sbom\0");
    h.update(source.digest.as_bytes());
    h.update(b"\0");
    h.update(output.digest.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x80; // version 8
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 9562 variant
    let hex = hex::encode(b);
    UrnUuid::new(format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
    .map_err(|e| SbomError::Invalid(format!("serial number: {e:?}")))
}

fn container(image: &ImageName) -> Component {
    let mut c = Component::new(
        Classification::Container,
        &image.reference,
        &image.digest,
        None,
    );
    if let Some(hex) = image.digest.strip_prefix("sha256:") {
        c.hashes = Some(Hashes(vec![Hash {
            alg: HashAlgorithm::SHA_256,
            content: HashValue(hex.to_owned()),
        }]));
    }
    c
}

/// The SBOM of the minified image.
pub fn build(input: &SbomInput<'_>) -> Result<Bom, SbomError> {
    let os = input.os.as_ref();
    let mut components = Vec::new();
    let mut refs: HashSet<String> = HashSet::new();
    for KeptPackage { account, files } in kept_packages(input.fs, input.db, input.kept) {
        let p = &input.db.packages[account.id];
        let purl = purl(p, os)?;
        // bom-refs must be unique: the same distribution can sit in two venvs.
        let base = purl
            .clone()
            .unwrap_or_else(|| format!("{}:{}@{}", p.kind, p.name, p.version));
        let mut bom_ref = base.clone();
        let mut n = 1;
        while !refs.insert(bom_ref.clone()) {
            n += 1;
            bom_ref = format!("{base}#{n}");
        }
        let mut c = Component::new(Classification::Library, &p.name, &p.version, Some(bom_ref));
        if p.version.is_empty() {
            c.version = None;
        }
        c.purl = purl.map(|s| s.parse::<Purl>().expect("Purl's FromStr takes any string"));
        c.evidence = Some(ComponentEvidence {
            licenses: None,
            copyright: None,
            occurrences: Some(Occurrences(
                files.iter().map(|f| Occurrence::new(f.as_str())).collect(),
            )),
            callstack: None,
            identity: None,
        });
        // The same figures as the report's `packages` entry for it.
        let mut props = vec![
            Property::new("minify:package-kind", p.kind.name()),
            Property::new("minify:state", account.state.name()),
            Property::new("minify:kept-files", &account.kept_files.to_string()),
            Property::new("minify:kept-bytes", &account.kept_bytes.to_string()),
            Property::new("minify:removed-files", &account.removed_files.to_string()),
            Property::new("minify:removed-bytes", &account.removed_bytes.to_string()),
        ];
        if let Some(site) = &p.site {
            props.push(Property::new("minify:site-packages", site.as_str()));
        }
        c.properties = Some(Properties(props));
        components.push(c);
    }

    let tool = Component::new(
        Classification::Application,
        "minify",
        input.tool_version,
        None,
    );
    let mut image = container(&input.output);
    image.bom_ref = Some(input.output.digest.clone()).filter(|d| !d.is_empty());
    image.pedigree = Some(Pedigree {
        ancestors: Some(Components(vec![container(&input.source)])),
        descendants: None,
        variants: None,
        commits: None,
        patches: None,
        notes: Some(format!(
            "minified by minify {} from {} ({})",
            input.tool_version, input.source.reference, input.source.digest
        )),
    });
    let mut props = vec![
        Property::new("minify:source-image", &input.source.reference),
        Property::new("minify:source-image-digest", &input.source.digest),
        Property::new("minify:output-image", &input.output.reference),
        Property::new("minify:output-image-id", &input.output.digest),
    ];
    if let Some(o) = os {
        let mut v = o.id.clone();
        if !o.version_id.is_empty() {
            let _ = write!(v, " {}", o.version_id);
        }
        props.push(Property::new("minify:os-release", &v));
    }
    let metadata = Metadata {
        timestamp: None,
        tools: Some(Tools::Object {
            services: None,
            components: Some(Components(vec![tool])),
        }),
        component: Some(image),
        properties: Some(Properties(props)),
        ..Metadata::default()
    };
    let bom = Bom {
        version: 1,
        serial_number: Some(serial(&input.source, &input.output)?),
        metadata: Some(metadata),
        components: Some(Components(components)),
        spec_version: SpecVersion::V1_5,
        ..Bom::default()
    };
    let v = bom.validate_version(SpecVersion::V1_5);
    if v.has_errors() {
        return Err(SbomError::Invalid(format!("{v:?}")));
    }
    Ok(bom)
}

/// The document as CycloneDX 1.5 JSON (pretty, ending in a newline).
pub fn to_json(bom: Bom) -> Result<Vec<u8>, SbomError> {
    let mut out = Vec::new();
    bom.output_as_json_v1_5(&mut out)
        .map_err(|e| SbomError::Json(e.to_string()))?;
    out.push(b'\n');
    Ok(out)
}

/// [`build`] then [`to_json`].
pub fn generate(input: &SbomInput<'_>) -> Result<Vec<u8>, SbomError> {
    to_json(build(input)?)
}

#[cfg(test)]
mod tests;
