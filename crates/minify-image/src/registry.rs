//! The registry transport, `docker://HOST[:PORT]/NAME[:TAG|@DIGEST]`, over the distribution
//! protocol (the `oci-client` crate): pulling an image into a private OCI layout that the
//! file transports' reader then opens, and pushing a packed image (its layer, config and
//! manifest).
//!
//! Every blob is streamed to a file in the temp dir while its sha256 and length are counted,
//! and checked against the manifest's descriptor before the layout names it: no layer is
//! ever held in memory, and a registry that serves other bytes than it names is an error
//! before anything reads them. Credentials come from Docker's `config.json`
//! (`DOCKER_CONFIG`, else `~/.docker`), through its credential helpers too.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::{StreamExt as _, TryStreamExt as _};
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use serde::Deserialize;
use sha2::Digest as _;
use tokio::io::AsyncWriteExt as _;

use crate::source::{Descriptor, Platform, SourceImage};
use crate::{Digest, ImageRef, RegistryRef};

/// The most a manifest or index may weigh (they are read whole).
const MANIFEST_LIMIT: usize = 4 << 20;
/// How many blobs are fetched at once (skopeo fetches several layers side by side too).
const PARALLEL_BLOBS: usize = 4;
/// How deep an index may nest before the manifest.
const MAX_INDEX_DEPTH: usize = 2;

const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const ACCEPTED: &[&str] = &[
    MT_OCI_MANIFEST,
    MT_OCI_INDEX,
    MT_DOCKER_MANIFEST,
    MT_DOCKER_LIST,
];

/// What went wrong talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry could not be reached, or the connection broke (environment).
    #[error("cannot reach the registry {registry} for {reference}: {reason}")]
    Unreachable {
        registry: String,
        reference: String,
        reason: String,
    },
    /// The registry refused the credentials (or their absence).
    #[error(
        "the registry {registry} refused access to {reference} ({reason}): check the credentials for {registry} in {config}"
    )]
    Denied {
        registry: String,
        reference: String,
        reason: String,
        config: String,
    },
    /// No such repository, tag or digest.
    #[error("image {reference} does not exist in the registry ({reason})")]
    NotFound { reference: String, reason: String },
    /// A blob's bytes do not have the digest the manifest names.
    #[error(
        "{reference}: the registry sent blob {expected} with content of digest {actual}; refusing the image"
    )]
    BlobDigest {
        reference: String,
        expected: Digest,
        actual: String,
    },
    /// A blob's length differs from its descriptor's.
    #[error(
        "{reference}: the registry sent {actual} bytes for blob {digest}, but the manifest says {expected}"
    )]
    BlobSize {
        reference: String,
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    /// A multi-platform index without the platform wanted.
    #[error("{reference}: the image index has no image for {wanted} (it has {available})")]
    NoPlatform {
        reference: String,
        wanted: String,
        available: String,
    },
    /// A manifest minify cannot read.
    #[error("{reference}: {reason}")]
    BadManifest { reference: String, reason: String },
    /// Credentials could not be read (a broken config.json, a failing helper).
    #[error("reading the credentials for {registry}: {reason}")]
    Credentials { registry: String, reason: String },
    /// `--cert-dir` cannot be read.
    #[error("--cert-dir {path}: {reason}")]
    CertDir { path: String, reason: String },
    /// An output reference that cannot be pushed to.
    #[error("cannot push to {reference}: {reason}")]
    BadTarget {
        reference: String,
        reason: &'static str,
    },
    /// The registry answered with an error not covered above.
    #[error("the registry {registry} failed to {what} {reference}: {reason}")]
    Registry {
        registry: String,
        what: &'static str,
        reference: String,
        reason: String,
    },
    /// Local files (the temp dir).
    #[error("writing {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl RegistryError {
    /// The registry is not there or went away: exit code 3.
    pub fn is_environment(&self) -> bool {
        matches!(self, RegistryError::Unreachable { .. })
    }
}

/// An error and its causes on one line (reqwest says "error sending request" on top and
/// "Connection refused" three levels down).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    crate::view::one_line(&parts.join(": "))
}

/// A TLS failure says what the user can do about it, as skopeo's flags name it.
fn with_tls_hint(reason: String) -> String {
    let hint = if reason.contains("InvalidContentType") || reason.contains("corrupt message") {
        "; the registry does not speak TLS: --tls-verify=false reaches it over plain HTTP"
    } else if reason.contains("invalid peer certificate") {
        "; trust its CA with --cert-dir DIR (DIR/*.crt), or skip the check with --tls-verify=false"
    } else {
        ""
    };
    reason + hint
}

