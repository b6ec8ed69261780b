//! The credentials-file INI merge: `update_profile` and `clear_profile_text`.
//!
//! Input: the profile name on the first line, three space-separated credential values on the
//! second, then the file's text. Invariants, with lines classified the way the module reads
//! INI (sections, keys, indented continuations, comments):
//! - every byte outside the profile's sections is kept (an appended profile may add one
//!   blank line before itself);
//! - after an update the profile appears once (or as often as it did, if more than once),
//!   it holds the three keys with the new values and the expiry comment, and every managed
//!   line in its sections carries the new values;
//! - after a clear, no managed key or expiry comment is left in the profile's sections;
//! - both are idempotent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spiffe_aws_agent::fuzz_api::{clear_profile_text, update_profile};
use spiffe_aws_agent::serve::credentials_file::validate_profile;

const KEYS: [&str; 3] = [
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
];
const MARKER: &str = "# expires 2026-06-01T12:00:00Z (written by spiffe-aws-agent)";

#[derive(Debug, PartialEq)]
enum Kind {
    Section(String),
    Key(String),
    Continuation,
    Comment,
    Blank,
    Other,
}

fn classify(line: &str) -> Kind {
    let body = line
        .strip_prefix('\u{feff}')
        .unwrap_or(line)
        .trim_end_matches(['\n', '\r']);
    let t = body.trim();
    if t.is_empty() {
        Kind::Blank
    } else if t.starts_with('#') || t.starts_with(';') {
        Kind::Comment
    } else if body.starts_with([' ', '\t']) {
        Kind::Continuation
    } else if let Some(end) = t
        .strip_prefix('[')
        .and_then(|r| r.rfind(']').map(|e| (r, e)))
    {
        Kind::Section(end.0[..end.1].trim().to_owned())
    } else if let Some(i) = t.find(['=', ':']) {
        Kind::Key(t[..i].trim().to_ascii_lowercase())
    } else {
        Kind::Other
    }
}

fn lines(text: &str) -> Vec<&str> {
    if text.contains('\n') {
        text.split_inclusive('\n').collect()
    } else {
        text.split_inclusive('\r').collect()
    }
}

fn strip(line: &str) -> &str {
    line.trim_end_matches(['\n', '\r'])
}

struct View<'a> {
    /// Lines outside the profile's sections, without their endings.
    outside: Vec<&'a str>,
    /// The profile's sections: their lines (header excluded), without endings.
    sections: Vec<Vec<&'a str>>,
}

fn view<'a>(text: &'a str, profile: &str) -> View<'a> {
    let mut v = View {
        outside: Vec::new(),
        sections: Vec::new(),
    };
    let mut inside = false;
    for line in lines(text) {
        if let Kind::Section(name) = classify(line) {
            inside = name == profile;
            if inside {
                v.sections.push(Vec::new());
                continue;
            }
        }
        if inside {
            v.sections.last_mut().unwrap().push(strip(line));
        } else {
            v.outside.push(strip(line));
        }
    }
    v
}

fn is_marker(line: &str) -> bool {
    let t = line.trim();
    t.starts_with("# expires ") && t.ends_with(" (written by spiffe-aws-agent)")
}

fn managed_key(line: &str) -> Option<usize> {
    match classify(line) {
        Kind::Key(k) => KEYS.iter().position(|m| *m == k),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = input.splitn(3, '\n');
    let (Some(profile), Some(values), Some(text)) = (parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    if validate_profile(profile).is_err() {
        return;
    }
    let values: Vec<&str> = values.split(' ').collect();
    let ok = |v: &str| !v.is_empty() && !v.chars().any(|c| c.is_control() || c.is_whitespace());
    if values.len() != 3 || !values.iter().all(|v| ok(v)) {
        return;
    }
    let values = [values[0], values[1], values[2]];

    let before = view(text, profile);

    // Update.
    let updated = update_profile(text, profile, values, MARKER);
    let after = view(&updated, profile);
    if before.sections.is_empty() {
        let mut with_blank = before.outside.clone();
        with_blank.push("");
        assert!(
            after.outside == before.outside || after.outside == with_blank,
            "other profiles changed:\n{text:?}\n->\n{updated:?}"
        );
        assert_eq!(after.sections.len(), 1, "{updated:?}");
    } else {
        assert_eq!(
            after.outside, before.outside,
            "other profiles changed:\n{text:?}\n->\n{updated:?}"
        );
        assert_eq!(after.sections.len(), before.sections.len(), "{updated:?}");
    }
    for section in &after.sections {
        for (i, line) in section.iter().enumerate() {
            if let Some(n) = managed_key(line) {
                assert_eq!(*line, format!("{} = {}", KEYS[n], values[n]), "{updated:?}");
                if let Some(next) = section.get(i + 1) {
                    assert_ne!(classify(next), Kind::Continuation, "{updated:?}");
                }
            }
            if classify(line) == Kind::Comment && is_marker(line) {
                assert_eq!(line.trim(), MARKER, "{updated:?}");
            }
        }
    }
    // A profile written twice is one profile to the SDKs that read duplicates (their keys
    // merge), so the three keys and the comment must be in the profile, not necessarily in
    // its first section (a key already in a later one is updated there).
    let all: Vec<&str> = after.sections.iter().flatten().copied().collect();
    for n in 0..3 {
        assert!(
            all.iter().any(|l| managed_key(l) == Some(n)),
            "{} missing: {updated:?}",
            KEYS[n]
        );
    }
    assert!(
        all.iter().any(|l| is_marker(l)),
        "marker missing: {updated:?}"
    );
    assert_eq!(
        update_profile(&updated, profile, values, MARKER),
        updated,
        "update is not idempotent"
    );

    // Clear.
    let cleared = clear_profile_text(text, profile);
    let after = view(&cleared, profile);
    assert_eq!(
        after.outside, before.outside,
        "other profiles changed:\n{text:?}\n->\n{cleared:?}"
    );
    assert_eq!(after.sections.len(), before.sections.len());
    for section in &after.sections {
        for line in section {
            assert!(managed_key(line).is_none(), "{cleared:?}");
            assert!(
                !(classify(line) == Kind::Comment && is_marker(line)),
                "{cleared:?}"
            );
        }
    }
    if before.sections.is_empty() {
        assert_eq!(cleared, text);
    }
    assert_eq!(
        clear_profile_text(&cleared, profile),
        cleared,
        "clear is not idempotent"
    );
});
