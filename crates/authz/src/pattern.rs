//! Action patterns: `*`, `*/read`, `Microsoft.Compute/*`, `Microsoft.KeyVault/vaults/*/read`.
//!
//! A `*` matches any run of characters, `/` included; a `*` standing alone between two
//! slashes may also match nothing together with one of them, as in Azure
//! (`Microsoft.ManagedIdentity/userAssignedIdentities/*/assign/action` grants
//! `.../userAssignedIdentities/assign/action`, and `Microsoft.KeyVault/vaults/*/read`
//! grants `Microsoft.KeyVault/vaults/read`). Matching ignores ASCII case (Azure action
//! names are ASCII). Patterns are compiled once: case-folded, with each `/*/` expanded
//! into its two readings, and split at `*`; matching a request allocates nothing.

use std::fmt;
use std::sync::Arc;

/// A compiled action pattern.
#[derive(Clone)]
pub struct ActionPattern {
    text: Arc<str>,
    /// Alternative readings (more than one only when the pattern has `/*/`).
    shapes: Box<[Shape]>,
}

#[derive(Clone)]
enum Shape {
    /// `*` (or `**`...): everything.
    Any,
    /// No `*`: the whole action, lower-cased.
    Exact(Box<str>),
    /// `head*m1*...*mn*tail`, lower-cased; `middle` holds the non-empty inner parts.
    Glob {
        head: Box<str>,
        middle: Box<[Box<str>]>,
        tail: Box<str>,
    },
}

impl ActionPattern {
    pub fn new(pattern: &str) -> Self {
        let lower = pattern.to_ascii_lowercase();
        let mut readings = Vec::new();
        expand_empty_segments(&lower, 0, &mut readings);
        readings.sort();
        readings.dedup();
        Self {
            text: Arc::from(pattern),
            shapes: readings.iter().map(|r| Shape::compile(r)).collect(),
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The pattern as written, shareable without copying.
    pub fn text(&self) -> &Arc<str> {
        &self.text
    }

    /// Whether `action` matches, ignoring ASCII case.
    #[inline]
    pub fn matches(&self, action: &str) -> bool {
        self.shapes
            .iter()
            .any(|shape| shape.matches(action.as_bytes()))
    }
}

/// Collects every reading of `pattern` where each `/*/` at or after `from` is either kept
/// or collapsed to `/`. Azure patterns hold one or two, so the expansion stays tiny.
fn expand_empty_segments(pattern: &str, from: usize, out: &mut Vec<String>) {
    match pattern[from..].find("/*/").map(|i| from + i) {
        None => out.push(pattern.to_string()),
        Some(i) => {
            // Keep: continue from the closing slash, which may open another `/*/`.
            expand_empty_segments(pattern, i + 2, out);
            let collapsed = format!("{}/{}", &pattern[..i], &pattern[i + 3..]);
            expand_empty_segments(&collapsed, i, out);
        }
    }
}

impl Shape {
    fn compile(lower: &str) -> Self {
        if !lower.contains('*') {
            return Self::Exact(lower.into());
        }
        let parts: Vec<&str> = lower.split('*').collect();
        let head = parts.first().copied().unwrap_or_default();
        let tail = parts.last().copied().unwrap_or_default();
        let middle: Box<[Box<str>]> = parts[1..parts.len() - 1]
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| Box::<str>::from(*p))
            .collect();
        if head.is_empty() && tail.is_empty() && middle.is_empty() {
            Self::Any
        } else {
            Self::Glob {
                head: head.into(),
                middle,
                tail: tail.into(),
            }
        }
    }

    #[inline]
    fn matches(&self, s: &[u8]) -> bool {
        match self {
            Shape::Any => true,
            Shape::Exact(p) => s.eq_ignore_ascii_case(p.as_bytes()),
            Shape::Glob { head, middle, tail } => {
                let (head, tail) = (head.as_bytes(), tail.as_bytes());
                if s.len() < head.len() + tail.len()
                    || !s[..head.len()].eq_ignore_ascii_case(head)
                    || !s[s.len() - tail.len()..].eq_ignore_ascii_case(tail)
                {
                    return false;
                }
                // Leftmost placement of each inner part is optimal for `*`-only globs.
                let mut rest = &s[head.len()..s.len() - tail.len()];
                for part in middle.iter() {
                    match find_ignore_case(rest, part.as_bytes()) {
                        Some(at) => rest = &rest[at + part.len()..],
                        None => return false,
                    }
                }
                true
            }
        }
    }
}

/// First position of `needle` (lower-case) in `haystack`, ignoring ASCII case.
fn find_ignore_case(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.len() > haystack.len() {
        return None;
    }
    (0..=haystack.len() - needle.len())
        .find(|&i| haystack[i..i + needle.len()].eq_ignore_ascii_case(needle))
}

impl fmt::Debug for ActionPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ActionPattern({:?})", &*self.text)
    }
}

