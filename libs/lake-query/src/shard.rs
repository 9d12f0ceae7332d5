//! Shards: a deterministic share of a day's partitions for one machine.
//!
//! A partition (type, event-time hour) belongs to shard `i` of `n` when a fixed hash (FNV-1a,
//! 64 bits) of `"<type>/<epoch hour>"` is `i - 1` modulo `n`. The assignment depends on the
//! partition alone, never on a listing, so every machine agrees on it without talking to the
//! others, a re-run of one shard reads exactly what the first attempt read, and files that
//! land late in a partition go to the same shard. With hundreds of types and 24 hours a day
//! the shares are balanced to a few percent in partitions; bytes follow the types' sizes.

use std::fmt;
use std::str::FromStr;

/// Shard `index` of `count` (1-based), written `i/n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Shard {
    /// 1..=count.
    pub index: u32,
    /// Number of shards.
    pub count: u32,
}

impl Shard {
    /// The whole: shard 1 of 1.
    pub const WHOLE: Shard = Shard { index: 1, count: 1 };

    /// Whether the partition of `event_type` at `epoch_hour` belongs to this shard.
    pub fn owns(&self, event_type: &str, epoch_hour: i64) -> bool {
        if self.count <= 1 {
            return true;
        }
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |b: u8| {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        };
        event_type.bytes().for_each(&mut eat);
        eat(b'/');
        epoch_hour.to_string().bytes().for_each(&mut eat);
        h % u64::from(self.count) == u64::from(self.index - 1)
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("shard {s:?}: expected i/n with 1 <= i <= n, e.g. 1/2");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: u32 = i.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if index == 0 || count == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_partition_has_exactly_one_shard() {
        for n in 1..=5u32 {
            let mut per_shard = vec![0u32; n as usize];
            for t in ["product_viewed", "user_created", "app.screen_opened_017"] {
                for hour in 490_000..490_240 {
                    let owners: Vec<u32> = (1..=n).filter(|&i| Shard { index: i, count: n }.owns(t, hour)).collect();
                    assert_eq!(owners.len(), 1, "{t} {hour} {n}");
                    per_shard[owners[0] as usize - 1] += 1;
                }
            }
            // Roughly balanced.
            let max = *per_shard.iter().max().unwrap_or(&0);
            let min = *per_shard.iter().min().unwrap_or(&0);
            assert!(f64::from(max - min) < 0.25 * f64::from(720 / n), "{per_shard:?}");
        }
    }

    #[test]
    fn parses_and_rejects() {
        assert_eq!("2/3".parse::<Shard>(), Ok(Shard { index: 2, count: 3 }));
        assert_eq!(Shard { index: 2, count: 3 }.to_string(), "2/3");
        for bad in ["0/2", "3/2", "1", "a/b", "1/0"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }
}
