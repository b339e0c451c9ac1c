//! The broker's metadata store.