/// Where Docker's credentials are read from, for messages.
fn config_path() -> String {
    match std::env::var_os("DOCKER_CONFIG") {
        Some(d) => Path::new(&d).join("config.json").display().to_string(),
        None => "~/.docker/config.json".into(),
    }
}

/// A registry connection for one reference.
struct Session {
    client: Client,
    reference: Reference,
    auth: RegistryAuth,
    shown: String,
    registry: String,
}

impl Session {
    /// Connect (and log in) to `r`'s registry for `op`. With `--tls-verify=false`, HTTPS
    /// without certificate checks is tried first and plain HTTP when the server does not
    /// speak TLS, as skopeo does.
    async fn connect(r: &RegistryRef, op: RegistryOperation) -> Result<Session, RegistryError> {
        // One crypto provider for the process: rustls is built with ring only (aws-lc would
        // need cmake and a long C build on every machine; ring lacks only the post-quantum
        // key exchange, hence the deprecation note).
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();
        let shown = ImageRef::Registry(r.clone()).to_string();
        let reference = match (&r.digest, &r.tag) {
            (Some(d), _) => {
                Reference::with_digest(r.registry.clone(), r.repository.clone(), d.to_string())
            }
            (None, t) => Reference::with_tag(
                r.registry.clone(),
                r.repository.clone(),
                t.clone().unwrap_or_else(|| "latest".into()),
            ),
        };
        let auth = credentials(&r.registry)?;
        let certs = cert_dir_roots(r.access.cert_dir.as_deref())?;
        let protocols: &[ClientProtocol] = if r.access.tls_verify {
            &[ClientProtocol::Https]
        } else {
            &[ClientProtocol::Https, ClientProtocol::Http]
        };
        let mut last = None;
        for protocol in protocols {
            let config = ClientConfig {
                protocol: protocol.clone(),
                accept_invalid_certificates: !r.access.tls_verify,
                extra_root_certificates: certs.clone(),
                platform_resolver: None,
                connect_timeout: Some(std::time::Duration::from_secs(30)),
                read_timeout: Some(std::time::Duration::from_mins(2)),
                ..ClientConfig::default()
            };
            let session = Session {
                client: Client::new(config),
                reference: reference.clone(),
                auth: auth.clone(),
                shown: shown.clone(),
                registry: r.registry.clone(),
            };
            match session.client.auth(&reference, &auth, op).await {
                Ok(_) => return Ok(session),
                Err(e) => last = Some(session.error(e, "log in to")),
            }
        }
        Err(last.expect("at least one protocol"))
    }

    /// An oci-client error as one of ours.
    fn error(&self, e: OciDistributionError, what: &'static str) -> RegistryError {
        use OciDistributionError as E;
        let denied = |reason: String| RegistryError::Denied {
            registry: self.registry.clone(),
            reference: self.shown.clone(),
            reason,
            config: config_path(),
        };
        let not_found = |reason: String| RegistryError::NotFound {
            reference: self.shown.clone(),
            reason,
        };
        match e {
            E::RequestError(re) => RegistryError::Unreachable {
                registry: self.registry.clone(),
                reference: self.shown.clone(),
                reason: with_tls_hint(chain(&re)),
            },
            E::IoError(io) => RegistryError::Unreachable {
                registry: self.registry.clone(),
                reference: self.shown.clone(),
                reason: chain(&io),
            },
            E::UnauthorizedError { .. } => denied("401 unauthorized".into()),
            E::AuthenticationFailure(m) => denied(crate::view::one_line(&m)),
            E::ImageManifestNotFoundError(m) => not_found(crate::view::one_line(&m)),
            E::RegistryError { envelope, .. } => {
                let codes: Vec<String> = envelope
                    .errors
                    .iter()
                    .map(|e| format!("{:?}: {}", e.code, e.message))
                    .collect();
                let reason = crate::view::one_line(&codes.join("; "));
                if envelope
                    .errors
                    .iter()
                    .any(|e| matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied))
                {
                    denied(reason)
                } else if envelope.errors.iter().any(|e| {
                    matches!(
                        e.code,
                        OciErrorCode::ManifestUnknown
                            | OciErrorCode::NameUnknown
                            | OciErrorCode::NotFound
                    )
                }) {
                    not_found(reason)
                } else {
                    self.other(what, reason)
                }
            }
            E::ServerError { code, message, .. } => {
                let reason = crate::view::one_line(&format!("HTTP {code} {message}"));
                match code {
                    401 | 403 => denied(reason),
                    404 => not_found(reason),
                    _ => self.other(what, reason),
                }
            }
            other => self.other(what, chain(&other)),
        }
    }

    fn other(&self, what: &'static str, reason: String) -> RegistryError {
        RegistryError::Registry {
            registry: self.registry.clone(),
            what,
            reference: self.shown.clone(),
            reason,
        }
    }

    fn at_digest(&self, digest: &str) -> Reference {
        Reference::with_digest(
            self.reference.registry().to_owned(),
            self.reference.repository().to_owned(),
            digest.to_owned(),
        )
    }
}

