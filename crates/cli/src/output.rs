//! Output as the `az` CLI prints it: `--output json|jsonc|table|tsv|none` and `--query`
//! (JMESPath), applied to the JSON a command produced.
//!
//! - `json`: indented, keys sorted. An empty result (`null`) prints nothing.
//! - `table`: one row per item; columns are the scalar fields (nested objects and lists,
//!   `id`, `type` and `etag` left out), headed with the field name's first letter capitalised.
//! - `tsv`: one line per item, the values of its fields in key order, tab-separated: nested
//!   objects print as empty, lists as their length, as `az` does (so a column count stays
//!   stable for `cut`).

use clap::ValueEnum;
use serde_json::Value;

/// `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    #[default]
    Json,
    /// Same as `json` (coloured in `az`; never coloured here).
    Jsonc,
    Table,
    Tsv,
    None,
}

/// A command's own table: rows of `(column, value)` in column order.
pub type TableView = fn(&Value) -> Vec<Vec<(&'static str, Value)>>;

/// A compiled `--query`, checked when the arguments are parsed (a bad one is a usage error).
#[derive(Debug, Clone)]
pub struct Query(String);

impl Query {
    /// clap's value parser: compiles the expression to reject it early.
    pub fn parse(text: &str) -> Result<Self, String> {
        jmespath::compile(text)
            .map(|_| Self(text.to_string()))
            .map_err(|e| format!("invalid JMESPath query: {e}"))
    }

    /// The expression applied to `value`.
    pub fn apply(&self, value: &Value) -> anyhow::Result<Value> {
        let expression = jmespath::compile(&self.0)
            .map_err(|e| anyhow::anyhow!("invalid JMESPath query: {e}"))?;
        let result = expression
            .search(value)
            .map_err(|e| anyhow::anyhow!("the query failed: {e}"))?;
        Ok(serde_json::to_value(&*result)?)
    }
}

/// What `--output` and `--query` asked for.
#[derive(Debug, Clone, Default)]
pub struct Output {
    pub format: Format,
    pub query: Option<Query>,
}

impl Output {
    /// The text to print for `value` (empty for nothing).
    pub fn render(&self, value: &Value) -> anyhow::Result<String> {
        let value = match &self.query {
            Some(q) => q.apply(value)?,
            None => value.clone(),
        };
        if value.is_null() {
            return Ok(String::new());
        }
        Ok(match self.format {
            Format::Json | Format::Jsonc => format!("{}\n", serde_json::to_string_pretty(&value)?),
            Format::Table => table(&value),
            Format::Tsv => tsv(&value),
            Format::None => String::new(),
        })
    }

    /// Prints `value` to stdout. A command's `table` view, when it has one, reshapes the
    /// answer for `--output table` without `--query`, as `az`'s table transformers do.
    pub fn print(&self, value: &Value, table: Option<TableView>) -> anyhow::Result<()> {
        let text = match table {
            Some(view)
                if self.format == Format::Table && self.query.is_none() && !value.is_null() =>
            {
                let rows = view(value)
                    .into_iter()
                    .map(|row| {
                        row.into_iter()
                            .map(|(k, v)| (capitalise(k), scalar(&v)))
                            .collect()
                    })
                    .collect();
                render_rows(rows)
            }
            _ => self.render(value)?,
        };
        print!("{text}");
        Ok(())
    }
}

/// A scalar as `az` prints it (Python's `str`).
fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Keys `az` leaves out of tables.
const TABLE_SKIPS: &[&str] = &["id", "type", "etag"];

fn capitalise(key: &str) -> String {
    let mut chars = key.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn table(value: &Value) -> String {
    let items: Vec<&Value> = match value {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    let mut rows: Vec<Vec<(String, String)>> = Vec::new();
    for item in items {
        let row: Vec<(String, String)> = match item {
            Value::Object(map) => map
                .iter()
                .filter(|(k, v)| {
                    !TABLE_SKIPS.contains(&k.as_str())
                        && !v.is_null()
                        && !v.is_object()
                        && !v.is_array()
                })
                .map(|(k, v)| (capitalise(k), scalar(v)))
                .collect(),
            Value::Array(values) => values
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("Column{}", i + 1), scalar(v)))
                .collect(),
            other => vec![("Result".to_string(), scalar(other))],
        };
        rows.push(row);
    }
    render_rows(rows)
}

/// Rows of `(column, cell)` as aligned columns under a dashed header; columns in order of
/// first appearance.
fn render_rows(rows: Vec<Vec<(String, String)>>) -> String {
    let mut columns: Vec<String> = Vec::new();
    for row in &rows {
        for (k, _) in row {
            if !columns.contains(k) {
                columns.push(k.clone());
            }
        }
    }
    if columns.is_empty() {
        return String::new();
    }
    let cell = |row: &Vec<(String, String)>, column: &str| {
        row.iter()
            .find(|(k, _)| k == column)
            .map(|(_, v)| v.replace('\n', " "))
            .unwrap_or_default()
    };
    let widths: Vec<usize> = columns
        .iter()
        .map(|c| {
            rows.iter()
                .map(|r| cell(r, c).chars().count())
                .chain(std::iter::once(c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(columns.clone());
    out.push_str(&line(widths.iter().map(|w| "-".repeat(*w)).collect()));
    for row in &rows {
        out.push_str(&line(columns.iter().map(|c| cell(row, c)).collect()));
    }
    out
}

fn tsv_field(value: &Value) -> String {
    match value {
        Value::Array(items) => items.len().to_string(),
        Value::Object(_) => String::new(),
        other => scalar(other),
    }
}

fn tsv(value: &Value) -> String {
    let items: Vec<&Value> = match value {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    let mut out = String::new();
    for item in items {
        let fields: Vec<String> = match item {
            Value::Object(map) => map.values().map(tsv_field).collect(),
            Value::Array(values) => values.iter().map(tsv_field).collect(),
            other => vec![scalar(other)],
        };
        out.push_str(&fields.join("\t"));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn out(format: Format, query: Option<&str>) -> Output {
        Output {
            format,
            query: query.map(|q| Query::parse(q).unwrap()),
        }
    }

    #[test]
    fn query_then_format() {
        let v = json!([{"name": "a", "location": "local"}, {"name": "b", "location": "x"}]);
        let text = out(Format::Tsv, Some("[].name")).render(&v).unwrap();
        assert_eq!(text, "a\nb\n");
        let text = out(Format::Json, Some("[?name=='b'].location | [0]"))
            .render(&v)
            .unwrap();
        assert_eq!(text, "\"x\"\n");
        assert!(Query::parse("[?").is_err());
    }

    #[test]
    fn tables_show_scalar_columns_only() {
        let v = json!([
            {"id": "/x", "name": "rg1", "location": "local", "tags": {}, "managed": true},
            {"id": "/y", "name": "group-two", "location": "local", "tags": {}}
        ]);
        let text = out(Format::Table, None).render(&v).unwrap();
        assert_eq!(
            text,
            "Location  Managed  Name\n--------  -------  ---------\nlocal     True     rg1\nlocal              group-two\n"
        );
        assert_eq!(
            out(Format::Table, None).render(&json!("hi")).unwrap(),
            "Result\n------\nhi\n"
        );
    }

    #[test]
    fn tsv_keeps_column_counts() {
        let v = json!({"b": [1, 2], "a": "x", "c": {"d": 1}, "e": null, "f": false});
        assert_eq!(
            out(Format::Tsv, None).render(&v).unwrap(),
            "x\t2\t\t\tFalse\n"
        );
    }

    #[test]
    fn null_and_none_print_nothing() {
        assert_eq!(out(Format::Json, None).render(&Value::Null).unwrap(), "");
        assert_eq!(
            out(Format::None, None).render(&json!({"a": 1})).unwrap(),
            ""
        );
    }
}
