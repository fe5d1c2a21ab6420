//! The activity log, as Azure Monitor serves it:
//! `GET /subscriptions/{s}/providers/Microsoft.Insights/eventtypes/management/values
//!  ?$filter=eventTimestamp ge '…' and eventTimestamp le '…' [and resourceGroupName eq '…' |
//!  resourceUri eq '…'] [and correlationId eq '…'] [and caller eq '…'] [and status eq '…']`,
//! newest first, paged with `$skiptoken`.

use axum::response::Response;
use lanyard_domain::ResourceId;
use lanyard_platform::ApiError;
use lanyard_storage::{ActivityRecord, LogQuery};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime};
use uuid::Uuid;

use super::json;
use crate::errors::ArmError;
use crate::filter::{self, Clause};
use crate::request::Call;
use crate::{shape, Arm};

const READ: &str = "Microsoft.Insights/eventtypes/values/read";
const PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;
/// Records read from the store per round while filling a page.
const ROUND: u32 = 500;

/// What a query asks for.
#[derive(Debug, Default)]
struct Query {
    from: Option<OffsetDateTime>,
    to: Option<OffsetDateTime>,
    within: Option<ResourceId>,
    caller: Option<Uuid>,
    correlation: Option<String>,
    status: Option<String>,
}

/// Reads a timestamp as clients write it: RFC 3339, with or without an offset, or a date.
fn timestamp(text: &str) -> Option<OffsetDateTime> {
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        return Some(t);
    }
    if let Ok(t) = OffsetDateTime::parse(&format!("{text}Z"), &Rfc3339) {
        return Some(t);
    }
    Date::parse(text, format_description!("[year]-[month]-[day]"))
        .ok()
        .map(|d| d.midnight().assume_utc())
}

fn query(raw: &str, subscription: &ResourceId) -> Result<Query, ArmError> {
    let bad = || ArmError::UnsupportedFilter(raw.to_string());
    let mut q = Query::default();
    for clause in filter::parse(raw).map_err(|_| bad())? {
        let Clause::Compare { field, op, value } = clause else {
            return Err(bad());
        };
        match (field.as_str(), op.as_str()) {
            ("eventtimestamp", "ge" | "gt") => q.from = Some(timestamp(&value).ok_or_else(bad)?),
            ("eventtimestamp", "le" | "lt") => q.to = Some(timestamp(&value).ok_or_else(bad)?),
            ("resourcegroupname", "eq") => {
                q.within = Some(ResourceId::resource_group(
                    subscription.subscription_id().unwrap_or_default(),
                    &value,
                ));
            }
            ("resourceuri" | "resourceid", "eq") => {
                let id = ResourceId::parse(&value).map_err(|_| bad())?;
                if !id.is_within(subscription) {
                    return Err(bad());
                }
                q.within = Some(id);
            }
            ("correlationid", "eq") => q.correlation = Some(value),
            ("caller", "eq") => q.caller = Some(Uuid::parse_str(&value).map_err(|_| bad())?),
            ("status", "eq") => q.status = Some(value),
            ("resourceprovider" | "eventchannels" | "levels", _) => {}
            _ => return Err(bad()),
        }
    }
    Ok(q)
}

/// `{unix nanos}_{id}` of the last record of a page.
fn skip_token(r: &ActivityRecord) -> String {
    format!("{}_{}", r.time.unix_timestamp_nanos(), r.id)
}

fn parse_skip_token(t: &str) -> Option<(OffsetDateTime, Uuid)> {
    let (nanos, id) = t.split_once('_')?;
    let time = OffsetDateTime::from_unix_timestamp_nanos(nanos.parse().ok()?).ok()?;
    Some((time, Uuid::parse_str(id).ok()?))
}

/// Whether `r` comes after the cursor in the log's order (time descending, then id
/// descending).
fn after_cursor(r: &ActivityRecord, cursor: Option<(OffsetDateTime, Uuid)>) -> bool {
    match cursor {
        None => true,
        Some((t, id)) => r.time < t || (r.time == t && r.id < id),
    }
}

