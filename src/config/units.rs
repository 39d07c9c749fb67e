//! TEMPORARY STUB (replaced by the config-loader branch).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DurationValue(pub std::time::Duration);
impl From<std::time::Duration> for DurationValue {
    fn from(d: std::time::Duration) -> Self {
        DurationValue(d)
    }
}
impl<'de> serde::Deserialize<'de> for DurationValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let (n, mul) = if let Some(v) = s.strip_suffix("ms") {
            (v, 0.001)
        } else if let Some(v) = s.strip_suffix('s') {
            (v, 1.0)
        } else {
            (s.as_str(), 1e-9)
        };
        let n: f64 = n.parse().map_err(serde::de::Error::custom)?;
        Ok(DurationValue(std::time::Duration::from_secs_f64(n * mul)))
    }
}
