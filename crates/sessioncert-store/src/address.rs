//! Store addresses (`--store`): parsing the parameters this crate adds, and keeping the
//! password out of every message.

use percent_encoding::percent_decode_str;
use url::Url;

use crate::StoreError;

/// A parsed address whose password never reaches a message.
pub(crate) struct Address {
    url: Url,
    /// The password as written and as decoded, to scrub from driver messages.
    secrets: Vec<String>,
}

impl Address {
    /// Parses `text`, accepting only `schemes`. Errors never repeat the text (it may
    /// hold a password).
    pub(crate) fn parse(text: &str, schemes: &[&str], what: &str) -> Result<Self, StoreError> {
        let url = Url::parse(text)
            .map_err(|e| StoreError::BadAddress(format!("{what} address is not a URL: {e}")))?;
        let mut secrets = Vec::new();
        if let Some(p) = url.password() {
            secrets.push(p.to_owned());
            secrets.push(percent_decode_str(p).decode_utf8_lossy().into_owned());
        }
        // libpq-style `?password=` too.
        secrets.extend(
            url.query_pairs()
                .filter(|(k, _)| k == "password")
                .map(|(_, v)| v.into_owned()),
        );
        let addr = Address { url, secrets };
        if !schemes.contains(&addr.url.scheme()) {
            return Err(StoreError::BadAddress(format!(
                "{what} address {} must start with {}",
                addr.display(),
                schemes
                    .iter()
                    .map(|s| format!("{s}://"))
                    .collect::<Vec<_>>()
                    .join(" or ")
            )));
        }
        if addr.url.host_str().is_none_or(str::is_empty) {
            return Err(StoreError::BadAddress(format!(
                "{what} address {} names no host",
                addr.display()
            )));
        }
        Ok(addr)
    }

    /// Removes the query parameters in `ours` and returns their values (last one wins);
    /// any other parameter is refused unless `pass` lists it (the driver's own).
    pub(crate) fn take_params(
        &mut self,
        ours: &[&str],
        pass: &[&str],
        what: &str,
    ) -> Result<Vec<Option<String>>, StoreError> {
        let mut values = vec![None; ours.len()];
        let mut kept = Vec::new();
        for (k, v) in self.url.query_pairs() {
            if let Some(i) = ours.iter().position(|o| *o == k) {
                values[i] = Some(v.into_owned());
            } else if pass.contains(&k.as_ref()) {
                kept.push((k.into_owned(), v.into_owned()));
            } else {
                return Err(StoreError::BadAddress(format!(
                    "{what} address {}: unknown parameter {k:?} (known: {})",
                    self.display(),
                    ours.iter()
                        .chain(pass)
                        .copied()
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        if kept.is_empty() {
            self.url.set_query(None);
        } else {
            self.url.query_pairs_mut().clear().extend_pairs(kept);
        }
        Ok(values)
    }

    /// The URL to hand to the driver (with its password).
    pub(crate) fn driver_url(&self) -> &str {
        self.url.as_str()
    }

    /// The address for messages and logs: the password replaced by `***`.
    pub(crate) fn display(&self) -> String {
        let mut shown = self.url.clone();
        if shown.password().is_some() {
            // Cannot fail: the URL has a host (checked in `parse`).
            let _ = shown.set_password(Some("***"));
        }
        shown.to_string()
    }

    /// `msg` with every form of the password replaced by `***`.
    pub(crate) fn scrub(&self, msg: impl ToString) -> String {
        let mut msg = msg.to_string();
        for s in self.secrets.iter().filter(|s| !s.is_empty()) {
            msg = msg.replace(s.as_str(), "***");
        }
        msg
    }
}

/// Checks a name used inside keys or SQL identifiers: 1–63 of `[A-Za-z0-9_]` (and `-`,
/// `.` where `extra` allows), not starting with a digit.
pub(crate) fn check_name(name: &str, extra: &[char], what: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || extra.contains(&c));
    if ok {
        Ok(())
    } else {
        Err(StoreError::BadAddress(format!(
            "{what} {name:?} must be 1-63 letters, digits or _{} and not start with a digit",
            extra.iter().map(|c| format!(" {c}")).collect::<String>()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_never_shown() {
        let mut a = Address::parse(
            "redis://user:s%40cret@127.0.0.1:6379/2?prefix=x",
            &["redis"],
            "Redis",
        )
        .unwrap();
        assert!(!a.display().contains("s%40cret") && a.display().contains("***"));
        assert_eq!(
            a.scrub("auth s%40cret / s@cret failed"),
            "auth *** / *** failed"
        );
        let v = a.take_params(&["prefix"], &[], "Redis").unwrap();
        assert_eq!(v, vec![Some("x".to_owned())]);
        assert_eq!(a.driver_url(), "redis://user:s%40cret@127.0.0.1:6379/2");
        let mut b = Address::parse("redis://:pw@h/?nope=1", &["redis"], "Redis").unwrap();
        let e = b
            .take_params(&["prefix"], &[], "Redis")
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope") && !e.contains("pw@"), "{e}");
        for bad in ["rediss://:pw@h", "not a url pw", "redis://:pw@/x"] {
            let e = Address::parse(bad, &["redis"], "Redis")
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                e.starts_with("bad store address") && !e.contains("pw"),
                "{bad}: {e}"
            );
        }
    }
}