pub async fn list(arm: &Arm, call: &Call, subscription: &ResourceId) -> Result<Response, ApiError> {
    let raw = call.param("$filter").unwrap_or_default();
    let q = query(raw, subscription)?;
    let scope = q.within.clone().unwrap_or_else(|| subscription.clone());
    arm.authorize(call, READ, &scope).await?;
    let mut cursor = match call.param("$skiptoken") {
        Some(t) => Some(parse_skip_token(t).ok_or_else(|| ArmError::InvalidSkipToken(t.into()))?),
        None => None,
    };
    let size = call.page_size(PAGE, MAX_PAGE) as usize;
    let mut round = ROUND;
    let mut page: Vec<ActivityRecord> = Vec::new();
    let mut more = false;
    'fill: loop {
        let to = match (q.to, cursor) {
            (Some(to), Some((t, _))) => Some(to.min(t)),
            (to, c) => to.or(c.map(|(t, _)| t)),
        };
        let records = arm
            .state()
            .store
            .activity(&LogQuery {
                from: q.from,
                to,
                within: Some(scope.clone()),
                principal: q.caller,
                limit: Some(round),
            })
            .await
            .map_err(ArmError::from)?;
        let exhausted = records.len() < round as usize;
        let mut advanced = false;
        for r in records {
            if !after_cursor(&r, cursor) {
                continue;
            }
            advanced = true;
            cursor = Some((r.time, r.id));
            let keep = q
                .correlation
                .as_ref()
                .is_none_or(|c| &r.correlation_id == c)
                && q.status
                    .as_ref()
                    .is_none_or(|s| r.status.eq_ignore_ascii_case(s));
            if keep {
                page.push(r);
                if page.len() == size {
                    more = true;
                    break 'fill;
                }
            }
        }
        if exhausted {
            break;
        }
        if !advanced {
            // More records share one instant than a round holds: read more at once.
            round = round.saturating_mul(2);
        }
    }
    let tenant = arm.state().directory.tenant.id;
    let next = if more {
        page.last().map(|r| call.next_link(&skip_token(r)))
    } else {
        None
    };
    let values = page
        .iter()
        .map(|r| shape::activity_event(r, tenant))
        .collect();
    Ok(json(200, Some(&shape::page(values, next))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_and_times() {
        let sub = ResourceId::parse("/subscriptions/s").unwrap();
        let q = query(
            "eventTimestamp ge '2024-01-01T00:00:00Z' and eventTimestamp le '2024-01-02' and resourceGroupName eq 'rg'",
            &sub,
        )
        .unwrap();
        assert_eq!(q.from.unwrap().unix_timestamp(), 1_704_067_200);
        assert_eq!(q.to.unwrap().unix_timestamp(), 1_704_153_600);
        assert_eq!(
            q.within.unwrap().as_str(),
            "/subscriptions/s/resourceGroups/rg"
        );
        let q = query("resourceUri eq '/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm'", &sub).unwrap();
        assert!(q
            .within
            .unwrap()
            .is_type("Microsoft.Compute/virtualMachines"));
        assert!(query("resourceUri eq '/subscriptions/other'", &sub).is_err());
        assert!(query("foo eq 'x'", &sub).is_err());
        assert!(timestamp("2024-01-01T00:00:00.1234567").is_some());
    }

    #[test]
    fn skip_tokens_round_trip() {
        let r = ActivityRecord {
            id: Uuid::new_v4(),
            time: OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap(),
            caller: None,
            operation: "x".into(),
            scope: ResourceId::root(),
            status: "Succeeded".into(),
            http_status: 200,
            correlation_id: "c".into(),
            body: None,
        };
        let (t, id) = parse_skip_token(&skip_token(&r)).unwrap();
        assert_eq!((t, id), (r.time, r.id));
        assert!(!after_cursor(&r, Some((t, id))));
    }
}
