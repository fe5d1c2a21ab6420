//! The XML of the blob service. Pure.
//!
//! - [`Writer`]: a small writer for the bodies this plane returns (`EnumerationResults`,
//!   `BlockList`), escaping every text node.
//! - [`parse_block_list`]: the body of Put Block List, read by a minimal parser that knows
//!   exactly the document the service defines:
//!   `<BlockList>(<Committed>|<Uncommitted>|<Latest>)id…</BlockList>`, with an optional XML
//!   declaration, comments and whitespace between elements, and the five predefined entities
//!   and character references in ids. Anything else is refused.

use lanyard_platform::error::xml_escape;

/// Builds an XML document.
#[derive(Debug, Default)]
pub struct Writer {
    out: String,
}

impl Writer {
    /// A document starting with the XML declaration.
    pub fn new() -> Writer {
        Writer {
            out: String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>"),
        }
    }

    /// `<tag attr="value"…>`.
    pub fn open_with(&mut self, tag: &str, attributes: &[(&str, &str)]) -> &mut Self {
        self.out.push('<');
        self.out.push_str(tag);
        for (name, value) in attributes {
            self.out.push(' ');
            self.out.push_str(name);
            self.out.push_str("=\"");
            self.out.push_str(&xml_escape(value));
            self.out.push('"');
        }
        self.out.push('>');
        self
    }

    pub fn open(&mut self, tag: &str) -> &mut Self {
        self.open_with(tag, &[])
    }

    pub fn close(&mut self, tag: &str) -> &mut Self {
        self.out.push_str("</");
        self.out.push_str(tag);
        self.out.push('>');
        self
    }

    /// `<tag>text</tag>`, or `<tag />` for empty text.
    pub fn element(&mut self, tag: &str, text: &str) -> &mut Self {
        if text.is_empty() {
            return self.empty(tag);
        }
        self.open(tag);
        self.out.push_str(&xml_escape(text));
        self.close(tag)
    }

    /// `<tag>text</tag>` when `text` is given, else `<tag />`.
    pub fn optional(&mut self, tag: &str, text: Option<&str>) -> &mut Self {
        self.element(tag, text.unwrap_or_default())
    }

    pub fn empty(&mut self, tag: &str) -> &mut Self {
        self.out.push('<');
        self.out.push_str(tag);
        self.out.push_str(" />");
        self
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// Which list a Put Block List entry draws its block from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockSource {
    Committed,
    Uncommitted,
    /// The uncommitted block if there is one, else the committed one.
    Latest,
}

/// One entry of a Put Block List body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockListItem {
    pub source: BlockSource,
    pub id: String,
}

/// Why a block list body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} at byte {at}")]
pub struct XmlError {
    pub reason: &'static str,
    pub at: usize,
}

/// The entries of a Put Block List body, in order.
pub fn parse_block_list(body: &[u8]) -> Result<Vec<BlockListItem>, XmlError> {
    let text = std::str::from_utf8(body).map_err(|e| XmlError {
        reason: "the body is not UTF-8",
        at: e.valid_up_to(),
    })?;
    let mut p = Parser {
        text: text.strip_prefix('\u{feff}').unwrap_or(text),
        pos: 0,
    };
    p.skip_misc(true)?;
    let root = p.start_tag()?;
    if root != "BlockList" {
        return Err(p.error("the root element must be BlockList"));
    }
    let mut items = Vec::new();
    loop {
        p.skip_misc(false)?;
        if p.rest().starts_with("</") {
            let end = p.end_tag()?;
            if end != "BlockList" {
                return Err(p.error("mismatched end tag"));
            }
            break;
        }
        let tag = p.start_tag()?;
        let source = match tag {
            "Committed" => BlockSource::Committed,
            "Uncommitted" => BlockSource::Uncommitted,
            "Latest" => BlockSource::Latest,
            _ => return Err(p.error("unknown element in BlockList")),
        };
        let id = p.text()?;
        let end = p.end_tag()?;
        if end != tag {
            return Err(p.error("mismatched end tag"));
        }
        items.push(BlockListItem {
            source,
            id: id.trim().to_string(),
        });
    }
    p.skip_misc(true)?;
    if !p.rest().is_empty() {
        return Err(p.error("content after the root element"));
    }
    Ok(items)
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        &self.text[self.pos..]
    }

    fn error(&self, reason: &'static str) -> XmlError {
        XmlError {
            reason,
            at: self.pos,
        }
    }

    fn skip_whitespace(&mut self) {
        let rest = self.rest();
        let trimmed = rest.trim_start_matches([' ', '\t', '\r', '\n']);
        self.pos += rest.len() - trimmed.len();
    }

    /// Whitespace, comments and (when `prolog`) the XML declaration.
    fn skip_misc(&mut self, prolog: bool) -> Result<(), XmlError> {
        loop {
            self.skip_whitespace();
            let rest = self.rest();
            if let Some(comment) = rest.strip_prefix("<!--") {
                let end = comment
                    .find("-->")
                    .ok_or_else(|| self.error("unterminated comment"))?;
                self.pos += 4 + end + 3;
            } else if prolog && rest.starts_with("<?") {
                let end = rest
                    .find("?>")
                    .ok_or_else(|| self.error("unterminated declaration"))?;
                self.pos += end + 2;
            } else {
                return Ok(());
            }
        }
    }

    fn name(&mut self) -> Result<&'a str, XmlError> {
        let rest = self.rest();
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')))
            .unwrap_or(rest.len());
        if len == 0 {
            return Err(self.error("expected a name"));
        }
        self.pos += len;
        Ok(&rest[..len])
    }

    /// `<Name>` (attributes are not part of this document).
    fn start_tag(&mut self) -> Result<&'a str, XmlError> {
        if !self.rest().starts_with('<') {
            return Err(self.error("expected an element"));
        }
        self.pos += 1;
        let name = self.name()?;
        self.skip_whitespace();
        if !self.rest().starts_with('>') {
            return Err(self.error("expected `>`"));
        }
        self.pos += 1;
        Ok(name)
    }

    fn end_tag(&mut self) -> Result<&'a str, XmlError> {
        if !self.rest().starts_with("</") {
            return Err(self.error("expected an end tag"));
        }
        self.pos += 2;
        let name = self.name()?;
        self.skip_whitespace();
        if !self.rest().starts_with('>') {
            return Err(self.error("expected `>`"));
        }
        self.pos += 1;
        Ok(name)
    }

    /// Character data up to the next `<`, with references resolved.
    fn text(&mut self) -> Result<String, XmlError> {
        let rest = self.rest();
        let len = rest
            .find('<')
            .ok_or_else(|| self.error("unterminated element"))?;
        let raw = &rest[..len];
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.char_indices();
        while let Some((i, c)) = chars.next() {
            if c != '&' {
                out.push(c);
                continue;
            }
            let end = raw[i..]
                .find(';')
                .ok_or_else(|| self.error("unterminated reference"))?;
            let reference = &raw[i + 1..i + end];
            out.push(resolve_reference(reference).ok_or(XmlError {
                reason: "unknown reference",
                at: self.pos + i,
            })?);
            for _ in 0..end {
                chars.next();
            }
        }
        self.pos += len;
        Ok(out)
    }
}

