//! CSV tables of named columns (`runs.csv` of a sweep): rows as column → value maps, written
//! atomically, read back by the sweep and by the plots.

use super::atomic::write_atomic;
use super::error::FileError;
use std::collections::BTreeMap;
use std::path::Path;

/// One row: column name → value (empty when unknown).
pub type Row = BTreeMap<String, String>;

/// Write `rows` under `header` atomically (a column missing from a row is left empty).
pub fn write_csv(path: &Path, header: &[String], rows: &[Row]) -> Result<(), FileError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(header).map_err(FileError::format(path))?;
    for r in rows {
        w.write_record(header.iter().map(|h| r.get(h).map(String::as_str).unwrap_or("")))
            .map_err(FileError::format(path))?;
    }
    let bytes = w.into_inner().map_err(FileError::format(path))?;
    write_atomic(path, &bytes).map_err(FileError::io(path))
}

/// Read a CSV written by [`write_csv`]: (header, rows).
pub fn read_csv(path: &Path) -> Result<(Vec<String>, Vec<Row>), FileError> {
    let mut r = csv::Reader::from_path(path).map_err(FileError::format(path))?;
    let header: Vec<String> = r.headers().map_err(FileError::format(path))?.iter().map(String::from).collect();
    let mut rows = Vec::new();
    for rec in r.records() {
        let rec = rec.map_err(FileError::format(path))?;
        rows.push(header.iter().cloned().zip(rec.iter().map(String::from)).collect());
    }
    Ok((header, rows))
}
