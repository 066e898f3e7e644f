//! The gateway listeners while `mesh run` runs: they follow the config and the certificate
//! files, as Istio's gateways follow LDS and SDS pushes.
//!
//! One task owns the listener set. After each good reload (the config is already in the
//! handle) and after the certificate files changed, it plans the named Gateways again
//! ([`plan`](super::plan)) and compares by listener address:
//! - a new address is bound and starts accepting;
//! - an address no server uses any more (its servers, or its whole Gateway, left the config)
//!   stops accepting at once, so new connections are refused, and its connections drain as on
//!   SIGTERM (HTTP ones close after their requests in flight, the rest get up to 5 s);
//! - an address that stays takes the new server set (hosts, TLS modes, certificates read
//!   again) for its next connections; connections already open keep theirs.
//!
//! What cannot be applied is kept as it was and reported like a rejected reload: on stderr and
//! in `/config_dump`'s `last_reload_error`, until an update applies cleanly. That is a
//! certificate that does not load (the port keeps its previous servers and certificates; a new
//! port is not opened) and a new port that cannot be bound (tried again at the next update).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use mesh_core::CompiledMesh;
use tokio::{net::TcpListener, sync::watch, task::JoinSet, time::Instant};

use super::{Ctx, ReloadStatus, Settings, Site, accept, cert_watch::CertWatch, plan};

/// What [`super::start`] prepared: bound listeners, not yet accepting.
#[derive(Debug)]
pub(super) struct Start {
    pub(super) ctx: Arc<Ctx>,
    pub(super) settings: Settings,
    pub(super) status: Arc<Mutex<ReloadStatus>>,
    /// Wakes after each good reload.
    pub(super) reloads: watch::Receiver<u64>,
    pub(super) certs: CertWatch,
    pub(super) bound: Vec<(SocketAddr, TcpListener, Site)>,
    /// The warnings already printed (each is printed once while it lasts).
    pub(super) warnings: Vec<String>,
}

/// The gateway listeners: bound at start, then following the config until `mesh run` stops.
#[derive(Debug)]
pub(crate) struct Gateways {
    ctx: Arc<Ctx>,
    settings: Settings,
    status: Arc<Mutex<ReloadStatus>>,
    reloads: watch::Receiver<u64>,
    certs: CertWatch,
    /// Listeners by the address they were planned for.
    running: BTreeMap<SocketAddr, Running>,
    /// Bound at start, accepting once [`Gateways::spawn`] runs.
    waiting: Vec<(
        TcpListener,
        watch::Receiver<Arc<Site>>,
        watch::Receiver<bool>,
    )>,
    /// Accept loops, draining ones included.
    tasks: JoinSet<()>,
    warned: BTreeSet<String>,
    /// Named Gateways the config no longer has.
    missing: BTreeSet<String>,
}

/// One listener: what it serves (read per connection) and its own stop.
#[derive(Debug)]
struct Running {
    local: SocketAddr,
    site: watch::Sender<Arc<Site>>,
    stop: watch::Sender<bool>,
}

impl Running {
    fn new(local: SocketAddr, site: Site) -> Self {
        Running {
            local,
            site: watch::Sender::new(Arc::new(site)),
            stop: watch::Sender::new(false),
        }
    }
}

impl Gateways {
    pub(super) fn new(start: Start) -> Self {
        let mut running = BTreeMap::new();
        let mut waiting = Vec::new();
        for (addr, listener, site) in start.bound {
            let local = listener.local_addr().unwrap_or(addr);
            let r = Running::new(local, site);
            waiting.push((listener, r.site.subscribe(), r.stop.subscribe()));
            running.insert(addr, r);
        }
        Gateways {
            ctx: start.ctx,
            settings: start.settings,
            status: start.status,
            reloads: start.reloads,
            certs: start.certs,
            running,
            waiting,
            tasks: JoinSet::new(),
            warned: start.warnings.into_iter().collect(),
            missing: BTreeSet::new(),
        }
    }

    /// `gateway PORT -> ADDR` for the ready line, one per listener.
    pub(crate) fn ready_lines(&self) -> Vec<String> {
        self.running
            .iter()
            .map(|(addr, r)| format!("gateway {} -> {}", addr.port(), r.local))
            .collect()
    }

