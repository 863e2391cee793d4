//! Config errors that point at the offending text: `file:line:col: key: message`.
//!
//! Operators fix configs from the error message alone, so every error carries
//! the file, the 1-based line and column, and the key it is about.

use std::fmt;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the problem is in (or `<embedded default>`).
    pub file: String,
    /// 1-based line; 0 when the problem is not tied to a position.
    pub line: usize,
    /// 1-based column (in characters); 0 when not tied to a position.
    pub column: usize,
    /// The key the problem is about, dotted (`listeners[1].listen`); may be empty.
    pub key: String,
    /// What is wrong, in words an operator can act on.
    pub message: String,
}

impl ConfigError {
    /// An error at a byte offset of `text`.
    pub fn at(
        file: &str,
        text: &str,
        offset: usize,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        let (line, column) = line_col(text, offset);
        Self {
            file: file.to_string(),
            line,
            column,
            key: key.into(),
            message: message.into(),
        }
    }

    /// Translate a TOML syntax or schema error.
    pub fn from_toml(file: &str, text: &str, err: &toml::de::Error) -> Self {
        let offset = err.span().map(|s| s.start).unwrap_or(0);
        let key = err
            .span()
            .map(|s| key_at(text, s.start))
            .unwrap_or_default();
        let message = err.message().trim().replace('\n', "; ");
        Self::at(file, text, offset, key, message)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        write!(f, "{}", self.message)
    }
}

/// Every problem found in one config, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|p| p + 1).unwrap_or(0);
    let column = before
        .get(line_start..)
        .map(|s| s.chars().count())
        .unwrap_or(0)
        + 1;
    (line, column)
}

/// The dotted key an offset belongs to: the enclosing `[table]` header plus
/// the key on that line (`storage.durability`), for error messages.
fn key_at(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or("");
    let line_start = before.rfind('\n').map(|p| p + 1).unwrap_or(0);
    let line_end = text
        .get(offset..)
        .and_then(|r| r.find('\n'))
        .map(|p| p + offset)
        .unwrap_or(text.len());
    let line = text.get(line_start..line_end).unwrap_or("").trim();
    if line.starts_with('[') {
        return line
            .trim_matches(|c| c == '[' || c == ']')
            .trim()
            .to_string();
    }
    let key = match line.find('=') {
        Some(eq) => line.get(..eq).unwrap_or("").trim(),
        None => line,
    };
    let table = before
        .get(..line_start)
        .unwrap_or("")
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim());
    match table {
        Some(t) if !key.is_empty() => format!("{t}.{key}"),
        _ => key.to_string(),
    }
}