/// The credentials Docker would use for `registry`: anonymous when there is no config or no
/// entry for it.
fn credentials(registry: &str) -> Result<RegistryAuth, RegistryError> {
    use docker_credential::{CredentialRetrievalError as C, DockerCredential};
    let server = if registry == "docker.io" {
        "https://index.docker.io/v1/"
    } else {
        registry
    };
    match docker_credential::get_credential(server) {
        Ok(DockerCredential::UsernamePassword(u, p)) => Ok(RegistryAuth::Basic(u, p)),
        Ok(DockerCredential::IdentityToken(t)) => Ok(RegistryAuth::Bearer(t)),
        Err(C::ConfigNotFound | C::NoCredentialConfigured) => Ok(RegistryAuth::Anonymous),
        // A config.json that cannot be opened is no config; one that cannot be parsed is.
        Err(C::ConfigReadError)
            if !Path::new(&config_path()).exists() || config_path().starts_with('~') =>
        {
            Ok(RegistryAuth::Anonymous)
        }
        Err(C::HelperFailure { helper, stderr, .. }) => Err(RegistryError::Credentials {
            registry: registry.to_owned(),
            reason: crate::view::one_line(&format!(
                "the credential helper docker-credential-{helper} failed: {}",
                stderr.trim()
            )),
        }),
        Err(e) => Err(RegistryError::Credentials {
            registry: registry.to_owned(),
            reason: format!("{e} ({})", config_path()),
        }),
    }
}

