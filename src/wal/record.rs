//! placeholder until the scanner lands
use chrono::{DateTime, Utc};
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XactEnd {
    pub lsn: u64,
    pub time: DateTime<Utc>,
    pub commit: bool,
}
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    pub start_lsn: u64,
    pub end_lsn: u64,
    pub xact_ends: Vec<XactEnd>,
    pub switched: bool,
    pub timeline: u32,
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanError(pub String);
impl std::fmt::Display for ScanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for ScanError {}
pub fn scan(_bytes: &[u8]) -> Result<Scan, ScanError> {
    Err(ScanError("stub".into()))
}
