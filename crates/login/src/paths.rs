//! Which endpoint a path names. Entra and Graph match path segments case-insensitively
//! (`/OAuth2/V2.0/Token` works), which axum's router does not, so the login host matches
//! paths here: a pure function from a path to a [`Route`].

use crate::form::EndpointVersion;

/// An endpoint of the login host. Borrowed segments keep the case they were sent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// `/{tenant}/v2.0/.well-known/openid-configuration` (V2) or
    /// `/{tenant}/.well-known/openid-configuration` (V1).
    Discovery {
        tenant: &'a str,
        version: EndpointVersion,
    },
    /// `/{tenant}/discovery/keys`, `/{tenant}/discovery/v2.0/keys` (and `common`).
    Jwks {
        tenant: &'a str,
    },
    /// `/{tenant}/oauth2/token` (V1) or `/{tenant}/oauth2/v2.0/token` (V2).
    Token {
        tenant: &'a str,
        version: EndpointVersion,
    },
    Graph(GraphRoute<'a>),
    /// `/lanyard/keys/rotate`.
    RotateKeys,
    NotFound,
}

/// The Microsoft Graph subset: `/v1.0/applications...` and `/v1.0/servicePrincipals...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphRoute<'a> {
    Applications,
    Application(&'a str),
    AddPassword(&'a str),
    RemovePassword(&'a str),
    FederatedCredentials(&'a str),
    FederatedCredential(&'a str, &'a str),
    ServicePrincipals,
    ServicePrincipal(&'a str),
}

/// Matches `path` (without query). A trailing slash is ignored.
pub fn route(path: &str) -> Route<'_> {
    let trimmed = path.trim_start_matches('/').trim_end_matches('/');
    let segments: Vec<&str> = trimmed.split('/').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Route::NotFound;
    }
    let is = |s: &str, want: &str| s.eq_ignore_ascii_case(want);
    match segments.as_slice() {
        [v, rest @ ..] if is(v, "v1.0") => graph(rest).map_or(Route::NotFound, Route::Graph),
        [a, b, c] if is(a, "lanyard") && is(b, "keys") && is(c, "rotate") => Route::RotateKeys,
        [tenant, v, wk, oc]
            if is(v, "v2.0") && is(wk, ".well-known") && is(oc, "openid-configuration") =>
        {
            Route::Discovery {
                tenant,
                version: EndpointVersion::V2,
            }
        }
        [tenant, wk, oc] if is(wk, ".well-known") && is(oc, "openid-configuration") => {
            Route::Discovery {
                tenant,
                version: EndpointVersion::V1,
            }
        }
        [tenant, d, k] if is(d, "discovery") && is(k, "keys") => Route::Jwks { tenant },
        [tenant, d, v, k] if is(d, "discovery") && is(v, "v2.0") && is(k, "keys") => {
            Route::Jwks { tenant }
        }
        [tenant, o, t] if is(o, "oauth2") && is(t, "token") => Route::Token {
            tenant,
            version: EndpointVersion::V1,
        },
        [tenant, o, v, t] if is(o, "oauth2") && is(v, "v2.0") && is(t, "token") => Route::Token {
            tenant,
            version: EndpointVersion::V2,
        },
        _ => Route::NotFound,
    }
}

fn graph<'a>(segments: &[&'a str]) -> Option<GraphRoute<'a>> {
    let is = |s: &str, want: &str| s.eq_ignore_ascii_case(want);
    // Graph also accepts actions with their namespace: `microsoft.graph.addPassword`.
    let action = |s: &str, want: &str| {
        is(s, want)
            || s.get(..16)
                .is_some_and(|p| p.eq_ignore_ascii_case("microsoft.graph."))
                && is(&s[16..], want)
    };
    Some(match segments {
        [c] if is(c, "applications") => GraphRoute::Applications,
        [c, id] if is(c, "applications") => GraphRoute::Application(id),
        [c, id, a] if is(c, "applications") && action(a, "addPassword") => {
            GraphRoute::AddPassword(id)
        }
        [c, id, a] if is(c, "applications") && action(a, "removePassword") => {
            GraphRoute::RemovePassword(id)
        }
        [c, id, f] if is(c, "applications") && is(f, "federatedIdentityCredentials") => {
            GraphRoute::FederatedCredentials(id)
        }
        [c, id, f, fic] if is(c, "applications") && is(f, "federatedIdentityCredentials") => {
            GraphRoute::FederatedCredential(id, fic)
        }
        [c] if is(c, "servicePrincipals") => GraphRoute::ServicePrincipals,
        [c, id] if is(c, "servicePrincipals") => GraphRoute::ServicePrincipal(id),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use EndpointVersion::*;

    #[test]
    fn entra_paths_match_case_insensitively() {
        let t = "72f988bf-86f1-41af-91ab-2d7cd011db47";
        assert_eq!(
            route(&format!("/{t}/oauth2/v2.0/token")),
            Route::Token {
                tenant: t,
                version: V2
            }
        );
        assert_eq!(
            route("/Lanyard.Localhost/OAuth2/Token/"),
            Route::Token {
                tenant: "Lanyard.Localhost",
                version: V1
            }
        );
        assert_eq!(
            route(&format!("/{t}/V2.0/.Well-Known/OpenID-Configuration")),
            Route::Discovery {
                tenant: t,
                version: V2
            }
        );
        assert_eq!(
            route(&format!("/{t}/.well-known/openid-configuration")),
            Route::Discovery {
                tenant: t,
                version: V1
            }
        );
        assert_eq!(
            route("/common/discovery/keys"),
            Route::Jwks { tenant: "common" }
        );
        assert_eq!(
            route("/common/discovery/v2.0/keys"),
            Route::Jwks { tenant: "common" }
        );
        assert_eq!(route("/lanyard/keys/rotate"), Route::RotateKeys);
        for bad in [
            "/",
            "/t/oauth2",
            "/t/oauth2/v3.0/token",
            "//oauth2/token",
            "/t/oauth2//token",
        ] {
            assert_eq!(route(bad), Route::NotFound, "{bad}");
        }
    }

    #[test]
    fn graph_paths() {
        use GraphRoute::*;
        fn g(p: &str) -> Option<GraphRoute<'_>> {
            match route(p) {
                Route::Graph(g) => Some(g),
                _ => None,
            }
        }
        assert_eq!(g("/v1.0/applications"), Some(Applications));
        assert_eq!(g("/V1.0/Applications/abc"), Some(Application("abc")));
        assert_eq!(
            g("/v1.0/applications/abc/addPassword"),
            Some(AddPassword("abc"))
        );
        assert_eq!(
            g("/v1.0/applications/abc/microsoft.graph.removePassword"),
            Some(RemovePassword("abc"))
        );
        assert_eq!(
            g("/v1.0/applications/abc/federatedIdentityCredentials/f1"),
            Some(FederatedCredential("abc", "f1"))
        );
        assert_eq!(g("/v1.0/servicePrincipals/x"), Some(ServicePrincipal("x")));
        assert_eq!(g("/v1.0/users"), None);
        assert_eq!(g("/v1.0/applications/abc/owners"), None);
    }
}
