//! `lanyard monitor activity-log list` (as `az monitor activity-log list`): every control
//! plane write and denial; and `lanyard signin-log list`: every token issued or refused.

use std::process::ExitCode;

use anyhow::{anyhow, bail};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use super::{execute, Done, Global};
use crate::api::resources::{self, Ids};
use crate::api::{enc, is_guid, rbac};

#[derive(Args, Debug)]
pub struct MonitorArgs {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: MonitorCommand,
}

#[derive(Subcommand, Debug)]
pub enum MonitorCommand {
    /// The activity log.
    #[command(subcommand, name = "activity-log")]
    ActivityLog(ActivityCommand),
}

#[derive(Subcommand, Debug)]
pub enum ActivityCommand {
    /// List activity-log events, newest first.
    List(ActivityFilter),
}

#[derive(Args, Debug)]
pub struct ActivityFilter {
    #[arg(short = 'g', long = "resource-group", conflicts_with = "resource_id")]
    group: Option<String>,
    #[arg(long)]
    resource_id: Option<String>,
    /// RFC 3339 (default: `--offset` before the end).
    #[arg(long)]
    start_time: Option<String>,
    /// RFC 3339 (default: now).
    #[arg(long)]
    end_time: Option<String>,
    /// How far back from the end, e.g. `6h`, `1d`, `30m`, `1d12h`.
    #[arg(long, default_value = "6h")]
    offset: String,
    #[arg(long)]
    correlation_id: Option<String>,
    /// The caller's object id.
    #[arg(long)]
    caller: Option<String>,
    /// `Succeeded` or `Failed`.
    #[arg(long)]
    status: Option<String>,
    #[arg(long)]
    max_events: Option<usize>,
}

#[derive(Args, Debug)]
pub struct SigninArgs {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: SigninCommand,
}

#[derive(Subcommand, Debug)]
pub enum SigninCommand {
    /// List tokens issued and refused, newest first.
    List {
        /// Only this principal's: an object id, or a name as `--assignee` takes it.
        #[arg(long)]
        principal: Option<String>,
        /// RFC 3339.
        #[arg(long, visible_alias = "from")]
        start_time: Option<String>,
        /// RFC 3339.
        #[arg(long, visible_alias = "to")]
        end_time: Option<String>,
        /// At most this many (default 100, at most 1000).
        #[arg(long)]
        top: Option<u32>,
    },
}

/// `6h`, `30m`, `1d12h`, `45s` as a duration.
fn parse_offset(text: &str) -> anyhow::Result<Duration> {
    let mut total = Duration::ZERO;
    let mut number = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: i64 = number
            .parse()
            .map_err(|_| anyhow!("`{text}` is not an offset like 6h, 30m or 1d"))?;
        number.clear();
        total += match c.to_ascii_lowercase() {
            'd' => Duration::days(n),
            'h' => Duration::hours(n),
            'm' => Duration::minutes(n),
            's' => Duration::seconds(n),
            _ => bail!("`{text}` is not an offset like 6h, 30m or 1d"),
        };
    }
    if !number.is_empty() || total == Duration::ZERO {
        bail!("`{text}` is not an offset like 6h, 30m or 1d");
    }
    Ok(total)
}

fn parse_time(text: &str) -> anyhow::Result<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|_| anyhow!("`{text}` is not an RFC 3339 time (e.g. 2026-01-31T12:00:00Z)"))
}

fn rfc3339(t: OffsetDateTime) -> anyhow::Result<String> {
    Ok(t.format(&Rfc3339)?)
}

/// The `$filter` for `f`, as Azure Monitor takes it.
fn activity_filter(
    f: &ActivityFilter,
    subscription: &str,
    now: OffsetDateTime,
) -> anyhow::Result<String> {
    let end = match &f.end_time {
        Some(t) => parse_time(t)?,
        None => now,
    };
    let start = match &f.start_time {
        Some(t) => parse_time(t)?,
        None => end - parse_offset(&f.offset)?,
    };
    let mut clauses = vec![
        format!("eventTimestamp ge '{}'", rfc3339(start)?),
        format!("eventTimestamp le '{}'", rfc3339(end)?),
    ];
    if let Some(g) = &f.group {
        clauses.push(format!("resourceGroupName eq '{g}'"));
    }
    if let Some(r) = &f.resource_id {
        let r = if r.starts_with('/') {
            r.clone()
        } else {
            format!("/subscriptions/{subscription}/{r}")
        };
        clauses.push(format!("resourceUri eq '{r}'"));
    }
    if let Some(c) = &f.correlation_id {
        clauses.push(format!("correlationId eq '{c}'"));
    }
    if let Some(c) = &f.caller {
        clauses.push(format!("caller eq '{c}'"));
    }
    if let Some(s) = &f.status {
        clauses.push(format!("status eq '{s}'"));
    }
    Ok(clauses.join(" and "))
}

pub fn run_monitor(args: MonitorArgs) -> anyhow::Result<ExitCode> {
    execute(&args.global, async move |conn| {
        let MonitorCommand::ActivityLog(ActivityCommand::List(f)) = args.command;
        resources::require_subscription(conn)?;
        let filter = activity_filter(&f, Ids::of(conn).subscription, OffsetDateTime::now_utc())?;
        let events = resources::activity(conn, &filter, f.max_events).await?;
        Ok(Done::from(Value::Array(events)))
    })
}

pub fn run_signins(args: SigninArgs) -> anyhow::Result<ExitCode> {
    execute(&args.global, async move |conn| {
        let SigninCommand::List {
            principal,
            start_time,
            end_time,
            top,
        } = args.command;
        let mut query = Vec::new();
        if let Some(p) = principal {
            let oid = if is_guid(&p) {
                p
            } else {
                rbac::resolve_principal(conn, &p).await?.object_id
            };
            query.push(format!("principalId={oid}"));
        }
        if let Some(t) = start_time {
            query.push(format!("from={}", enc(&rfc3339(parse_time(&t)?)?)));
        }
        if let Some(t) = end_time {
            query.push(format!("to={}", enc(&rfc3339(parse_time(&t)?)?)));
        }
        if let Some(n) = top {
            query.push(format!("$top={n}"));
        }
        let mut path = "/lanyard/signins".to_string();
        if !query.is_empty() {
            path = format!("{path}?{}", query.join("&"));
        }
        let page = conn.arm(Method::GET, &path, None).await?;
        Ok(Done::from(page["value"].clone()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets() {
        assert_eq!(parse_offset("6h").unwrap(), Duration::hours(6));
        assert_eq!(parse_offset("1d12h").unwrap(), Duration::hours(36));
        assert!(parse_offset("6").is_err());
        assert!(parse_offset("h").is_err());
        assert!(parse_offset("3w").is_err());
    }

    #[test]
    fn filters_read_as_azure_monitor_takes_them() {
        let f = ActivityFilter {
            group: Some("rg1".into()),
            resource_id: None,
            start_time: None,
            end_time: Some("2026-01-01T06:00:00Z".into()),
            offset: "6h".into(),
            correlation_id: None,
            caller: None,
            status: Some("Failed".into()),
            max_events: None,
        };
        let text = activity_filter(&f, "s", OffsetDateTime::now_utc()).unwrap();
        assert_eq!(
            text,
            "eventTimestamp ge '2026-01-01T00:00:00Z' and eventTimestamp le '2026-01-01T06:00:00Z' and resourceGroupName eq 'rg1' and status eq 'Failed'"
        );
    }
}