fn resolve_reference(reference: &str) -> Option<char> {
    match reference {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        _ => {
            let number = reference.strip_prefix('#')?;
            let code = match number.strip_prefix('x') {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => number.parse().ok()?,
            };
            char::from_u32(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn writes_escaped_documents() {
        let mut w = Writer::new();
        w.open_with("EnumerationResults", &[("ContainerName", "a&b")])
            .element("Prefix", "<x>")
            .optional("Marker", None)
            .close("EnumerationResults");
        assert_eq!(
            w.finish(),
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><EnumerationResults ContainerName=\"a&amp;b\"><Prefix>&lt;x&gt;</Prefix><Marker /></EnumerationResults>"
        );
    }

    #[test]
    fn parses_the_documented_body() {
        let body = "\u{feff}<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<!-- c -->\n<BlockList>\n  <Committed>QUFB</Committed>\n  <Uncommitted>QkJC</Uncommitted>\n  <Latest> Q0ND </Latest>\n  <Latest>a&#43;b&amp;</Latest>\n</BlockList>\n";
        let items = parse_block_list(body.as_bytes()).unwrap();
        assert_eq!(
            items,
            vec![
                BlockListItem {
                    source: BlockSource::Committed,
                    id: "QUFB".into()
                },
                BlockListItem {
                    source: BlockSource::Uncommitted,
                    id: "QkJC".into()
                },
                BlockListItem {
                    source: BlockSource::Latest,
                    id: "Q0ND".into()
                },
                BlockListItem {
                    source: BlockSource::Latest,
                    id: "a+b&".into()
                },
            ]
        );
        assert!(parse_block_list(b"<BlockList></BlockList>")
            .unwrap()
            .is_empty());
    }

    #[test]
    fn refuses_malformed_bodies() {
        for bad in [
            "",
            "not xml",
            "<BlockList>",
            "<BlockList><Latest>a</Latest>",
            "<BlockList><Latest>a</Committed></BlockList>",
            "<BlockList><Other>a</Other></BlockList>",
            "<Blocks><Latest>a</Latest></Blocks>",
            "<BlockList><Latest>a&bogus;</Latest></BlockList>",
            "<BlockList><Latest>a&amp</Latest></BlockList>",
            "<BlockList></BlockList><BlockList></BlockList>",
            "<BlockList><Latest><x/></Latest></BlockList>",
            "<BlockList><!-- open </BlockList>",
            "<BlockList><Latest>a</Latest></BlockList>trailing",
        ] {
            assert!(parse_block_list(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert!(parse_block_list(&[0xff, 0xfe]).is_err());
    }

    proptest! {
        #[test]
        fn never_panics(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse_block_list(&body);
        }

        #[test]
        fn never_panics_on_near_misses(s in "(<BlockList>|</BlockList>|<Latest>|</Latest>|&#x?[0-9a-f]{0,8};?|&amp;|<!--|-->|<\\?|\\?>|[A-Za-z0-9+/= ]){0,24}") {
            let _ = parse_block_list(s.as_bytes());
        }

        #[test]
        fn round_trips_written_lists(ids in proptest::collection::vec("[A-Za-z0-9+/=&<>]{1,12}", 0..20)) {
            let mut w = Writer::new();
            w.open("BlockList");
            for id in &ids {
                w.element("Latest", id);
            }
            w.close("BlockList");
            let parsed = parse_block_list(w.finish().as_bytes()).unwrap();
            let got: Vec<String> = parsed.into_iter().map(|i| i.id).collect();
            prop_assert_eq!(got, ids);
        }
    }
}
