//! Live reload: the running configuration, swappable while requests run.
//!
//! Every request takes the app current when it starts (one atomic load) and
//! keeps it to the end, so a reload never disturbs a request or transfer in
//! flight: it only changes what new requests see. A new configuration that
//! does not load or build is refused and the old one stays in force.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::app::App;
use crate::config;

/// The app in force, and where its configuration comes from.
pub struct Live {
    app: ArcSwap<App>,
    path: PathBuf,
    explicit: bool,
}

/// What a successful reload changed that only a restart applies.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Keys whose new values wait for a restart (`server.listen`...).
    pub need_restart: Vec<&'static str>,
}

impl Live {
    /// `path`/`explicit` say where `reload` reads the configuration again.
    pub fn new(app: Arc<App>, path: PathBuf, explicit: bool) -> Self {
        Live {
            app: ArcSwap::new(app),
            path,
            explicit,
        }
    }

    /// A fixed app that is never reloaded (tests, embedded use).
    pub fn fixed(app: Arc<App>) -> Self {
        Live::new(app, PathBuf::new(), false)
    }

    /// The app new requests use.
    pub fn current(&self) -> Arc<App> {
        self.app.load_full()
    }

    /// Reads the configuration again and, when it is valid, puts it in force.
    pub fn reload(&self) -> Result<Reloaded, String> {
        let config = config::load(&self.path, self.explicit).map_err(|e| e.to_string())?;
        let old = self.current();
        let need_restart = restart_only_changes(&old, &config);
        let app = App::build_with(config, old.carried()).map_err(|e| e.to_string())?;
        self.app.store(Arc::new(app));
        Ok(Reloaded { need_restart })
    }
}

/// Settings read once at startup (the listener, its TLS files, the
/// connection limits): a reload keeps them and says so.
fn restart_only_changes(old: &App, new: &config::Config) -> Vec<&'static str> {
    let o = &old.config;
    let mut keys = Vec::new();
    if o.server.listen != new.server.listen {
        keys.push("server.listen");
    }
    let tls_files = |c: &config::Config| {
        c.server
            .tls
            .as_ref()
            .map(|t| (t.cert.clone(), t.key.clone()))
    };
    if tls_files(&old.config) != tls_files(new) {
        keys.push("server.tls");
    }
    if o.server.worker_threads != new.server.worker_threads {
        keys.push("server.worker_threads");
    }
    if o.limits != new.limits {
        keys.push("limits");
    }
    if o.raw.metrics.listen != new.raw.metrics.listen {
        keys.push("metrics.listen");
    }
    keys
}
