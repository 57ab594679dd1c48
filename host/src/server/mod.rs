//! The server (hyper 1 on tokio): one listener per address, every request routed to its door.
//! `http` is the HTTP API (`/v1/predict/{hotkey}`, `/healthz`, `/metrics`), `axon` subnet 72's
//! synapses, `admin` the admin API and status page; the image doors hand what they read to
//! `front`, the one path that decodes, serves and counts. `state` is what they all read: the
//! serving state, swapped whole on reload and read through one atomic load per request.
//! Policies run on blocking threads because component calls wait on model queues.

pub mod activity;
pub mod admin;
pub mod axon;
pub mod conns;
pub mod decoded;
mod front;
pub mod health;
mod http;
pub mod ingress;
mod listen;
pub mod state;
mod unabandoned;

pub use ingress::{IngressLimits, Refusal};
pub use state::{Recent, Server, Serving, DEFAULT_MAX_CONNECTIONS};
