//! The `$filter` subset ARM clients send: clauses joined by `and`, each a comparison
//! (`roleName eq 'Reader'`, `eventTimestamp ge '2024-01-01T00:00:00Z'`) or a function call
//! (`atScope()`, `assignedTo('{oid}')`). Pure.

/// One clause of a filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Clause {
    /// `field op 'value'`; field and op lower-cased.
    Compare {
        field: String,
        op: String,
        value: String,
    },
    /// `name()` or `name('arg')`; name lower-cased.
    Call { name: String, arg: Option<String> },
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
            [Token::Word(name), Token::Open, Token::Close] => clauses.push(Clause::Call {
                name: name.to_ascii_lowercase(),
                arg: None,
            }),
            [Token::Word(name), Token::Open, Token::Text(arg), Token::Close] => {
                clauses.push(Clause::Call {
                    name: name.to_ascii_lowercase(),
                    arg: Some(arg.clone()),
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

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Text(String),
    Open,
    Close,
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
                    if c.is_whitespace() || matches!(c, '(' | ')' | '\'') {
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
                    arg: None
                },
                Clause::Call {
                    name: "assignedto".into(),
                    arg: Some("abc".into())
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
    fn garbage_is_refused() {
        assert!(parse("roleName eq").is_err());
        assert!(parse("roleName eq 'unterminated").is_err());
        assert!(parse("and").is_err());
        assert!(parse("a b c d").is_err());
    }
}
