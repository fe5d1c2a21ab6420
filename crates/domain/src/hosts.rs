//! The host names Lanyard answers to, described once. Pure.
//!
//! The fixed hosts ([`FIXED_HOSTS`]: `management.{domain}`, `login.{domain}`,
//! `graph.{domain}`) and `{domain}` itself serve the control plane and the token service.
//! Every data plane whose resources each get a host of their own is one [`PlaneHost`] in
//! [`PLANE_HOSTS`]: the host-name pattern (`{name}.{label}.{domain}`), its audiences, the
//! names the TLS certificate covers for it, its suffix in the cloud description
//! (`/metadata/endpoints`) and where the control plane shows a resource's endpoint. The
//! server's host routing, certificate and cloud description and the CLI's host resolution
//! all read this table; a new data plane on its own hosts is one entry here (plus its router,
//! registered by the server).

/// The hosts below the domain that serve the control plane and the token service.
pub const FIXED_HOSTS: &[&str] = &["login", "management", "graph"];

/// A data plane served on one host per resource: `{name}.{label}.{domain}`.
#[derive(Debug, PartialEq, Eq)]
pub struct PlaneHost {
    /// The label between a resource's name and the domain: `vault`, `blob`.
    pub label: &'static str,
    /// The ARM type whose resources get a host here (canonical casing).
    pub resource_type: &'static str,
    /// The host below the domain whose URL is this server's own audience for the plane
    /// (`https://vault.{domain}[:{port}]`).
    pub audience_label: &'static str,
    /// Azure's audience for the plane, which SDKs ask for by default.
    pub azure_audience: &'static str,
    /// Where the control plane shows a resource's data-plane endpoint (a JSON pointer into
    /// the resource as presented).
    pub endpoint_pointer: &'static str,
    /// The key of the plane's DNS suffix under `suffixes` in the cloud description.
    pub metadata_key: &'static str,
    /// Whether that suffix includes the label (`vault.{domain}`, as `keyVaultDns` does) or is
    /// the domain alone (`storage`: clients put `{name}.blob.` before it themselves).
    pub metadata_suffix_has_label: bool,
}

/// Key Vault: `{vault}.vault.{domain}`.
pub const VAULT: PlaneHost = PlaneHost {
    label: "vault",
    resource_type: "Microsoft.KeyVault/vaults",
    audience_label: "vault",
    azure_audience: "https://vault.azure.net",
    endpoint_pointer: "/properties/vaultUri",
    metadata_key: "keyVaultDns",
    metadata_suffix_has_label: true,
};

/// Blob storage: `{account}.blob.{domain}`.
pub const BLOB: PlaneHost = PlaneHost {
    label: "blob",
    resource_type: "Microsoft.Storage/storageAccounts",
    audience_label: "storage",
    azure_audience: "https://storage.azure.com",
    endpoint_pointer: "/properties/primaryEndpoints/blob",
    metadata_key: "storage",
    metadata_suffix_has_label: false,
};

/// Every data plane on hosts of its own.
pub const PLANE_HOSTS: &[&PlaneHost] = &[&VAULT, &BLOB];

impl PlaneHost {
    /// `{label}.{domain}`: what every resource's host ends with.
    pub fn suffix(&self, domain: &str) -> String {
        format!("{}.{domain}", self.label)
    }

    /// `{name}.{label}.{domain}`: the host of resource `name`.
    pub fn host(&self, name: &str, domain: &str) -> String {
        format!("{name}.{}", self.suffix(domain))
    }

    /// The resource name of a host, given the host without `.{domain}` (lower case, no
    /// port): `kv1` for `kv1.vault`. `None` unless the rest is one DNS label.
    pub fn name_in<'a>(&self, below_domain: &'a str) -> Option<&'a str> {
        let name = below_domain.strip_suffix(self.label)?.strip_suffix('.')?;
        is_label(name).then_some(name)
    }

    /// The certificate name covering every resource's host: `*.{label}.{domain}`.
    pub fn certificate_name(&self, domain: &str) -> String {
        format!("*.{}", self.suffix(domain))
    }

    /// `{audience_label}.{domain}`: the host of this server's own audience for the plane.
    pub fn audience_host(&self, domain: &str) -> String {
        format!("{}.{domain}", self.audience_label)
    }

    /// The plane's DNS suffix as the cloud description states it (without the port).
    pub fn metadata_suffix(&self, domain: &str) -> String {
        if self.metadata_suffix_has_label {
            self.suffix(domain)
        } else {
            domain.to_string()
        }
    }
}

/// The plane whose resources have the ARM type `resource_type` (case-insensitive).
pub fn for_resource_type(resource_type: &str) -> Option<&'static PlaneHost> {
    PLANE_HOSTS
        .iter()
        .copied()
        .find(|p| p.resource_type.eq_ignore_ascii_case(resource_type))
}

/// The names the server certificate covers: loopback, the domain, every host one label
/// below it (the fixed hosts), and every resource host of every plane.
pub fn certificate_names(domain: &str) -> Vec<String> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
        domain.to_string(),
        format!("*.{domain}"),
    ];
    names.extend(PLANE_HOSTS.iter().map(|p| p.certificate_name(domain)));
    names
}

/// One DNS label: 1 to 63 letters, digits and `-`, not starting with `-`.
fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !s.starts_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "lanyard.localhost";

    #[test]
    fn hosts_and_names() {
        assert_eq!(VAULT.host("kv1", D), "kv1.vault.lanyard.localhost");
        assert_eq!(BLOB.host("acct", D), "acct.blob.lanyard.localhost");
        assert_eq!(VAULT.name_in("kv1.vault"), Some("kv1"));
        assert_eq!(BLOB.name_in("acct.blob"), Some("acct"));
        assert_eq!(VAULT.name_in("a.b.vault"), None);
        assert_eq!(VAULT.name_in(".vault"), None);
        assert_eq!(VAULT.name_in("xvault"), None);
        assert_eq!(VAULT.name_in("kv1.blob"), None);
        assert_eq!(VAULT.audience_host(D), "vault.lanyard.localhost");
        assert_eq!(BLOB.audience_host(D), "storage.lanyard.localhost");
        assert_eq!(VAULT.metadata_suffix(D), "vault.lanyard.localhost");
        assert_eq!(BLOB.metadata_suffix(D), D);
        assert_eq!(for_resource_type("microsoft.keyvault/VAULTS"), Some(&VAULT));
        assert_eq!(for_resource_type("Microsoft.Web/sites"), None);
    }

    #[test]
    fn certificate_covers_every_plane() {
        assert_eq!(
            certificate_names(D),
            [
                "localhost",
                "127.0.0.1",
                "::1",
                D,
                "*.lanyard.localhost",
                "*.vault.lanyard.localhost",
                "*.blob.lanyard.localhost",
            ]
        );
    }
}
