//! docs/configuration.md lists every key of the config file, and only keys that exist.
//!
//! The keys the parser accepts are asked of the parser itself: its structs refuse unknown
//! fields, and serde's refusal ("unknown field `x`, expected one of `a`, `b`") lists every
//! field it takes. Probing each field as a table (`[f]`) and as an array of tables (`[[f]]`)
//! finds the sections, so a key or a section added to src/plan/file.rs shows up here without
//! editing this test; the failure names each key missing from the page.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use spiffe_aws_agent::plan::file;
use spiffe_aws_agent::{Clock, TokioClock};

const PROBE: &str = "zz_reference_probe";
const DOC: &str = "docs/configuration.md";

/// The fields the parser takes where `prefix` (TOML header lines) leads, or `None` when the
/// probe key is not refused as an unknown field there (it is not a table).
fn fields_at(prefix: &str) -> Option<Vec<String>> {
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
    let text = format!("{prefix}{PROBE} = 1\n");
    let error = match file::parse(Path::new("probe.toml"), &text, &clock) {
        Ok(_) => return None,
        Err(e) => e.to_string(),
    };
    let at = error.find(&format!("unknown field `{PROBE}`"))?;
    let rest = &error[at + PROBE.len() + "unknown field ``".len()..];
    if rest.contains("there are no fields") {
        return Some(Vec::new());
    }
    // Every `quoted` name after "expected".
    let listed = rest.split_once("expected")?.1;
    Some(
        listed
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect(),
    )
}

/// Section (`""` for the top level, `[name]`, `[[name]]`, `[a.b]`) -> its keys (not the
/// keys that are sections themselves).
fn accepted() -> BTreeMap<String, BTreeSet<String>> {
    let mut out = BTreeMap::new();
    walk("", "", "", &mut out, 0);
    out
}

fn walk(
    section: &str,
    dotted: &str,
    prefix: &str,
    out: &mut BTreeMap<String, BTreeSet<String>>,
    depth: usize,
) {
    let fields = fields_at(prefix).unwrap_or_else(|| {
        panic!("the parser did not refuse an unknown key under {section:?}; does it still deny unknown fields?")
    });
    let keys = out.entry(section.to_owned()).or_default();
    let mut sections = Vec::new();
    for field in fields {
        let path = if dotted.is_empty() {
            field.clone()
        } else {
            format!("{dotted}.{field}")
        };
        let table = format!("{prefix}[{path}]\n");
        let array = format!("{prefix}[[{path}]]\n");
        if depth < 3 && fields_at(&table).is_some() {
            sections.push((format!("[{path}]"), path, table));
        } else if depth < 3 && fields_at(&array).is_some() {
            sections.push((format!("[[{path}]]"), path, array));
        } else {
            keys.insert(field);
        }
    }
    for (name, path, prefix) in sections {
        walk(&name, &path, &prefix, out, depth + 1);
    }
}

/// The same map, read from the page: a `## Top-level keys` heading or a heading naming
/// `` `[section]` ``/`` `[[section]]` `` opens a section; each table row's first cell
/// `` `key` `` is one key.
fn documented(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(heading) = line.strip_prefix("## ") {
            current = if heading.contains("Top-level keys") {
                Some(String::new())
            } else {
                heading
                    .split('`')
                    .nth(1)
                    .filter(|s| s.starts_with('['))
                    .map(str::to_owned)
            };
            if let Some(c) = &current {
                out.entry(c.clone()).or_default();
            }
        } else if let (Some(section), Some(row)) = (&current, line.strip_prefix("| `")) {
            if let Some(key) = row.split('`').next() {
                out.entry(section.clone())
                    .or_default()
                    .insert(key.to_owned());
            }
        }
    }
    out
}

fn label(section: &str) -> String {
    if section.is_empty() {
        "the top level".into()
    } else {
        format!("`{section}`")
    }
}

#[test]
fn the_configuration_page_lists_every_key_the_parser_accepts_and_no_other() {
    let accepted = accepted();
    // The probe itself must see the sections every config has, or it proves nothing.
    for known in ["[[role]]", "[imds]", "[container]", "[agent_socket]"] {
        assert!(accepted.contains_key(known), "{accepted:?}");
    }
    assert!(accepted["[[role]]"].contains("role_arn"), "{accepted:?}");
    assert!(accepted[""].contains("workload_api_socket"), "{accepted:?}");

    let text = std::fs::read_to_string(common::root().join(DOC)).unwrap();
    let documented = documented(&text);
    let mut problems = Vec::new();
    for (section, keys) in &accepted {
        let Some(doc_keys) = documented.get(section) else {
            problems.push(format!(
                "{DOC} has no section for {section} (keys {keys:?}): add a heading \"## `{section}`\" with a table row per key"
            ));
            continue;
        };
        for key in keys.difference(doc_keys) {
            problems.push(format!(
                "{DOC} does not document key `{key}` of {}: add a row \"| `{key}` | type | default | meaning |\" under its heading",
                label(section)
            ));
        }
    }
    for (section, keys) in &documented {
        let Some(parser_keys) = accepted.get(section) else {
            problems.push(format!(
                "{DOC} documents section {} that the parser (src/plan/file.rs) does not accept",
                label(section)
            ));
            continue;
        };
        for key in keys.difference(parser_keys) {
            problems.push(format!(
                "{DOC} documents key `{key}` of {}, which the parser (src/plan/file.rs) does not accept",
                label(section)
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

#[test]
fn the_configuration_page_example_parses() {
    let text = std::fs::read_to_string(common::root().join(DOC)).unwrap();
    let start = text.find("```toml\n").expect("an example") + "```toml\n".len();
    let example = &text[start..start + text[start..].find("```").unwrap()];
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
    let plan = file::parse(Path::new(DOC), example, &clock).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plan.roles.len(), 2);
    assert!(plan.servers.container.is_some() && plan.servers.agent_socket.is_some());
}

#[test]
fn the_page_reader_finds_sections_and_keys() {
    let page = "## Top-level keys\n| `a` | x |\n## `[s]`\n| key | h |\n| `b` | y |\n## Example\n| `c` | z |\n";
    let doc = documented(page);
    assert_eq!(doc[""], BTreeSet::from(["a".to_owned()]));
    assert_eq!(doc["[s]"], BTreeSet::from(["b".to_owned()]));
    assert_eq!(doc.len(), 2);
}
