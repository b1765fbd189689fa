//! The limits every backend applies to a batch before it touches storage, so that all backends
//! refuse or shorten exactly the same writes.
//!
//! Policy: values whose loss would change what runs (XCom results, run `conf`, DAG specs) and
//! batches over [`BATCH_WRITES_MAX`] are refused whole with [`Error::TooLarge`] /
//! [`Error::TooMany`]. Import-error messages and audit details are diagnostics that must still be
//! recorded when they are huge (a long traceback), so they are cut to their limit and end with
//! [`TRUNCATED_MARKER`].

use crate::{
    Error, Result, Write, AUDIT_DETAIL_BYTES_MAX, BATCH_WRITES_MAX, IMPORT_ERROR_BYTES_MAX,
    SECRET_DESCRIPTION_BYTES_MAX, SECRET_ID_CHARS_MAX, SECRET_SEALED_BYTES_MAX, XCOM_BYTES_MAX,
};
use weft_core::limits::{CONF_BYTES_MAX, DAG_SPEC_BYTES_MAX};

/// Ends a text that was cut to its limit; counted in the limit.
pub const TRUNCATED_MARKER: &str = "\n[truncated by weft: over the size limit]";

/// Check a batch against the named limits and shorten diagnostics; the returned batch is what a
/// backend stores. Refuses the whole batch if one write is over a hard limit.
pub fn prepare(mut batch: Vec<Write>) -> Result<Vec<Write>> {
    if batch.len() > BATCH_WRITES_MAX {
        return Err(Error::TooMany {
            what: "write batch".to_string(),
            count: batch.len(),
            max: BATCH_WRITES_MAX,
        });
    }
    for write in &mut batch {
        check_write(write)?;
    }
    Ok(batch)
}

fn check_write(write: &mut Write) -> Result<()> {
    match write {
        Write::PutXcom(xcom) => {
            let size = json_size(&xcom.value);
            if size > XCOM_BYTES_MAX {
                return Err(Error::TooLarge {
                    what: format!("xcom `{}` of {}", xcom.name, xcom.key),
                    size,
                    max: XCOM_BYTES_MAX,
                });
            }
        }
        Write::CreateRun(run) => {
            let size = json_size(&run.conf);
            if size > CONF_BYTES_MAX {
                return Err(Error::TooLarge {
                    what: format!("conf of run {}", run.key),
                    size,
                    max: CONF_BYTES_MAX,
                });
            }
        }
        Write::PutDag { version, .. } => {
            let size = version.spec_json.len();
            if size > DAG_SPEC_BYTES_MAX {
                return Err(Error::TooLarge {
                    what: format!("serialized dag `{}`", version.dag_id),
                    size,
                    max: DAG_SPEC_BYTES_MAX,
                });
            }
        }
        Write::PutSecret { row, .. } => {
            let what = || format!("{} `{}`", row.kind.as_str(), row.id);
            if row.sealed.len() > SECRET_SEALED_BYTES_MAX {
                return Err(Error::TooLarge {
                    what: format!("sealed value of {}", what()),
                    size: row.sealed.len(),
                    max: SECRET_SEALED_BYTES_MAX,
                });
            }
            if row.description.len() > SECRET_DESCRIPTION_BYTES_MAX {
                return Err(Error::TooLarge {
                    what: format!("description of {}", what()),
                    size: row.description.len(),
                    max: SECRET_DESCRIPTION_BYTES_MAX,
                });
            }
            let chars = row.id.chars().count();
            if row.id.is_empty() || chars > SECRET_ID_CHARS_MAX {
                return Err(Error::TooLarge {
                    what: format!(
                        "id of a {} (characters; it may not be empty)",
                        row.kind.as_str()
                    ),
                    size: chars,
                    max: SECRET_ID_CHARS_MAX,
                });
            }
        }
        Write::PutImportError(error) => truncate(&mut error.message, IMPORT_ERROR_BYTES_MAX),
        Write::Audit(entry) => truncate(&mut entry.detail, AUDIT_DETAIL_BYTES_MAX),
        _ => {}
    }
    Ok(())
}

fn json_size(value: &serde_json::Value) -> usize {
    // Serializing a `Value` cannot fail: its keys are strings.
    serde_json::to_string(value)
        .map(|text| text.len())
        .unwrap_or(usize::MAX)
}

/// Cut `text` to at most `bytes_max` bytes, on a character boundary, marker included.
pub fn truncate(text: &mut String, bytes_max: usize) {
    if text.len() <= bytes_max {
        return;
    }
    let mut end = bytes_max.saturating_sub(TRUNCATED_MARKER.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(TRUNCATED_MARKER);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_keeps_char_boundaries_and_the_limit() {
        let mut text = "é".repeat(100);
        truncate(&mut text, 101);
        assert!(text.len() <= 101);
        assert!(text.ends_with(TRUNCATED_MARKER));
        assert!(text.starts_with('é'));

        let mut short = "short".to_string();
        truncate(&mut short, 101);
        assert_eq!(short, "short");
    }

    #[test]
    fn oversize_batches_are_refused() {
        let batch = vec![
            Write::ClearImportError {
                fileloc: "a.py".into()
            };
            BATCH_WRITES_MAX + 1
        ];
        let error = prepare(batch).unwrap_err();
        assert!(matches!(error, Error::TooMany { count, .. } if count == BATCH_WRITES_MAX + 1));
    }
}
