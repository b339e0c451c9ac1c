//! Object storage for sealed file bodies.