/// The CA certificates of a skopeo-style `--cert-dir` (`*.crt`). Client certificates
/// (`*.cert` + `*.key`) are not supported and are said so.
fn cert_dir_roots(dir: Option<&Path>) -> Result<Vec<Certificate>, RegistryError> {
    let Some(dir) = dir else {
        return Ok(Vec::new());
    };
    let bad = |reason: String| RegistryError::CertDir {
        path: dir.display().to_string(),
        reason,
    };
    let mut certs = Vec::new();
    let mut names: Vec<PathBuf> = fs_err::read_dir(dir)
        .map_err(|e| bad(e.kind().to_string()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    names.sort();
    for path in names {
        match path.extension().and_then(|e| e.to_str()) {
            Some("crt") => {
                let data = minify_model::input::read_text(&path, 1 << 20)
                    .map_err(|e| bad(crate::view::one_line(&e)))?;
                if !data.contains("-----BEGIN CERTIFICATE-----") {
                    return Err(bad(format!("{} is not a PEM certificate", path.display())));
                }
                certs.push(Certificate {
                    encoding: CertificateEncoding::Pem,
                    data: data.into_bytes(),
                });
            }
            Some("cert" | "key") => {
                return Err(bad(format!(
                    "{}: client certificates are not supported (only *.crt CA certificates)",
                    path.display()
                )));
            }
            _ => {}
        }
    }
    if certs.is_empty() {
        return Err(bad("it holds no *.crt certificate".into()));
    }
    Ok(certs)
}

impl Platform {
    fn name(&self) -> String {
        match &self.variant {
            Some(v) if !v.is_empty() => format!("{}/{}/{v}", self.os, self.architecture),
            _ => format!("{}/{}", self.os, self.architecture),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    #[serde(default)]
    schema_version: u32,
    #[serde(default)]
    media_type: String,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

/// This machine's platform as OCI names it.
fn host_platform() -> String {
    format!("linux/{}", crate::source::host_arch())
}

/// Pick the entry of an index for `wanted` (`os/arch[/variant]`).
fn pick_platform<'a>(entries: &'a [Descriptor], wanted: &str) -> Option<&'a Descriptor> {
    let mut parts = wanted.split('/');
    let (os, arch, variant) = (parts.next()?, parts.next()?, parts.next());
    entries.iter().find(|d| {
        d.platform.as_ref().is_some_and(|p| {
            p.os == os
                && p.architecture == arch
                && variant.is_none_or(|v| p.variant.as_deref() == Some(v))
        })
    })
}

/// Pull `r` into a private OCI layout and open it.
pub(crate) async fn pull(
    reference: &ImageRef,
    r: &RegistryRef,
) -> Result<SourceImage, crate::SourceError> {
    let tmp = crate::leftovers::TempKind::Image
        .make()
        .map_err(|source| RegistryError::Io {
            path: "temporary directory".into(),
            source,
        })?;
    let root = tmp.path().to_owned();
    let session = Session::connect(r, RegistryOperation::Pull).await?;
    let blobs = root.join("blobs/sha256");
    fs_err::create_dir_all(&blobs).map_err(|source| RegistryError::Io {
        path: blobs.display().to_string(),
        source,
    })?;
    let (manifest_bytes, manifest_digest, manifest) = resolve(&session, r).await?;
    let media_type = if manifest.media_type.is_empty() {
        MT_OCI_MANIFEST.to_owned()
    } else {
        manifest.media_type.clone()
    };
    let config = manifest
        .config
        .as_ref()
        .ok_or_else(|| RegistryError::BadManifest {
            reference: session.shown.clone(),
            reason: format!("manifest {manifest_digest} names no config"),
        })?;
    let mut wanted: Vec<(Digest, u64)> = Vec::new();
    for d in std::iter::once(config).chain(&manifest.layers) {
        let digest = Digest::parse(&d.digest).map_err(|e| RegistryError::BadManifest {
            reference: session.shown.clone(),
            reason: format!("manifest {manifest_digest}: {e}"),
        })?;
        if !wanted.iter().any(|(w, _)| *w == digest) {
            wanted.push((digest, d.size));
        }
    }
    let session = Arc::new(session);
    futures_util::stream::iter(wanted.into_iter().map(|(digest, size)| {
        let session = session.clone();
        let blobs = blobs.clone();
        async move { fetch_blob(&session, &blobs, &digest, size).await }
    }))
    .buffer_unordered(PARALLEL_BLOBS)
    .try_collect::<Vec<()>>()
    .await?;
    let write = |name: &str, bytes: &[u8]| {
        let path = root.join(name);
        fs_err::write(&path, bytes).map_err(|source| RegistryError::Io {
            path: path.display().to_string(),
            source,
        })
    };
    write(
        &format!("blobs/sha256/{}", manifest_digest.hex()),
        &manifest_bytes,
    )?;
    write("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MT_OCI_INDEX,
        "manifests": [{
            "mediaType": media_type,
            "digest": manifest_digest.as_str(),
            "size": manifest_bytes.len(),
        }],
    });
    write("index.json", &serde_json::to_vec(&index).expect("json"))?;
    let r2 = reference.clone();
    let root2 = root.clone();
    let mut image = tokio::task::spawn_blocking(move || {
        crate::source::read_oci(r2, &crate::archive::Container::dir(&root2), None)
    })
    .await
    .map_err(|e| RegistryError::Io {
        path: root.display().to_string(),
        source: std::io::Error::other(e),
    })??;
    // The name Docker would give it, which the default output is derived from.
    image.repo_tags = r
        .tag
        .iter()
        .map(|t| format!("{}/{}:{t}", r.registry, r.repository))
        .collect();
    image.tmp = Some(tmp);
    Ok(image)
}

/// The image manifest `r` names: through an index to the wanted platform's. Every document
/// is checked against the digest it was asked by.
async fn resolve(
    session: &Session,
    r: &RegistryRef,
) -> Result<(Vec<u8>, Digest, Manifest), RegistryError> {
    let mut at = session.reference.clone();
    for _ in 0..=MAX_INDEX_DEPTH {
        let (bytes, _) = session
            .client
            .pull_manifest_raw(&at, &session.auth, ACCEPTED)
            .await
            .map_err(|e| session.error(e, "read the manifest of"))?;
        if bytes.len() > MANIFEST_LIMIT {
            return Err(RegistryError::BadManifest {
                reference: session.shown.clone(),
                reason: format!("a manifest of {} bytes is too large", bytes.len()),
            });
        }
        let digest = Digest::of_bytes(&bytes);
        if let Some(asked) = at.digest()
            && asked != digest.as_str()
        {
            return Err(RegistryError::BlobDigest {
                reference: session.shown.clone(),
                expected: Digest::parse(asked).map_err(|e| RegistryError::BadManifest {
                    reference: session.shown.clone(),
                    reason: e.to_string(),
                })?,
                actual: digest.to_string(),
            });
        }
        let m: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| RegistryError::BadManifest {
                reference: session.shown.clone(),
                reason: format!("manifest {digest} is not valid JSON: {e}"),
            })?;
        if m.schema_version != 2 {
            return Err(RegistryError::BadManifest {
                reference: session.shown.clone(),
                reason: format!(
                    "manifest {digest} has schemaVersion {} (only schema 2 and OCI manifests are read)",
                    m.schema_version
                ),
            });
        }
        let Some(entries) = &m.manifests else {
            return Ok((bytes.to_vec(), digest, m));
        };
        let wanted = r.access.platform.clone().unwrap_or_else(host_platform);
        let Some(entry) = pick_platform(entries, &wanted) else {
            let available: Vec<String> = entries
                .iter()
                .filter_map(|d| d.platform.as_ref().map(Platform::name))
                .collect();
            return Err(RegistryError::NoPlatform {
                reference: session.shown.clone(),
                wanted,
                available: if available.is_empty() {
                    "no platform".into()
                } else {
                    available.join(", ")
                },
            });
        };
        tracing::debug!(
            "{}: {wanted} is {} ({})",
            session.shown,
            entry.digest,
            entry.media_type
        );
        at = session.at_digest(&entry.digest);
    }
    Err(RegistryError::BadManifest {
        reference: session.shown.clone(),
        reason: format!("image indexes nest deeper than {MAX_INDEX_DEPTH}"),
    })
}

/// Stream one blob into `blobs/<hex>`, counting its digest and length as it comes; a blob
/// that is not what its descriptor says is never given its name.
async fn fetch_blob(
    session: &Session,
    blobs: &Path,
    digest: &Digest,
    size: u64,
) -> Result<(), RegistryError> {
    let partial = blobs.join(format!("{}.partial", digest.hex()));
    let io_err = |source| RegistryError::Io {
        path: partial.display().to_string(),
        source,
    };
    let mut out = tokio::io::BufWriter::with_capacity(
        1 << 20,
        tokio::fs::File::create(&partial).await.map_err(io_err)?,
    );
    let mut stream = session
        .client
        .pull_blob_stream(&session.reference, digest.as_str())
        .await
        .map_err(|e| session.error(e, "fetch a blob of"))?;
    let mut hasher = sha2::Sha256::new();
    let mut got: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            // oci-client checks the digest too, after the last byte: with every byte here,
            // our own check below decides, and its message names the digest received.
            Err(_) if got == size => break,
            Err(e) => {
                return Err(RegistryError::Unreachable {
                    registry: session.registry.clone(),
                    reference: session.shown.clone(),
                    reason: format!("reading blob {digest}: {}", chain(&e)),
                });
            }
        };
        got += chunk.len() as u64;
        if got > size {
            return Err(RegistryError::BlobSize {
                reference: session.shown.clone(),
                digest: digest.clone(),
                expected: size,
                actual: got,
            });
        }
        hasher.update(&chunk);
        out.write_all(&chunk).await.map_err(io_err)?;
    }
    out.flush().await.map_err(io_err)?;
    drop(out);
    let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
    if actual != digest.as_str() {
        return Err(RegistryError::BlobDigest {
            reference: session.shown.clone(),
            expected: digest.clone(),
            actual,
        });
    }
    if got != size {
        return Err(RegistryError::BlobSize {
            reference: session.shown.clone(),
            digest: digest.clone(),
            expected: size,
            actual: got,
        });
    }
    let path = blobs.join(digest.hex());
    fs_err::rename(&partial, &path).map_err(|source| RegistryError::Io {
        path: path.display().to_string(),
        source,
    })?;
    Ok(())
}

