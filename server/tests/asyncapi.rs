#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]
//! `openapi/asyncapi.yaml` declares a message for every wire name the engine knows.

use std::collections::BTreeSet;
use std::path::Path;

use courier_engine::protocol::{ClientCommand, ServerEvent};

fn document() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi/asyncapi.yaml");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// Strips a trailing comment and one level of quotes from a scalar.
fn scalar(raw: &str) -> &str {
    let raw = raw.split(" #").next().unwrap_or(raw).trim();
    raw.strip_prefix('\'')
        .and_then(|rest| rest.strip_suffix('\''))
        .or_else(|| {
            raw.strip_prefix('"')
                .and_then(|rest| rest.strip_suffix('"'))
        })
        .unwrap_or(raw)
}

/// The `name` of every message under `components.messages` (block-style YAML).
fn declared_message_names(yaml: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    // Indents of `components:`, its `messages:`, and one message's key, once inside them.
    let mut components: Option<usize> = None;
    let mut messages: Option<usize> = None;
    let mut message: Option<usize> = None;
    for line in yaml.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let depth = indent(line);
        if message.is_some_and(|at| depth <= at) {
            message = None;
        }
        if messages.is_some_and(|at| depth <= at) {
            messages = None;
        }
        if components.is_some_and(|at| depth <= at) {
            components = None;
        }
        match (components, messages, message) {
            (None, _, _) if trimmed == "components:" => components = Some(depth),
            (Some(_), None, _) if trimmed == "messages:" => messages = Some(depth),
            (Some(_), Some(_), None) if trimmed.ends_with(':') => message = Some(depth),
            (Some(_), Some(_), Some(at)) if depth > at => {
                if let Some(value) = trimmed.strip_prefix("name:")
                    && depth == at + 2
                {
                    names.insert(scalar(value).to_owned());
                }
            }
            _ => {}
        }
    }
    names
}

#[test]
fn every_wire_name_has_a_message() {
    let declared = declared_message_names(&document());
    let mut missing = Vec::new();
    let expected = ClientCommand::NAMES
        .iter()
        .chain(ServerEvent::NAMES)
        .chain(&["ack", "error"]);
    for name in expected {
        if !declared.contains(*name) {
            missing.push(*name);
        }
    }
    assert!(
        missing.is_empty(),
        "openapi/asyncapi.yaml declares no message named {missing:?}; it declares {declared:?}"
    );
}

#[test]
fn every_declared_message_is_a_wire_name() {
    let known: BTreeSet<&str> = ClientCommand::NAMES
        .iter()
        .chain(ServerEvent::NAMES)
        .chain(&["ack", "error"])
        .copied()
        .collect();
    let unknown: Vec<String> = declared_message_names(&document())
        .into_iter()
        .filter(|name| !known.contains(name.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "openapi/asyncapi.yaml declares messages the protocol does not have: {unknown:?}"
    );
}

#[test]
fn the_parser_reads_message_names_only() {
    let yaml = "\
components:
  securitySchemes:
    query:
      name: access_token
  messages:
    sendCommand:
      name: 'message:send'
      payload:
        properties:
          name:
            type: string
    ackReply:
      name: ack # the reply
operations:
  x:
    name: elsewhere
";
    let names: Vec<String> = declared_message_names(yaml).into_iter().collect();
    assert_eq!(names, ["ack", "message:send"]);
}
