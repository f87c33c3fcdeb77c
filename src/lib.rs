//! portcullis: an access gateway for PostgreSQL (and, later, SSH) that holds the upstream secrets,
//! decides on every statement, and audits everything. See DESIGN.md for the shape.
#![forbid(unsafe_code)]

pub mod api;
pub mod approval;
pub mod audit;
pub mod config;
pub mod control;
pub mod http;
pub mod identity;
pub mod mask;
pub mod metrics;
pub mod net;
pub mod policy;
pub mod proto;
pub mod record;
pub mod server;
pub mod ssh_gateway;
pub mod store;
