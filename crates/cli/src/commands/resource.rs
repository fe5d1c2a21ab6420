//! `lanyard resource list`, as `az resource list`: every resource the caller may read, of
//! any type, in a resource group or the whole subscription.

use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Subcommand};
use serde_json::Value;

use super::{execute, Done, Global};
use crate::api::present::{each, with_resource_group};
use crate::api::resources::{self, ResourceFilter};

#[derive(Args, Debug)]
pub struct ResourceArgs {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: ResourceCommand,
}

#[derive(Subcommand, Debug)]
pub enum ResourceCommand {
    /// List resources of every type (those the caller may read).
    List(ListArgs),
}

#[derive(Args, Debug, Default)]
pub struct ListArgs {
    /// Only this resource group's.
    #[arg(short = 'g', long = "resource-group")]
    group: Option<String>,
    /// Only resources named this.
    #[arg(short = 'n', long)]
    name: Option<String>,
    /// Only resources in this location.
    #[arg(short = 'l', long)]
    location: Option<String>,
    /// Only this type: `Namespace/type`, or `type` with `--namespace`.
    #[arg(long)]
    resource_type: Option<String>,
    /// The provider namespace of `--resource-type`, e.g. `Microsoft.Compute`.
    #[arg(long, requires = "resource_type")]
    namespace: Option<String>,
    /// Only resources with this tag: `key` or `key=value`.
    #[arg(long)]
    tag: Option<String>,
}

impl ListArgs {
    /// The filter, with `az`'s rules: `--tag` cannot be combined with `--name` or
    /// `--location`.
    fn filter(&self) -> anyhow::Result<ResourceFilter> {
        if self.tag.is_some() && (self.name.is_some() || self.location.is_some()) {
            bail!("--tag cannot be used with --name or --location");
        }
        let resource_type = match (&self.namespace, &self.resource_type) {
            (Some(ns), Some(t)) if !t.contains('/') => Some(format!("{ns}/{t}")),
            (_, t) => t.clone(),
        };
        let tag = self.tag.as_ref().map(|t| match t.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (t.clone(), None),
        });
        Ok(ResourceFilter {
            name: self.name.clone(),
            location: self.location.clone(),
            resource_type,
            tag,
        })
    }
}

pub fn run(args: ResourceArgs) -> anyhow::Result<ExitCode> {
    let ResourceCommand::List(list) = args.command;
    let filter = list.filter()?;
    execute(&args.global, async move |conn| {
        resources::require_subscription(conn)?;
        let found = resources::list_all_types(conn, list.group.as_deref(), &filter).await?;
        Ok(Done::from(each(found, with_resource_group)).with_table(table))
    })
}

/// `az resource list -o table`: name, group, location, type, status.
fn table(value: &Value) -> Vec<Vec<(&'static str, Value)>> {
    let row = |r: &Value| {
        vec![
            ("name", r["name"].clone()),
            ("resourceGroup", r["resourceGroup"].clone()),
            ("location", r["location"].clone()),
            ("type", r["type"].clone()),
            ("status", r["provisioningState"].clone()),
        ]
    };
    match value {
        Value::Array(items) => items.iter().map(row).collect(),
        one => vec![row(one)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_as_az_builds_them() {
        let args = ListArgs {
            resource_type: Some("virtualMachines".into()),
            namespace: Some("Microsoft.Compute".into()),
            name: Some("o'vm".into()),
            ..Default::default()
        };
        assert_eq!(
            args.filter().unwrap().odata().unwrap(),
            "name eq 'o''vm' and resourceType eq 'Microsoft.Compute/virtualMachines'"
        );
        let args = ListArgs {
            tag: Some("env=prod".into()),
            resource_type: Some("Microsoft.Web/sites".into()),
            ..Default::default()
        };
        assert_eq!(
            args.filter().unwrap().odata().unwrap(),
            "resourceType eq 'Microsoft.Web/sites' and tagName eq 'env' and tagValue eq 'prod'"
        );
        let args = ListArgs {
            tag: Some("env".into()),
            ..Default::default()
        };
        assert_eq!(args.filter().unwrap().odata().unwrap(), "tagName eq 'env'");
        assert_eq!(ListArgs::default().filter().unwrap().odata(), None);
        let args = ListArgs {
            tag: Some("env".into()),
            name: Some("x".into()),
            ..Default::default()
        };
        assert!(args.filter().is_err());
    }
}
