//! Which secret operation a method and path name. Pure: no I/O, no HTTP types but the method.
//!
//! Parsed by hand rather than with axum routes so that every malformed path gets Key
//! Vault's error shape, collection names match case-insensitively, trailing slashes (SDKs
//! send `/secrets/{name}/` for the latest version) are accepted, and a secret may be named
//! `restore`, `versions` or `backup`.

use axum::http::Method;

use crate::errors::KvError;
use crate::names::{SecretName, SecretVersion};

/// A secrets API operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// `PUT /secrets/{name}`.
    Set(SecretName),
    /// `GET /secrets/{name}[/{version}]`.
    Get(SecretName, Option<SecretVersion>),
    /// `PATCH /secrets/{name}[/{version}]`.
    Update(SecretName, Option<SecretVersion>),
    /// `GET /secrets`.
    List,
    /// `GET /secrets/{name}/versions`.
    Versions(SecretName),
    /// `DELETE /secrets/{name}`.
    Delete(SecretName),
    /// `POST /secrets/{name}/backup`.
    Backup(SecretName),
    /// `POST /secrets/restore`.
    Restore,
    /// `GET /deletedsecrets`.
    ListDeleted,
    /// `GET /deletedsecrets/{name}`.
    GetDeleted(SecretName),
    /// `POST /deletedsecrets/{name}/recover`.
    Recover(SecretName),
    /// `DELETE /deletedsecrets/{name}`.
    Purge(SecretName),
}

impl Operation {
    /// The secret the operation names (`None` for lists and restore).
    pub fn secret(&self) -> Option<&SecretName> {
        match self {
            Self::Set(n)
            | Self::Get(n, _)
            | Self::Update(n, _)
            | Self::Versions(n)
            | Self::Delete(n)
            | Self::Backup(n)
            | Self::GetDeleted(n)
            | Self::Recover(n)
            | Self::Purge(n) => Some(n),
            Self::List | Self::Restore | Self::ListDeleted => None,
        }
    }
}

fn name(segment: &str) -> Result<SecretName, KvError> {
    SecretName::parse(segment).ok_or_else(|| {
        let shown: String = segment.chars().take(130).collect();
        KvError::bad(format!(
            "The secret name '{shown}' is invalid. A secret name is 1 to 127 characters: letters, digits and '-'."
        ))
    })
}

fn version(segment: &str) -> Result<SecretVersion, KvError> {
    SecretVersion::parse(segment).ok_or_else(|| {
        let shown: String = segment.chars().take(40).collect();
        KvError::bad(format!(
            "The secret version '{shown}' is invalid. A version is 32 hexadecimal characters."
        ))
    })
}