/// A packed image as the registry gets it.
pub(crate) struct PushImage<'a> {
    pub config: &'a [u8],
    pub config_digest: &'a Digest,
    pub layer_path: &'a Path,
    pub layer_digest: &'a Digest,
    pub layer_bytes: u64,
    pub manifest: &'a [u8],
}

/// Push the layer (streamed from its file, unless the registry has it), the config and the
/// manifest under `r`'s tag. Returns the manifest's digest.
pub(crate) async fn push(r: &RegistryRef, image: &PushImage<'_>) -> Result<Digest, RegistryError> {
    let shown = ImageRef::Registry(r.clone()).to_string();
    if r.digest.is_some() || r.tag.is_none() {
        return Err(RegistryError::BadTarget {
            reference: shown,
            reason: "an output needs a tag, not a digest",
        });
    }
    let session = Session::connect(r, RegistryOperation::Push).await?;
    for (digest, bytes) in [
        (image.layer_digest, image.layer_bytes),
        (image.config_digest, image.config.len() as u64),
    ] {
        let exists = session
            .client
            .blob_exists(&session.reference, digest.as_str())
            .await
            .map_err(|e| session.error(e, "push to"))?;
        if exists {
            tracing::debug!("{shown}: the registry has blob {digest} already");
            continue;
        }
        if digest == image.config_digest {
            session
                .client
                .push_blob(&session.reference, image.config.to_vec(), digest.as_str())
                .await
                .map_err(|e| session.error(e, "push the config of"))?;
            continue;
        }
        let path = image.layer_path.to_owned();
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|source| RegistryError::Io {
                path: path.display().to_string(),
                source,
            })?;
        let body = crate::sink::file_chunks(file).map_err(OciDistributionError::IoError);
        session
            .client
            .push_blob_stream(&session.reference, body, digest.as_str(), Some(bytes))
            .await
            .map_err(|e| session.error(e, "push the layer of"))?;
    }
    session
        .client
        .push_manifest_raw(
            &session.reference,
            image.manifest.to_vec(),
            http_header(MT_OCI_MANIFEST),
        )
        .await
        .map_err(|e| session.error(e, "push the manifest of"))?;
    Ok(Digest::of_bytes(image.manifest))
}

