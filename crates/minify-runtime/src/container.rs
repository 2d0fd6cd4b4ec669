//! One running container and its cleanup guard.
//!
//! Cleanup must happen on success, on error and on Ctrl-C (the pipeline future is dropped).
//! `Drop` cannot await, so it removes the container on a fresh thread with its own small
//! tokio runtime and waits for it: that works whether or not the caller's runtime is still
//! alive, and the process does not exit before the container is gone.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::{
    InspectContainerOptions, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder,
};
use futures_util::StreamExt as _;
use serde::Serialize;

use crate::docker::{docker_err, is_not_found};
use crate::{ImageInfo, RuntimeError, remove_v1_controller_dirs};

/// How long between two readiness/exit polls.
const POLL: Duration = Duration::from_millis(100);

/// A created-and-started container. Removed (with its v1 cgroup directories) by
/// [`Container::remove`] or, failing that, on drop.
#[derive(Debug)]
pub struct Container {
    docker: Docker,
    pub(crate) id: String,
    pub(crate) name: String,
    image: ImageInfo,
    ip: Option<IpAddr>,
    cgroup_parent: Option<String>,
    stop_timeout: Duration,
    removed: bool,
}

/// What [`Container::wait_ready`] saw.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "state")]
pub enum Readiness {
    /// Every exposed TCP port accepted a connection.
    Ready { ports: Vec<u16>, after_ms: u64 },
    /// The image exposes no TCP port: nothing to wait for.
    NoPorts,
    /// The container exited first.
    Exited { code: i64 },
}

impl Container {
    pub(crate) fn new(
        docker: Docker,
        id: String,
        name: String,
        image: ImageInfo,
        cgroup_parent: Option<String>,
        stop_timeout: Duration,
    ) -> Self {
        Container {
            docker,
            id,
            name,
            image,
            ip: None,
            cgroup_parent,
            stop_timeout,
            removed: false,
        }
    }

    /// The full container id (`MINIFY_CONTAINER`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The `minify-<random>` name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The config of the image the container runs (without overrides).
    pub fn image(&self) -> &ImageInfo {
        &self.image
    }

    /// The container's address on its network (`MINIFY_HOST`), once started.
    pub fn ip(&self) -> Option<IpAddr> {
        self.ip
    }

    pub(crate) fn docker(&self) -> &Docker {
        &self.docker
    }

