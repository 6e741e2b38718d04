//! Shared application state handed to every handler.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::config::Settings;
use crate::metrics::Metrics;
use crate::store::{self, Keys, Store};

/// Cheap to clone: the store is already reference-counted, the rest sits behind `Arc`s.
#[derive(Clone)]
pub struct AppState {
    /// Redis: the pool, with the deadline of one operation and the metrics of its failures.
    pub store: Store,
    pub keys: Arc<Keys>,
    pub replica: Arc<str>,
    pub metrics: Arc<Metrics>,
    /// Deadline for the PING behind /readyz.
    pub readyz_timeout: Duration,
    /// Per-request deadline enforced by the timeout layer.
    pub request_timeout: Duration,
    /// Most cache entries at once (`WEBAPP_CACHE_MAX_ENTRIES`).
    pub cache_max_entries: u64,
    /// Most cache entries one client address holds (`WEBAPP_CACHE_MAX_ENTRIES_PER_CLIENT`).
    pub cache_max_entries_per_client: u64,
    /// After SIGTERM, how long the app serves on, saying it is stopping (`WEBAPP_LAME_DUCK_MS`).
    pub lame_duck: Duration,
    /// A replica unseen for this long leaves `/api/replicas` (`WEBAPP_REPLICA_FORGET_AFTER_SECS`).
    pub replica_forget_after: Duration,
    shutting_down: Arc<AtomicBool>,
}

impl AppState {
    /// Builds the state from settings; reads the password file, does not contact Redis.
    /// Refuses settings that contradict each other ([`Settings::check`]).
    pub fn from_settings(settings: &Settings) -> anyhow::Result<AppState> {
        settings.check().map_err(anyhow::Error::msg)?;
        let password = settings.redis.read_password()?;
        let metrics = Arc::new(Metrics::new()?);
        let store = Store::new(
            store::build_pool(&settings.redis, password)?,
            Arc::clone(&metrics),
            Duration::from_millis(settings.redis.redis_command_timeout_ms),
        );
        Ok(AppState {
            store,
            keys: Arc::new(Keys::new(&settings.redis.redis_key_prefix)),
            replica: Arc::from(settings.replica_name()),
            metrics,
            readyz_timeout: Duration::from_millis(settings.redis.readyz_timeout_ms),
            request_timeout: settings.request_timeout(),
            cache_max_entries: settings.cache_max_entries,
            cache_max_entries_per_client: settings.cache_max_entries_per_client,
            replica_forget_after: settings.replica_forget_after(),
            lame_duck: settings.lame_duck(),
            shutting_down: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Marks the service as going away: /readyz answers 503 "stopping" from now on.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }
}
