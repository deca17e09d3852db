//! The service mirror (`semaphore-wireguard mirror`), a drop-in for
//! semaphore-service-mirror: remote Services and their endpoints mirrored into a local
//! namespace, and same-named Services of several clusters merged into global Services.

pub mod config;
pub mod global;
pub mod global_services;
pub mod global_slices;
pub mod metrics;
pub mod objects;
pub mod queue;
pub mod runner;
pub mod selector;
pub mod services;
pub mod slices;
pub mod writes;
