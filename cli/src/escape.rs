//! Escaping of untrusted strings where the CLI shows them: the terminal, and the Markdown and HTML
//! compliance reports. File paths, tickets, reasons, comments, user names and metadata come from
//! other people (a developer on one model names the files; anyone with a role writes tickets), so
//! none of them may reach a terminal as control sequences, forge a Markdown table row or inject
//! HTML.
//!
//! One rule for all three targets: C0 and C1 control characters, DEL, and the invisible Unicode
//! format characters that reorder or hide text (bidi embeddings, overrides and isolates, marks,
//! zero-width characters, line and paragraph separators, the BOM, tag characters) are written as
//! `\n`, `\r`, `\t`, `\x1b` or `\u{202e}`, and a backslash as `\\`, so the escaped form is never
//! ambiguous. Markdown also escapes `|`, `[`, `]` and `` ` `` with a backslash and `<`, `>`, `&`
//! as entities; HTML escapes `<`, `>`, `&`, `"` and `'` as entities. JSON output (`--json`) keeps
//! its values but writes DEL, C1 controls and the invisible characters as `\uXXXX` escapes, which
//! serde_json leaves raw (it escapes only C0).

use std::fmt::{self, Write};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Term,
    Markdown,
    Html,
}

/// Invisible characters that change how the text around them is shown.
fn is_hidden(c: char) -> bool {
    matches!(c,
        '\u{061C}'                       // Arabic letter mark
        | '\u{200B}'..='\u{200F}'        // zero-width space, joiners, LRM, RLM
        | '\u{2028}'..='\u{202E}'        // line/paragraph separators, bidi embeddings, overrides
        | '\u{2060}'..='\u{206F}'        // word joiner, invisible operators, bidi isolates
        | '\u{FEFF}'                     // byte order mark
        | '\u{FFF9}'..='\u{FFFB}'        // interlinear annotations
        | '\u{E0000}'..='\u{E007F}' // tag characters
    )
}

fn escape(out: &mut impl Write, s: &str, t: Target) -> fmt::Result {
    for c in s.chars() {
        match c {
            '\\' => out.write_str("\\\\")?,
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            '\t' => out.write_str("\\t")?,
            c if c.is_control() && (c as u32) < 0x80 => write!(out, "\\x{:02x}", c as u32)?,
            c if c.is_control() || is_hidden(c) => write!(out, "\\u{{{:x}}}", c as u32)?,
            '|' | '[' | ']' | '`' if t == Target::Markdown => {
                out.write_char('\\')?;
                out.write_char(c)?;
            }
            '<' if t != Target::Term => out.write_str("&lt;")?,
            '>' if t != Target::Term => out.write_str("&gt;")?,
            '&' if t != Target::Term => out.write_str("&amp;")?,
            '"' if t == Target::Html => out.write_str("&quot;")?,
            '\'' if t == Target::Html => out.write_str("&#39;")?,
            c => out.write_char(c)?,
        }
    }
    Ok(())
}

/// Shows a value on a terminal with its control and invisible characters escaped:
/// `println!("{}", Term(&path))`.
pub struct Term<T>(pub T);

impl<T: fmt::Display> fmt::Display for Term<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        /// Escapes each piece the value writes, on its way to the formatter.
        struct Escaper<'a, 'b>(&'a mut fmt::Formatter<'b>);
        impl Write for Escaper<'_, '_> {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                escape(self.0, s, Target::Term)
            }
        }
        write!(Escaper(f), "{}", self.0)
    }
}

/// Text for a Markdown table cell or line.
pub fn md(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let _ = escape(&mut out, s, Target::Markdown);
    out
}

/// Text for HTML element content or a quoted attribute value.
pub fn html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let _ = escape(&mut out, s, Target::Html);
    out
}

