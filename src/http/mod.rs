//! A small HTTP/1.1 server for the approval API, the approval web pages, `/metrics` and
//! `/healthz`. Hand-rolled on purpose (no framework): a strict sans-IO request parser
//! ([`parse`]), a response encoder that adds the security headers ([`response`]), and a thin
//! smol shell with TLS, timeouts and connection caps ([`server`]). Routes live elsewhere.
pub mod client;
pub mod parse;
pub mod response;
pub mod server;

pub use parse::{parse_request, percent_decode, Limits, Method, ParseError, Request};
pub use response::{html_escape, json_string, status_reason, Response};
pub use server::{serve, Handler, ServerLimits};

#[cfg(test)]
mod tests;