impl fmt::Display for ActionPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl PartialEq for ActionPattern {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for ActionPattern {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_star_between_slashes_may_be_an_empty_segment() {
        assert!(m(
            "Microsoft.ManagedIdentity/userAssignedIdentities/*/assign/action",
            "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action"
        ));
        assert!(m(
            "Microsoft.ManagedIdentity/userAssignedIdentities/*/assign/action",
            "Microsoft.ManagedIdentity/userAssignedIdentities/x/y/assign/action"
        ));
        assert!(m(
            "Microsoft.KeyVault/vaults/*/read",
            "Microsoft.KeyVault/vaults/read"
        ));
        assert!(m("a/*/*/b", "a/b"));
        assert!(m("a/*/*/b", "a/x/b"));
        assert!(!m("a/*/b", "ab"));
        assert!(!m("a/*/b", "a//"));
        assert_eq!(ActionPattern::new("a/*/*/b").shapes.len(), 3);
    }

    fn m(p: &str, a: &str) -> bool {
        ActionPattern::new(p).matches(a)
    }

    #[test]
    fn exact_and_case() {
        assert!(m(
            "Microsoft.KeyVault/vaults/secrets/getSecret/action",
            "microsoft.keyvault/VAULTS/secrets/getsecret/action"
        ));
        assert!(!m(
            "Microsoft.KeyVault/vaults/read",
            "Microsoft.KeyVault/vaults/write"
        ));
        assert!(!m("a/b", "a/b/c"));
    }

    #[test]
    fn stars() {
        assert!(m("*", ""));
        assert!(m("**", "anything/at/all"));
        assert!(m("*/read", "Microsoft.Compute/virtualMachines/read"));
        assert!(!m("*/read", "Microsoft.Compute/virtualMachines/write"));
        assert!(!m("*/read", "read"));
        assert!(m(
            "Microsoft.Compute/*",
            "microsoft.compute/virtualMachines/write"
        ));
        assert!(!m(
            "Microsoft.Compute/*",
            "Microsoft.ComputeX/virtualMachines/write"
        ));
        assert!(m(
            "Microsoft.KeyVault/vaults/*/read",
            "Microsoft.KeyVault/vaults/secrets/versions/read"
        ));
        assert!(!m(
            "Microsoft.KeyVault/vaults/*/read",
            "Microsoft.KeyVault/read"
        ));
        assert!(!m(
            "Microsoft.KeyVault/vaults/*/read",
            "Microsoft.KeyVault/vaultsread"
        ));
        assert!(m(
            "Microsoft.Authorization/*/Write",
            "Microsoft.Authorization/roleAssignments/write"
        ));
        assert!(m("a*b*c", "abc"));
        assert!(m("a*b*c", "aXbYbZc"));
        assert!(!m("a*b*c", "acb"));
        assert!(!m("ab*ba", "aba"), "head and tail must not overlap");
        assert!(m("*ab*ab*", "xabyab"));
        assert!(m("a*/b", "a/b"));
        assert!(!m("a/*b", "ab"));
        assert!(!m("*ab*ab*", "xaby"));
    }
}
