//! Work moves to the data: the cross-core mesh.
//!
//! Every pair of cores is joined by a bounded single-producer/single-consumer channel
//! (glommio's full mesh). A core that received a message for mailboxes it does not own sends
//! work to the owner and awaits `Delivered`; no lock, no shared map. `Store` carries the
//! whole message (when one other core owns every recipient: the owner stores blob and index
//! records with one log write); `Deliver` carries only index records for a blob already
//! stored by the sender (recipients spread over several cores, or remote ones too). The
//! owner runs each request as a task of its own (so a peer's requests group-commit together
//! and its receiver keeps draining replies), which empties the channel at once: what bounds
//! the requests in flight (and the message bytes they carry) is the senders' SMTP sessions,
//! each awaiting its own request, at most one per owner core
//! (`smtp.connections_per_core_max` on each sending core).
//!
//! The mesh also moves *connections* to their data: after an IMAP or POP3 login on a core that
//! does not own the user, the session sends `Adopt` (a duplicate of the socket's descriptor and
//! the session state) to the owner, which serves the connection from then on (see
//! [`handoff`](super::handoff)).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::rc::Rc;

use glommio::channels::channel_mesh::{MeshBuilder, Senders};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};

use crate::runtime::handoff::Handoff;

use crate::store::{Delivery, Filing, Store, StoreError};

/// Capacity of each core-to-core channel.
pub const MESH_CHANNEL_DEPTH: usize = 1024;
/// Connections received from other cores and not yet started here.
pub const ADOPT_QUEUE_DEPTH: usize = 1024;

/// Why a delivery on another core failed (Send, so it can cross the mesh).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliverFailure {
    DiskFull,
    Storage,
    /// The owner core is gone (shutting down).
    Unreachable,
}

pub enum CoreMsg {
    Deliver {
        req: u64,
        deliveries: Vec<Delivery>,
    },
    /// Store this message and file it for these users (all owned by the receiver): one
    /// log write on the owner covers the blob and its index records.
    Store {
        req: u64,
        message: Vec<u8>,
        filings: Vec<Filing>,
        internal_date: i64,
    },
    Delivered {
        req: u64,
        result: Result<Vec<u32>, DeliverFailure>,
    },
    /// Serve this connection here (this core owns the logged-in user).
    Adopt {
        fd: OwnedFd,
        handoff: Box<Handoff>,
    },
}

/// A connection handed to this core.
pub type Adoption = (OwnedFd, Box<Handoff>);

pub type MeshHandle = MeshBuilder<CoreMsg, glommio::channels::channel_mesh::Full>;

pub fn builder(cores: usize) -> MeshHandle {
    MeshBuilder::full(cores, MESH_CHANNEL_DEPTH)
}

type Reply = LocalSender<Result<Vec<u32>, DeliverFailure>>;

/// This core's end of the mesh.
pub struct Mesh {
    senders: Option<Senders<CoreMsg>>,
    pending: RefCell<HashMap<u64, Reply>>,
    next_req: Cell<u64>,
    /// Adopted connections, taken once by the core's adoption task.
    adoptions: RefCell<Option<LocalReceiver<Adoption>>>,
}

impl Mesh {
    /// A mesh of one core: no channels.
    pub fn single() -> Rc<Mesh> {
        Rc::new(Mesh {
            senders: None,
            pending: RefCell::new(HashMap::new()),
            next_req: Cell::new(0),
            adoptions: RefCell::new(None),
        })
    }

