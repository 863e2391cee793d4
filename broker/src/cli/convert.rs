//! `medbus convert FILE…`: HL7 v2 → FHIR R4 Bundles, one JSON document per
//! line (`--pretty` for people), with the same mapping the `fhir` routes use.

use super::split::split_messages;
use medbus_fhir::ConvertOptions;
use std::io::Write;
use std::path::PathBuf;

/// Why `convert` could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum ConvertCliError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Output failed (closed pipe, full disk).
    #[error("cannot write output: {0}")]
    Write(#[from] std::io::Error),
}

/// Counts of what happened.
#[derive(Debug, Default)]
pub struct ConvertSummary {
    /// Bundles printed.
    pub converted: usize,
    /// Of those, partially mapped.
    pub partial: usize,
    /// Messages that could not be converted (reported on stderr).
    pub failed: usize,
}

/// Convert every message of `files`, printing Bundles to `out` and failures
/// to `err`.
pub fn run(
    files: &[PathBuf],
    pretty: bool,
    opts: &ConvertOptions,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<ConvertSummary, ConvertCliError> {
    let mut summary = ConvertSummary::default();
    for path in files {
        let bytes = std::fs::read(path).map_err(|source| ConvertCliError::Read {
            path: path.display().to_string(),
            source,
        })?;
        for (i, msg) in split_messages(&bytes).iter().enumerate() {
            match medbus_fhir::convert_bytes(msg, opts) {
                Ok(c) => {
                    if pretty {
                        let v: serde_json::Value = serde_json::from_slice(&c.bundle_json)
                            .map_err(|e| std::io::Error::other(e.to_string()))?;
                        let text = serde_json::to_string_pretty(&v)
                            .map_err(|e| std::io::Error::other(e.to_string()))?;
                        writeln!(out, "{text}")?;
                    } else {
                        out.write_all(&c.bundle_json)?;
                        writeln!(out)?;
                    }
                    summary.converted += 1;
                    if c.partial {
                        summary.partial += 1;
                        writeln!(
                            err,
                            "{}#{}: {} is only partly mapped",
                            path.display(),
                            i + 1,
                            c.message_type
                        )?;
                    }
                }
                Err(e) => {
                    summary.failed += 1;
                    writeln!(err, "{}#{}: {e}", path.display(), i + 1)?;
                }
            }
        }
    }
    Ok(summary)
}