    pub(crate) async fn refresh_address(&mut self) -> Result<(), RuntimeError> {
        let ins = self
            .docker
            .inspect_container(&self.id, None::<InspectContainerOptions>)
            .await
            .map_err(docker_err(format!("inspecting container {}", self.name)))?;
        self.ip = ins
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|nets| {
                let mut nets: Vec<_> = nets.into_iter().collect();
                // Prefer the default bridge; otherwise the first network by name.
                nets.sort_by_key(|(name, _)| (name != "bridge", name.clone()));
                nets.into_iter()
                    .find_map(|(_, ep)| ep.ip_address.filter(|ip| !ip.is_empty()))
            })
            .and_then(|ip| ip.parse().ok());
        Ok(())
    }

    /// `(running, exit code)` right now.
    pub async fn state(&self) -> Result<(bool, Option<i64>), RuntimeError> {
        let ins = self
            .docker
            .inspect_container(&self.id, None::<InspectContainerOptions>)
            .await
            .map_err(docker_err(format!("inspecting container {}", self.name)))?;
        let st = ins.state.unwrap_or_default();
        let running = st.running.unwrap_or(false);
        Ok((running, if running { None } else { st.exit_code }))
    }

    /// Wait until every exposed TCP port accepts a connection at [`Container::ip`], or the
    /// container exits, for at most `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<Readiness, RuntimeError> {
        let ports = self.image.tcp_ports();
        let start = Instant::now();
        if ports.is_empty() {
            return Ok(Readiness::NoPorts);
        }
        let Some(ip) = self.ip else {
            // A container that already exited has no address: that is an exit, not a
            // network problem.
            if let (false, code) = self.state().await? {
                return Ok(Readiness::Exited {
                    code: code.unwrap_or(-1),
                });
            }
            return Err(RuntimeError::NoAddress {
                container: self.name.clone(),
            });
        };
        let mut pending = ports.clone();
        loop {
            let mut still = Vec::new();
            for &p in &pending {
                let addr = std::net::SocketAddr::new(ip, p);
                let ok = matches!(
                    tokio::time::timeout(
                        Duration::from_secs(1),
                        tokio::net::TcpStream::connect(addr)
                    )
                    .await,
                    Ok(Ok(_))
                );
                if !ok {
                    still.push(p);
                }
            }
            pending = still;
            if pending.is_empty() {
                return Ok(Readiness::Ready {
                    ports,
                    after_ms: start.elapsed().as_millis() as u64,
                });
            }
            if let (false, code) = self.state().await? {
                return Ok(Readiness::Exited {
                    code: code.unwrap_or(-1),
                });
            }
            if start.elapsed() >= timeout {
                return Err(RuntimeError::ReadyTimeout {
                    container: self.name.clone(),
                    image: self.image.reference.clone(),
                    ports: port_list(&pending),
                    secs: timeout.as_secs(),
                    logs: self.logs_tail(20).await,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Wait for the container's main process to exit, at most `timeout`. `Some(code)` when it
    /// exited, `None` when it was still running at the deadline.
    pub async fn wait_exit(&self, timeout: Duration) -> Result<Option<i64>, RuntimeError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let (false, code) = self.state().await? {
                return Ok(Some(code.unwrap_or(-1)));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(POLL.max(Duration::from_millis(200))).await;
        }
    }

    /// The last `lines` lines of the container's stdout and stderr (best effort, for error
    /// messages; empty when they cannot be read).
    pub async fn logs_tail(&self, lines: usize) -> String {
        let opts = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail(&lines.to_string())
            .build();
        let mut stream = self.docker.logs(&self.id, Some(opts));
        let mut out = Vec::new();
        let read = async {
            while let Some(Ok(chunk)) = stream.next().await {
                out.extend_from_slice(&chunk.into_bytes());
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
        crate::truncate_output(&out)
    }

    /// Stop the container the way the image asks: its stop signal (set on the container from
    /// the image's `StopSignal`), then SIGKILL after the stop timeout. Returns the exit code.
    pub async fn stop(&self) -> Result<Option<i64>, RuntimeError> {
        let t = self.stop_timeout.as_secs().clamp(1, i32::MAX as u64) as i32;
        match self
            .docker
            .stop_container(
                &self.id,
                Some(StopContainerOptionsBuilder::default().t(t).build()),
            )
            .await
        {
            // 304: already stopped.
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => {}
            Err(e) => return Err(docker_err(format!("stopping container {}", self.name))(e)),
        }
        Ok(self.state().await?.1)
    }

    /// Remove the container (forced, with its anonymous volumes) and then the v1 cgroup
    /// directories Docker made for its cgroup parent.
    pub async fn remove(mut self) -> Result<(), RuntimeError> {
        let res = remove_async(&self.docker, &self.id, &self.name).await;
        self.removed = true;
        res?;
        if let Some(p) = &self.cgroup_parent {
            remove_v1_controller_dirs(p)?;
        }
        Ok(())
    }
}

pub(crate) async fn remove_async(
    docker: &Docker,
    id: &str,
    name: &str,
) -> Result<(), RuntimeError> {
    let opts = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(id, Some(opts)).await {
        Ok(()) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        // 409: removal already in progress (a concurrent cleanup); wait for it below.
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 409, ..
        }) => {
            for _ in 0..100 {
                match docker
                    .inspect_container(id, None::<InspectContainerOptions>)
                    .await
                {
                    Err(e) if is_not_found(&e) => return Ok(()),
                    _ => tokio::time::sleep(POLL).await,
                }
            }
            Ok(())
        }
        Err(e) => Err(docker_err(format!("removing container {name}"))(e)),
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        let id = self.id.clone();
        let name = self.name.clone();
        cleanup_blocking(
            &format!("container {}", self.name),
            self.docker.clone(),
            move |docker| async move { remove_async(&docker, &id, &name).await },
        );
        if let Some(p) = &self.cgroup_parent
            && let Err(e) = remove_v1_controller_dirs(p)
        {
            tracing::warn!("cleanup: {e}");
        }
    }
}

/// A container create request that nobody can abandon halfway. The request runs on a thread
/// of its own (with its own runtime and Docker client) and always runs to its answer; the
/// caller awaits that answer. If the caller is dropped first (Ctrl-C or SIGTERM while the
/// daemon is still creating the container), the drop waits for the thread and removes what it
/// created. Dropping the request itself instead, as a plain `await` would, leaves the daemon
/// creating a container that no guard knows about: a Ctrl-C about 2 s into a run left a
/// `created` container behind in 7 of 42 tries.
pub(crate) struct PendingCreate {
    /// The caller's client, for the cleanup only if a fresh one cannot be made.
    docker: Docker,
    thread: Option<std::thread::JoinHandle<()>>,
    answer: tokio::sync::oneshot::Receiver<Result<String, RuntimeError>>,
    name: String,
    cgroup_parent: Option<String>,
    /// The answer was handed to the caller, which owns the container from then on.
    delivered: bool,
}

impl PendingCreate {
    /// Send the create request for a container called `name` and return at once.
    pub(crate) fn send(
        docker: &Docker,
        name: String,
        body: bollard::models::ContainerCreateBody,
        what: String,
        cgroup_parent: Option<String>,
    ) -> PendingCreate {
        let (tx, answer) = tokio::sync::oneshot::channel();
        let create_name = name.clone();
        let thread = std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(RuntimeError::Thread {
                        action: format!("creating container {create_name}"),
                        detail: format!("no runtime: {e}"),
                    }));
                    return;
                }
            };
            let res = rt.block_on(async {
                let docker = Docker::connect_with_local_defaults()
                    .map_err(|source| RuntimeError::Connect { source })?
                    .with_timeout(Duration::from_mins(10));
                let docker = docker
                    .negotiate_version()
                    .await
                    .map_err(|source| RuntimeError::Connect { source })?;
                let opts = bollard::query_parameters::CreateContainerOptionsBuilder::default()
                    .name(&create_name)
                    .build();
                docker
                    .create_container(Some(opts), body)
                    .await
                    .map(|created| created.id)
                    .map_err(crate::docker::docker_err(what))
            });
            let _ = tx.send(res);
        });
        PendingCreate {
            docker: docker.clone(),
            thread: Some(thread),
            answer,
            name,
            cgroup_parent,
            delivered: false,
        }
    }

    /// The created container's id, or the daemon's error. The caller owns the container
    /// from then on.
    pub(crate) async fn id(mut self) -> Result<String, RuntimeError> {
        let res = (&mut self.answer).await.unwrap_or_else(|_| {
            Err(RuntimeError::Thread {
                action: format!("creating container {}", self.name),
                detail: "the request's thread ended without an answer".to_owned(),
            })
        });
        // From here the caller owns the container (or there is none).
        self.delivered = true;
        res
    }
}