/// `v` as one line of JSON (`pretty`: indented) in which every character a terminal could act on
/// is a `\u` escape. serde_json already escapes C0 controls inside strings, so a raw one can only
/// be the structural whitespace of the pretty form, which stays.
pub fn json(v: &impl serde::Serialize, pretty: bool) -> serde_json::Result<String> {
    let text = if pretty {
        serde_json::to_string_pretty(v)?
    } else {
        serde_json::to_string(v)?
    };
    let unsafe_char = |c: char| (c.is_control() && c as u32 >= 0x7f) || is_hidden(c);
    if !text.chars().any(unsafe_char) {
        return Ok(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if unsafe_char(c) {
            for unit in c.encode_utf16(&mut [0; 2]) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn term(s: &str) -> String {
        Term(s).to_string()
    }

    /// Undoes the terminal escaping, to show that it loses nothing: two different strings never
    /// look the same.
    fn unescape(s: &str) -> String {
        let mut out = String::new();
        let mut it = s.chars().peekable();
        while let Some(c) = it.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match it.next() {
                Some('\\') => out.push('\\'),
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some('t') => out.push('\t'),
                Some('x') => {
                    let h: String = it.by_ref().take(2).collect();
                    out.push(char::from(u8::from_str_radix(&h, 16).unwrap()));
                }
                Some('u') => {
                    assert_eq!(it.next(), Some('{'));
                    let h: String = it.by_ref().take_while(|&c| c != '}').collect();
                    out.push(char::from_u32(u32::from_str_radix(&h, 16).unwrap()).unwrap());
                }
                other => panic!("stray escape {other:?} in {s:?}"),
            }
        }
        out
    }

    fn is_raw_unsafe(c: char) -> bool {
        c.is_control() || is_hidden(c)
    }

    #[test]
    fn terminal_sequences_are_shown_not_sent() {
        assert_eq!(term("a\x1b[2Jb"), "a\\x1b[2Jb");
        assert_eq!(term("x\u{9b}31m"), "x\\u{9b}31m");
        assert_eq!(term("evil\u{202e}fdp.exe"), "evil\\u{202e}fdp.exe");
        assert_eq!(term("a\nb\tc\r\x7f"), "a\\nb\\tc\\r\\x7f");
        assert_eq!(term("C:\\models"), "C:\\\\models");
        assert_eq!(term("plain/path-1.2_ü.bin"), "plain/path-1.2_ü.bin");
        assert_eq!(
            format!("{}", Term(format_args!("{}:{}", "a\x07", 1))),
            "a\\x07:1"
        );
    }

    #[test]
    fn markdown_cells_cannot_forge_rows_links_or_html() {
        assert_eq!(
            md("x |\n| forged | row |"),
            "x \\|\\n\\| forged \\| row \\|"
        );
        assert_eq!(md("[a](http://e)"), "\\[a\\](http://e)");
        assert_eq!(md("<script>&`"), "&lt;script&gt;&amp;\\`");
    }

    #[test]
    fn html_cannot_open_tags_or_leave_attributes() {
        assert_eq!(
            html("<script>alert('x')</script>\"&"),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&quot;&amp;"
        );
        assert_eq!(html("a\x1bb\u{202e}"), "a\\x1bb\\u{202e}");
    }

    #[test]
    fn json_escapes_what_serde_json_leaves_raw() {
        let v = serde_json::json!({"t": "a\u{9b}31m\u{7f}\u{202e}\u{e0041}\x1b"});
        assert_eq!(
            json(&v, false).unwrap(),
            r#"{"t":"a\u009b31m\u007f\u202e\udb40\udc41\u001b"}"#
        );
    }

    proptest! {
        #[test]
        fn no_output_holds_a_raw_control_char(s in "\\PC*|[\\x00-\\x{A0}\\u{2000}-\\u{2070}\\u{E0000}-\\u{E0080}\\\\|<>&\"'`\\[\\]]*") {
            for out in [term(&s), md(&s), html(&s)] {
                prop_assert!(!out.chars().any(is_raw_unsafe), "{:?} -> {:?}", s, out);
            }
            prop_assert_eq!(unescape(&term(&s)), s.clone());
            // Markdown: after dropping escaped pairs no `|`, `[`, `]` or backtick is left, and
            // nothing opens a tag.
            let m = md(&s);
            let mut bare = String::new();
            let mut it = m.chars();
            while let Some(c) = it.next() {
                if c == '\\' { it.next(); } else { bare.push(c); }
            }
            prop_assert!(!bare.contains(['|', '[', ']', '`', '<', '>']), "{:?}", m);
            let h = html(&s);
            prop_assert!(!h.contains(['<', '>', '"', '\'']), "{:?}", h);
            // JSON keeps the value and holds nothing raw but structural whitespace.
            for pretty in [false, true] {
                let j = json(&serde_json::json!({"s": s, "l": [s]}), pretty).unwrap();
                prop_assert!(!j.chars().any(|c| is_raw_unsafe(c) && !matches!(c, '\n' | ' ')), "{:?}", j);
                let back: serde_json::Value = serde_json::from_str(&j).unwrap();
                prop_assert_eq!(back["s"].as_str(), Some(s.as_str()));
            }
            prop_assert_eq!(h.matches('&').count(), h.matches("&lt;").count() + h.matches("&gt;").count()
                + h.matches("&amp;").count() + h.matches("&quot;").count() + h.matches("&#39;").count());
        }
    }
}
