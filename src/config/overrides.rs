//! `key.path=value` overrides applied to a TOML table before deserialization, shared by
//! `moco train --set` and the sweep expander. Values are parsed as TOML (`0.99`, `"moco"`,
//! `[1, 2]`, `true`); anything that does not parse as TOML is taken as a bare string.

/// A malformed override.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OverrideError {
    /// No `=` in the argument.
    #[error("override `{0}` is not of the form key=value")]
    NoEquals(String),
    /// Empty key or empty path segment.
    #[error("override `{0}` has an empty key")]
    EmptyKey(String),
    /// A path segment names a value that is not a table.
    #[error("override key `{key}`: `{segment}` is not a table")]
    NotATable {
        /// Full dotted key.
        key: String,
        /// Offending segment.
        segment: String,
    },
}

/// One `key.path=value` override, parsed once (from `--set`, a sweep point, or a command-line
/// flag such as `--device` that sets a config key).
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    /// Dotted key, e.g. `moco.momentum`.
    pub key: String,
    /// The value to put there.
    pub value: toml::Value,
}

impl Override {
    /// Parse `key=value` (the value as TOML, else a bare string).
    pub fn parse(arg: &str) -> Result<Self, OverrideError> {
        parse_override(arg).map(|(key, value)| Self { key, value })
    }

    /// An override of `key` with a string value (a flag's argument).
    pub fn string(key: &str, value: &str) -> Self {
        Self {
            key: key.into(),
            value: toml::Value::String(value.into()),
        }
    }
}

impl std::fmt::Display for Override {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

/// Apply overrides in order (the last one of a key wins).
pub fn apply_overrides(table: &mut toml::Table, overrides: &[Override]) -> Result<(), OverrideError> {
    for o in overrides {
        apply_override(table, &o.key, o.value.clone())?;
    }
    Ok(())
}

/// Split `a.b=value` into the key and a TOML value.
pub fn parse_override(arg: &str) -> Result<(String, toml::Value), OverrideError> {
    let (key, raw) = arg.split_once('=').ok_or_else(|| OverrideError::NoEquals(arg.into()))?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err(OverrideError::EmptyKey(arg.into()));
    }
    Ok((key.to_string(), parse_value(raw.trim())))
}

/// Parse a value as TOML, falling back to a string.
pub fn parse_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.into()),
    }
}

/// Set `table[a][b]… = value` creating intermediate tables.
pub fn apply_override(table: &mut toml::Table, key: &str, value: toml::Value) -> Result<(), OverrideError> {
    let parts: Vec<&str> = key.split('.').collect();
    let mut cur = table;
    for seg in &parts[..parts.len() - 1] {
        let entry = cur.entry(seg.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry.as_table_mut().ok_or_else(|| OverrideError::NotATable {
            key: key.into(),
            segment: seg.to_string(),
        })?;
    }
    // A float-typed field given an integer (`--set moco.momentum=1`) should still work.
    cur.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_typed_values() {
        assert_eq!(parse_override("moco.momentum=0.99").unwrap().1, toml::Value::Float(0.99));
        assert_eq!(
            parse_override("dictionary.mode=moco").unwrap().1,
            toml::Value::String("moco".into())
        );
        assert_eq!(parse_override("train.max_steps=10").unwrap().1, toml::Value::Integer(10));
        assert!(matches!(parse_override("moco.momentum"), Err(OverrideError::NoEquals(_))));
        assert!(matches!(parse_override("moco..m=1"), Err(OverrideError::EmptyKey(_))));
    }

    #[test]
    fn nested_insert() {
        let mut t = toml::Table::new();
        apply_override(&mut t, "a.b.c", toml::Value::Integer(1)).unwrap();
        assert_eq!(t["a"]["b"]["c"].as_integer(), Some(1));
        let mut t2 = toml::Table::new();
        t2.insert("seed".into(), toml::Value::Integer(1));
        assert!(matches!(
            apply_override(&mut t2, "seed.x", toml::Value::Integer(1)),
            Err(OverrideError::NotATable { .. })
        ));
    }
}
