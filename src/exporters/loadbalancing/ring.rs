//! The consistent hash ring, as the Collector's `loadbalancing` exporter builds it: each
//! endpoint takes 100 positions out of 36,000 (CRC-32 of the endpoint followed by the point's
//! number, as one byte); a key goes to the endpoint at the first position at or after the
//! CRC-32 of the key, wrapping around. A weir and a Collector given the same endpoints route
//! every key the same way; adding one of N endpoints moves about 1/(N+1) of the keys.

/// Positions on the ring: 360 degrees with two decimals.
const MAX_POSITIONS: u32 = 36_000;
/// Points per endpoint.
const WEIGHT: usize = 100;

fn crc32(parts: &[&[u8]]) -> u32 {
    let mut c = flate2::Crc::new();
    for p in parts {
        c.update(p);
    }
    c.sum()
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ring {
    /// (position, endpoint index), sorted by position.
    items: Vec<(u32, usize)>,
    pub endpoints: Vec<String>,
}

impl Ring {
    /// `endpoints` in the order given (the resolvers sort them): an earlier endpoint keeps a
    /// position two endpoints hash to.
    pub fn new(endpoints: Vec<String>) -> Ring {
        let mut items: Vec<(u32, usize)> = Vec::with_capacity(endpoints.len() * WEIGHT);
        let mut taken = std::collections::HashSet::new();
        for (e, endpoint) in endpoints.iter().enumerate() {
            for i in 0..WEIGHT {
                let pos = crc32(&[endpoint.as_bytes(), &[i as u8]]) % MAX_POSITIONS;
                if taken.insert(pos) {
                    items.push((pos, e));
                }
            }
        }
        items.sort_unstable();
        Ring { items, endpoints }
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The index of the endpoint `key` goes to.
    pub fn index_for(&self, key: &[u8]) -> Option<usize> {
        if self.items.is_empty() {
            return None;
        }
        let pos = crc32(&[key]) % MAX_POSITIONS;
        let i = self.items.partition_point(|(p, _)| *p < pos);
        let (_, e) = self.items.get(i).unwrap_or(&self.items[0]);
        Some(*e)
    }

    pub fn endpoint_for(&self, key: &[u8]) -> Option<&str> {
        self.index_for(key).map(|i| self.endpoints[i].as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> impl Iterator<Item = [u8; 16]> {
        (0u64..1_000_000).map(|i| {
            let mut k = [0u8; 16];
            k[..8].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
            k[8..].copy_from_slice(&i.to_le_bytes());
            k
        })
    }

    #[test]
    fn adding_one_endpoint_of_n_moves_about_one_in_n_plus_one_keys() {
        let four: Vec<String> = (1..=4).map(|i| format!("10.0.0.{i}:4317")).collect();
        let mut five = four.clone();
        five.push("10.0.0.5:4317".into());
        let (a, b) = (Ring::new(four), Ring::new(five));
        let mut moved = 0usize;
        let mut per = [0usize; 5];
        for k in keys() {
            let (x, y) = (a.endpoint_for(&k), b.endpoint_for(&k));
            if x != y {
                moved += 1;
                assert_eq!(
                    y,
                    Some("10.0.0.5:4317"),
                    "a key moves only to the new endpoint"
                );
            }
            per[b.index_for(&k).unwrap_or(0)] += 1;
        }
        let share = moved as f64 / 1e6;
        // Ideal 1/5 = 20 %; 100 points per endpoint on a 36,000-position ring stay near it.
        assert!((0.12..=0.28).contains(&share), "moved {share}");
        for n in per {
            assert!((120_000..=280_000).contains(&n), "balance {per:?}");
        }
    }

    #[test]
    fn removing_one_endpoint_moves_only_its_keys_and_every_instance_agrees() {
        let five: Vec<String> = (1..=5).map(|i| format!("b{i}:4317")).collect();
        let four: Vec<String> = five.iter().filter(|e| *e != "b3:4317").cloned().collect();
        let (a, b) = (Ring::new(five.clone()), Ring::new(four));
        for k in keys().take(200_000) {
            let (x, y) = (a.endpoint_for(&k), b.endpoint_for(&k));
            if x != Some("b3:4317") {
                assert_eq!(x, y, "keys of the endpoints that stay do not move");
            }
        }
        // Two instances with the same list agree on every key.
        let again = Ring::new(five);
        assert_eq!(a, again);
        assert_eq!(Ring::new(Vec::new()).endpoint_for(b"x"), None);
    }

    #[test]
    fn the_ring_is_the_collectors() {
        // Expected values from an independent implementation of the Collector's algorithm
        // (Python's zlib.crc32, the same positions, "first at or after, wrapping").
        let r = Ring::new(
            ["10.0.0.1:4317", "10.0.0.2:4317", "10.0.0.3:4317"]
                .map(String::from)
                .to_vec(),
        );
        assert_eq!(r.items.len(), 297, "three collisions among 300 points");
        let trace: Vec<u8> = (0..16).collect();
        let sevens: Vec<u8> = (0..16).map(|i| (i * 7 % 256) as u8).collect();
        for (key, want) in [
            (&trace[..], "10.0.0.1:4317"),
            (&[0xab; 16][..], "10.0.0.1:4317"),
            (&sevens[..], "10.0.0.2:4317"),
            (b"checkout".as_slice(), "10.0.0.2:4317"),
            (b"frontend".as_slice(), "10.0.0.1:4317"),
        ] {
            assert_eq!(r.endpoint_for(key), Some(want), "{key:02x?}");
        }
    }
}
