//! The fast path of [`super::sections`]: the same cuts found from line starts and indentation alone,
//! without running a YAML parser over the whole text (for 100,000 routes the event parser took ~25 %
//! of `gw validate`).
//!
//! It accepts only the plainest layout and returns `None` for anything else, leaving the text to the
//! event-parser splitter: every non-blank, non-comment line at column 0 is `section:` (a known
//! section name, optionally followed by an inline value); the value of `upstreams`, `routes` and
//! `policies` is either inline (kept whole) or a block list whose items all start at one column with
//! `- ` followed by a block mapping (`key: ...`) or a one-line flow mapping (`{ ... }`). No tabs, no
//! carriage returns, no document markers, no byte-order mark.
//!
//! The slices are the ones the event-parser splitter produces (a test checks it on every example
//! and fixture). Where a line only looks like a cut point (a line inside a multi-line quoted
//! scalar or flow collection), the slice before it does not parse on its own and the loader falls
//! back to parsing the whole document, as it does for any slice that does not parse.
use super::{Body, Slice, LISTS, SECTIONS};

/// The value of the section being read.
enum Value {
    /// Nothing but blank and comment lines yet.
    Pending,
    /// Kept whole, from `start` at `column`.
    Whole { start: usize, column: usize },
    /// A block list of mappings whose `- ` is at column `indent`.
    Items { indent: usize, items: Vec<Slice> },
}

struct Open<'t> {
    key: &'t str,
    value: Value,
    /// Start and column of the list item being read (a block mapping).
    item: Option<(usize, usize)>,
}

/// The sections of `text`, or `None` when the layout is not the plain one described above.
pub(super) fn sections(text: &str) -> Option<Vec<(String, Body)>> {
    if text.bytes().any(|b| b == b'\t' || b == b'\r') || text.starts_with('\u{feff}') {
        return None;
    }
    let mut out: Vec<(String, Body)> = Vec::new();
    let mut open: Option<Open> = None;
    let mut at = 0;
    while at < text.len() {
        let end = text[at..].find('\n').map_or(text.len(), |i| at + i);
        let line = &text[at..end];
        let line_start = at;
        at = end + 1;
        let content = line.trim_start_matches(' ');
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let indent = line.len() - content.len();
        // a list may start at the column of its key (`routes:\n- name: a`)
        let list_item_at_0 = matches!(
            open.as_ref().map(|o| &o.value),
            Some(Value::Pending | Value::Items { indent: 0, .. } | Value::Whole { column: 0, .. })
        ) && content.starts_with("- ");
        if indent == 0 && !list_item_at_0 {
            if let Some(o) = open.take() {
                close(&mut out, o, line_start)?;
            }
            open = Some(section_line(line_start, content)?);
            continue;
        }
        let o = open.as_mut()?;
        match &mut o.value {
            Value::Pending => {
                if LISTS.contains(&o.key) && content.starts_with('-') {
                    o.value = Value::Items {
                        indent,
                        items: Vec::new(),
                    };
                    o.item = item_line(&mut o.value, line_start, indent, content)?;
                } else {
                    o.value = Value::Whole {
                        start: line_start + indent,
                        column: indent,
                    };
                }
            }
            Value::Whole { column, .. } => {
                if indent < *column {
                    return None;
                }
            }
            Value::Items { indent: at_col, .. } => {
                let at_col = *at_col;
                if indent < at_col || indent == at_col && !content.starts_with("- ") {
                    return None;
                }
                if indent > at_col {
                    // more of the block mapping being read; after a one-line flow item there is
                    // nothing it could belong to
                    o.item?;
                    continue;
                }
                if let Some((start, column)) = o.item.take() {
                    push_item(&mut o.value, start, line_start, column);
                }
                o.item = item_line(&mut o.value, line_start, indent, content)?;
            }
        }
    }
    if let Some(o) = open.take() {
        close(&mut out, o, text.len())?;
    }
    (!out.is_empty()).then_some(out)
}

/// A line at column 0: `key:` with an optional inline value.
fn section_line(line_start: usize, content: &str) -> Option<Open<'_>> {
    let colon = content.find(':')?;
    let key = &content[..colon];
    if !SECTIONS.contains(&key) {
        return None;
    }
    let rest = &content[colon + 1..];
    let value_text = rest.trim_start_matches(' ');
    if !rest.is_empty() && value_text.len() == rest.len() {
        return None; // `key:value`
    }
    let value = if value_text.is_empty() || value_text.starts_with('#') {
        Value::Pending
    } else {
        // anchors, aliases and tags are left to the event parser; a flow list of a list section
        // would be cut there
        if value_text.starts_with(['&', '*', '!'])
            || LISTS.contains(&key) && value_text.starts_with('[')
        {
            return None;
        }
        let column = content.len() - value_text.len();
        Value::Whole {
            start: line_start + column,
            column,
        }
    };
    Some(Open {
        key,
        value,
        item: None,
    })
}

/// A `- ` line of a list: a one-line flow mapping is a slice at once; a block mapping's slice starts
/// at its first key and ends where the next item or section starts.
fn item_line(
    value: &mut Value,
    line_start: usize,
    indent: usize,
    content: &str,
) -> Option<Option<(usize, usize)>> {
    let after = content.strip_prefix('-')?;
    let body = after.trim_start_matches(' ');
    if body.len() == after.len() || body.is_empty() || body.starts_with('#') {
        return None; // `-x`, or the mapping starts on the next line
    }
    let column = indent + (content.len() - body.len());
    let start = line_start + column;
    if body.starts_with('{') {
        let flow = body.trim_end_matches(' ');
        if !flow.ends_with('}') {
            return None; // a flow mapping over several lines
        }
        push_item(value, start, start + flow.len(), column);
        return Some(None);
    }
    // a block mapping: a plain first key, then `: ` or `:` at the end of the line
    if body.starts_with([
        '"', '\'', '[', ']', '{', '}', ',', '&', '*', '!', '|', '>', '-', '?', ':', '%', '@', '`',
    ]) {
        return None;
    }
    let is_key = body
        .match_indices(':')
        .any(|(i, _)| matches!(body.as_bytes().get(i + 1), None | Some(b' ')));
    let key_end = body.find(": ").unwrap_or(body.len());
    if !is_key || body[..key_end].contains(" #") {
        return None;
    }
    Some(Some((start, column)))
}

fn push_item(value: &mut Value, start: usize, end: usize, column: usize) {
    if let Value::Items { items, .. } = value {
        items.push(Slice { start, end, column });
    }
}

/// Ends the section `o` at `end` (the next section's line, or the end of the text).
fn close(out: &mut Vec<(String, Body)>, mut o: Open, end: usize) -> Option<()> {
    if out.iter().any(|(k, _)| k == o.key) {
        return None; // a duplicate section: reported by the whole-document path
    }
    if let Some((start, column)) = o.item.take() {
        push_item(&mut o.value, start, end, column);
    }
    let body = match o.value {
        // `key:` and nothing else: the event parser reads a null scalar at the next key
        Value::Pending => return None,
        Value::Whole { start, column } => Body::Whole(Slice { start, end, column }),
        Value::Items { items, .. } => Body::Items(items),
    };
    out.push((o.key.to_string(), body));
    Some(())
}
