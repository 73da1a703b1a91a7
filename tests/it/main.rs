//! sluice's integration tests, one binary: a module per area, told as
//! stories over real sockets (an origin, sluice in front of it, a client
//! through it, assertions on what crossed). `support` holds the origins,
//! the proxies and the clients every area shares.

mod support;

mod admin;
mod admin_auth;
mod ca_trust;
mod doctor;
mod forward;
mod forward_limits;
mod har;
mod intercept;
mod intercept_clients;
mod intercept_h2;
mod lifecycle;
mod netns;
mod records;
mod records_store;
mod relay;
mod rules_forward;
mod rules_reload;
mod rules_syntax;
mod smoke;
mod sse;
mod tunnel;
mod tunnel_layers;
mod ui_api;
mod ui_browser;
mod websocket;
mod ws_browser;