    /// Joins the mesh and starts one receiver task per peer. Returns our peer id, which is our
    /// core index because executors are spawned in core order.
    pub async fn join(builder: MeshHandle, store: Rc<Store>) -> Result<(usize, Rc<Mesh>), String> {
        let (senders, mut receivers) = builder
            .join()
            .await
            .map_err(|_| "joining the core mesh failed".to_string())?;
        let me = senders.peer_id();
        let (adopt_tx, adopt_rx) = local_channel::new_bounded(ADOPT_QUEUE_DEPTH);
        let adopt_tx = Rc::new(adopt_tx);
        let mesh = Rc::new(Mesh {
            senders: Some(senders),
            pending: RefCell::new(HashMap::new()),
            next_req: Cell::new(0),
            adoptions: RefCell::new(Some(adopt_rx)),
        });
        for (peer, stream) in receivers.streams() {
            let mesh = mesh.clone();
            let store = store.clone();
            let adopt_tx = adopt_tx.clone();
            glommio::spawn_local(async move {
                while let Some(msg) = stream.recv().await {
                    match msg {
                        CoreMsg::Deliver { req, deliveries } => {
                            let mesh = mesh.clone();
                            let store = store.clone();
                            glommio::spawn_local(async move {
                                let result = store.deliver(&deliveries).await.map_err(failure);
                                mesh.send(peer, CoreMsg::Delivered { req, result }).await;
                            })
                            .detach();
                        }
                        CoreMsg::Store {
                            req,
                            message,
                            filings,
                            internal_date,
                        } => {
                            let mesh = mesh.clone();
                            let store = store.clone();
                            glommio::spawn_local(async move {
                                let stored =
                                    store.store_message(&message, &filings, internal_date).await;
                                drop(message);
                                let result = match stored {
                                    Ok((_, uids, ticket)) => ticket.wait().await.map(|()| uids),
                                    Err(e) => Err(e),
                                }
                                .map_err(failure);
                                mesh.send(peer, CoreMsg::Delivered { req, result }).await;
                            })
                            .detach();
                        }
                        CoreMsg::Delivered { req, result } => {
                            let waiter = mesh.pending.borrow_mut().remove(&req);
                            if let Some(tx) = waiter {
                                let _ = tx.try_send(result);
                            }
                        }
                        CoreMsg::Adopt { fd, handoff } => {
                            // Back-pressure: a full queue stalls this peer's channel. If the
                            // adoption task is gone (shutdown), dropping `fd` closes it.
                            let _ = adopt_tx.send((fd, handoff)).await;
                        }
                    }
                }
            })
            .detach();
        }
        Ok((me, mesh))
    }

    async fn send(&self, peer: usize, msg: CoreMsg) -> bool {
        match &self.senders {
            Some(s) => s.send_to(peer, msg).await.is_ok(),
            None => false,
        }
    }

    /// The queue of connections other cores hand to this one (None after the first call, and
    /// for a single-core mesh, which never receives any).
    pub fn take_adoptions(&self) -> Option<LocalReceiver<Adoption>> {
        self.adoptions.borrow_mut().take()
    }

    /// Sends a connection to core `owner`. On failure the descriptor is dropped (closed).
    pub async fn adopt_remote(&self, owner: usize, fd: OwnedFd, handoff: Box<Handoff>) -> bool {
        self.send(owner, CoreMsg::Adopt { fd, handoff }).await
    }

    /// Asks core `owner` to append and commit `deliveries`; resolves with their UIDs.
    pub async fn deliver_remote(
        &self,
        owner: usize,
        deliveries: Vec<Delivery>,
    ) -> Result<Vec<u32>, DeliverFailure> {
        self.request(owner, |req| CoreMsg::Deliver { req, deliveries })
            .await
    }

    /// Asks core `owner` to store `message` and file it for `filings` (users it owns);
    /// resolves with their UIDs once durable there.
    pub async fn store_remote(
        &self,
        owner: usize,
        message: Vec<u8>,
        filings: Vec<Filing>,
        internal_date: i64,
    ) -> Result<Vec<u32>, DeliverFailure> {
        self.request(owner, |req| CoreMsg::Store {
            req,
            message,
            filings,
            internal_date,
        })
        .await
    }

    /// Sends a request to `owner` and waits for its `Delivered`.
    async fn request(
        &self,
        owner: usize,
        msg: impl FnOnce(u64) -> CoreMsg,
    ) -> Result<Vec<u32>, DeliverFailure> {
        let req = self.next_req.get();
        self.next_req.set(req.wrapping_add(1));
        let (tx, rx) = local_channel::new_bounded(1);
        self.pending.borrow_mut().insert(req, tx);
        if !self.send(owner, msg(req)).await {
            self.pending.borrow_mut().remove(&req);
            return Err(DeliverFailure::Unreachable);
        }
        match rx.recv().await {
            Some(r) => r,
            None => Err(DeliverFailure::Unreachable),
        }
    }
}

/// How a store failure crosses the mesh.
fn failure(e: StoreError) -> DeliverFailure {
    if e.is_disk_full() {
        DeliverFailure::DiskFull
    } else {
        DeliverFailure::Storage
    }
}
