//! Delivery of notifications.