fn http_header(v: &'static str) -> http::HeaderValue {
    http::HeaderValue::from_static(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(os: &str, arch: &str, variant: Option<&str>) -> Descriptor {
        Descriptor {
            media_type: MT_OCI_MANIFEST.into(),
            digest: format!("sha256:{}", "0".repeat(64)),
            size: 1,
            platform: Some(Platform {
                os: os.into(),
                architecture: arch.into(),
                variant: variant.map(Into::into),
            }),
            annotations: std::collections::BTreeMap::new(),
            artifact_type: None,
        }
    }

    #[test]
    fn platforms_are_picked_by_os_arch_and_variant() {
        let entries = [
            entry("linux", "arm", Some("v7")),
            entry("linux", "arm64", Some("v8")),
            entry("linux", "amd64", None),
        ];
        let pick =
            |w: &str| pick_platform(&entries, w).map(|d| d.platform.as_ref().unwrap().name());
        assert_eq!(pick("linux/amd64").as_deref(), Some("linux/amd64"));
        assert_eq!(pick("linux/arm64").as_deref(), Some("linux/arm64/v8"));
        assert_eq!(pick("linux/arm/v7").as_deref(), Some("linux/arm/v7"));
        assert_eq!(pick("linux/arm/v6"), None);
        assert_eq!(pick("windows/amd64"), None);
        assert_eq!(pick("linux"), None);
    }

    #[test]
    fn cert_dir_needs_a_ca_and_refuses_client_certs() {
        let dir = tempfile::tempdir().unwrap();
        assert!(cert_dir_roots(Some(dir.path())).is_err());
        fs_err::write(dir.path().join("ca.crt"), "not a cert").unwrap();
        let e = cert_dir_roots(Some(dir.path())).unwrap_err().to_string();
        assert!(e.contains("not a PEM certificate"), "{e}");
        fs_err::write(
            dir.path().join("ca.crt"),
            "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert_eq!(cert_dir_roots(Some(dir.path())).unwrap().len(), 1);
        fs_err::write(dir.path().join("client.key"), "k").unwrap();
        let e = cert_dir_roots(Some(dir.path())).unwrap_err().to_string();
        assert!(e.contains("client certificates"), "{e}");
    }
}