impl Drop for PendingCreate {
    fn drop(&mut self) {
        if self.delivered {
            // The thread has sent its answer and is ending on its own.
            return;
        }
        // The request may still be with the daemon: wait for its answer.
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let Ok(Ok(id)) = self.answer.try_recv() else {
            return;
        };
        let name = self.name.clone();
        cleanup_blocking(
            &format!("container {name}"),
            self.docker.clone(),
            move |docker| async move { remove_async(&docker, &id, &name).await },
        );
        if let Some(p) = &self.cgroup_parent
            && let Err(e) = remove_v1_controller_dirs(p)
        {
            tracing::warn!("cleanup: {e}");
        }
    }
}

/// Run an async cleanup `job` to its end from a `Drop`, which cannot await: on a fresh thread
/// with its own small tokio runtime and its own Docker client (the caller's client is bound to
/// its runtime's reactor, which may be shutting down), waiting for it, so the process does not
/// exit before the cleanup is done.
pub(crate) fn cleanup_blocking<F, Fut>(what: &str, fallback: Docker, job: F)
where
    F: FnOnce(Docker) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), RuntimeError>>,
{
    let label = what.to_owned();
    let run = move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        match rt {
            Ok(rt) => {
                let res = rt.block_on(async {
                    let docker = Docker::connect_with_local_defaults()
                        .map_or(fallback, |d| d.with_timeout(Duration::from_mins(1)));
                    let docker = docker
                        .negotiate_version()
                        .await
                        .map_err(|source| RuntimeError::Connect { source })?;
                    job(docker).await
                });
                if let Err(e) = res {
                    tracing::warn!("cleanup: {e}");
                }
            }
            Err(e) => tracing::warn!("cleanup of {label}: no runtime: {e}"),
        }
    };
    if std::thread::spawn(run).join().is_err() {
        tracing::warn!("cleanup of {what} panicked");
    }
}

pub(crate) fn port_list(ports: &[u16]) -> String {
    ports
        .iter()
        .map(|p| format!("{p}/tcp"))
        .collect::<Vec<_>>()
        .join(", ")
}
