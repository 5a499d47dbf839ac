//! Feeds: sources of desired datapath state that plug into the
//! [`crate::reconcile::Reconciler`], each under its own source name.

pub mod services;