/// Parses `method` and `path` (without query).
pub fn parse(method: &Method, path: &str) -> Result<Operation, KvError> {
    let not_allowed = || KvError::MethodNotAllowed {
        method: method.to_string(),
        path: path.chars().take(300).collect(),
    };
    let not_found = || KvError::PathNotFound(path.chars().take(300).collect());
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let is = |s: &str, word: &str| s.eq_ignore_ascii_case(word);
    match segments.as_slice() {
        [c] if is(c, "secrets") => match *method {
            Method::GET => Ok(Operation::List),
            _ => Err(not_allowed()),
        },
        [c, r] if is(c, "secrets") && is(r, "restore") && *method == Method::POST => {
            Ok(Operation::Restore)
        }
        [c, n] if is(c, "secrets") => {
            let n = name(n)?;
            match *method {
                Method::PUT => Ok(Operation::Set(n)),
                Method::GET => Ok(Operation::Get(n, None)),
                Method::PATCH => Ok(Operation::Update(n, None)),
                Method::DELETE => Ok(Operation::Delete(n)),
                _ => Err(not_allowed()),
            }
        }
        [c, n, v] if is(c, "secrets") && is(v, "versions") => match *method {
            Method::GET => Ok(Operation::Versions(name(n)?)),
            _ => Err(not_allowed()),
        },
        [c, n, b] if is(c, "secrets") && is(b, "backup") => match *method {
            Method::POST => Ok(Operation::Backup(name(n)?)),
            _ => Err(not_allowed()),
        },
        [c, n, v] if is(c, "secrets") => {
            let n = name(n)?;
            // `/secrets/{name}//`: an empty version is the latest.
            let v = if v.is_empty() {
                None
            } else {
                Some(version(v)?)
            };
            match *method {
                Method::GET => Ok(Operation::Get(n, v)),
                Method::PATCH => Ok(Operation::Update(n, v)),
                _ => Err(not_allowed()),
            }
        }
        [c] if is(c, "deletedsecrets") => match *method {
            Method::GET => Ok(Operation::ListDeleted),
            _ => Err(not_allowed()),
        },
        [c, n] if is(c, "deletedsecrets") => {
            let n = name(n)?;
            match *method {
                Method::GET => Ok(Operation::GetDeleted(n)),
                Method::DELETE => Ok(Operation::Purge(n)),
                _ => Err(not_allowed()),
            }
        }
        [c, n, r] if is(c, "deletedsecrets") && is(r, "recover") => match *method {
            Method::POST => Ok(Operation::Recover(name(n)?)),
            _ => Err(not_allowed()),
        },
        _ => Err(not_found()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(method: Method, path: &str) -> Operation {
        parse(&method, path).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    #[test]
    fn every_operation() {
        let n = SecretName::parse("db").unwrap();
        let v = "0123456789abcdef0123456789ABCDEF";
        let ver = SecretVersion::parse(v);
        assert_eq!(ok(Method::PUT, "/secrets/db"), Operation::Set(n.clone()));
        assert_eq!(
            ok(Method::GET, "/secrets/db/"),
            Operation::Get(n.clone(), None)
        );
        assert_eq!(
            ok(Method::GET, "/Secrets/db"),
            Operation::Get(n.clone(), None)
        );
        assert_eq!(
            ok(Method::GET, &format!("/secrets/db/{v}")),
            Operation::Get(n.clone(), ver.clone())
        );
        assert_eq!(
            ok(Method::PATCH, "/secrets/db/"),
            Operation::Update(n.clone(), None)
        );
        assert_eq!(
            ok(Method::PATCH, &format!("/secrets/db/{v}")),
            Operation::Update(n.clone(), ver)
        );
        assert_eq!(ok(Method::GET, "/secrets"), Operation::List);
        assert_eq!(ok(Method::GET, "/secrets/"), Operation::List);
        assert_eq!(
            ok(Method::GET, "/secrets/db/versions"),
            Operation::Versions(n.clone())
        );
        assert_eq!(
            ok(Method::DELETE, "/secrets/db"),
            Operation::Delete(n.clone())
        );
        assert_eq!(
            ok(Method::POST, "/secrets/db/backup"),
            Operation::Backup(n.clone())
        );
        assert_eq!(ok(Method::POST, "/secrets/restore"), Operation::Restore);
        assert_eq!(ok(Method::GET, "/deletedsecrets"), Operation::ListDeleted);
        assert_eq!(
            ok(Method::GET, "/deletedsecrets/db"),
            Operation::GetDeleted(n.clone())
        );
        assert_eq!(
            ok(Method::POST, "/deletedsecrets/db/recover"),
            Operation::Recover(n.clone())
        );
        assert_eq!(
            ok(Method::DELETE, "/deletedsecrets/db"),
            Operation::Purge(n)
        );
        // A secret may be called `restore`.
        let r = SecretName::parse("restore").unwrap();
        assert_eq!(
            ok(Method::GET, "/secrets/restore"),
            Operation::Get(r.clone(), None)
        );
        assert_eq!(ok(Method::PUT, "/secrets/restore"), Operation::Set(r));
    }

    #[test]
    fn malformed_paths_are_client_errors() {
        let cases = [
            (Method::GET, "/secrets/bad_name", 400),
            (Method::GET, "/secrets/db/notaversion", 400),
            (Method::GET, "/secrets/%2e%2e", 400),
            (Method::GET, "/keys/k1", 404),
            (Method::GET, "/", 404),
            (Method::GET, "/secrets/db/v/x", 404),
            (Method::POST, "/secrets", 405),
            (Method::PUT, "/secrets/db/versions", 405),
            (Method::GET, "/deletedsecrets/db/recover", 405),
            (Method::POST, &format!("/secrets/{}", "a".repeat(128)), 400),
        ];
        for (method, path, status) in cases {
            let e = parse(&method, path).unwrap_err();
            let api = lanyard_platform::ApiError::from(e);
            assert_eq!(api.status.as_u16(), status, "{method} {path}");
        }
    }
}
