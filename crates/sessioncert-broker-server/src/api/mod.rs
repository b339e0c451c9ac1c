//! The sealed HTTP routes and the logins bound to sessions.
