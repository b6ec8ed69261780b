//! What Roles Anywhere can turn into a session tag. It maps the leaf's subject and issuer
//! attributes and its first DNS and URI names to `aws:PrincipalTag/x509…` tags, and a tag
//! value must be at most 256 characters of letters, separators, digits and `_.:/=+-@`; one
//! value outside that fails the whole CreateSession ("Some attributes failed to be mapped
//! into session tags"). Checking first turns that into a message naming the value.

/// The longest session tag value, in characters.
pub const MAX_TAG_VALUE_CHARS: usize = 256;

/// Why a value cannot be a session tag value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagProblem {
    #[error("it is {0} characters long, more than the {MAX_TAG_VALUE_CHARS} a session tag value may have")]
    TooLong(usize),
    #[error("it contains {0:?}, which session tag values may not (letters, digits, spaces and _.:/=+-@ only)")]
    BadCharacter(char),
}

/// `None` when `value` can be a session tag value.
pub fn problem(value: &str) -> Option<TagProblem> {
    let count = value.chars().count();
    if count > MAX_TAG_VALUE_CHARS {
        return Some(TagProblem::TooLong(count));
    }
    value
        .chars()
        .find(|c| !allowed(*c))
        .map(TagProblem::BadCharacter)
}

/// `[\p{L}\p{Z}\p{N}_.:/=+\-@]`.
fn allowed(c: char) -> bool {
    c.is_alphanumeric() || "_.:/=+-@".contains(c) || is_separator(c)
}

/// Unicode general category Z (space, line and paragraph separators).
fn is_separator(c: char) -> bool {
    matches!(
        c,
        ' ' | '\u{a0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200a}' | '\u{2028}' | '\u{2029}' | '\u{202f}' | '\u{205f}' | '\u{3000}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_alphabet_and_length() {
        assert_eq!(problem("spiffe://example.org/service/orders"), None);
        assert_eq!(problem("Ünïcode Name 42 _.:/=+-@"), None);
        assert_eq!(
            problem("spiffe://example.org/a?b"),
            Some(TagProblem::BadCharacter('?'))
        );
        assert_eq!(problem("tab\there"), Some(TagProblem::BadCharacter('\t')));
        assert_eq!(problem(&"a".repeat(256)), None);
        assert_eq!(problem(&"a".repeat(257)), Some(TagProblem::TooLong(257)));
    }
}
