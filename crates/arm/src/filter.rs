//! The `$filter` subset ARM clients send: clauses joined by `and`, each a comparison
//! (`roleName eq 'Reader'`, `eventTimestamp ge '2024-01-01T00:00:00Z'`) or a function call
//! (`atScope()`, `assignedTo('{oid}')`, `substringof('demo', name)`). Pure.

/// One clause of a filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Clause {
    /// `field op 'value'`; field and op lower-cased.
    Compare {
        field: String,
        op: String,
        value: String,
    },
    /// `name(arg, ...)`: `atScope()`, `assignedTo('x')`, `substringof('x', name)`; name
    /// lower-cased.
    Call { name: String, args: Vec<Arg> },
}

/// An argument of a function call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    /// A quoted string, unquoted.
    Text(String),
    /// A bare word (a property name), as written.
    Field(String),
}

impl Clause {
    /// `name('text')` with exactly one quoted argument: that argument.
    pub fn single_text(&self, function: &str) -> Option<&str> {
        match self {
            Self::Call { name, args } if name == function => match args.as_slice() {
                [Arg::Text(t)] => Some(t),
                _ => None,
            },
            _ => None,
        }
    }
}

/// Why a filter could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read filter `{0}`")]
pub struct FilterError(pub String);

/// Splits `input` into clauses. An empty filter has none.
pub fn parse(input: &str) -> Result<Vec<Clause>, FilterError> {
    let err = || FilterError(input.to_string());
    let tokens = tokenize(input).ok_or_else(err)?;
    if tokens.is_empty() {
        return Ok(Vec::new());
    }
    let mut clauses = Vec::new();
    for part in tokens.split(|t| matches!(t, Token::Word(w) if w.eq_ignore_ascii_case("and"))) {
        match part {
            [] => return Err(err()),
            [Token::Word(name), Token::Open, inner @ .., Token::Close] => {
                clauses.push(Clause::Call {
                    name: name.to_ascii_lowercase(),
                    args: arguments(inner).ok_or_else(err)?,
                })
            }
            [Token::Word(field), Token::Word(op), Token::Text(value) | Token::Word(value)] => {
                clauses.push(Clause::Compare {
                    field: field.to_ascii_lowercase(),
                    op: op.to_ascii_lowercase(),
                    value: value.clone(),
                })
            }
            _ => return Err(err()),
        }
    }
    Ok(clauses)
}

/// The arguments between a call's parentheses: none, or values separated by commas.
fn arguments(tokens: &[Token]) -> Option<Vec<Arg>> {
    if tokens.is_empty() {
        return Some(Vec::new());
    }
    tokens
        .split(|t| *t == Token::Comma)
        .map(|arg| match arg {
            [Token::Text(t)] => Some(Arg::Text(t.clone())),
            [Token::Word(w)] => Some(Arg::Field(w.clone())),
            _ => None,
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Text(String),
    Open,
    Close,
    Comma,
}

fn tokenize(input: &str) -> Option<Vec<Token>> {
    let mut out = Vec::new();
    let mut chars = input.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' => {
                chars.next();
                out.push(Token::Open);
            }
            ')' => {
                chars.next();
                out.push(Token::Close);
            }
            ',' => {
                chars.next();
                out.push(Token::Comma);
            }
            '\'' => {
                chars.next();
                let mut text = String::new();
                loop {
                    match chars.next()? {
                        '\'' if chars.peek() == Some(&'\'') => {
                            chars.next();
                            text.push('\'');
                        }
                        '\'' => break,
                        other => text.push(other),
                    }
                }
                out.push(Token::Text(text));
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || matches!(c, '(' | ')' | '\'' | ',') {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                out.push(Token::Word(word));
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmp(field: &str, op: &str, value: &str) -> Clause {
        Clause::Compare {
            field: field.into(),
            op: op.into(),
            value: value.into(),
        }
    }

    #[test]
    fn comparisons_and_calls() {
        assert_eq!(
            parse("roleName eq 'Key Vault Secrets User'").unwrap(),
            vec![cmp("rolename", "eq", "Key Vault Secrets User")]
        );
        assert_eq!(
            parse("atScope() and assignedTo('abc')").unwrap(),
            vec![
                Clause::Call {
                    name: "atscope".into(),
                    args: vec![]
                },
                Clause::Call {
                    name: "assignedto".into(),
                    args: vec![Arg::Text("abc".into())]
                }
            ]
        );
        assert_eq!(
            parse("eventTimestamp ge '2024-01-01T00:00:00Z' AND resourceGroupName eq 'rg and x'")
                .unwrap(),
            vec![
                cmp("eventtimestamp", "ge", "2024-01-01T00:00:00Z"),
                cmp("resourcegroupname", "eq", "rg and x")
            ]
        );
        assert_eq!(
            parse("roleName eq 'O''Brien'").unwrap()[0],
            cmp("rolename", "eq", "O'Brien")
        );
        assert_eq!(parse("").unwrap(), vec![]);
    }

    #[test]
    fn calls_with_several_arguments() {
        let clauses =
            parse("substringof('de,mo', name) and resourceType eq 'Microsoft.Web/sites'").unwrap();
        assert_eq!(
            clauses,
            vec![
                Clause::Call {
                    name: "substringof".into(),
                    args: vec![Arg::Text("de,mo".into()), Arg::Field("name".into())]
                },
                cmp("resourcetype", "eq", "Microsoft.Web/sites")
            ]
        );
        assert_eq!(
            parse("startswith(tagName,'dep')").unwrap(),
            vec![Clause::Call {
                name: "startswith".into(),
                args: vec![Arg::Field("tagName".into()), Arg::Text("dep".into())]
            }]
        );
        assert_eq!(
            parse("assignedTo('abc')").unwrap()[0].single_text("assignedto"),
            Some("abc")
        );
        assert_eq!(parse("atScope()").unwrap()[0].single_text("atscope"), None);
    }

    #[test]
    fn garbage_is_refused() {
        assert!(parse("roleName eq").is_err());
        assert!(parse("roleName eq 'unterminated").is_err());
        assert!(parse("and").is_err());
        assert!(parse("a b c d").is_err());
        assert!(parse("substringof('a',)").is_err());
        assert!(parse("substringof(,'a')").is_err());
        assert!(parse("substringof('a' name)").is_err());
        assert!(parse("name eq 'a' or name eq 'b'").is_err());
        assert!(parse("f(g(x))").is_err());
    }
}
