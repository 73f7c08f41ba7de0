//! Pure placement rules: which shard an agent id belongs to when nothing records one, and
//! which shards each live node should hold.

/// The shard of an agent id that no record places: a hash of the id that never changes
/// between builds or machines (64-bit FNV-1a), modulo the shard count.
pub(crate) fn home_shard(id: &str, shards: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in id.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    u32::try_from(hash % u64::from(shards.max(1))).unwrap_or(0)
}

/// The node that should hold `shard` among the live nodes `alive` (sorted ids): shards
/// are dealt round-robin, so every node holds ⌊shards / nodes⌋ or one more.
pub(crate) fn preferred<'a>(shard: u32, alive: &[&'a str]) -> Option<&'a str> {
    if alive.is_empty() {
        return None;
    }
    let index = usize::try_from(shard).unwrap_or(0) % alive.len();
    Some(alive[index])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_shards_are_stable_and_spread() {
        assert_eq!(home_shard("counter-1", 8), home_shard("counter-1", 8));
        // Pinned: a change would move agents whose shard no record keeps.
        assert_eq!(home_shard("a", 8), (0xaf63_dc4c_8601_ec8c_u64 % 8) as u32); // FNV-1a("a")
        let mut counts = [0u32; 8];
        for i in 0..8_000 {
            counts[home_shard(&format!("agent-{i}"), 8) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1_200).contains(&c)),
            "{counts:?}"
        );
        assert_eq!(home_shard("x", 0), 0);
    }

    #[test]
    fn every_shard_has_one_preferred_node_and_the_load_is_even() {
        let alive = ["n1", "n2", "n3"];
        let mut held = std::collections::BTreeMap::<&str, u32>::new();
        for shard in 0..8 {
            *held.entry(preferred(shard, &alive).unwrap()).or_default() += 1;
        }
        assert_eq!(held.values().copied().collect::<Vec<_>>(), [3, 3, 2]);
        assert_eq!(preferred(0, &[]), None);
        assert_eq!(preferred(5, &["only"]), Some("only"));
    }
}
