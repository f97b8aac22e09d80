//! The installed plugins, swappable at run time.

use std::sync::{Arc, RwLock};

use super::Plugin;

/// An ordered set of plugins (operator plugins first, then the tenant's), replaced
/// atomically. A decision takes a `snapshot` and keeps its `Arc`s to the plugins it
/// started with, so a swap never drops or mixes a request.
pub struct PluginSet {
    current: RwLock<Arc<[Arc<Plugin>]>>,
}

impl PluginSet {
    pub fn new(plugins: Vec<Arc<Plugin>>) -> Self {
        PluginSet { current: RwLock::new(plugins.into()) }
    }

    /// The plugins installed now.
    pub fn snapshot(&self) -> Arc<[Arc<Plugin>]> {
        // A poisoned lock still holds a whole Arc (the writer only swaps it).
        match self.current.read() {
            Ok(g) => Arc::clone(&g),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }

    /// Installs `plugins` in place of the current set, which it returns.
    pub fn replace(&self, plugins: Vec<Arc<Plugin>>) -> Arc<[Arc<Plugin>]> {
        let new: Arc<[Arc<Plugin>]> = plugins.into();
        let mut g = match self.current.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        std::mem::replace(&mut *g, new)
    }

    /// The digests of the installed plugins, in order.
    pub fn digests(&self) -> Vec<String> {
        self.snapshot().iter().map(|p| p.digest.clone()).collect()
    }
}

impl Default for PluginSet {
    fn default() -> Self {
        PluginSet::new(Vec::new())
    }
}
