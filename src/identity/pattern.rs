//! Which SPIFFE IDs a role is bound to: one ID, or every ID below a path
//! (`spiffe://example.org/service/*`).
//!
//! Rules: a pattern is a SPIFFE ID, optionally ending in `/*`; `*` appears nowhere else.
//! `spiffe://example.org/service/*` matches every ID whose path starts with `/service/` and
//! goes on (`…/service/orders`, `…/service/orders/eu`), never `…/service` itself nor
//! `…/services/x`, nor any other trust domain. Matching is on the text: SPIFFE IDs are
//! normalized (no `.`/`..` segments, no empty segments), so a prefix of segments is a prefix
//! of the string.

/// A role's binding, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpiffeIdPattern {
    /// Exactly this SPIFFE ID.
    Exact(String),
    /// Any SPIFFE ID that starts with this prefix (which ends with `/`) and goes on.
    Below(String),
}

/// Why a text is not a SPIFFE ID pattern.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{value:?} is not a SPIFFE ID or pattern ({reason}); write spiffe://trust.domain/path, or spiffe://trust.domain/path/* for every ID below a path")]
pub struct PatternError {
    pub value: String,
    pub reason: String,
}

impl SpiffeIdPattern {
    /// Parses `spiffe://td/path` or `spiffe://td/path/*`.
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        let err = |reason: String| PatternError {
            value: text.to_owned(),
            reason,
        };
        let (id, below) = match text.strip_suffix("/*") {
            Some(base) => (base, true),
            None => (text, false),
        };
        if id.contains('*') {
            return Err(err("`*` may only be the whole last path segment".into()));
        }
        spiffe::SpiffeId::new(id).map_err(|e| err(e.to_string()))?;
        if below {
            Ok(SpiffeIdPattern::Below(format!("{id}/")))
        } else {
            Ok(SpiffeIdPattern::Exact(id.to_owned()))
        }
    }

    /// Whether `spiffe_id` is bound by this pattern.
    pub fn matches(&self, spiffe_id: &str) -> bool {
        match self {
            SpiffeIdPattern::Exact(id) => id == spiffe_id,
            SpiffeIdPattern::Below(prefix) => {
                spiffe_id.len() > prefix.len() && spiffe_id.starts_with(prefix.as_str())
            }
        }
    }
}

impl std::fmt::Display for SpiffeIdPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpiffeIdPattern::Exact(id) => f.write_str(id),
            SpiffeIdPattern::Below(prefix) => write!(f, "{prefix}*"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_below() {
        let p = SpiffeIdPattern::parse("spiffe://example.org/service/*").unwrap();
        assert_eq!(p.to_string(), "spiffe://example.org/service/*");
        for yes in [
            "spiffe://example.org/service/orders",
            "spiffe://example.org/service/orders/eu",
        ] {
            assert!(p.matches(yes), "{yes}");
        }
        for no in [
            "spiffe://example.org/service",
            "spiffe://example.org/service/",
            "spiffe://example.org/services/x",
            "spiffe://other.org/service/orders",
            "spiffe://example.org.evil/service/orders",
        ] {
            assert!(!p.matches(no), "{no}");
        }
        let e = SpiffeIdPattern::parse("spiffe://example.org/service/orders").unwrap();
        assert!(e.matches("spiffe://example.org/service/orders"));
        assert!(!e.matches("spiffe://example.org/service/orders/x"));
        let td = SpiffeIdPattern::parse("spiffe://example.org/*").unwrap();
        assert!(td.matches("spiffe://example.org/a"));
    }

    #[test]
    fn refuses_other_wildcards_and_bad_ids() {
        for bad in [
            "spiffe://example.org/service*",
            "spiffe://example.org/*/orders",
            "spiffe://*/x",
            "https://example.org/x",
            "spiffe://example.org/a//b/*",
            "",
        ] {
            assert!(SpiffeIdPattern::parse(bad).is_err(), "{bad}");
        }
    }
}
