//! Helpers shared by the store's test modules ([`super::tests`], [`super::mailbox_tests`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::rc::Rc;

use super::index::{MailboxStatus, MessageEntry};
use super::{recover, recover_with, RecoverOptions, Recovered, Store, StoreConfig};

/// Every mailbox's status and messages, by (user, name): what recovery must rebuild.
pub(super) type Canon = BTreeMap<(String, String), (MailboxStatus, Vec<MessageEntry>)>;

/// Every user on core 0.
pub(super) fn owner0(_: &str) -> usize {
    0
}

/// Runs `f` in a fresh glommio executor and returns its output.
pub(super) fn run_local<T, F, G>(f: G) -> T
where
    T: Send + 'static,
    F: Future<Output = T> + 'static,
    G: FnOnce() -> F + Send + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .io_memory(512 << 10)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

/// The default config for `core`, without periodic checkpoints.
pub(super) fn cfg(data: &Path, core: u16) -> StoreConfig {
    let mut c = StoreConfig::new(data, core);
    c.checkpoint_meta_bytes_interval = 0;
    c.checkpoint_blob_bytes_interval = 0;
    c
}

/// Recovery that ignores checkpoints (scans every meta record).
pub(super) fn full_scan(data: &Path, ncores: usize, owner: &dyn Fn(&str) -> usize) -> Recovered {
    recover_with(
        data,
        ncores,
        owner,
        RecoverOptions {
            use_checkpoints: false,
        },
    )
    .unwrap()
}

/// Recovers a one-core store under `data` and opens it with `c` (inside an executor).
pub(super) async fn open_one(data: &Path, c: StoreConfig) -> Rc<Store> {
    let rec = recover(data, 1, &owner0).unwrap();
    let idx = rec.cores.into_iter().next().unwrap();
    Store::open(c, idx).await.unwrap()
}