    /// Serves every listener, and follows reloads and certificate changes, on `tasks` until
    /// `stop`; then every listener drains.
    pub(crate) fn spawn(self, tasks: &mut JoinSet<()>, stop: &watch::Receiver<bool>) {
        tasks.spawn(self.run(stop.clone()));
    }

    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        for (listener, site, listener_stop) in std::mem::take(&mut self.waiting) {
            let ctx = self.ctx.clone();
            self.tasks
                .spawn(accept::serve(listener, site, ctx, listener_stop));
        }
        let mut follow_reloads = true;
        loop {
            // The futures are dropped before a branch's handler runs: the handlers may use
            // `self`.
            tokio::select! {
                () = accept::stopped(&mut stop) => break,
                changed = self.reloads.changed(), if follow_reloads => match changed {
                    Ok(()) => self.update().await,
                    // The status outlives the listeners; if not, there are no more reloads.
                    Err(_) => follow_reloads = false,
                },
                () = self.certs.changed() => self.update().await,
                Some(_) = self.tasks.join_next(), if !self.tasks.is_empty() => {}
            }
        }
        for r in self.running.values() {
            r.stop.send_replace(true);
        }
        while self.tasks.join_next().await.is_some() {}
    }

    /// Plans the listeners again from the config in use and applies the difference; reports
    /// what could not be applied (or clears an earlier report).
    pub(super) async fn update(&mut self) {
        let snapshot = self.ctx.handle.snapshot();
        self.note_missing(&snapshot);
        self.certs
            .follow(super::cert_watch::folders(&snapshot, &self.settings));
        let mut warnings = Vec::new();
        let planned = plan(&snapshot, &self.settings, &mut |w| warnings.push(w));
        drop(snapshot);
        self.warn_once(warnings);

        let wanted: BTreeSet<SocketAddr> = planned.iter().map(|(addr, _)| *addr).collect();
        let gone: Vec<SocketAddr> = self
            .running
            .keys()
            .filter(|addr| !wanted.contains(addr))
            .copied()
            .collect();
        let freed: BTreeSet<u16> = gone.iter().map(SocketAddr::port).collect();
        for addr in gone {
            let r = self.running.remove(&addr).expect("listed above");
            r.stop.send_replace(true);
            say!(
                "mesh run: gateway {} -> {}: no server of the named Gateways uses this port any more: stopped accepting, draining its connections (up to 5 s)",
                addr.port(),
                r.local
            );
        }
        let mut errors = Vec::new();
        for (addr, site) in planned {
            let port = addr.port();
            match (self.running.get(&addr), site) {
                (Some(r), Ok(site)) => {
                    r.site.send_replace(Arc::new(site));
                }
                (Some(_), Err(e)) => errors.push(format!(
                    "{e}; gateway port {port} keeps its previous servers and certificates"
                )),
                (None, Ok(site)) => match bind(addr, freed.contains(&port)).await {
                    Ok(listener) => {
                        let local = listener.local_addr().unwrap_or(addr);
                        let r = Running::new(local, site);
                        let task = accept::serve(
                            listener,
                            r.site.subscribe(),
                            self.ctx.clone(),
                            r.stop.subscribe(),
                        );
                        self.tasks.spawn(task);
                        self.running.insert(addr, r);
                        say!("mesh run: gateway {port} -> {local}: new listener, accepting");
                    }
                    Err(e) => errors.push(format!(
                        "cannot bind the gateway listener on {addr}: {e}; tried again at the next reload"
                    )),
                },
                (None, Err(e)) => errors.push(format!(
                    "{e}; gateway port {port} is not opened until it loads"
                )),
            }
        }
        for e in &errors {
            say!("mesh run: gateway listeners not updated: {e}");
        }
        let error = (!errors.is_empty()).then(|| {
            format!(
                "gateway listeners not updated: {}: fix the files or the config and save again",
                errors.join("; ")
            )
        });
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .listener_error(error);
    }

    /// Warns when a named Gateway leaves the config (its listeners drain) and notes when it
    /// comes back.
    fn note_missing(&mut self, mesh: &CompiledMesh) {
        for key in &self.settings.keys {
            let present = mesh.gateways.iter().any(|s| &s.gateway == key);
            if !present && self.missing.insert(key.clone()) {
                say!(
                    "mesh run: warning: Gateway {key} (--gateway) is no longer in the config: its listeners stop accepting and drain; they start again if it comes back"
                );
            } else if present && self.missing.remove(key) {
                say!("mesh run: Gateway {key} is in the config again: serving its servers");
            }
        }
    }

    /// Prints the warnings not printed before; forgets the ones that no longer apply.
    fn warn_once(&mut self, warnings: Vec<String>) {
        let now: BTreeSet<String> = warnings.into_iter().collect();
        for w in now.difference(&self.warned) {
            say!("mesh run: warning: {w}");
        }
        self.warned = now;
    }
}

/// Binds `addr`. When a listener on the same port was stopped a moment ago (a server's `bind`
/// changed), its task may not have let go of the port yet: `AddrInUse` is tried again for up
/// to a second.
async fn bind(addr: SocketAddr, just_freed: bool) -> std::io::Result<TcpListener> {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        match TcpListener::bind(addr).await {
            Err(e)
                if just_freed
                    && e.kind() == std::io::ErrorKind::AddrInUse
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            bound => return bound,
        }
    }
}

#[cfg(test)]
impl Gateways {
    /// The listeners' ports and what each serves now.
    pub(super) fn sites(&self) -> Vec<(u16, Arc<Site>)> {
        self.running
            .iter()
            .map(|(addr, r)| (addr.port(), r.site.borrow().clone()))
            .collect()
    }
}
